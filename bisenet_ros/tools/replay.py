"""``bisenet-ros replay``: publish a bag's camera images at the recorded rate to a live
``segmentation_node`` and report dropped frames, end-to-end latency, achieved fps and the mIoU of
the frames the node labelled. With ``--weights`` it starts the node itself; otherwise a node must
be running (remapped to listen on ``--image-topic``, outputs under ``--node-namespace``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..data.remap import ground_truth_lut, load_remap
from ..errors import ConfigError
from ..evaluation.recording import resolve_label_map
from ..evaluation.report import check_report_dir, write_report
from ..options import PipelineOptions
from ..output_files import check_own_dir, prepare_dir
from ..safe_yaml import load_yaml_text
from .common import add_model_arguments, cpu_name, model_preset, number

HELP = "replay a bag through a live segmentation_node: dropped frames, latency, fps, mIoU"
EXAMPLES = """\
  # start the node for you and replay at the recorded rate
  bisenet-ros replay demo_output/sample_recording --label-topic /camera/labels \\
      --weights models/bisenetv2_synthetic_street.pth --out replay_demo
  # against a node you started yourself, twice as fast
  bisenet-ros replay my_bag --image-topic /camera/image_raw --rate 2
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="bag directory, or a single .mcap/.db3 file")
    parser.add_argument("--image-topic", default="/camera/image_raw", help="camera topic in the bag")
    parser.add_argument("--label-topic", default=None, help="ground-truth labels in the bag (for mIoU)")
    parser.add_argument("--rate", type=number(float, 0.01, 100), default=1.0, help="playback speed factor (1.0 = as recorded)")
    parser.add_argument("--publish-topic", default=None,
                        help="topic to publish the images on (default: the bag's --image-topic)")
    parser.add_argument("--node-namespace", default="/segmentation",
                        help="where the node's outputs are (<ns>/labels, <ns>/timing; default /segmentation)")
    parser.add_argument("--max-frames", type=number(int, 0), default=0, help="stop after N images (0 = all)")
    parser.add_argument("--warmup", type=number(int, 0), default=1, help="untimed frames before timing: copies of the first image sent through "
                             "the node first (default 1)")
    parser.add_argument("--timeout", type=number(float, 0.1), default=60.0,
                        help="seconds to wait for the node (start-up, model load, first reply)")
    parser.add_argument("--drain", type=number(float, 0), default=2.0,
                        help="seconds to wait for late replies after the last image")
    parser.add_argument("--restamp", action="store_true",
                        help="set header stamps to the publish time (for nodes that drop old frames)")
    parser.add_argument("--best-effort", action="store_true", help="publish best effort (default reliable)")
    parser.add_argument("--ignore-index", type=number(int, 0, 65535), default=255, help="ground-truth value that is not scored")
    parser.add_argument("--label-map", default=None,
                        help="raw label values -> class ids: a map of the --dataset preset (default "
                             "cityscapes; e.g. labelIds) or a YAML file {raw: id}")
    parser.add_argument("--save-overlays", type=Path, default=None,
                        help="write the node's overlay frames here (PNG per frame + overlay.mp4)")
    parser.add_argument("--out", type=Path, default=None, help="write metrics.json, report.md and plots here")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace report files / write overlays into a directory bisenet-ros did not create")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (there is none anyway when stderr is not a terminal)")
    g = parser.add_argument_group("starting the node (when --weights is given)")
    g.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra node parameter, repeatable (e.g. publish_color:=false)")
    add_model_arguments(parser, weights_required=False)


def node_parameters(args: argparse.Namespace) -> dict:
    """The model options of this command, plus ``--node-param``, as segmentation_node parameters."""
    params = PipelineOptions.from_args(args).to_parameters()
    for item in args.node_param:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise ConfigError(f"--node-param '{item}' must look like NAME:=VALUE")
        params[name] = load_yaml_text(value, f"--node-param {name}", "value", expect=None) if value else ""
    return params


def summary_line(report: dict) -> str:
    e2e = report["latency_ms"]["end_to_end_ms"]
    parts = [f"{report['frames_published']} published, {report['frames_received']} labelled by the node, "
             f"{report['dropped']} dropped ({100 * (report['drop_rate'] or 0):.1f} %)"]
    if report.get("fps"):
        parts.append(f"{report['fps']:.1f} fps (input {report.get('input_fps') or 0:.1f})")
    if e2e.get("p50") is not None:
        parts.append(f"end-to-end latency p50 {e2e['p50']:.1f} ms, p95 {e2e['p95']:.1f} ms, max {e2e['max']:.1f} ms")
    if report.get("label_topic"):
        miou = report.get("miou")
        parts.append(f"mIoU {miou:.4f} over {report['labelled_frames']} frames" if miou is not None else "mIoU n/a")
    if report.get("warnings"):
        parts.append("warnings: " + ", ".join(f"{k} {v}" for k, v in report["warnings"].items()))
    return "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    from ..ros.live_replay import pop_latency_samples, replay_bag

    if args.label_map and not args.label_topic:
        raise ConfigError("--label-map needs --label-topic")
    inputs = [args.bag, args.weights]
    if args.out:
        check_report_dir(args.out, inputs, overwrite=args.overwrite)
    if args.save_overlays:
        check_own_dir(args.save_overlays, inputs, overwrite=args.overwrite, option="--save-overlays")
        prepare_dir(args.save_overlays, "replay")
    source = model_preset(args)
    lut = resolve_label_map(args.label_map, source, args.ignore_index)
    if args.class_remap and args.label_topic:  # the node labels remapped classes: so must the ground truth
        lut = ground_truth_lut(load_remap(args.class_remap, source), lut, args.ignore_index)
    node_args = node_parameters(args) if args.weights else None
    if node_args is None and args.node_param:
        raise ConfigError("--node-param only applies when the node is started here (give --weights)")
    print("starting segmentation_node" if node_args else
          f"using the running node under {args.node_namespace}", file=sys.stderr)
    report = replay_bag(
        args.bag, image_topic=args.image_topic, label_topic=args.label_topic, rate=args.rate,
        node_args=node_args, node_namespace=args.node_namespace, publish_topic=args.publish_topic,
        timeout_s=args.timeout, drain_s=args.drain, warmup=args.warmup, save_overlays=args.save_overlays,
        max_frames=args.max_frames, restamp=args.restamp, ignore_index=args.ignore_index, label_lut=lut,
        reliable=not args.best_effort, progress=not args.no_progress,
    )
    samples = pop_latency_samples(report)
    print(summary_line(report))
    for kind, msg in report["warning_messages"].items():
        print(f"warning: {kind} ({report['warnings'][kind]}): {msg}", file=sys.stderr)
    report["cpu"] = cpu_name()  # every speed figure names the machine
    if args.out:
        cm = report.get("confusion_matrix")
        paths = write_report(args.out, report, confusion=np.asarray(cm) if cm else None,
                             latency_samples=samples, title=f"replay: {Path(args.bag).name} at rate {args.rate:g}", tool="replay")
        print(f"report: {paths['report']}")
    if args.save_overlays:
        print(f"overlays: {args.save_overlays}")
    return 0
