"""What ROS clients and viewers outside this project expect of the node, with real processes.

One node process (``segmentation_node``, random 5-class BiSeNetV2, ``foxglove_port`` set) serves
the module; this process talks to it over ROS 2 (``RosClient``) and over the Foxglove WebSocket
protocol (``foxglove_client.FoxgloveClient``, what the Foxglove app speaks):

- ``~/label_info`` (vision_msgs/LabelInfo) reaches a subscriber that starts late and agrees with
  ``~/legend``; a new ``confidence_threshold`` is published again;
- the Foxglove view: overlay JPEG (bytes equal to the node's ``~/overlay/compressed``, and close to
  the offline pipeline's overlay), colour, timing, legend and /diagnostics, with no ROS subscriber;
- ``~/timing`` leaves an implausible latency out and says why (once in the log);
- the first labels frame after a camera starts carries the camera's K (repeated starts, either
  arrival order, a new K each start).
"""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from bisenet_ros.pipeline import build_pipeline  # noqa: E402
from bisenet_ros.ros.camera_info import STALE_S  # noqa: E402
from bisenet_ros.ros.conversions import array_to_compressed_msg, array_to_image_msg  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from foxglove_client import FoxgloveClient  # noqa: E402
from node_client import LATCHED, RosClient, frame, serve_node, start_node, values  # noqa: E402

pytestmark = pytest.mark.ros
NODE = "/segmentation"
SHARED_VISION_MSGS = Path(__file__).resolve().parents[2] / "shared" / "vision_msgs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def port():
    return free_port()


@pytest.fixture(scope="module")
def node(ros_env, tiny_checkpoints, tmp_path_factory, port):
    log = tmp_path_factory.mktemp("node") / "node.log"
    yield from serve_node(ros_env, ["-r", "image:=/cam", "-p", f"weights:={tiny_checkpoints['bisenetv2']}",
                                     "-p", f"foxglove_port:={port}", "-p", "backend:=torch"], log)  # = offline's


@pytest.fixture(scope="module")
def client(node):
    c = RosClient("test_node_ecosystem_client")
    assert c.wait_matched("/cam", Image, timeout=120), "the node did not subscribe to /cam:\n" + node.log
    yield c
    c.close()


def vision_msgs_or_skip():
    try:
        from vision_msgs.msg import LabelInfo
    except ImportError:
        if SHARED_VISION_MSGS.is_dir():
            pytest.fail(f"{SHARED_VISION_MSGS} is there but vision_msgs is not importable: `make setup` builds it")
        pytest.skip("vision_msgs not installed and ../shared/vision_msgs not present")
    return LabelInfo


# -- vision_msgs/LabelInfo -----------------------------------------------------------------------------------
def test_label_info_reaches_a_late_subscriber_and_agrees_with_the_legend(node, client):
    label_info = vision_msgs_or_skip()
    # the node published both at start-up, before these subscriptions existed (transient local)
    client.subscribe(f"{NODE}/legend", String, LATCHED)
    client.subscribe(f"{NODE}/label_info", label_info, LATCHED)
    legend = client.wait_for(f"{NODE}/legend", timeout=30)
    info = client.wait_for(f"{NODE}/label_info", timeout=30)
    assert legend is not None and info is not None, node.log
    classes = json.loads(legend.data)["classes"]
    assert [(c.class_id, c.class_name) for c in info.class_map] == [(c["id"], c["name"]) for c in classes]
    assert len(info.class_map) == 5 and info.threshold == 0.0
    assert "label_info" not in node.log  # no "is off" line when vision_msgs is there

    # a new threshold is published again; a subscriber starting now gets that one
    client.set_parameters(NODE, confidence_threshold=0.25)
    late = RosClient("label_info_late")
    try:
        late.subscribe(f"{NODE}/label_info", label_info, LATCHED)
        got = late.wait_for(f"{NODE}/label_info", lambda m: abs(m.threshold - 0.25) < 1e-6, timeout=30)
        assert got is not None, node.log
        assert [c.class_name for c in got.class_map] == [c["name"] for c in classes]
    finally:
        late.close()
        client.set_parameters(NODE, confidence_threshold=0.0)


def test_without_vision_msgs_the_node_says_once_why_label_info_is_off(monkeypatch):
    import importlib
    import sys

    import bisenet_ros.ros.label_info as label_info

    monkeypatch.setitem(sys.modules, "vision_msgs", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "vision_msgs.msg", None)
    try:
        off = importlib.reload(label_info)
        lines = []

        class Logger:
            def info(self, text):
                lines.append(text)

        class FakeNode:
            def get_logger(self):
                return Logger()

            def create_publisher(self, *args):  # pragma: no cover - must not be called
                raise AssertionError("no publisher without vision_msgs")

        out = off.LabelInfoOutput(FakeNode())
        out.advertise()
        out.publish(["a", "b"], 0.5)
        assert not out.available and len(lines) == 1
        assert "~/label_info" in lines[0] and "vision_msgs cannot be imported" in lines[0] and "make setup" in lines[0]
    finally:
        monkeypatch.undo()
        importlib.reload(label_info)


