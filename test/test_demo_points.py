"""``make demo-points``: synthetic drive with exact depth through the real node's ~/points, the
figures it prints and the picture; the picture helpers on a known cloud."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from bisenet_ros.tools.cloud_view import BACKGROUND, perspective_view, top_down_view
from bisenet_ros.tools.demo_points import check_cloud, depth_to_send, main


def test_views_draw_the_nearest_point_in_its_class_colour():
    xyz = np.array([[0.0, 1.5, 10.0], [0.0, 0.5, 10.0], [0.0, 1.5, 20.0]])  # optical frame: y down
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    top = top_down_view(xyz, colours, (200, 200), max_range=25.0)
    assert (top == colours[1]).all(axis=2).any()  # the higher of the two points at z = 10 m wins
    assert not (top == colours[0]).all(axis=2).any()
    assert (top == colours[2]).all(axis=2).any()
    persp = perspective_view(xyz, colours, (120, 160))
    assert persp.shape == (120, 160, 3) and (persp != BACKGROUND).any(axis=2).sum() >= 3


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_depth_messages_and_the_check(encoding):
    depth = np.array([[1.0, np.inf], [70.0, 2.5]], np.float32)
    from bisenet_ros.ros.conversions import depth_to_image_msg

    arr, sent = depth_to_send(depth, encoding)
    msg = depth_to_image_msg(arr)
    assert msg.encoding == encoding and len(msg.data) == msg.step * 2
    assert sent[0, 0] == 1.0 and sent[1, 1] == 2.5 and not (np.isfinite(sent[0, 1]) and sent[0, 1] > 0)
    k = np.array([[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]])
    from bisenet_ros.data.pointcloud import POINT_DTYPE
    cloud = np.zeros(2, POINT_DTYPE)
    cloud["x"], cloud["y"], cloud["z"], cloud["label"] = [-0.25, 0.625], [-0.25, 0.625], [1.0, 2.5], [3, 4]
    labels = np.array([[3, 0], [0, 4]], np.uint8)
    ok = check_cloud(cloud, sent, k, labels, max_depth=40.0)
    assert ok["one_point_per_pixel"] and ok["labels_equal"] and ok["max_deviation_mm"] < 1e-3
    assert not check_cloud(cloud, sent, k, labels[::-1], max_depth=40.0)["labels_equal"]


@pytest.mark.ros
def test_demo_points_end_to_end(ros_env, tmp_path, capsys):
    out = tmp_path / "points"
    assert main(["--out", str(out), "--frames", "2", "--size", "240x320"]) == 0
    text = capsys.readouterr().out
    assert text.count("on every point: yes") == 2 and "points_ms per 320x240 frame" in text
    report = json.loads((out / "points.json").read_text())
    assert report["all_ok"] and report["node_exit_code"] == 0
    assert [f["encoding"] for f in report["frames"]] == ["16UC1", "32FC1"]
    assert all(f["points"] > 10000 and f["max_deviation_mm"] < 2.0 for f in report["frames"])
    picture = cv2.imread(str(out / "cloud.png"))
    assert picture is not None and picture.shape[0] > 480 and np.ptp(picture) > 0  # four titled panels
