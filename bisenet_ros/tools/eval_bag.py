"""``bisenet-ros eval-bag``: accuracy and speed of the segmentation pipeline on a recorded bag.

Every camera image on ``--image-topic`` goes through the node's pipeline and is timed; images
whose header stamp matches a ground-truth label on ``--label-topic`` (exactly, or within
``--stamp-tolerance``) are scored into one confusion matrix over the whole bag. Output in
``--out``: metrics.json, report.md, confusion/IoU/latency plots; optionally a bag with the
predictions (labels, colour, overlay) under the original stamps. Every frame's perception-health
statistics go to health.csv; ``--shift`` / ``--shifted-bag`` measure how well they tell the
recording from shifted versions of it (docs/evaluation.md, "Perception health").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data.bags import (IMAGE_TYPES, STORAGES, BagError, check_bag_output, check_image_topic, describe_topics,
                         label_topic_candidates, list_topics)
from ..errors import ConfigError
from ..evaluation.health import LEVELS, SHIFTS, HealthProbe, parse_shifts, recording_statistics, write_health_csv
from ..evaluation.health import summary_line as health_summary
from ..evaluation.report import HEALTH_CSV, check_report_dir, write_report
from ..inference.health import resolve_baseline
from ..evaluation.fleet import find_bags
from .common import add_model_arguments, cpu_name, number
from .eval_fleet import run_fleet
from .eval_job import evaluate, no_known_class_message, prepare

HELP = "evaluate accuracy (mIoU vs ground-truth labels) and speed on a ROS 2 bag (mcap/sqlite3)"
EXAMPLES = """\
  bisenet-ros eval-bag demo_output/sample_recording --label-topic /camera/labels \\
      --weights models/bisenetv2_synthetic_street.pth --out eval_demo
  bisenet-ros eval-bag cityscapes_val_bag --label-topic /camera/labels --label-map labelIds \\
      --weights model_final_v2_city.pth --input-size 512x1024 --out eval_city --pred-bag eval_city/pred
  bisenet-ros eval-bag drive_bag --weights models/bisenetv2_synthetic_street.pth --shift all --out eval_health
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", metavar="BAG",
                        help="bag directory or .mcap/.db3 file; several bags, or folders of bags, are "
                             "evaluated as a fleet (per-bag reports plus the total of the summed confusion "
                             "matrices, see docs/evaluation.md)")
    parser.add_argument("--image-topic", default="/camera/image_raw", help="camera topic (Image or CompressedImage)")
    parser.add_argument("--label-topic", default=None,
                        help="ground-truth labels (mono8/mono16/16UC1 images of class ids); default: the bag's "
                             "one image topic named *label* (make-bag writes /camera/labels); 'none' to time only")
    parser.add_argument("--ignore-index", type=number(int, 0, 65535), default=255, help="ground-truth value that is not scored")
    parser.add_argument("--label-map", default=None,
                        help="map raw label values to class ids: a label map of the dataset preset "
                             "(e.g. labelIds for Cityscapes labelIds -> trainIds) or a YAML file {raw: id}")
    parser.add_argument("--stamp-tolerance", type=number(float, 0, 3.6e6), default=0.0, metavar="MS",
                        help="pair a label with the nearest image stamp within MS milliseconds (default: exact)")
    parser.add_argument("--max-frames", type=number(int, 0), default=0, help="stop after N camera images (0 = all)")
    parser.add_argument("--warmup", type=number(int, 0), default=1,
                        help="untimed frames before timing: the first image through the pipeline "
                             "N times (default 1)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: ./eval_<bag name>)")
    parser.add_argument("--strict", action="store_true",
                        help="stop with an error at the first unusable frame instead of counting a warning")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (there is none anyway when stderr is not a terminal)")
    g = parser.add_argument_group("many bags (see docs/evaluation.md, 'Many bags / a cluster')")
    g.add_argument("--jobs", type=number(int, 1, 256), default=1,
                   help="evaluate the bags in N local worker processes (the model loaded once per worker)")
    g.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="run each bag as a task on an existing Ray cluster: auto (the cluster 'ray start --head' "
                        "made on this machine), HOST:PORT or ray://HOST:10001; bags, weights and outputs "
                        "must be reachable under the same paths on every node")
    g = parser.add_argument_group("prediction bag")
    g.add_argument("--pred-bag", type=Path, default=None,
                   help="also write the predictions to this new bag (labels, colour, overlay; original "
                        "stamps); with several bags a new folder holding one prediction bag per input")
    g.add_argument("--pred-storage", choices=STORAGES, default="mcap", help="storage plugin of --pred-bag")
    g.add_argument("--pred-namespace", default="/segmentation",
                   help="topic prefix of the prediction bag (default /segmentation, as the node)")
    g.add_argument("--pred-with-image", action="store_true",
                   help="copy the camera images into the prediction bag (one bag for rviz2/Foxglove)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing --pred-bag (only a bag bisenet-ros wrote) and report files")
    g = parser.add_argument_group("perception health (per-frame statistics in health.csv; docs/evaluation.md)")
    g.add_argument("--shift", type=shift_list, default=[], metavar="FAMILIES",
                   help=f"also segment each frame corrupted by these families ({', '.join(SHIFTS)} or all, "
                        "comma-separated; untimed) and report how well health separates them: AUROC, "
                        "detection delay")
    g.add_argument("--shift-strength", choices=LEVELS, default="moderate", help="strength of the --shift corruptions")
    g.add_argument("--shifted-bag", type=Path, default=None,
                   help="a second recording outside the training domain (same --image-topic): separation and delay")
    g.add_argument("--health-baseline", default="",
                   help="baseline YAML for the WARN thresholds; default: <weights>.health.yaml when there is one, "
                        "'none' = the documented defaults")
    g.add_argument("--hold-time", type=number(float, 0.1, 3600), default=3.0, metavar="S",
                   help="the node's health_hold_time used to replay the WARNs")
    add_model_arguments(parser)


