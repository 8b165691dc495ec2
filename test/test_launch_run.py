"""Both launch files run for real: ROS 2's launch library (Jazzy, pure Python, from
``../shared/ros2-launch``) against a colcon install of the package, as ``ros2 launch`` does.
Launch arguments must reach the node (its parameters, namespace, remappings) and its outputs must
appear; a checkpoint with a sidecar must be served with its own classes under the default params file.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.ros
LAUNCH_LIB = REPO.parent / "shared" / "ros2-launch"
DEMO_WEIGHTS = REPO / "models" / "bisenetv2_synthetic_street.pth"

RUNNER = """
import sys
from launch import LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

path, args = sys.argv[1], [a.split(":=", 1) for a in sys.argv[2:]]
service = LaunchService(argv=sys.argv[2:])
service.include_launch_description(IncludeLaunchDescription(
    PythonLaunchDescriptionSource(path), launch_arguments=[(k, v) for k, v in args]))
sys.exit(service.run())
"""


class Launch:
    """``ros2 launch bisenet_ros <file> args...`` in a child process (stopped with SIGINT, as Ctrl-C)."""

    def __init__(self, prefix: Path, env: dict, filename: str, args: dict[str, str], log: Path) -> None:
        if not (LAUNCH_LIB / "launch").is_dir():
            pytest.skip(f"ROS 2 launch library not present at {LAUNCH_LIB}")
        site = next((prefix / "lib").glob("python3*/site-packages"))
        env = {**env, "AMENT_PREFIX_PATH": str(prefix),
               "PYTHONPATH": os.pathsep.join([str(LAUNCH_LIB), str(LAUNCH_LIB / "_shims"), str(site)])}
        self.log_path = log
        self._log = open(log, "w")
        launch_file = prefix / "share" / "bisenet_ros" / "launch" / filename
        self.proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(launch_file),
                                      *(f"{k}:={v}" for k, v in args.items())],
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=log.parent)

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def legend(client, topic: str) -> dict:
    from std_msgs.msg import String

    from node_client import LATCHED

    client.subscribe(topic, String, LATCHED)
    msg = client.wait_for(topic, timeout=90)
    assert msg is not None, f"no legend on {topic}"
    return json.loads(msg.data)


def test_segment_launch_serves_a_sidecar_checkpoint_with_its_own_classes(colcon_install, ros_env, client, tmp_path):
    """segment.launch.py with only weights (and the camera topic) set: the default params file must
    not turn the 7-class demo checkpoint into 'cityscapes'; arguments reach the node, labels appear."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from node_client import frame, values

    sidecar = yaml.safe_load(DEMO_WEIGHTS.with_suffix(".yaml").read_text())
    run = Launch(colcon_install, ros_env, "segment.launch.py",
                 {"weights": str(DEMO_WEIGHTS), "image": "/street_cam/image_raw", "backend": "torch",
                  "log_level": "info"}, tmp_path / "launch.log")
    try:
        got = legend(client, "/segmentation/legend")
        assert got["dataset"] == sidecar["dataset"]["name"] and got["num_classes"] == 7, run.log
        assert [c["name"] for c in got["classes"]] == [c["name"] for c in sidecar["dataset"]["classes"]]
        assert client.get_parameter("/segmentation", "backend") == "torch"  # a launch argument
        assert client.get_parameter("/segmentation", "dataset") == ""  # the default params file's
        client.subscribe("/segmentation/labels", Image)
        client.subscribe("/segmentation/timing", DiagnosticArray)
        assert client.wait_matched("/street_cam/image_raw", Image, 60), run.log
        msg = client.publish_image("/street_cam/image_raw", frame(96, 128, 1), "rgb8", "launched")
        timing = client.request("/street_cam/image_raw", msg, "/segmentation/timing", timeout=60)
        assert timing is not None, run.log
        assert values(timing.status[0])["model_size"] == "256x320"  # the sidecar's input size
        labels = client.wait_for("/segmentation/labels", lambda m: m.header.frame_id == "launched", 10)
        assert (labels.height, labels.width) == (96, 128) and max(labels.data) < 7
    finally:
        rc = run.stop()
    assert rc == 0, run.log


