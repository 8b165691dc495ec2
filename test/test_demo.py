"""``make demo`` (``python -m bisenet_ros.tools.demo``): the shipped demo weights, the sample recording,
and a shortened demo through the same code path (real segmentation_node over real ROS 2)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from bisenet_ros.data.bags import list_topics, open_bag
from bisenet_ros.models.checkpoint import read_sidecar, read_state_dict
from bisenet_ros.tools.demo import DEMO_WEIGHTS, IMAGE_TOPIC, INFO_TOPIC, LABEL_TOPIC, default_weights, main, write_recording
from bisenet_ros.models import build_model
from bisenet_ros.data.synthetic_scenes import CLASSES, camera_matrix


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
    with open_bag(tmp_path / "bag") as reader:  # the renderer's calibration, not an invented one
        conns = [c for c in reader.connections if c.topic == INFO_TOPIC]
        info = next(reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections=conns))
    np.testing.assert_allclose(info.k, camera_matrix((96, 128)).reshape(-1))


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
    assert metrics["overlays"]["video_codec"] == "h264"  # plays in browsers (PyAV, requirements.txt)
    cap = cv2.VideoCapture(str(out / "overlays" / "overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode() in ("avc1", "h264", "H264")
    montage = cv2.imread(str(out / "montage.png"))
    # titles strip + three (caption + 240-row frame) rows + legend; three 320-wide columns
    assert montage.shape[1] == 3 * 320 and montage.shape[0] > 3 * 240 + 4 * 26 and np.ptp(montage) > 0
    assert len(metrics["montage_miou"]) == 3 and all(0 <= m <= 1 for m in metrics["montage_miou"])


def test_montage_explains_itself(tmp_path):
    """Column titles, a caption with each row's mIoU and a legend with one swatch per class: the
    picture's white strips carry text (dark pixels) and the legend every palette colour."""
    from bisenet_ros.tools.demo import write_montage

    _, samples = write_recording(tmp_path / "bag", frames=3, fps=10.0, size=(96, 128), seed=1)
    path = tmp_path / "montage.png"
    mious = write_montage(path, samples, default_weights(), "cpu")
    img = cv2.imread(str(path))[..., ::-1]
    assert img.shape[1] == 3 * 128
    titles, legend = img[:26], img[26 + 3 * (26 + 96):]
    assert (titles < 100).any() and (titles == 255).mean() > 0.6  # black text on white
    for start in range(26, 26 + 3 * (26 + 96), 26 + 96):
        caption = img[start:start + 26]
        assert (caption < 100).any() and (caption == 255).mean() > 0.6
    palette = read_sidecar(default_weights())["dataset"]["classes"]
    for cls in palette:
        assert (legend == np.array(cls["color"], np.uint8)).all(axis=-1).sum() >= 100, cls["name"]
    assert len(mious) == 3 and all(m is None or 0 <= m <= 1 for m in mious)


def test_demo_keeps_the_foxglove_view_open_until_ctrl_c(ros_env, tmp_path):
    """``make demo FOXGLOVE=1`` (``--foxglove PORT``): after the demo a node serves the Foxglove view,
    fed the recording in a loop; a protocol client receives overlays; Ctrl-C ends it cleanly."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    pytest.importorskip("foxglove")
    from foxglove_client import FoxgloveClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "demo.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bisenet_ros.tools.demo", "--out", str(tmp_path / "demo"),
                                 "--frames", "10", "--foxglove", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=ros_env, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while "[view]" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "[view]" in log.read_text() and f"ws://127.0.0.1:{port}" in log.read_text(), log.read_text()
        fox = FoxgloveClient("127.0.0.1", port, connect_timeout=120)
        try:
            sub = fox.subscribe("/segmentation/overlay/compressed", timeout=120)
            _, overlay = fox.next_message(sub, timeout=120)
            assert overlay.format == "jpeg" and cv2.imdecode(np.frombuffer(overlay.data, np.uint8),
                                                             cv2.IMREAD_COLOR).shape == (240, 320, 3)
        finally:
            fox.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()
