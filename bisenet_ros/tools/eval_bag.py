"""``bisenet-ros eval-bag``: accuracy and speed of the segmentation pipeline on a recorded bag.

Every camera image on ``--image-topic`` goes through the node's pipeline and is timed; images
whose header stamp matches a ground-truth label on ``--label-topic`` (exactly, or within
``--stamp-tolerance``) are scored into one confusion matrix over the whole bag. Output in
``--out``: metrics.json, report.md, confusion/IoU/latency plots; optionally a bag with the
predictions (labels, colour, overlay) under the original stamps.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..bags import (
    BagError,
    BagWriter,
    STORAGES,
    array_to_image,
    list_topics,
    check_image_topic,
    pair_stamps,
    read_image_topics,
)
from ..datasets import DatasetPreset, build_label_lut
from ..errors import BisenetError, ConfigError
from ..metrics import ConfusionMatrix, GroundTruthScorer, LatencyRecorder, WarningCounter, fps_from_latencies
from ..pipeline import SegmentationPipeline
from ..report import write_report
from .common import add_model_arguments, pipeline_from_args

HELP = "evaluate accuracy (mIoU vs ground-truth labels) and speed on a ROS 2 bag (mcap/sqlite3)"
EXAMPLES = """\
  bisenet-ros eval-bag demo_output/sample_recording --label-topic /camera/labels \\
      --weights models/bisenetv2_synthetic_street.pth --out eval_demo
  bisenet-ros eval-bag cityscapes_val_bag --label-topic /camera/labels --label-map labelIds \\
      --weights model_final_v2_city.pth --input-size 512x1024 --out eval_city --pred-bag eval_city/pred