def test_multi_camera_launch_starts_one_node_per_camera(colcon_install, ros_env, client, tiny_checkpoints, tmp_path):
    """multi_camera.launch.py: per camera a node in the camera's namespace, remapped to its topics,
    with the node arguments (weights, input size, device) set."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from node_client import frame, values

    run = Launch(colcon_install, ros_env, "multi_camera.launch.py",
                 {"cameras": "front,rear", "image_pattern": "/{camera}/cam", "weights": str(tiny_checkpoints["bisenetv2"]),
                  "input_width": "96", "input_height": "64", "device": "cpu", "backend": "torch"},
                 tmp_path / "launch.log")
    try:
        for cam in ("front", "rear"):
            node = f"/{cam}/segmentation"
            client.subscribe(f"{node}/timing", DiagnosticArray)
            assert client.wait_matched(f"/{cam}/cam", Image, 90), run.log
            assert client.get_parameter(node, "input_width") == 96
            assert client.get_parameter(node, "device") == "cpu"
            msg = client.publish_image(f"/{cam}/cam", frame(120, 160, 2), "rgb8", f"{cam}_frame")
            reply = client.request(f"/{cam}/cam", msg, f"{node}/timing", timeout=60)
            assert reply is not None, run.log
            assert values(reply.status[0])["model_size"] == "64x96"
    finally:
        rc = run.stop()
    assert rc == 0, run.log


def test_segment_launch_namespace_sim_time_and_log_level(colcon_install, ros_env, client, tiny_checkpoints, tmp_path):
    """segment.launch.py with namespace, use_sim_time and log_level: the default image topic is
    relative, so it resolves in the namespace (with camera_info beside it); use_sim_time reaches the
    node's parameter; log_level reaches the node's logger."""
    from sensor_msgs.msg import CameraInfo, Image

    overrides = tmp_path / "overrides.yaml"  # a params_file of overrides, read after the defaults file
    overrides.write_text("/**/segmentation:\n  ros__parameters:\n    input_width: 64\n    input_height: 64\n"
                         "    publish_confidence: true\n    backend: openvino\n")
    run = Launch(colcon_install, ros_env, "segment.launch.py",
                 {"weights": str(tiny_checkpoints["bisenetv2"]), "namespace": "robot1", "use_sim_time": "true",
                  "log_level": "debug", "device": "cpu", "backend": "torch", "params_file": str(overrides)},
                 tmp_path / "launch.log")
    try:
        assert client.wait_matched("/robot1/camera/image_raw", Image, 90), run.log
        assert client.wait_matched("/robot1/camera/camera_info", CameraInfo, 30), run.log
        assert client.node.count_subscribers("/camera/image_raw") == 0
        assert client.get_parameter("/robot1/segmentation", "use_sim_time") is True
        # defaults file, then params_file, then the launch arguments: the later wins
        got = {name: client.get_parameter("/robot1/segmentation", name)
               for name in ("input_width", "input_height", "publish_confidence", "backend", "output_reliability")}
        assert got == {"input_width": 64, "input_height": 64, "publish_confidence": True, "backend": "torch",
                       "output_reliability": "reliable"}, got
        assert "[DEBUG]" in run.log  # --log-level debug reached the node
    finally:
        rc = run.stop()
    assert rc == 0, run.log


def test_multi_camera_launch_refuses_a_repeated_camera_name(colcon_install, ros_env, tiny_checkpoints, tmp_path):
    """issue 23 row 17: ``cameras:=front,front`` would start two nodes in one namespace; the real
    launch refuses it with one line naming the name, starts no node and exits non-zero."""
    run = Launch(colcon_install, ros_env, "multi_camera.launch.py",
                 {"cameras": "front,rear,front", "weights": str(tiny_checkpoints["bisenetv2"]), "device": "cpu",
                  "backend": "torch"}, tmp_path / "launch.log")
    try:
        run.proc.wait(120)
    finally:
        rc = run.stop()
    log = run.log
    assert rc != 0, log
    errors = [line for line in log.splitlines() if "cameras:=front,rear,front" in line]
    assert len(errors) == 1 and "names front more than once" in errors[0], log
    assert "Traceback" not in log and "segmentation_node" not in log and "process started" not in log, log
