"""Outputs users ask for: class remapping/merging and the confidence threshold ("unknown" label),
applied by the one pipeline to labels, colour and overlay, and understood by evaluation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bisenet_ros import cli
from bisenet_ros.data.bags import write_image_bag
from bisenet_ros.data.datasets import load_preset
from bisenet_ros.errors import ConfigError
from bisenet_ros.evaluation.metrics import ConfusionMatrix
from bisenet_ros.pipeline import build_pipeline
from bisenet_ros.data.remap import ground_truth_lut, load_remap, resolve_remap
from bisenet_ros.data.synthetic_scenes import generate_scene
from bisenet_ros.tools.demo import default_weights

WEIGHTS = default_weights()


@pytest.fixture(scope="module")
def scene():
    return generate_scene(3, (96, 128))


@pytest.fixture(scope="module")
def plain(scene):
    pipe = build_pipeline(weights=WEIGHTS, input_size=None, device="cpu", backend="torch")
    return pipe, pipe(scene[0], "rgb8", outputs=("color", "overlay", "confidence"))


def test_remap_merges_classes_in_labels_colour_overlay_and_legend(scene, plain):
    base_pipe, base = plain
    pipe = build_pipeline(weights=WEIGHTS, input_size=None, device="cpu", backend="torch",
                          class_remap="synthetic_street_driving")
    remap = load_remap("synthetic_street_driving", base_pipe.preset)
    assert pipe.preset.class_names == ("drivable", "obstacle", "other") and pipe.num_classes == 3
    assert pipe.source_preset.class_names == base_pipe.preset.class_names  # normalisation of the model
    res = pipe(scene[0], "rgb8", outputs=("color", "overlay"))
    np.testing.assert_array_equal(res.labels, remap.lut[base.labels])
    np.testing.assert_array_equal(res.color, pipe.preset.palette[res.labels])
    road = base_pipe.preset.class_names.index("road")
    assert set(np.unique(res.labels[base.labels == road])) == {0}
    assert res.overlay.shape == scene[0].shape


def test_confidence_threshold_sets_unknown_black_and_untinted(scene, plain):
    base_pipe, base = plain
    pipe = build_pipeline(weights=WEIGHTS, input_size=None, device="cpu", backend="torch", confidence_threshold=0.7)
    res = pipe(scene[0], "rgb8", outputs=("color", "overlay", "confidence"))
    prob = base.confidence.astype(np.float64) / 255.0
    unknown = res.labels == 255
    assert pipe.unknown_label == 255 and 0 < unknown.mean() < 1
    # the threshold is on the same max softmax the confidence output publishes (uint8-rounded there)
    assert (prob[unknown] <= 0.7 + 1 / 255).all() and (prob[~unknown] >= 0.7 - 1 / 255).all()
    np.testing.assert_array_equal(res.labels[~unknown], base.labels[~unknown])
    assert (res.color[unknown] == 0).all()
    np.testing.assert_array_equal(res.overlay[unknown], scene[0][unknown])  # the camera image, untinted
    np.testing.assert_array_equal(res.overlay[~unknown], base.overlay[~unknown])
    pipe.confidence_threshold = 0.0  # live: off again
    np.testing.assert_array_equal(pipe(scene[0], "rgb8", outputs=()).labels, base.labels)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        pipe.confidence_threshold = 1.0


def test_remap_files_are_checked_against_the_model_classes():
    city = load_preset("cityscapes")
    remap = load_remap("cityscapes_driving", city)
    assert remap.preset.class_names == ("drivable", "obstacle", "other")
    assert remap.lut[city.class_names.index("road")] == 0 and remap.lut[city.class_names.index("car")] == 1
    assert remap.lut[city.class_names.index("sky")] == 2  # rest
    with pytest.raises(ConfigError, match="unknown class remap 'nope'"):
        load_remap("nope", city)
    with pytest.raises(ConfigError, match="'sidewalk' is in two output classes"):
        resolve_remap("x", [{"name": "a", "from": ["sidewalk"]}, {"name": "b", "from": ["sidewalk"]}], city, "x")
    with pytest.raises(ConfigError, match="in no output class"):
        resolve_remap("x", [{"name": "a", "from": ["road"]}], city, "x")
    with pytest.raises(ConfigError, match="'lane' is not a class of the model"):
        resolve_remap("x", [{"name": "a", "from": ["lane"]}, {"name": "b", "from": "rest"}], city, "x")
    with pytest.raises(ConfigError, match="is not a class of the model"):
        load_remap("cityscapes_driving", load_preset("ade20k"))


def test_ground_truth_is_remapped_and_unknown_predictions_are_misses():
    city = load_preset("cityscapes")
    remap = load_remap("cityscapes_driving", city)
    lut = ground_truth_lut(remap, None, 255)
    assert lut[0] == 0 and lut[13] == 1 and lut[10] == 2 and lut[255] == 255 and lut[300] == 300
    labelids = city.label_lut("labelIds")
    lut = ground_truth_lut(remap, labelids, 255)
    assert lut[7] == 0 and lut[0] == 255  # labelIds road -> trainId 0 -> drivable; unlabelled stays ignored
    cm = ConfusionMatrix(2, 255, unknown_index=255)
    cm.update(np.array([0, 1, 255, 255]), np.array([0, 1, 1, 255]))
    m = cm.compute(["a", "b"])
    assert m["unknown_pixels"] == 1 and m["per_class_iou"] == {"a": 1.0, "b": 0.5}
    assert m["pixel_accuracy"] == pytest.approx(2 / 3)


def test_eval_bag_scores_the_remapped_thresholded_output(tmp_path, capsys):
    frames = [generate_scene(s, (96, 128)) for s in (5, 6)]
    write_image_bag(tmp_path / "bag", frames, start_ns=10 ** 18)
    out = tmp_path / "out"
    rc = cli.main(["eval-bag", str(tmp_path / "bag"), "--label-topic", "/camera/labels", "--weights", str(WEIGHTS),
                   "--device", "cpu", "--backend", "torch", "--class-remap", "synthetic_street_driving",
                   "--confidence-threshold", "0.6", "--out", str(out), "--no-progress"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["per_class_iou"]) == ["drivable", "obstacle", "other"]
    pipe = build_pipeline(weights=WEIGHTS, input_size=None, device="cpu", backend="torch",
                          class_remap="synthetic_street_driving", confidence_threshold=0.6)
    cm = ConfusionMatrix(3, 255, unknown_index=255)
    for img, gt in frames:
        cm.update(pipe(img, "rgb8", outputs=()).labels, pipe.remap.lut[gt])
    assert metrics["miou"] == pytest.approx(cm.compute()["miou"], abs=1e-9)
    assert metrics["unknown_pixels"] == cm.compute()["unknown_pixels"] > 0
    assert metrics["model"]["class_remap"] == "synthetic_street_driving"


def test_unknown_pixels_give_no_points_and_no_mask():
    from bisenet_ros.data.pointcloud import CloudOptions, PointCloudBuilder, class_mask

    labels = np.array([[0, 1], [255, 2]], np.uint8)
    depth = np.full((2, 2), 2.0, np.float32)
    palette = np.array([[1, 1, 1], [2, 2, 2], [3, 3, 3]], np.uint8)
    cloud = PointCloudBuilder().build(depth, (1.0, 1.0, 0.5, 0.5), labels, palette, CloudOptions())
    assert sorted(cloud["label"].tolist()) == [0, 1, 2]
    assert class_mask(labels, np.array([True, True, True]))[1, 0] == 0
