"""The Foxglove view part (bisenet_ros/ros/foxglove_view.py) in this process, without a node
process: the point cloud channel (same fields and bytes as ~/points), the one-line hint without
foxglove-sdk, and a busy port. The node end to end: test_node_ecosystem.py."""
from __future__ import annotations

import socket
import sys
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
from std_msgs.msg import Header  # noqa: E402

from bisenet_ros.data.pointcloud import POINT_DTYPE  # noqa: E402
from bisenet_ros.ros import foxglove_view  # noqa: E402
from bisenet_ros.ros.conversions import points_to_cloud_msg  # noqa: E402


class FakeNode:
    """What the view uses of a node: names, a logger and timers."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def get_logger(self):
        node = self

        class Logger:
            def info(self, text):
                node.lines.append(("info", text))

            def warning(self, text):
                node.lines.append(("warning", text))

            def error(self, text):
                node.lines.append(("error", text))
        return Logger()

    def resolve_topic_name(self, name: str) -> str:
        return "/segmentation/" + name.removeprefix("~/")

    def get_fully_qualified_name(self) -> str:
        return "/segmentation"

    def create_timer(self, period, callback):
        return callback

    def destroy_timer(self, timer):
        pass


def values(port: int) -> dict:
    return {"foxglove_port": port, "foxglove_address": "127.0.0.1", "jpeg_quality": 80, "png_level": 3}


def _wait(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_point_cloud_reaches_foxglove_with_the_same_fields_and_bytes():
    pytest.importorskip("foxglove")
    from foxglove_client import FoxgloveClient

    port = free_port()
    view = foxglove_view.FoxgloveView(FakeNode(), values(port))
    view.start({"image": ""})
    assert view.on
    fox = FoxgloveClient("127.0.0.1", port)
    try:
        sub = fox.subscribe("/segmentation/points")
        assert _wait(lambda: view.wants_points("image"))
        points = np.zeros(50, POINT_DTYPE)
        points["x"], points["z"], points["rgb"], points["label"] = np.arange(50), 2.5, 0x00FF8040, 3
        header = Header(frame_id="camera")
        header.stamp.sec, header.stamp.nanosec = 12, 345
        view.points("image", points_to_cloud_msg(points, header))
        _, cloud = fox.next_message(sub, timeout=20)
        assert cloud.frame_id == "camera" and (cloud.timestamp.seconds, cloud.timestamp.nanos) == (12, 345)
        assert cloud.point_stride == POINT_DTYPE.itemsize and bytes(cloud.data) == points.tobytes()
        fields = {f.name: (f.offset, f.type) for f in cloud.fields}
        assert fields == {"x": (0, 7), "y": (4, 7), "z": (8, 7), "rgb": (12, 5), "label": (16, 3)}  # 7 float32, 5 uint32, 3 uint16
    finally:
        fox.close()
        view.stop()
    assert not view.on


def test_without_foxglove_sdk_one_line_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "foxglove", None)
    node = FakeNode()
    view = foxglove_view.FoxgloveView(node, values(8765))
    view.start({"image": ""})
    view.start({"image": ""})  # again (a lifecycle re-activation): said once
    assert not view.on and view.wanted("image") == set()
    assert node.lines == [("warning", foxglove_view.MISSING)] and "pip install foxglove-sdk" in foxglove_view.MISSING


def test_a_busy_port_is_one_error_line_and_no_view():
    pytest.importorskip("foxglove")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        node = FakeNode()
        view = foxglove_view.FoxgloveView(node, values(busy.getsockname()[1]))
        view.start({"image": ""})
    assert not view.on
    assert len(node.lines) == 1 and node.lines[0][0] == "error" and "Foxglove view off" in node.lines[0][1]
