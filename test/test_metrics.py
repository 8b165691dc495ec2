"""Confusion-matrix metrics against a hand-computed case and an independent per-class implementation."""
from __future__ import annotations

import numpy as np
import pytest

from bisenet_ros.evaluation.metrics import (
    ConfusionMatrix,
    LatencyRecorder,
    MetricsError,
    fps_from_latencies,
    latency_stats,
    metrics_from_confusion,
)

# 3 classes, 255 = ignore. 4x4 frame, worked out by hand below.
GT = np.array([[0, 0, 1, 1],
               [0, 0, 1, 1],
               [2, 2, 255, 255],
               [2, 2, 1, 1]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1],
                 [0, 0, 1, 2],
                 [2, 0, 0, 1],
                 [2, 2, 1, 1]], dtype=np.uint8)
# labelled pixels: 14 (2 ignored). Rows GT, columns prediction:
#   GT 0 (4 px): pred 0,1,0,0 -> [3, 1, 0]
#   GT 1 (6 px): pred 1,1,1,2,1,1 -> [0, 5, 1]
#   GT 2 (4 px): pred 2,0,2,2 -> [1, 0, 3]
HAND_CM = np.array([[3, 1, 0], [0, 5, 1], [1, 0, 3]])
# IoU: c0 3/(4+4-3)=3/5, c1 5/(6+6-5)=5/7, c2 3/(4+4-3)=3/5
HAND_IOU = [3 / 5, 5 / 7, 3 / 5]


def test_hand_computed_case():
    cm = ConfusionMatrix(3, ignore_index=255)
    assert cm.update(PRED, GT) == 0
    np.testing.assert_array_equal(cm.matrix, HAND_CM)
    m = cm.compute(["a", "b", "c"])
    assert m["per_class_iou"] == pytest.approx({"a": 0.6, "b": 5 / 7, "c": 0.6})
    assert m["miou"] == pytest.approx(sum(HAND_IOU) / 3)
    assert m["pixel_accuracy"] == pytest.approx(11 / 14)
    assert m["mean_class_accuracy"] == pytest.approx((3 / 4 + 5 / 6 + 3 / 4) / 3)
    assert m["fwiou"] == pytest.approx(4 / 14 * 0.6 + 6 / 14 * 5 / 7 + 4 / 14 * 0.6)
    assert m["labelled_pixels"] == 14 and m["frames"] == 1 and m["valid_classes"] == 3


def test_classes_with_empty_union_are_left_out_of_miou():
    # class 3 never appears in GT or prediction: no IoU; class 2 is predicted but absent: IoU 0
    gt = np.array([[0, 0, 1, 1]], dtype=np.uint8)
    pred = np.array([[0, 2, 1, 1]], dtype=np.uint8)
    cm = ConfusionMatrix(4)
    cm.update(pred, gt)
    m = cm.compute()
    assert m["per_class_iou"] == [0.5, 1.0, 0.0, None]
    assert m["miou"] == pytest.approx(0.5)
    assert m["valid_classes"] == 3
    assert m["per_class_accuracy"] == [0.5, 1.0, None, None]
    assert m["mean_class_accuracy"] == pytest.approx(0.75)


def test_out_of_range_ground_truth_is_counted_not_scored():
    cm = ConfusionMatrix(3, ignore_index=255)
    gt = np.array([[0, 7, 7, 255]], dtype=np.uint8)
    pred = np.array([[0, 1, 2, 0]], dtype=np.uint8)
    assert cm.update(pred, gt) == 2
    assert cm.out_of_range == 2 and cm.out_of_range_values == {7}
    assert cm.matrix.sum() == 1
    assert cm.compute()["miou"] == 1.0


def test_ignore_index_inside_class_range_is_excluded():
    cm = ConfusionMatrix(3, ignore_index=0)
    cm.update(np.array([1, 1, 2]), np.array([0, 1, 2]))
    assert cm.matrix[0].sum() == 0 and cm.compute()["pixel_accuracy"] == 1.0


def test_bad_inputs_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(MetricsError, match="differ in shape"):
        cm.update(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))
    with pytest.raises(MetricsError, match="outside 0..2"):
        cm.update(np.full((2, 2), 3, np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(MetricsError):
        ConfusionMatrix(0)


def test_nothing_labelled_gives_none_not_nan():
    cm = ConfusionMatrix(2)
    cm.update(np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8))
    m = cm.compute()
    assert m["miou"] is None and m["pixel_accuracy"] is None and m["per_class_iou"] == [None, None]


def _independent_miou(preds, gts, n, ignore):
    """Per-class set counting, pixel masks over all frames (no confusion matrix)."""
    ious = []
    for c in range(n):
        inter = union = 0
        for p, g in zip(preds, gts):
            keep = (g != ignore) & (g < n)
            inter += np.count_nonzero((p == c) & (g == c) & keep)
            union += np.count_nonzero(((p == c) | (g == c)) & keep)
        if union:
            ious.append(inter / union)
    return float(np.mean(ious))


def test_matches_independent_implementation_over_many_frames():
    rng = np.random.default_rng(1)
    n = 6
    cm = ConfusionMatrix(n, ignore_index=255)
    preds, gts = [], []
    for _ in range(5):
        g = rng.integers(0, n - 1, (17, 23)).astype(np.uint8)  # class 5 never in GT
        g[rng.random(g.shape) < 0.1] = 255
        p = np.where(rng.random(g.shape) < 0.7, g, rng.integers(0, n - 2, g.shape)).astype(np.uint8)
        p[g == 255] = rng.integers(0, n - 1)
        cm.update(p, g)
        preds.append(p)
        gts.append(g)
    assert cm.compute()["miou"] == pytest.approx(_independent_miou(preds, gts, n, 255), abs=1e-12)
    # merge of two halves equals the whole
    a, b = ConfusionMatrix(n), ConfusionMatrix(n)
    for i, (p, g) in enumerate(zip(preds, gts)):
        (a if i % 2 else b).update(p, g)
    np.testing.assert_array_equal(a.merge(b).matrix, cm.matrix)


def test_torch_tensors_accepted():
    torch = pytest.importorskip("torch")
    cm = ConfusionMatrix(3)
    cm.update(torch.from_numpy(PRED.astype(np.int64)), torch.from_numpy(GT))
    np.testing.assert_array_equal(cm.matrix, HAND_CM)


def test_metrics_from_confusion_validates():
    with pytest.raises(MetricsError, match="square"):
        metrics_from_confusion(np.zeros((2, 3)))
    with pytest.raises(MetricsError, match="class names"):
        metrics_from_confusion(np.zeros((2, 2)), ["x"])


def test_latency_stats_and_recorder():
    s = latency_stats([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["count"] == 5 and s["p50"] == 3.0 and s["min"] == 1.0 and s["max"] == 100.0
    assert s["mean"] == pytest.approx(22.0)
    assert s["p90"] == pytest.approx(4 + 0.6 * 96)  # linear interpolation between 4 and 100
    assert latency_stats([])["p50"] is None
    rec = LatencyRecorder()
    rec.add({"inference_ms": 10.0, "total_ms": 20.0})
    rec.add({"inference_ms": 30.0, "total_ms": 40.0})
    assert len(rec) == 2
    assert rec.summary()["inference_ms"]["p50"] == 20.0
    assert fps_from_latencies([20.0, 30.0]) == pytest.approx(40.0)
    assert fps_from_latencies([]) is None