# -- Foxglove live view ------------------------------------------------------------------------------------
def test_foxglove_view_serves_overlay_timing_legend_and_diagnostics(node, client, port, tiny_checkpoints):
    import cv2

    try:
        fox = FoxgloveClient("127.0.0.1", port)
    except OSError as exc:
        pytest.fail(f"cannot connect to the Foxglove view: {exc}\n{node.log}")
    try:
        subs = {name: fox.subscribe(topic) for name, topic in (
            ("overlay", f"{NODE}/overlay/compressed"), ("color", f"{NODE}/color"), ("timing", f"{NODE}/timing"),
            ("legend", f"{NODE}/legend"), ("diagnostics", "/diagnostics"))}
        # no ROS subscriber to any output: the Foxglove subscription alone makes the node segment
        assert client.node.count_subscribers(f"{NODE}/overlay") == 0
        rgb = frame(96, 128, 7)

        def receive(name):
            """A message on ``name``, sending frames until one comes (a subscription takes effect a
            little after the server gets it)."""
            for i in range(40):
                client.publish_image("/cam", rgb, "rgb8", f"fox_{name}_{i}")
                try:
                    return fox.next_message(subs[name], timeout=3)[1]
                except TimeoutError:
                    continue
            pytest.fail(f"nothing on the Foxglove channel for {name}\n{node.log}")

        got = receive("overlay")
        assert got.format == "jpeg" and got.frame_id.startswith("fox_")
        overlay = cv2.imdecode(np.frombuffer(got.data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        offline = build_pipeline(weights=tiny_checkpoints["bisenetv2"], backend="torch")  # the node's backend
        expected = offline(rgb, "rgb8", outputs=("overlay",)).overlay
        assert overlay.shape == expected.shape
        if offline.device.type == "cpu":  # the node's overlay is the offline one exactly: the same JPEG
            assert bytes(got.data) == bytes(array_to_compressed_msg(expected, "rgb8", None, "jpeg", 80).data)
        assert np.abs(overlay.astype(int) - expected.astype(int)).mean() < 12.0  # JPEG of blocky noise, quality 80

        color = receive("color")
        assert color.format == "png"
        colors = cv2.imdecode(np.frombuffer(color.data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        assert {tuple(c) for c in colors.reshape(-1, 3)} <= {tuple(c) for c in offline.preset.palette}  # lossless
        timing = receive("timing")
        assert timing["status"][0]["values"]["total_ms"] > 0 and timing["frame_id"].startswith("fox_")
        _, legend = fox.next_message(subs["legend"], timeout=10)  # sent again while subscribed
        assert [c["name"] for c in legend["classes"]] == list(offline.preset.class_names)
        _, diagnostics = fox.next_message(subs["diagnostics"], timeout=15)
        assert diagnostics["status"][0]["name"].endswith("segmentation")

        # the same frame's JPEG is the node's ~/overlay/compressed, byte for byte
        client.subscribe(f"{NODE}/overlay/compressed", CompressedImage)
        assert client.wait_until(lambda: client.node.count_publishers(f"{NODE}/overlay/compressed") > 0)
        for i in range(40):
            sent = client.publish_image("/cam", rgb, "rgb8", f"both_{i}")
            ros = client.wait_for(f"{NODE}/overlay/compressed", lambda m: m.header.frame_id == f"both_{i}", 3)
            if ros is None:
                continue
            while True:
                _, got = fox.next_message(subs["overlay"], timeout=10)
                if got.frame_id == f"both_{i}":
                    break
            assert bytes(got.data) == bytes(ros.data)
            assert (got.timestamp.seconds, got.timestamp.nanos) == (sent.header.stamp.sec, sent.header.stamp.nanosec)
            break
        else:
            pytest.fail("no overlay on both ROS and Foxglove\n" + node.log)
    finally:
        fox.close()


def test_foxglove_parameters_are_checked_when_set(node, client):
    result = client.set_parameters(NODE, foxglove_address="robot.local; rm -rf /")
    assert not result.successful and "foxglove_address" in result.reason
    assert not client.set_parameters(NODE, foxglove_port=70000).successful


# -- ~/timing ------------------------------------------------------------------------------------------------
def test_timing_leaves_out_an_implausible_latency_and_says_why_once(node, client):
    client.subscribe(f"{NODE}/timing", DiagnosticArray)
    day_ago = client.node.get_clock().now().nanoseconds - 30 * 3600 * 10**9  # a replayed recording's stamp
    for i in range(2):
        sent = client.publish_image("/cam", frame(48, 64, i), "rgb8", f"old_{i}", stamp_ns=day_ago + i * 10**8)
        msg = client.request("/cam", sent, f"{NODE}/timing")
        assert msg is not None, node.log
        v = values(msg.status[0])
        assert "latency_ms" not in v and "behind the node clock" in v["latency_note"], v
        assert float(v["total_ms"]) > 0
    assert node.log.count("latency_ms left out") == 1, node.log
    now = client.request("/cam", client.publish_image("/cam", frame(48, 64, 9), "rgb8", "now"), f"{NODE}/timing")
    assert now is not None, node.log
    v = values(now.status[0])
    assert 0 <= float(v["latency_ms"]) < 60_000 and "latency_note" not in v


# -- camera_info at start-up ----------------------------------------------------------------------------------
def camera_info(stamp: int, fx: float, frame_id: str) -> CameraInfo:
    info = CameraInfo(width=64, height=48, distortion_model="plumb_bob")
    info.header.frame_id = frame_id
    info.header.stamp.sec, info.header.stamp.nanosec = divmod(stamp, 10**9)
    info.k = [fx, 0.0, 31.5, 0.0, fx, 23.5, 0.0, 0.0, 1.0]
    return info


def test_first_labels_frame_after_a_camera_starts_carries_its_k(ros_env, tiny_checkpoints, tmp_path):
    """Each start: a new camera (new publishers) with a new K sends image + CameraInfo with equal
    stamps, the CameraInfo first or well after the image (later than the node takes to segment
    it); the first ~/camera_info and ~/labels for it carry that K, neither zeros nor the previous
    camera's. Reliable cameras make input_reliability auto re-subscribe about a second after they
    appear (frames sent in that window are lost); best-effort ones deliver the first frame at once."""
    proc = start_node(ros_env, ["-r", "image:=/start_cam", "-p", f"weights:={tiny_checkpoints['bisenetv2']}"],
                      tmp_path / "node.log")
    viewer = RosClient("camera_info_viewer")
    try:
        viewer.subscribe(f"{NODE}/camera_info", CameraInfo)
        viewer.subscribe(f"{NODE}/labels", Image)
        assert viewer.wait_until(lambda: viewer.node.count_subscribers("/start_cam") > 0, 90), proc.log
        rgb = frame(48, 64, 11)
        #: (reliable, CameraInfo first) per start
        starts = [(False, False), (True, True), (False, False), (True, False)]
        for start, (reliable, info_first) in enumerate(starts):
            fx, fid = 200.0 + 10 * start, f"cam_{start}"
            qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)
            camera = RosClient(f"camera_{start}")
            try:
                img_pub = camera.publisher("/start_cam", Image, qos)
                info_pub = camera.publisher("/camera_info", CameraInfo, qos)
                assert camera.wait_until(lambda: img_pub.get_subscription_count() and info_pub.get_subscription_count(),
                                         30), proc.log
                first = camera.node.get_clock().now().nanoseconds
                got = None
                for _ in range(60):  # about 2 Hz until the node answers
                    stamp = camera.node.get_clock().now().nanoseconds
                    image = array_to_image_msg(rgb, "rgb8")
                    info = camera_info(stamp, fx, fid)
                    image.header = info.header
                    if info_first:
                        info_pub.publish(info)
                    img_pub.publish(image)
                    got = viewer.wait_for(f"{NODE}/camera_info", lambda m, f=fid: m.header.frame_id == f, 0.5)
                    if not info_first:
                        info_pub.publish(info)
                    if got is not None:
                        break
                assert got is not None, proc.log
                assert got.header.stamp.sec * 10**9 + got.header.stamp.nanosec >= first
                assert list(got.k) == camera_info(0, fx, fid).k.tolist(), (start, list(got.k), proc.log[-2000:])
                labels = viewer.wait_for(f"{NODE}/labels", lambda m, f=fid: m.header.frame_id == f, 10)
                assert labels is not None and labels.header.stamp == got.header.stamp  # the first labels frame
            finally:
                camera.close()
            assert viewer.wait_until(lambda: viewer.count_publishers("/start_cam") == 0, 20)
            # the next camera's stamps are further from this one's than camera_info.STALE_S
            assert viewer.wait_until(lambda: viewer.node.get_clock().now().nanoseconds - stamp > (STALE_S + 0.5) * 1e9,
                                     STALE_S + 5)
    finally:
        viewer.close()
        rc = proc.stop()
    assert rc == 0 and "Traceback" not in proc.log, proc.log