def shift_list(text: str) -> list[str]:
    """``--shift`` (argparse type)."""
    try:
        return parse_shifts(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def summary_line(report: dict) -> str:
    """One human line: accuracy and speed."""
    parts = [f"{report['frames']} frames"]
    if report.get("label_topic"):
        miou = report.get("miou")
        parts.append(f"{report['labelled_frames']} labelled, mIoU {miou:.4f}" if miou is not None
                     else f"{report['labelled_frames']} labelled, mIoU n/a")
        if report.get("pixel_accuracy") is not None:
            parts.append(f"pixel acc {report['pixel_accuracy']:.4f}")
    lat = report["latency_ms"].get("total_ms", {})
    if report.get("fps"):
        parts.append(f"{report['fps']:.1f} fps (total p50 {lat.get('p50', 0):.1f} ms, p95 {lat.get('p95', 0):.1f} ms)")
    if report.get("warnings"):
        parts.append("warnings: " + ", ".join(f"{k} {v}" for k, v in report["warnings"].items()))
    return "; ".join(parts)


def check_outputs(args: argparse.Namespace, bag: Path, out: Path) -> None:
    """Before the model loads: the prediction bag and the report never touch the recording."""
    label_map = args.label_map if args.label_map and Path(args.label_map).is_file() else None
    inputs = [bag, args.weights, label_map, args.shifted_bag]
    if args.pred_bag:
        check_bag_output(args.pred_bag, inputs, args.overwrite, option="--pred-bag")
        if Path(args.pred_bag).expanduser().resolve() == out.expanduser().resolve():
            raise ConfigError("--pred-bag and --out must be different paths")
    check_report_dir(out, [*inputs, args.pred_bag], overwrite=args.overwrite)


def resolve_label_topic(asked: str | None, topics: dict, image_topic: str) -> tuple[str | None, str]:
    """(label topic, what to say about it): ``--label-topic`` as given; ``none`` -> no ground
    truth; omitted -> the bag's one label topic (:func:`~bisenet_ros.bags.label_topic_candidates`),
    else none, with a note naming the image topics the bag has (timing only)."""
    if asked is not None:
        return (None if asked.strip().lower() in ("", "none") else asked), ""
    found = label_topic_candidates(topics, image_topic)
    if len(found) == 1:
        return found[0], f"ground truth: {found[0]} (the bag's label topic; --label-topic none to time only)"
    images = {k: t for k, t in topics.items() if t.msgtype in IMAGE_TYPES and k != image_topic}
    listing = describe_topics(images) if images else "none but the camera's"
    return None, (f"note: timing only, no mIoU: {'several label topics' if found else 'no label topic'} in the "
                  f"bag; name one with --label-topic (image topics: {listing})")


def fleet_label_topic(args: argparse.Namespace, bags: list[Path]) -> tuple[str | None, str]:
    """The label topic of a fleet run: ``--label-topic``, else the one the first readable bag has."""
    if args.label_topic is not None:
        return resolve_label_topic(args.label_topic, {}, args.image_topic)
    for bag in bags:
        try:
            topics = list_topics(bag)
        except BagError:
            continue  # reported with the other failed bags
        return resolve_label_topic(None, topics, args.image_topic)
    return None, ""


def run(args: argparse.Namespace) -> int:
    bags = find_bags(args.bags)
    if len(bags) > 1 or args.jobs > 1 or args.ray is not None:
        if args.shift or args.shifted_bag:
            raise ConfigError("--shift and --shifted-bag evaluate one bag (without --jobs/--ray); "
                              "run them on one in-domain recording")
        args.label_topic, note = fleet_label_topic(args, bags)
        if note:
            print(note, file=sys.stderr)
        return run_fleet(args, bags)
    return run_one(args, bags[0])


def run_one(args: argparse.Namespace, bag: Path) -> int:
    topics = list_topics(bag)  # fail fast on a bad bag, topic or output, before loading the model
    check_image_topic(topics, args.image_topic, bag, "image")
    args.label_topic, note = resolve_label_topic(args.label_topic, topics, args.image_topic)
    if args.label_topic:
        check_image_topic(topics, args.label_topic, bag, "label")
        if args.label_topic == args.image_topic:
            raise ConfigError("--label-topic must differ from --image-topic")
    if args.shifted_bag:
        check_image_topic(list_topics(args.shifted_bag), args.image_topic, args.shifted_bag, "image")
    if args.health_baseline not in ("", "none"):
        resolve_baseline(args.health_baseline, None)  # an unreadable file: an error before the model loads
    out = args.out or Path(f"eval_{bag.stem or bag.name}")
    check_outputs(args, bag, out)
    if note:
        print(note, file=sys.stderr)
    pipeline, lut = prepare(args)
    info = pipeline.info
    print(f"model {info['model']} ({info['num_classes']} classes, {info['dataset']}) on {info['device']}, "
          f"backend {info['backend']}, input {info['input_size']}"
          + (f", classes remapped by {info['class_remap']}" if info.get('class_remap') else ""), file=sys.stderr)
    baseline = resolve_baseline(args.health_baseline, info.get("weights"))  # beside the checkpoint file
    health = HealthProbe(args.shift, args.shift_strength, baseline, args.hold_time)
    if args.shifted_bag:
        health.add_recording("shifted_bag", *recording_statistics(pipeline, args.shifted_bag, args.image_topic,
                                                                 args.max_frames))
    ev = evaluate(args, pipeline, lut, bag, args.pred_bag, not args.no_progress, health=health)
    ev.report["bags"] = [{"bag": str(bag), "miou": ev.report.get("miou")}]
    paths = write_report(out, ev.report,
                         confusion=ev.confusion.matrix if ev.confusion is not None else None,
                         latency_samples=ev.latencies.samples, title=f"eval-bag: {bag.name}", tool="eval-bag")
    write_health_csv(Path(paths["report"]).with_name(HEALTH_CSV), health.rows())
    print(summary_line(ev.report))
    print(health_summary(ev.report["health"]))
    if args.label_topic and ev.report.get("miou") is None:  # labelled frames, not one pixel of a known class
        raise BagError(no_known_class_message(args, ev.report, pipeline.num_classes, paths["report"]))
    for kind, msg in ev.report["warning_messages"].items():
        print(f"warning: {kind} ({ev.report['warnings'][kind]}): {msg}", file=sys.stderr)
    print(f"report: {paths['report']}")
    print(f"metrics: {paths['metrics']}")
    if args.pred_bag:
        print(f"predictions: {args.pred_bag}")
    return 0
