"""Live replay: a bag published to segmentation_node running in another process."""
from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pytest

from bisenet_ros import cli
from bisenet_ros.data.bags import write_image_bag
from bisenet_ros.pipeline import build_pipeline
from bisenet_ros.ros.live_replay import NodeProcess, ReplayError, node_command, replay_bag
from bisenet_ros.evaluation.recording import evaluate_bag

N = 8
T0 = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def labelled_bag(tmp_path_factory):
    rng = np.random.default_rng(5)
    frames = []
    for i in range(N):
        img = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (5, 5), 2)
        gt = rng.integers(0, 5, (48, 64), dtype=np.uint8)
        gt[:, :8] = 255
        frames.append((img, gt if i % 4 else None))  # frames 0 and 4 without ground truth
    path = tmp_path_factory.mktemp("replay") / "bag"
    write_image_bag(path, frames, fps=10.0, start_ns=T0, storage="sqlite3")
    return path


def test_node_command():
    cmd = node_command({"weights": "/m.pth", "publish_color": False, "mean": [0.1, 0.2, 0.3]}, "/cam/img")
    assert cmd[:3] == [sys.executable, "-m", "bisenet_ros.ros.node"]
    assert cmd[3:] == ["--ros-args", "-p", "weights:=/m.pth", "-p", "publish_color:=false",
                       "-p", "mean:=[0.1,0.2,0.3]", "-r", "image:=/cam/img"]
    cmd = node_command(["--ros-args", "-p", "weights:=x"], "/cam", node_namespace="/robot/seg")
    assert cmd[3:] == ["--ros-args", "-p", "weights:=x", "-r", "image:=/cam", "-r", "__node:=seg",
                       "-r", "__ns:=/robot"]


def test_bad_rate_and_topic(labelled_bag):
    with pytest.raises(ReplayError, match="rate must be positive"):
        replay_bag(labelled_bag, rate=0)
    with pytest.raises(Exception, match=r"'/nope' is not in bag .*/camera/image_raw"):
        replay_bag(labelled_bag, image_topic="/nope")


@pytest.mark.ros
def test_replay_starts_node_and_scores_labelled_frames(ros_env, labelled_bag, tiny_checkpoints, tmp_path):
    weights = str(tiny_checkpoints["bisenetv2"])
    report = replay_bag(labelled_bag, image_topic="/camera/image_raw", label_topic="/camera/labels",
                        node_args={"weights": weights, "device": "cpu"}, timeout_s=90,
                        save_overlays=tmp_path / "ov")
    assert report["frames_published"] == N
    assert report["frames_received"] + report["dropped"] == N
    assert report["frames_received"] == N, report  # 10 fps of 64x48 frames: the node keeps up
    assert report["labelled_frames"] == N - 2 and report["node_exit_code"] == 0
    assert report["latency_ms"]["end_to_end_ms"]["count"] == N
    assert report["latency_ms"]["node_inference_ms"]["count"] == N
    assert 0 < report["input_fps"] < 20 and report["fps"] > 0
    assert report["class_names"] == ["road", "sidewalk", "building", "wall", "fence"]
    # the node ran the same pipeline as eval-bag: same figures on the same frames
    offline = evaluate_bag(build_pipeline(weights=weights, device="cpu"), labelled_bag, "/camera/image_raw",
                           "/camera/labels", progress=False).report
    assert report["miou"] == pytest.approx(offline["miou"], abs=1e-9)
    assert report["confusion_matrix"] == offline["confusion_matrix"]
    pngs = sorted((tmp_path / "ov").glob("overlay_*.png"))
    assert len(pngs) == N and cv2.imread(str(pngs[0])).shape == (48, 64, 3)
    assert (tmp_path / "ov" / "overlay.mp4").stat().st_size > 0


@pytest.mark.ros
def test_replay_against_a_running_node_via_cli(ros_env, labelled_bag, tiny_checkpoints, tmp_path, capsys):
    weights = str(tiny_checkpoints["bisenetv1"])
    node = NodeProcess(node_command({"weights": weights, "device": "cpu"}, "/ext/image", "/ext/seg"))
    try:
        rc = cli.main(["replay", str(labelled_bag), "--publish-topic", "/ext/image", "--node-namespace", "/ext/seg",
                       "--label-topic", "/camera/labels", "--rate", "2", "--max-frames", "5", "--restamp",
                       "--timeout", "90", "--out", str(tmp_path / "out"), "--no-progress"])
        assert rc == 0
        assert node.alive()  # not ours to stop
    finally:
        assert node.stop() == 0
    out = capsys.readouterr().out
    assert "5 published" in out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["frames_published"] == 5 and metrics["restamped"] is True
    assert metrics["frames_received"] + metrics["dropped"] == 5 and metrics["frames_received"] >= 1
    assert metrics["input_fps"] == pytest.approx(20.0, rel=0.5)
    assert "node_exit_code" not in metrics
    assert (tmp_path / "out" / "latency_histogram.png").is_file()


