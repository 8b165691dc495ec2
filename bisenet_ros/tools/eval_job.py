"""One bag as ``eval-bag`` evaluates it: the options' pipeline (built once per process), the
evaluation, and :class:`EvalJob`, the picklable job that worker processes and Ray tasks run."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..data.bags import BagError
from ..data.remap import ground_truth_lut
from ..errors import ConfigError
from ..evaluation.fleet import BagResult
from ..evaluation.recording import evaluate_bag, resolve_label_map
from .common import cpu_name, pipeline_from_args


def prepare(args: argparse.Namespace):
    """The pipeline and ground-truth lookup table of the options (once per process)."""
    pipeline = pipeline_from_args(args)
    lut = resolve_label_map(args.label_map, pipeline.source_preset, args.ignore_index)
    if pipeline.remap is not None and args.label_topic:  # ground truth in the model's classes -> output classes
        lut = ground_truth_lut(pipeline.remap, lut, args.ignore_index)
    if args.label_map and not args.label_topic:
        raise ConfigError("--label-map needs --label-topic")
    return pipeline, lut


def evaluate(args: argparse.Namespace, pipeline, lut, bag: Path, pred_bag: Path | None, progress: bool,
             health=None):
    """One bag; ``health``: a :class:`~bisenet_ros.evaluation.health.HealthProbe` fed every frame (or None)."""
    ev = evaluate_bag(
        pipeline, bag, args.image_topic, args.label_topic, ignore_index=args.ignore_index, label_lut=lut,
        stamp_tolerance_ms=args.stamp_tolerance, max_frames=args.max_frames, warmup=args.warmup,
        pred_bag=pred_bag, pred_storage=args.pred_storage, pred_namespace=args.pred_namespace,
        pred_with_image=args.pred_with_image, overwrite=args.overwrite, strict=args.strict, progress=progress,
        health=health,
    )
    ev.report["label_map"] = args.label_map
    ev.report["cpu"] = cpu_name()  # every speed figure names the machine
    return ev


def no_known_class_message(args: argparse.Namespace, report: dict, num_classes: int, path: Path) -> str:
    oor = report["warning_messages"].get("out_of_range_pixels")
    return (f"no ground-truth pixel on '{args.label_topic}' holds a class id 0..{num_classes - 1} "
            f"(every pixel of {report['labelled_frames']} labelled frames is the ignore index {args.ignore_index} "
            f"or out of range{': ' + oor if oor else ''}); check --label-map and --ignore-index (report: {path})")


class EvalJob:
    """Evaluates one bag with the command's options; the pipeline is built on first use and kept
    for the life of the worker process (it is not pickled: each worker builds its own)."""

    def __init__(self, args: argparse.Namespace, pred_bags: dict[str, Path]) -> None:
        self.args, self.pred_bags = args, pred_bags
        self._ready = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_ready": None}

    def __call__(self, bag: Path) -> BagResult:
        if self._ready is None:
            self._ready = prepare(self.args)
        pipeline, lut = self._ready
        ev = evaluate(self.args, pipeline, lut, bag, self.pred_bags.get(str(bag)), progress=False)
        if self.args.label_topic and ev.report.get("miou") is None:
            raise BagError(no_known_class_message(self.args, ev.report, pipeline.num_classes, bag))
        return BagResult(str(bag), ev.report, ev.confusion, {k: list(v) for k, v in ev.latencies.samples.items()})