"""

FPS_DEFINITION = ("frames / sum of per-frame pipeline time (preprocess + inference + postprocess, "
                  "bag reading excluded); wall_fps includes reading and scoring")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="bag directory, or a single .mcap/.db3 file")
    parser.add_argument("--image-topic", default="/camera/image_raw", help="camera topic (Image or CompressedImage)")
    parser.add_argument("--label-topic", default=None,
                        help="ground-truth labels (mono8/mono16/16UC1 images of class ids); omit to time only")
    parser.add_argument("--ignore-index", type=int, default=255, help="ground-truth value that is not scored")
    parser.add_argument("--label-map", default=None,
                        help="map raw label values to class ids: a label map of the dataset preset "
                             "(e.g. labelIds for Cityscapes labelIds -> trainIds) or a YAML file {raw: id}")
    parser.add_argument("--stamp-tolerance", type=float, default=0.0, metavar="MS",
                        help="pair a label with the nearest image stamp within MS milliseconds (default: exact)")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after N camera images (0 = all)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed frames before timing: the first image through the pipeline "
                             "N times (default 1)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: ./eval_<bag name>)")
    parser.add_argument("--strict", action="store_true",
                        help="stop with an error at the first unusable frame instead of counting a warning")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (there is none anyway when stderr is not a terminal)")
    g = parser.add_argument_group("prediction bag")
    g.add_argument("--pred-bag", type=Path, default=None,
                   help="also write the predictions to this new bag (labels, colour, overlay; original stamps)")
    g.add_argument("--pred-storage", choices=STORAGES, default="mcap", help="storage plugin of --pred-bag")
    g.add_argument("--pred-namespace", default="/segmentation",
                   help="topic prefix of the prediction bag (default /segmentation, as the node)")
    g.add_argument("--pred-with-image", action="store_true",
                   help="copy the camera images into the prediction bag (one bag for rviz2/Foxglove)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --pred-bag")
    add_model_arguments(parser)


def resolve_label_map(name: str | None, preset: DatasetPreset, ignore_index: int) -> np.ndarray | None:
    """``--label-map``: a label map of ``preset`` or a YAML file {raw: id} -> lookup table raw -> class id."""
    if not name:
        return None
    if name in preset.label_maps:
        return build_label_lut(preset.label_maps[name], ignore_index)
    path = Path(name).expanduser()
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text())
            mapping = {int(k): int(v) for k, v in (data or {}).items()}
        except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError) as exc:
            raise ConfigError(f"label map {path}: expected a YAML mapping raw value -> class id ({exc})") from None
        if not mapping or any(not 0 <= k < 65536 for k in mapping):
            raise ConfigError(f"label map {path}: needs raw values in 0..65535 mapped to class ids")
        return build_label_lut(mapping, ignore_index)
    known = ", ".join(sorted(preset.label_maps)) or "none"
    raise ConfigError(f"label map '{name}' is neither a map of preset '{preset.name}' (known: {known}) "
                      "nor a YAML file")


@dataclass
class Evaluation:
    """What :func:`evaluate_bag` measured."""

    report: dict
    confusion: ConfusionMatrix | None
    latencies: LatencyRecorder
    warnings: dict[str, int] = field(default_factory=dict)


def evaluate_bag(
    pipeline: SegmentationPipeline,
    bag: str | Path,
    image_topic: str,
    label_topic: str | None = None,
    *,
    ignore_index: int = 255,
    label_lut: np.ndarray | None = None,
    stamp_tolerance_ms: float = 0.0,
    max_frames: int = 0,
    warmup: int = 1,
    pred_bag: str | Path | None = None,
    pred_storage: str = "mcap",
    pred_namespace: str = "/segmentation",
    pred_with_image: bool = False,
    overwrite: bool = False,
    strict: bool = False,
    progress: bool = True,
) -> Evaluation:
    """Run the pipeline over a bag's camera images and score them against ground truth."""
    tolerance_ns = int(round(stamp_tolerance_ms * 1e6))
    if tolerance_ns < 0:
        raise ConfigError(f"stamp tolerance must be >= 0 ms, got {stamp_tolerance_ms}")
    topics_avail = list_topics(bag)
    check_image_topic(topics_avail, image_topic, bag, "image")
    if label_topic:
        check_image_topic(topics_avail, label_topic, bag, "label")
        if label_topic == image_topic:
            raise ConfigError("--label-topic must differ from --image-topic")
    warn = WarningCounter(strict, BagError)
    n_images = topics_avail[image_topic].count
    total = min(n_images, max_frames) if max_frames > 0 else n_images
    if total == 0:
        raise BagError(f"image topic '{image_topic}' in bag '{bag}' has no messages")

    # pass 1: stamps only, to pair ground truth with camera frames
    pairs: dict[int, int] = {}
    uses: dict[int, int] = {}  # label stamp -> camera images it scores (more than 1 only for duplicate stamps)
    if label_topic:
        img_stamps, lab_stamps = [], []
        for item in read_image_topics(bag, [image_topic, label_topic], decode=False):
            (img_stamps if item.topic == image_topic else lab_stamps).append(item.stamp_ns)
        if max_frames > 0:
            img_stamps = img_stamps[:max_frames]
        if not lab_stamps:
            raise BagError(f"label topic '{label_topic}' in bag '{bag}' has no messages")
        dup = len(img_stamps) - len(set(img_stamps))
        if dup:
            warn.add("duplicate_image_stamps", f"{dup} camera images share a header stamp with another", dup)
        dup = len(lab_stamps) - len(set(lab_stamps))
        if dup:
            warn.add("duplicate_label_stamps", f"{dup} labels repeat a stamp; the first one is used", dup)
        pairing = pair_stamps(img_stamps, lab_stamps, tolerance_ns)
        if not pairing.pairs:
            closest = "-" if pairing.closest_ns is None else f"{pairing.closest_ns / 1e6:.3f} ms"
            raise BagError(
                f"no ground-truth stamp on '{label_topic}' matches an image stamp on '{image_topic}' "
                f"({len(lab_stamps)} labels, {len(img_stamps)} images, closest pair {closest} apart, "
                f"tolerance {stamp_tolerance_ms:g} ms; see --stamp-tolerance)")
        pairs = pairing.pairs
        for stamp in img_stamps:
            if stamp in pairs:
                uses[pairs[stamp]] = uses.get(pairs[stamp], 0) + 1
        if pairing.unmatched_labels and max_frames <= 0:
            warn.add("unmatched_labels", f"{pairing.unmatched_labels} ground-truth labels have no camera "
                                         f"image within {stamp_tolerance_ms:g} ms", pairing.unmatched_labels)

    num_classes = pipeline.num_classes
    names = list(pipeline.preset.class_names)
    scorer = GroundTruthScorer(num_classes, ignore_index, label_lut, warn) if label_topic else None
    latencies = LatencyRecorder()
    outputs = ("color", "overlay") if pred_bag else ()
    pending_pred: dict[int, list[np.ndarray]] = {}  # label stamp -> predictions waiting for their GT
    pending_gt: dict[int, tuple[np.ndarray, str]] = {}  # label stamp -> GT waiting for its image
    processed = 0
    warmed = False

    def score(pred: np.ndarray, gt: np.ndarray, gt_enc: str, stamp: int) -> None:
        scorer.score(pred, gt, gt_enc, f"stamp {stamp}")

    bar = None
    if progress:
        from ..progress import progress_bar

        bar = progress_bar(total=total, unit="frame", desc="eval-bag")
    writer = BagWriter(pred_bag, storage=pred_storage, overwrite=overwrite) if pred_bag else None
    t_start = time.perf_counter()
    try:
        if writer:
            writer.__enter__()
        topics = [image_topic] + ([label_topic] if label_topic else [])
        for item in read_image_topics(bag, topics):
            if item.topic == label_topic:
                stamp = item.stamp_ns
                if not uses.get(stamp) or stamp in pending_gt:
                    continue  # not paired, or a repeated stamp
                if item.error:
                    warn.add("bad_labels", f"label at stamp {stamp}: {item.error}", uses.pop(stamp))
                    pending_pred.pop(stamp, None)
                    continue
                for pred in pending_pred.pop(stamp, ()):
                    score(pred, item.array, item.encoding, stamp)
                    uses[stamp] -= 1
                if uses[stamp] > 0:
                    pending_gt[stamp] = (item.array, item.encoding)
                else:
                    del uses[stamp]
                continue
            if processed >= total:
                if not pending_pred:
                    break
                continue  # only waiting for ground truth of frames already processed
            processed += 1
            if bar:
                bar.update(1)
            if item.error:
                warn.add("bad_images", f"image at stamp {item.stamp_ns}: {item.error}")
                continue
            t0 = time.perf_counter()
            try:
                if not warmed:  # first-call costs (allocations, kernel selection) stay out of the figures
                    for _ in range(max(0, warmup)):
                        pipeline(item.array, item.encoding, outputs=outputs)
                    warmed = True
                    t0 = time.perf_counter()
                res = pipeline(item.array, item.encoding, outputs=outputs)
            except BisenetError as exc:
                warn.add("bad_images", f"image at stamp {item.stamp_ns}: {exc}")
                continue
            total_ms = (time.perf_counter() - t0) * 1e3
            latencies.add({**res.timings, "total_ms": total_ms})
            if writer:
                _write_predictions(writer, item, res, pred_namespace, pred_with_image)
            lab_stamp = pairs.get(item.stamp_ns)
            if lab_stamp is None or not uses.get(lab_stamp):
                continue
            if lab_stamp in pending_gt:
                score(res.labels, *pending_gt[lab_stamp], lab_stamp)
                uses[lab_stamp] -= 1
                if uses[lab_stamp] == 0:
                    del uses[lab_stamp], pending_gt[lab_stamp]
            else:
                pending_pred.setdefault(lab_stamp, []).append(res.labels)
    except BaseException:
        if writer:
            writer.__exit__(*sys.exc_info())
            writer = None
        raise
    finally:
        if bar:
            bar.close()
    if writer:
        writer.__exit__(None, None, None)
    wall_s = time.perf_counter() - t_start
    if pending_pred:
        n = sum(len(v) for v in pending_pred.values())
        warn.add("missing_labels", f"{n} paired ground-truth labels could not be read", n)
    if not latencies.samples:
        raise BagError(f"no camera image in '{bag}' could be segmented: {warn.first('no image')}")
    if scorer is not None and scorer.scored == 0:
        raise BagError(f"no frame of '{bag}' could be scored against ground truth: {warn.first('no frame paired')}")

    totals = latencies.samples["total_ms"]
    report: dict[str, Any] = {
        "tool": "eval-bag",
        "bag": str(bag),
        "image_topic": image_topic,
        "label_topic": label_topic,
        "model": dict(pipeline.info),
        "frames": processed,
        "timed_frames": len(totals),
        "labelled_frames": scorer.scored if scorer else 0,
        "fps": fps_from_latencies(totals),
        "fps_definition": FPS_DEFINITION,
        "wall_s": wall_s,
        "wall_fps": processed / wall_s if wall_s > 0 else None,
        "latency_ms": latencies.summary(),
        "ignore_index": ignore_index,
        "stamp_tolerance_ms": stamp_tolerance_ms,
        "class_names": names,
    }
    if scorer is not None:
        report.update(scorer.metrics(names))
    else:
        report.update({"miou": None, "per_class_iou": None, "pixel_accuracy": None})
    report["warnings"] = dict(warn.counts)
    report["warning_messages"] = dict(warn.messages)
    if pred_bag:
        report["prediction_bag"] = str(pred_bag)
    return Evaluation(report, scorer.confusion if scorer else None, latencies, dict(warn.counts))


