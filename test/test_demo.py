"""``make demo`` (``python -m bisenet_ros.tools.demo``): the shipped demo weights, the sample recording,
and a shortened demo through the same code path (real segmentation_node over real ROS 2)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from bisenet_ros.bags import list_topics
from bisenet_ros.checkpoint import read_sidecar, read_state_dict
from bisenet_ros.tools.demo import DEMO_WEIGHTS, IMAGE_TOPIC, INFO_TOPIC, LABEL_TOPIC, default_weights, main, write_recording
from bisenet_ros.models import build_model
from bisenet_ros.synthetic import CLASSES


def test_demo_weights_ship_with_a_sidecar_in_the_public_layout():
    weights = default_weights()
    assert weights.name == DEMO_WEIGHTS and weights.is_file()
    assert weights.stat().st_size < 15e6  # float16, a few MB
    side = read_sidecar(weights)
    assert side["arch"] == "bisenetv2" and side["num_classes"] == len(CLASSES)
    assert [c["name"] for c in side["dataset"]["classes"]] == list(CLASSES)
    assert side["training"]["val_miou"] >= 0.8
    state = read_state_dict(weights)
    ref = build_model("bisenetv2", len(CLASSES), aux_heads=True).state_dict()
    assert set(state) == set(ref)


def test_sample_recording_has_images_camera_info_and_labels(tmp_path):
    n, samples = write_recording(tmp_path / "bag", frames=5, fps=10.0, size=(96, 128), seed=1)
    topics = list_topics(tmp_path / "bag")
    assert n == 5 and len(samples) == 3
    assert {t: topics[t].count for t in (IMAGE_TOPIC, INFO_TOPIC, LABEL_TOPIC)} == {
        IMAGE_TOPIC: 5, INFO_TOPIC: 5, LABEL_TOPIC: 5}
    assert topics[INFO_TOPIC].msgtype == "sensor_msgs/msg/CameraInfo"


def test_missing_weights_is_a_one_line_error(tmp_path, capsys):
    assert main(["--weights", str(tmp_path / "none.pth"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "demo weights not found" in err[0]


@pytest.mark.ros
def test_short_demo_end_to_end(ros_env, tmp_path, capsys):
    out = tmp_path / "demo_output"
    assert main(["--out", str(out), "--frames", "20", "--min-miou", "0.75"]) == 0
    text = capsys.readouterr().out
    assert "mIoU" in text and "demo finished" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames_published"] == 20 and metrics["frames_received"] >= 1
    assert metrics["miou"] >= 0.75
    assert metrics["fps"] > 0 or metrics["frames_received"] < 2
    assert set(metrics["per_class_iou"]) == set(CLASSES)
    assert metrics["model"]["num_classes"] == len(CLASSES)  # the node read the sidecar
    pngs = sorted((out / "overlays").glob("overlay_*.png"))
    assert len(pngs) == metrics["overlays"]["frames"] >= 1
    assert (out / "overlays" / "overlay.mp4").stat().st_size > 0
    montage = cv2.imread(str(out / "montage.png"))
    assert montage.shape == (3 * 240, 3 * 320, 3) and np.ptp(montage) > 0
