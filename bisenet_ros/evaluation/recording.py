"""Evaluating a recording: the pipeline over a bag's camera images, scored against ground truth.

- :class:`StampMatcher` pairs predictions with ground-truth labels by header stamp -- the one rule
  for ``eval-bag`` and ``replay`` (exact stamps, or the nearest within a tolerance; each label
  scores at most one image, exact matches win; a repeated label stamp uses the first label);
  predictions and labels may arrive in either order.
- :func:`evaluate_bag` / :class:`BagEvaluation`: ``eval-bag`` in named stages -- check the topics,
  pair the stamps (a first pass reading headers only), segment and score every image (optionally
  writing a prediction bag), report.
- :func:`resolve_label_map`: ``--label-map`` (a preset's map or a YAML file) as a lookup table.

ROS-free (rosbags reads the bag); the live counterpart is :mod:`bisenet_ros.ros.live_replay`.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..data.bag_layout import NODE_OUTPUT_QOS
from ..data.bags import (BagError, BagImage, BagWriter, array_to_image, check_image_topic, list_topics, pair_stamps,
                         read_image_topics)
from ..data.datasets import DatasetPreset, build_label_lut
from ..errors import BisenetError, ConfigError
from ..pipeline import SegmentationPipeline, SegmentationResult
from ..progress import progress_bar
from .health import HealthProbe
from .metrics import (ConfusionMatrix, GroundTruthScorer, LatencyRecorder, MetricsError, WarningCounter,
                      fps_from_latencies)
from ..safe_yaml import load_yaml_file

FPS_DEFINITION = ("frames / sum of per-frame pipeline time (preprocess + inference + postprocess, "
                  "bag reading excluded); wall_fps includes reading and scoring")


def resolve_label_map(name: str | None, preset: DatasetPreset, ignore_index: int) -> np.ndarray | None:
    """``--label-map``: a label map of ``preset`` or a YAML file {raw: id} -> lookup table raw -> class id."""
    if not name:
        return None
    if name in preset.label_maps:
        return build_label_lut(preset.label_maps[name], ignore_index)
    path = Path(name).expanduser()
    if path.is_file():
        data = load_yaml_file(path, "label map")
        try:
            mapping = {int(k): int(v) for k, v in data.items()}
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"label map {path}: expected a YAML mapping raw value -> class id ({exc})") from None
        if not mapping or any(not 0 <= k < 65536 for k in mapping):
            raise ConfigError(f"label map {path}: needs raw values in 0..65535 mapped to class ids")
        return build_label_lut(mapping, ignore_index)
    known = ", ".join(sorted(preset.label_maps)) or "none"
    raise ConfigError(f"label map '{name}' is neither a map of preset '{preset.name}' (known: {known}) "
                      "nor a YAML file")


def score_frame(scorer: GroundTruthScorer, pred: np.ndarray, gt: np.ndarray, encoding: str, stamp: int) -> None:
    """Score one frame; predictions the scorer cannot take (e.g. class ids beyond the class count,
    as a live node may send) are counted as ``bad_predictions`` instead of stopping the run."""
    try:
        scorer.score(pred, gt, encoding, f"stamp {stamp}")
    except MetricsError as exc:
        scorer.warnings.add("bad_predictions", f"labels from the node at stamp {stamp}: {exc}")


# -- stamp matching ---------------------------------------------------------------------------------
class StampMatcher:
    """Pairs predictions (by image stamp) with ground truth (by label stamp), in either order.

    ``pairs`` maps image stamp -> label stamp (:func:`bisenet_ros.data.bags.pair_stamps`); ``score``
    gets ``(prediction, label array, label encoding, label stamp)`` once per paired image. Entries
    waiting for their partner are bounded by ``max_pending`` when given (oldest dropped first: in a
    live replay a dropped frame's label never finds its prediction). Not thread-safe: callers that
    feed it from several threads hold their own lock.
    """

    def __init__(self, pairs: dict[int, int], score: Callable[[np.ndarray, np.ndarray, str, int], None],
                 warnings: WarningCounter, image_stamps: Sequence[int] = (), max_pending: int | None = None,
                 label_count: int = 0, closest_ns: int | None = None) -> None:
        self.pairs = pairs
        self.image_count, self.label_count, self.closest_ns = len(image_stamps), label_count, closest_ns
        self.score = score
        self.warnings = warnings
        self.max_pending = max_pending
        self.uses: dict[int, int] = {}  # label stamp -> paired images not yet scored
        for stamp in image_stamps:
            if stamp in pairs:
                self.uses[pairs[stamp]] = self.uses.get(pairs[stamp], 0) + 1
        self.pending_pred: dict[int, list[np.ndarray]] = {}  # label stamp -> predictions waiting
        self.pending_gt: dict[int, tuple[np.ndarray, str]] = {}  # label stamp -> label waiting

    @property
    def waiting(self) -> int:
        """Predictions still waiting for their ground truth."""
        return sum(len(v) for v in self.pending_pred.values())

    def add_prediction(self, image_stamp: int, labels: np.ndarray) -> None:
        lab = self.pairs.get(image_stamp)
        if lab is None or not self.uses.get(lab):
            return
        if lab in self.pending_gt:
            self.score(labels, *self.pending_gt[lab], lab)
            self._used(lab)
        else:
            self.pending_pred.setdefault(lab, []).append(labels)
            self._bound(self.pending_pred)

    def add_ground_truth(self, stamp: int, array: np.ndarray | None, encoding: str, error: str | None = None) -> None:
        if not self.uses.get(stamp) or stamp in self.pending_gt:
            return  # not paired, or a repeated stamp
        if error:
            self.warnings.add("bad_labels", f"label at stamp {stamp}: {error}", self.uses.pop(stamp))
            self.pending_pred.pop(stamp, None)
            return
        for pred in self.pending_pred.pop(stamp, ()):
            self.score(pred, array, encoding, stamp)
            self.uses[stamp] -= 1
        if self.uses[stamp] > 0:
            self.pending_gt[stamp] = (array, encoding)
            self._bound(self.pending_gt)
        else:
            del self.uses[stamp]

    def _used(self, lab: int) -> None:
        self.uses[lab] -= 1
        if self.uses[lab] == 0:
            del self.uses[lab], self.pending_gt[lab]

    def _bound(self, pending: dict) -> None:
        if self.max_pending is not None and len(pending) > self.max_pending:
            del pending[next(iter(pending))]


def pair_recording(bag: str | Path, image_topic: str, label_topic: str, score, warn: WarningCounter, *,
                   tolerance_ns: int = 0, max_frames: int = 0, max_pending: int | None = None) -> StampMatcher:
    """Read the stamps of both topics (headers only) and build the :class:`StampMatcher` for them.

    Repeated stamps and labels without an image are counted in ``warn``. The caller decides what
    no pair at all means (``eval-bag``: an error, :func:`no_pairs_message`; replay: a warning).
    """
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
    if pairing.unmatched_labels and max_frames <= 0 and pairing.pairs:
        warn.add("unmatched_labels", f"{pairing.unmatched_labels} ground-truth labels have no camera "
                                     f"image within {tolerance_ns / 1e6:g} ms", pairing.unmatched_labels)
    return StampMatcher(pairing.pairs, score, warn, img_stamps, max_pending, len(lab_stamps), pairing.closest_ns)


def no_pairs_message(matcher: StampMatcher, image_topic: str, label_topic: str, tolerance_ms: float) -> str:
    closest = "-" if matcher.closest_ns is None else f"{matcher.closest_ns / 1e6:.3f} ms"
    return (f"no ground-truth stamp on '{label_topic}' matches an image stamp on '{image_topic}' "
            f"({matcher.label_count} labels, {matcher.image_count} images, closest pair {closest} apart, "
            f"tolerance {tolerance_ms:g} ms; see --stamp-tolerance)")


# -- eval-bag ------------------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """What :func:`evaluate_bag` measured."""

    report: dict
    confusion: ConfusionMatrix | None
    latencies: LatencyRecorder
    warnings: dict[str, int] = field(default_factory=dict)


@dataclass
class PredictionBag:
    """Where (and how) ``eval-bag`` writes its predictions: labels, colour, overlay per image."""

    path: str | Path
    storage: str = "mcap"
    namespace: str = "/segmentation"
    with_image: bool = False
    overwrite: bool = False

    def write(self, writer: BagWriter, item: BagImage, res: SegmentationResult) -> None:
        ns = self.namespace.rstrip("/")
        stamp, log_time, frame = item.stamp_ns, item.log_time_ns, item.frame_id
        if self.with_image:
            writer.write(item.topic, array_to_image(item.array, item.encoding, stamp, frame), log_time)
        lab_enc = "mono16" if res.labels.dtype == np.uint16 else "mono8"
        out = NODE_OUTPUT_QOS  # recorded as the node offers them
        writer.write(f"{ns}/labels", array_to_image(res.labels, lab_enc, stamp, frame), log_time, out)
        writer.write(f"{ns}/color", array_to_image(res.color, "rgb8", stamp, frame), log_time, out)
        writer.write(f"{ns}/overlay", array_to_image(res.overlay, res.overlay_encoding, stamp, frame), log_time, out)


class BagEvaluation:
    """``eval-bag`` in stages: :meth:`check`, :meth:`pair`, :meth:`segment`, :meth:`report`."""

    def __init__(self, pipeline: SegmentationPipeline, bag: str | Path, image_topic: str,
                 label_topic: str | None = None, *, ignore_index: int = 255, label_lut: np.ndarray | None = None,
                 stamp_tolerance_ms: float = 0.0, max_frames: int = 0, warmup: int = 1,
                 predictions: PredictionBag | None = None, strict: bool = False, progress: bool = True,
                 health: HealthProbe | None = None) -> None:
        self.pipeline, self.bag, self.image_topic, self.label_topic = pipeline, bag, image_topic, label_topic
        self.ignore_index, self.stamp_tolerance_ms = ignore_index, stamp_tolerance_ms
        self.max_frames, self.warmup, self.predictions, self.progress = max_frames, warmup, predictions, progress
        self.health = health  # perception-health statistics per frame (and shifted variants), or None
        self.warn = WarningCounter(strict, BagError)
        self.scorer = GroundTruthScorer(pipeline.num_classes, ignore_index, label_lut, self.warn) if label_topic else None
        self.latencies = LatencyRecorder()
        self.matcher: StampMatcher | None = None
        self.total = self.processed = 0
        self.wall_s = 0.0

    def run(self) -> Evaluation:
        self.check()
        self.pair()
        self.segment()
        return self.report()

    def check(self) -> None:
        """Options and topics, before anything is read."""
        if not (math.isfinite(self.stamp_tolerance_ms) and 0 <= self.stamp_tolerance_ms <= 3.6e6):
            raise ConfigError(f"stamp tolerance must be 0..3600000 ms, got {self.stamp_tolerance_ms}")
        topics = list_topics(self.bag)
        check_image_topic(topics, self.image_topic, self.bag, "image")
        if self.label_topic:
            check_image_topic(topics, self.label_topic, self.bag, "label")
            if self.label_topic == self.image_topic:
                raise ConfigError("--label-topic must differ from --image-topic")
        n_images = topics[self.image_topic].count
        self.total = min(n_images, self.max_frames) if self.max_frames > 0 else n_images
        if self.total == 0:
            raise BagError(f"image topic '{self.image_topic}' in bag '{self.bag}' has no messages")

    def pair(self) -> None:
        """First pass (stamps only): which image each ground-truth label scores."""
        if not self.label_topic:
            return
        self.matcher = pair_recording(
            self.bag, self.image_topic, self.label_topic, lambda *a: score_frame(self.scorer, *a), self.warn,
            tolerance_ns=int(round(self.stamp_tolerance_ms * 1e6)), max_frames=self.max_frames)
        if not self.matcher.pairs:
            raise BagError(no_pairs_message(self.matcher, self.image_topic, self.label_topic,
                                            self.stamp_tolerance_ms))

    def segment(self) -> None:
        """Second pass: segment (and time) every image, score it when its label is there."""
        pred = self.predictions
        writer_cm = BagWriter(pred.path, storage=pred.storage, overwrite=pred.overwrite, inputs=[self.bag],
                              tool="bisenet-ros eval-bag") if pred else nullcontext()
        t_start = time.perf_counter()
        with writer_cm as writer, progress_bar(total=self.total, unit="frame", desc="eval-bag",
                                               enabled=self.progress) as bar:
            topics = [self.image_topic] + ([self.label_topic] if self.label_topic else [])
            for item in read_image_topics(self.bag, topics):
                if item.topic == self.label_topic:
                    self.matcher.add_ground_truth(item.stamp_ns, item.array, item.encoding, item.error)
                elif self.processed < self.total:
                    self.processed += 1
                    bar.update(1)
                    self._segment_one(item, writer)
                elif not (self.matcher and self.matcher.waiting):
                    break  # otherwise: only waiting for ground truth of frames already processed
        self.wall_s = time.perf_counter() - t_start

    def _segment_one(self, item: BagImage, writer: BagWriter | None) -> None:
        if item.error:
            self.warn.add("bad_images", f"image at stamp {item.stamp_ns}: {item.error}")
            return
        outputs = (("color", "overlay") if writer else ()) + (("health",) if self.health else ())
        try:
            if self.warmup > 0:  # first-call costs (allocations, kernel selection) stay out of the figures
                for _ in range(self.warmup):
                    self.pipeline(item.array, item.encoding, outputs=outputs)
                self.warmup = 0
            t0 = time.perf_counter()
            res = self.pipeline(item.array, item.encoding, outputs=outputs)
        except BisenetError as exc:
            self.warn.add("bad_images", f"image at stamp {item.stamp_ns}: {exc}")
            return
        self.latencies.add({**res.timings, "total_ms": (time.perf_counter() - t0) * 1e3})
        if writer:
            self.predictions.write(writer, item, res)
        if self.health:
            self.health.add(self.pipeline, item, res.health)
        if self.matcher:
            self.matcher.add_prediction(item.stamp_ns, res.labels)

    def report(self) -> Evaluation:
        """The JSON-ready report; an error if nothing could be segmented or scored."""
        warn, scorer = self.warn, self.scorer
        if self.matcher and self.matcher.waiting:
            n = self.matcher.waiting
            warn.add("missing_labels", f"{n} paired ground-truth labels could not be read", n)
        if not self.latencies.samples:
            raise BagError(f"no camera image in '{self.bag}' could be segmented: {warn.first('no image')}")
        if scorer is not None and scorer.scored == 0:
            raise BagError(f"no frame of '{self.bag}' could be scored against ground truth: "
                           f"{warn.first('no frame paired')}")
        totals = self.latencies.samples["total_ms"]
        names = list(self.pipeline.preset.class_names)
        report: dict[str, Any] = {
            "tool": "eval-bag", "bag": str(self.bag), "image_topic": self.image_topic,
            "label_topic": self.label_topic, "model": dict(self.pipeline.info), "frames": self.processed,
            "timed_frames": len(totals), "labelled_frames": scorer.scored if scorer else 0,
            "fps": fps_from_latencies(totals), "fps_definition": FPS_DEFINITION, "wall_s": self.wall_s,
            "wall_fps": self.processed / self.wall_s if self.wall_s > 0 else None,
            "latency_ms": self.latencies.summary(), "ignore_index": self.ignore_index,
            "stamp_tolerance_ms": self.stamp_tolerance_ms, "class_names": names,
        }
        report.update(scorer.metrics(names) if scorer else {"miou": None, "per_class_iou": None,
                                                              "pixel_accuracy": None})
        report["warnings"] = dict(warn.counts)
        report["warning_messages"] = dict(warn.messages)
        if self.predictions:
            report["prediction_bag"] = str(self.predictions.path)
        if self.health:
            report["health"] = self.health.report()
        return Evaluation(report, scorer.confusion if scorer else None, self.latencies, dict(warn.counts))


def evaluate_bag(pipeline: SegmentationPipeline, bag: str | Path, image_topic: str, label_topic: str | None = None,
                 *, pred_bag: str | Path | None = None, pred_storage: str = "mcap",
                 pred_namespace: str = "/segmentation", pred_with_image: bool = False, overwrite: bool = False,
                 **options: Any) -> Evaluation:
    """Run the pipeline over a bag's camera images and score them against ground truth.

    ``options``: ``ignore_index``, ``label_lut``, ``stamp_tolerance_ms``, ``max_frames``,
    ``warmup``, ``strict``, ``progress``, ``health`` (see :class:`BagEvaluation`).
    """
    predictions = PredictionBag(pred_bag, pred_storage, pred_namespace, pred_with_image, overwrite) if pred_bag else None
    return BagEvaluation(pipeline, bag, image_topic, label_topic, predictions=predictions, **options).run()