def _write_predictions(writer: BagWriter, item, res, namespace: str, with_image: bool) -> None:
    ns = namespace.rstrip("/")
    stamp, log_time, frame = item.stamp_ns, item.log_time_ns, item.frame_id
    if with_image:
        writer.write(item.topic, array_to_image(item.array, item.encoding, stamp, frame), log_time)
    lab_enc = "mono16" if res.labels.dtype == np.uint16 else "mono8"
    writer.write(f"{ns}/labels", array_to_image(res.labels, lab_enc, stamp, frame), log_time)
    writer.write(f"{ns}/color", array_to_image(res.color, "rgb8", stamp, frame), log_time)
    writer.write(f"{ns}/overlay", array_to_image(res.overlay, res.overlay_encoding, stamp, frame), log_time)


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


def run(args: argparse.Namespace) -> int:
    bag = Path(args.bag).expanduser()
    topics = list_topics(bag)  # fail fast on a bad bag or topic, before loading the model
    check_image_topic(topics, args.image_topic, bag, "image")
    if args.label_topic:
        check_image_topic(topics, args.label_topic, bag, "label")
    pipeline = pipeline_from_args(args)
    lut = resolve_label_map(args.label_map, pipeline.preset, args.ignore_index)
    if args.label_map and not args.label_topic:
        raise ConfigError("--label-map needs --label-topic")
    out = args.out or Path(f"eval_{bag.stem or bag.name}")
    info = pipeline.info
    print(f"model {info['model']} ({info['num_classes']} classes, {info['dataset']}) on {info['device']}, "
          f"backend {info['backend']}, input {info['input_size']}", file=sys.stderr)
    ev = evaluate_bag(
        pipeline, bag, args.image_topic, args.label_topic, ignore_index=args.ignore_index, label_lut=lut,
        stamp_tolerance_ms=args.stamp_tolerance, max_frames=args.max_frames, warmup=args.warmup,
        pred_bag=args.pred_bag, pred_storage=args.pred_storage, pred_namespace=args.pred_namespace,
        pred_with_image=args.pred_with_image, overwrite=args.overwrite, strict=args.strict,
        progress=not args.no_progress,
    )
    ev.report["label_map"] = args.label_map
    paths = write_report(out, ev.report,
                         confusion=ev.confusion.matrix if ev.confusion is not None else None,
                         latency_samples=ev.latencies.samples, title=f"eval-bag: {bag.name}")
    print(summary_line(ev.report))
    for kind, msg in ev.report["warning_messages"].items():
        print(f"warning: {kind} ({ev.report['warnings'][kind]}): {msg}", file=sys.stderr)
    print(f"report: {paths['report']}")
    print(f"metrics: {paths['metrics']}")
    if args.pred_bag:
        print(f"predictions: {args.pred_bag}")
    return 0
