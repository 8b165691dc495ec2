"""``segmentation_node`` as a command: start-up errors are one line with a non-zero exit, SIGINT
and SIGTERM end it cleanly, and the reference checkpoint serves the expected labels."""
from __future__ import annotations

import signal
import subprocess

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from sensor_msgs.msg import Image  # noqa: E402

from bisenet_ros.pipeline import build_pipeline  # noqa: E402
from bisenet_ros.ros.conversions import image_msg_to_array  # noqa: E402
from node_client import NODE_EXE, assert_matches_offline, frame, start_node  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("args,message", [
    ([], "parameter 'weights' is required"),
    (["-p", "weights:=/nonexistent/model.pth"], "weights '/nonexistent/model.pth' not found"),
    (["-p", "weights:={garbage}"], "not a PyTorch checkpoint"),
    (["-p", "weights:={v2}", "-p", "input_width:=100", "-p", "input_height:=64"], "input_width"),
    (["-p", "weights:={v2}", "-p", "model:=bisenetv3"], "model must be one of auto, bisenetv1, bisenetv2"),
    (["-p", "weights:={v2}", "-p", "dataset:=nosuchset"], "unknown dataset 'nosuchset'"),
    (["-p", "weights:={v2}", "-p", "mask_classes:=[road, unicorn]"], "mask_classes: unknown classes ['unicorn']"),
    # read-only (start-only) parameters are checked at start as well as when set
    (["-p", "weights:={v2}", "-p", "input_transport:=foo"], "input_transport must be one of raw, compressed"),
    (["-p", "weights:={v2}", "-p", "output_reliability:=foo"], "output_reliability must be one of reliable"),
    (["-p", "weights:={v2}", "-p", "health_checks:=[bogus]"], "health_checks takes frozen"),
    (["-p", "weights:={v2}", "-p", "foxglove_address:=evil.example"], "foxglove_address must be an IP address"),
])
def test_start_errors_are_one_line_and_exit_non_zero(ros_env, tiny_checkpoints, tmp_path, args, message):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    args = [a.format(garbage=garbage, v2=tiny_checkpoints["bisenetv2"]) for a in args]
    proc = subprocess.run([str(NODE_EXE), "--ros-args", *args], env=ros_env, capture_output=True,
                          text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and message in errors[0], out


@pytest.mark.parametrize("args", [["--params-file", "{tmp}/missing.yaml"], ["--params-file", "{tmp}/broken.yaml"],
                                  ["-r", "image:="]])
def test_ros_arguments_rcl_cannot_parse_are_one_line_and_exit_2(ros_env, tmp_path, args):
    """A missing or malformed parameter file, a remap without a target: rcl refuses them in
    ``rclpy.init``; the node says so in one line of its own and exits 2, no traceback."""
    (tmp_path / "broken.yaml").write_text("segmentation_node: {ros__parameters: [unclosed\n")
    args = [a.format(tmp=tmp_path) for a in args]
    proc = subprocess.run([str(NODE_EXE), "--ros-args", *args], env=ros_env, capture_output=True,
                          text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    lines = out.splitlines()  # rcl's own "Failed to parse global arguments" line is not among them
    assert len(lines) == 1 and lines[0].startswith("segmentation_node: cannot start ROS: "), out
    assert len(lines[0]) < 400 and ", at /" not in lines[0], out  # no rcl source locations


@pytest.mark.parametrize("program", ["segmentation_node", "segmentation_lifecycle_node"])
def test_help_prints_usage_and_every_parameter(ros_env, program):
    """`--help` is usage, not "[ERROR] parameter 'weights' is required"; the lifecycle node's
    names itself and says how it is brought up."""
    from bisenet_ros.ros.parameters import PARAMETERS

    exe = str(NODE_EXE.with_name(program))
    proc = subprocess.run([exe, "--help"], env=ros_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "[ERROR]" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.stdout.startswith(f"usage: {program} ") and "examples:" in proc.stdout
    assert f"\n  {program} --ros-args -r image:=" in proc.stdout
    for name in PARAMETERS:
        assert f"  {name} (default " in proc.stdout, name
    assert "one of: auto, torch, torchscript, onnxruntime" in proc.stdout
    assert ("starts unconfigured" in proc.stdout) == (program == "segmentation_lifecycle_node")
    proc = subprocess.run([exe, "--version"], env=ros_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith(f"{program} (bisenet_ros) ")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_ends_node_cleanly(ros_env, tiny_checkpoints, tmp_path, client, sig):
    node = start_node(ros_env, ["-r", "image:=/cam_sig", "-p", f"weights:={tiny_checkpoints['bisenetv2']}"],
                      tmp_path / "node.log")
    try:
        client.subscribe("/segmentation/labels", Image)
        assert client.wait_matched("/cam_sig", Image), node.log
        msg = client.publish_image("/cam_sig", frame(64, 96, 0), "rgb8", "before_signal")
        assert client.request("/cam_sig", msg, "/segmentation/labels") is not None, node.log
    finally:
        rc = node.stop(sig)
    assert rc == 0, node.log
    assert "Traceback" not in node.log and "terminate called" not in node.log, node.log


def test_reference_checkpoint_serves_reference_labels(ros_env, reference, tmp_path, client):
    """The 19-class Cityscapes BiSeNetV2 reference checkpoint on the reference photo (427x640); the
    backend named on both sides (auto's quick start serves one candidate and then the measured winner,
    whose float sums may break this model's near ties differently: 1 pixel in 273280 seen)."""
    weights = reference / "bisenetv2.pth"
    node = start_node(ros_env, ["-r", "image:=/cam_ref", "-p", f"weights:={weights}",
                                "-p", "dataset:=cityscapes", "-p", "backend:=torch"], tmp_path / "node.log")
    try:
        client.subscribe("/segmentation/labels", Image)
        assert client.wait_matched("/cam_ref", Image, timeout=60), node.log
        rgb = np.load(reference / "pipeline_image_rgb.npy")
        msg = client.publish_image("/cam_ref", rgb, "rgb8", "reference_photo")
        reply = client.request("/cam_ref", msg, "/segmentation/labels", timeout=60, retry_every=10)
        assert reply is not None, node.log
        labels, enc = image_msg_to_array(reply)
        assert enc == "mono8" and labels.shape == rgb.shape[:2]
        assert (labels == np.load(reference / "bisenetv2_pipeline_labels.npy")).mean() >= 0.99
        offline = build_pipeline(weights=weights, dataset="cityscapes", backend="torch")
        assert_matches_offline(labels, offline(rgb, "rgb8", outputs=()).labels, offline)
    finally:
        rc = node.stop()
    assert rc == 0 and "Traceback" not in node.log, node.log
