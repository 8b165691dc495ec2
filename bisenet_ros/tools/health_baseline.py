"""``bisenet-ros health-baseline``: the perception-health statistics of a model on in-domain data,
stored as the node's WARN thresholds in a small YAML beside the checkpoint.

The node (and ``eval-bag``) read ``<weights stem>.health.yaml`` when it exists; without one they
use the documented defaults and say so (docs/node.md, "Perception health"). The low-confidence
threshold is the in-domain 99th percentile of the low-confidence share plus ``--margin``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..data.bags import BagError, check_image_topic, list_topics, read_image_topics
from ..data.images import read_image_file
from ..errors import ConfigError, file_problem
from ..inference.health import DEFAULT_BASELINE, IMAGE_STATS, LOGIT_STATS, Baseline, baseline_path, baseline_yaml
from ..evaluation.health import summary
from ..output_files import Kind, check_output, write_text
from ..progress import progress_bar
from .common import add_model_arguments, number, pipeline_from_args
from ..models.weights_catalog import resolve_weights
from .make_bag import list_images

HELP = "measure a model's perception-health statistics on in-domain data and store the node's thresholds"
EXAMPLES = """\
  bisenet-ros health-baseline --bag demo_output/sample_recording --weights models/bisenetv2_synthetic_street.pth
  bisenet-ros health-baseline --images my_robot/frames --weights model.pth --margin 0.15 --out model.health.yaml
"""


def _is_baseline(path: Path) -> bool:
    from ..inference.health import load_baseline

    try:
        load_baseline(path)
    except ConfigError:
        return False
    return True


BASELINE = Kind("health baseline YAML", False, _is_baseline)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--bag", type=Path, help="in-domain ROS 2 bag (directory, .mcap or .db3)")
    src.add_argument("--images", type=Path, help="folder of in-domain images (searched recursively)")
    src.add_argument("--video", type=Path, help="in-domain video file (any format OpenCV reads)")
    parser.add_argument("--image-topic", default="/camera/image_raw", help="camera topic of --bag")
    parser.add_argument("--every", type=number(int, 1), default=1, help="use every N-th frame")
    parser.add_argument("--max-frames", type=number(int, 0), default=0, help="stop after N frames used (0 = all)")
    parser.add_argument("--confidence-level", type=number(float, 0.05, 1.0), default=DEFAULT_BASELINE.confidence_level,
                        help="a logit cell below this max softmax counts as low confidence")
    parser.add_argument("--margin", type=number(float, 0.0, 1.0), default=0.1,
                        help="threshold = in-domain p99 of the low-confidence share + this")
    parser.add_argument("--out", type=Path, default=None,
                        help="baseline YAML to write (default: <weights stem>.health.yaml beside the weights)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing baseline at --out")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (there is none anyway when stderr is not a terminal)")
    add_model_arguments(parser)


def frames(args: argparse.Namespace) -> tuple[str, Iterator[tuple[np.ndarray, str]]]:
    """What the data is (for the YAML) and its frames as (image, encoding), every N-th."""
    if args.bag:
        check_image_topic(list_topics(args.bag), args.image_topic, args.bag, "image")
        items = (it for it in read_image_topics(args.bag, [args.image_topic]) if not it.error)
        return f"bag {args.bag} ({args.image_topic})", ((it.array, it.encoding) for it in items)
    if args.images:
        paths = list_images(args.images)
        if not paths:
            raise BagError(f"{args.images}: no images")
        return f"images {args.images}", ((_read(p), "bgr8") for p in paths)
    problem = file_problem(args.video)
    if problem:
        raise BagError(f"{args.video}: {problem}")
    return f"video {args.video}", _video(args.video)


def _read(path: Path) -> np.ndarray:
    image = read_image_file(path, cv2.IMREAD_COLOR)
    if image is None:
        raise BagError(f"{path}: not an image OpenCV can read")
    return image


def _video(path: Path) -> Iterator[tuple[np.ndarray, str]]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise BagError(f"{path}: not a video OpenCV can read")
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                return
            yield image, "bgr8"
    finally:
        cap.release()


def measure(pipeline, source: Iterator[tuple[np.ndarray, str]], every: int, max_frames: int,
            progress: bool) -> list[dict]:
    """Health statistics of every ``every``-th frame (at most ``max_frames``)."""
    stats = []
    with progress_bar(total=max_frames or None, unit="frame", desc="health-baseline", enabled=progress) as bar:
        for i, (image, encoding) in enumerate(source):
            if i % every:
                continue
            stats.append(pipeline(image, encoding, outputs=("health",)).health)
            bar.update(1)
            if 0 < max_frames <= len(stats):
                break
    return stats


def thresholds(stats: list[dict], level: float, margin: float, data: str) -> Baseline:
    """The baseline of the measured frames."""
    dist = {k: summary(s[k] for s in stats) for k in (*LOGIT_STATS, *IMAGE_STATS)}
    low = dist["low_confidence_fraction"]
    return Baseline(confidence_level=level, low_confidence_max=round(min(0.95, low["p99"] + margin), 4),
                    low_confidence_typical=round(low["mean"], 4), data=data, frames=len(stats),
                    statistics={k: {q: round(v, 5) for q, v in d.items()} for k, d in dist.items()})


def run(args: argparse.Namespace) -> int:
    weights = resolve_weights(args.weights)  # a catalogue name: the cached file, where the node looks
    out = args.out or baseline_path(weights)
    inputs = [args.bag, args.images, args.video, weights]
    check_output(out, inputs, kind=BASELINE, overwrite=args.overwrite)
    data, source = frames(args)
    pipeline = pipeline_from_args(args)
    pipeline.health_level = args.confidence_level
    stats = measure(pipeline, source, args.every, args.max_frames, not args.no_progress)
    if len(stats) < 10:
        raise ConfigError(f"{data}: {len(stats)} frames; a baseline needs at least 10 in-domain frames")
    base = thresholds(stats, args.confidence_level, args.margin, data)
    write_text(out, baseline_yaml(base, str(weights), "bisenet-ros health-baseline"))
    low, bright = base.statistics["low_confidence_fraction"], base.statistics["brightness_mean"]
    print(f"{len(stats)} frames of {data}: low-confidence share (max softmax < {args.confidence_level:g}) "
          f"mean {low['mean']:.3f}, p99 {low['p99']:.3f}, max {low['max']:.3f} -> WARN above "
          f"{base.low_confidence_max:.3f}")
    if low["max"] > base.low_confidence_max or bright["min"] < base.dark_level:
        print("warning: some of these in-domain frames would raise a health WARN themselves; "
              "check the data or raise --margin", file=sys.stderr)
    print(f"baseline: {out}")
    return 0