@pytest.mark.ros
def test_replay_with_a_class_remap_scores_remapped_ground_truth(ros_env, labelled_bag, tiny_checkpoints, tmp_path):
    """--class-remap reaches the node it starts (class_remap parameter) and the ground truth is
    remapped with the same table, so the scores are over the merged classes."""
    remap = tmp_path / "two.yaml"
    remap.write_text("classes:\n- {name: drivable, color: [1, 2, 3], from: [road]}\n"
                     "- {name: everything_else, color: [4, 5, 6], from: rest}\n")
    rc = cli.main(["replay", str(labelled_bag), "--label-topic", "/camera/labels", "--weights",
                   str(tiny_checkpoints["bisenetv2"]), "--device", "cpu", "--class-remap", str(remap),
                   "--timeout", "90", "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert list(metrics["per_class_iou"]) == ["drivable", "everything_else"]
    assert metrics["labelled_frames"] >= 1 and metrics["cpu"]
    assert sum(metrics["gt_pixels"]) == metrics["labelled_pixels"] > 0


@pytest.mark.ros
def test_replay_errors_without_a_node(ros_env, labelled_bag, tmp_path):
    with pytest.raises(ReplayError, match="no segmentation node found"):
        replay_bag(labelled_bag, timeout_s=1.5)
    missing = tmp_path / "missing.pth"
    with pytest.raises(ReplayError, match="exited with code 2.*not found"):
        replay_bag(labelled_bag, node_args={"weights": str(missing)}, timeout_s=60)


@pytest.mark.ros
def test_replay_compressed_camera_topic(ros_env, tiny_checkpoints, tmp_path):
    from bisenet_ros.data import bags

    Compressed = bags.typestore().types[bags.COMPRESSED_TYPE]
    rng = np.random.default_rng(2)
    with bags.BagWriter(tmp_path / "c") as w:
        for i in range(4):
            t = T0 + i * 100_000_000
            ok, jpg = cv2.imencode(".jpg", rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
            w.write("/cam/image/compressed", Compressed(header=bags.make_header(t, "cam"), format="jpeg",
                                                        data=np.frombuffer(jpg, np.uint8)), t)
    with pytest.raises(ReplayError, match="must end in /compressed"):
        node_command({"weights": "x"}, "/cam/jpeg", compressed=True)
    report = replay_bag(tmp_path / "c", image_topic="/cam/image/compressed", timeout_s=90,
                        node_args={"weights": str(tiny_checkpoints["bisenetv2"]), "device": "cpu"})
    assert report["frames_published"] == 4 and report["frames_received"] == 4
    assert "miou" not in report and "labelled_frames" not in report  # no ground truth: speed only
    assert report["latency_ms"]["end_to_end_ms"]["count"] == 4


def test_predictions_outside_the_class_count_are_counted():
    from bisenet_ros.evaluation.metrics import GroundTruthScorer
    from bisenet_ros.evaluation.recording import score_frame

    scorer = GroundTruthScorer(2)
    score_frame(scorer, np.full((2, 2), 4, np.uint8), np.zeros((2, 2), np.uint8), "mono8", 7)
    score_frame(scorer, np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8), "mono8", 8)
    assert scorer.warnings.counts == {"bad_predictions": 1} and scorer.scored == 1
    assert "stamp 7" in scorer.warnings.messages["bad_predictions"]


def test_collector_pairs_replies_without_ros():
    """The replay's collector is fed plain events: warm-up, latency, unexpected stamps, timing."""
    from types import SimpleNamespace

    from bisenet_ros.evaluation.metrics import WarningCounter
    from bisenet_ros.ros.live_replay import Collector

    def reply(stamp, at, values=None):
        header = SimpleNamespace(stamp=SimpleNamespace(sec=stamp // 10**9, nanosec=stamp % 10**9))
        status = SimpleNamespace(values=[SimpleNamespace(key=k, value=v) for k, v in (values or {}).items()])
        msg = SimpleNamespace(msg=SimpleNamespace(header=header, status=[status]), received=at, received_ns=0)
        msg.stamp_ns = stamp
        msg.values = lambda: dict(values or {})
        return msg

    c = Collector(WarningCounter())
    c.warmup.add(5)
    c.on_labels(reply(5, 1.0))
    t = c.publishing(100, original=7)
    c.on_labels(reply(100, t + 0.25))
    c.on_labels(reply(100, t + 0.5))  # a repeat is not a second frame
    c.on_labels(reply(999, t + 0.5))
    c.on_timing(reply(100, t, {"inference_ms": "12.5", "dropped_frames": "3"}))
    figures, samples = c.figures(t, t, 2)
    assert c.warmup_received == {5} and figures["frames_received"] == 1 and figures["dropped"] == 1
    assert samples["end_to_end_ms"] == [pytest.approx(250.0)] and figures["unexpected_labels"] == 1
    assert samples["node_inference_ms"] == [12.5] and figures["node_dropped_frames"] == 3
