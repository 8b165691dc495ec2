"""Segmentation accuracy and latency statistics (ROS-free; used by eval-bag, replay and training).

Accuracy is accumulated in one confusion matrix over all frames (rows: ground truth, columns:
prediction), the way Cityscapes and the public BiSeNet evaluation do it::

    cm = ConfusionMatrix(num_classes=19, ignore_index=255)
    for pred, gt in frames:
        cm.update(pred, gt)
    cm.compute()["miou"]

Definitions (TP/FP/FN per class from the matrix; ignore-index pixels excluded everywhere):

- IoU_c = TP / (TP + FP + FN); classes whose union TP + FP + FN is empty have no IoU (None);
- mIoU = mean IoU over classes with a non-empty union;
- pixel accuracy = sum TP / labelled pixels;
- mean class accuracy = mean of TP / (TP + FN) over classes present in the ground truth;
- frequency-weighted IoU = sum over classes of (GT pixels of c / labelled pixels) * IoU_c.

Ground-truth values that are neither a class id nor the ignore index are not scored; they are
counted in :attr:`ConfusionMatrix.out_of_range` so reports can say so.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..errors import BisenetError

#: latency percentiles reported everywhere (p50 is the median)
PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)


class MetricsError(BisenetError):
    """Predictions and ground truth cannot be compared as given."""


class ConfusionMatrix:
    """Accumulates a ``num_classes x num_classes`` confusion matrix (int64) over frames."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255, unknown_index: int | None = None) -> None:
        if num_classes < 1:
            raise MetricsError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        # predictions of this value ("unknown": below the confidence threshold) are misses of their
        # ground-truth class: counted in ``unknown`` per class, a false positive of no class
        self.unknown_index = unknown_index
        self.unknown = np.zeros(self.num_classes, dtype=np.int64)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.frames = 0
        self.out_of_range = 0  # GT pixels with a value that is neither a class nor ignore
        self.out_of_range_values: set[int] = set()

    def reset(self) -> None:
        self.matrix[:] = 0
        self.unknown[:] = 0
        self.frames = 0
        self.out_of_range = 0
        self.out_of_range_values.clear()

    def update(self, pred: np.ndarray, gt: np.ndarray) -> int:
        """Add one frame (or a batch of the same shape). Returns its out-of-range GT pixel count.

        ``pred`` holds class ids (any integer dtype; numpy arrays or CPU/GPU torch tensors),
        ``gt`` class ids or the ignore index. Shapes must match.
        """
        pred = _as_numpy(pred)
        gt = _as_numpy(gt)
        if pred.shape != gt.shape:
            raise MetricsError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
        p = pred.reshape(-1).astype(np.int64, copy=False)
        g = gt.reshape(-1).astype(np.int64, copy=False)
        unknown = p == self.unknown_index if self.unknown_index is not None else np.zeros(p.shape, bool)
        p = np.where(unknown, 0, p) if unknown.any() else p
        if p.size and (p.min() < 0 or p.max() >= self.num_classes):
            raise MetricsError(f"prediction has class ids outside 0..{self.num_classes - 1} "
                               f"(min {p.min()}, max {p.max()})")
        in_range = (g >= 0) & (g < self.num_classes)
        ignored = g == self.ignore_index if self.ignore_index is not None else np.zeros_like(in_range)
        valid = in_range & ~ignored
        bad = ~in_range & ~ignored
        if unknown.any():
            self.unknown += np.bincount(g[valid & unknown], minlength=self.num_classes)
            valid &= ~unknown
        n_bad = int(bad.sum())
        if n_bad:
            self.out_of_range += n_bad
            if len(self.out_of_range_values) < 32:
                self.out_of_range_values.update(int(v) for v in np.unique(g[bad])[:32])
        self.matrix += np.bincount(
            g[valid] * self.num_classes + p[valid], minlength=self.num_classes ** 2
        ).reshape(self.num_classes, self.num_classes)
        self.frames += 1
        return n_bad

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix (e.g. from a worker) into this one."""
        if other.num_classes != self.num_classes:
            raise MetricsError(f"cannot merge {other.num_classes}-class into {self.num_classes}-class matrix")
        self.matrix += other.matrix
        self.unknown += other.unknown
        self.frames += other.frames
        self.out_of_range += other.out_of_range
        self.out_of_range_values |= other.out_of_range_values
        return self

    def compute(self, class_names: Sequence[str] | None = None) -> dict:
        """All metrics as plain Python (JSON-ready). Values without data are None, not NaN."""
        out = metrics_from_confusion(self.matrix, class_names, self.unknown)
        out["frames"] = self.frames
        out["out_of_range_pixels"] = self.out_of_range
        return out

    @property
    def miou(self) -> float | None:
        return self.compute()["miou"]


def metrics_from_confusion(matrix: np.ndarray, class_names: Sequence[str] | None = None,
                           unknown: np.ndarray | None = None) -> dict:
    """Metrics of a confusion matrix (rows GT, columns prediction); see the module docstring.

    Returns ``miou``, ``pixel_accuracy``, ``mean_class_accuracy``, ``fwiou`` (None when nothing
    was labelled), ``per_class_iou``/``per_class_accuracy`` (lists, None for classes without
    data; name -> value dicts when ``class_names`` is given), ``gt_pixels``, ``pred_pixels``,
    ``labelled_pixels``, ``valid_classes``. ``unknown``: per ground-truth class, pixels predicted
    "unknown" (below the confidence threshold): misses of that class, no class's false positive
    (``unknown_pixels``).
    """
    cm = np.asarray(matrix, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise MetricsError(f"confusion matrix must be square, got shape {cm.shape}")
    n = cm.shape[0]
    if class_names is not None and len(class_names) != n:
        raise MetricsError(f"{len(class_names)} class names for a {n}-class matrix")
    tp = np.diag(cm).astype(np.float64)
    unk = np.zeros(n) if unknown is None else np.asarray(unknown, dtype=np.float64)
    gt = cm.sum(axis=1).astype(np.float64) + unk
    pred = cm.sum(axis=0).astype(np.float64)
    union = gt + pred - tp
    total = float(gt.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    has_union = union > 0
    miou = float(iou[has_union].mean()) if has_union.any() else None
    pixel_acc = float(tp.sum() / total) if total > 0 else None
    mean_acc = float(np.nanmean(acc)) if (gt > 0).any() else None
    fwiou = float(np.sum((gt[has_union] / total) * iou[has_union])) if total > 0 else None

    def listed(values: np.ndarray):
        vals = [None if math.isnan(v) else float(v) for v in values]
        return dict(zip(class_names, vals)) if class_names is not None else vals

    return {
        "miou": miou,
        "pixel_accuracy": pixel_acc,
        "mean_class_accuracy": mean_acc,
        "fwiou": fwiou,
        "per_class_iou": listed(iou),
        "per_class_accuracy": listed(acc),
        "gt_pixels": [int(v) for v in gt],
        "pred_pixels": [int(v) for v in pred],
        "labelled_pixels": int(total),
        "valid_classes": int(has_union.sum()),
        "unknown_pixels": int(unk.sum()),
    }


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):  # torch tensor
        return x.detach().cpu().numpy()
    return np.asarray(x)


# -- latency --------------------------------------------------------------------------------------
def latency_stats(values_ms: Iterable[float], percentiles: Sequence[int] = PERCENTILES) -> dict:
    """``count``, ``mean``, ``std``, ``min``, ``p50``..``p99``, ``max`` of milliseconds (None if empty)."""
    v = np.asarray([float(x) for x in values_ms], dtype=np.float64)
    keys = ["mean", "std", "min"] + [f"p{p}" for p in percentiles] + ["max"]
    if v.size == 0:
        return {"count": 0, **{k: None for k in keys}}
    out = {"count": int(v.size), "mean": float(v.mean()), "std": float(v.std()), "min": float(v.min())}
    for p, val in zip(percentiles, np.percentile(v, list(percentiles))):
        out[f"p{p}"] = float(val)
    out["max"] = float(v.max())
    return out


class LatencyRecorder:
    """Per-stage latency samples (milliseconds) and their summary.

    >>> rec = LatencyRecorder()
    >>> rec.add({"inference_ms": 12.0, "total_ms": 15.0})
    >>> rec.summary()["total_ms"]["p50"]
    15.0
    """

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    def add(self, timings: Mapping[str, float]) -> None:
        for stage, ms in timings.items():
            self.samples.setdefault(stage, []).append(float(ms))

    def __len__(self) -> int:
        return max((len(v) for v in self.samples.values()), default=0)

    def summary(self) -> dict[str, dict]:
        return {stage: latency_stats(vals) for stage, vals in self.samples.items()}


def fps_from_latencies(total_ms: Sequence[float]) -> float | None:
    """Frames per second a sequential loop of these per-frame times achieves."""
    s = float(np.sum(total_ms)) if len(total_ms) else 0.0
    return len(total_ms) * 1000.0 / s if s > 0 else None


# -- scoring frames with checks (shared by eval-bag and replay) -----------------------------------
class WarningCounter:
    """Counted warnings by kind, with the first message of each; ``strict`` raises instead."""

    def __init__(self, strict: bool = False, error: type[BisenetError] = MetricsError) -> None:
        self.strict = strict
        self.error = error
        self.counts: dict[str, int] = {}
        self.messages: dict[str, str] = {}

    def add(self, kind: str, message: str, count: int = 1) -> None:
        if self.strict:
            raise self.error(message)
        self.counts[kind] = self.counts.get(kind, 0) + count
        self.messages.setdefault(kind, message)

    def first(self, default: str = "") -> str:
        return next(iter(self.messages.values()), default)


class GroundTruthScorer:
    """Scores predicted label maps against ground-truth label images into one confusion matrix.

    Ground truth that cannot be scored is counted in ``warnings`` and skipped, never guessed:
    a colour image (``bad_labels``), a size other than the prediction's (``size_mismatch``);
    values that are neither class ids nor the ignore index are left out and counted
    (``out_of_range_pixels``). ``label_lut`` maps raw values to class ids first.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, label_lut: np.ndarray | None = None,
                 warnings: WarningCounter | None = None) -> None:
        from ..options import unknown_label

        # a prediction of the unknown label (confidence threshold) is a miss, never a class
        self.confusion = ConfusionMatrix(num_classes, ignore_index, unknown_index=unknown_label(num_classes))
        self.label_lut = label_lut
        self.warnings = warnings or WarningCounter()
        self.scored = 0

    def score(self, pred: np.ndarray, gt: np.ndarray, gt_encoding: str = "mono8", where: str = "") -> bool:
        """Add one frame; False (and a counted warning) if it could not be scored."""
        at = f" ({where})" if where else ""
        if gt_encoding not in ("mono8", "mono16") or gt.ndim != 2:
            self.warnings.add("bad_labels", f"ground truth{at} is {gt_encoding}; it must be "
                                            "mono8/mono16/16UC1 class ids")
            return False
        if gt.shape != pred.shape:
            self.warnings.add("size_mismatch", f"label {gt.shape[1]}x{gt.shape[0]} and prediction "
                                               f"{pred.shape[1]}x{pred.shape[0]} differ in size{at}; "
                                               "frame not scored")
            return False
        if self.label_lut is not None:
            gt = self.label_lut[gt]
        bad = self.confusion.update(pred, gt)
        if bad:
            self.warnings.add("out_of_range_pixels", self.out_of_range_message(), bad)
        self.scored += 1
        return True

    def out_of_range_message(self) -> str:
        cm = self.confusion
        vals = sorted(cm.out_of_range_values)
        shown = str(vals[:8])[:-1] + (", ...]" if len(vals) > 8 else "]")
        return (f"ground-truth values {shown} are neither class ids 0..{cm.num_classes - 1} nor the "
                f"ignore index {cm.ignore_index}; those pixels are not scored (see --label-map)")

    def finish(self) -> None:
        """Update the out-of-range message with every value seen (not just the first frame's)."""
        if self.confusion.out_of_range and "out_of_range_pixels" in self.warnings.messages:
            self.warnings.messages["out_of_range_pixels"] = self.out_of_range_message()

    def metrics(self, class_names: Sequence[str] | None = None) -> dict:
        """Accuracy keys for a report (``miou``, ``per_class_iou``, ..., ``confusion_matrix``)."""
        self.finish()
        m = self.confusion.compute(class_names)
        keys = ("miou", "per_class_iou", "pixel_accuracy", "mean_class_accuracy", "fwiou",
                "per_class_accuracy", "valid_classes", "labelled_pixels", "gt_pixels", "pred_pixels", "unknown_pixels")
        out = {k: m[k] for k in keys}
        out["confusion_matrix"] = self.confusion.matrix.tolist()
        return out
