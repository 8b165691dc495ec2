"""CameraInfoPairing's rule (bisenet_ros/ros/camera_info.py), without ROS processes: exact stamp,
the image's own on its way, stale ones of a previous camera, cameras stamping CameraInfo otherwise,
and the bounded first wait."""
from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("rclpy")
from sensor_msgs.msg import CameraInfo  # noqa: E402

from bisenet_ros.ros import camera_info as ci  # noqa: E402

S = 10**9


def info(stamp: int, fx: float) -> CameraInfo:
    msg = CameraInfo(width=64, height=48)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, S)
    msg.k = [fx, 0.0, 31.5, 0.0, fx, 23.5, 0.0, 0.0, 1.0]
    return msg


def later(pairing: ci.CameraInfoPairing, msg: CameraInfo, delay: float) -> threading.Thread:
    thread = threading.Timer(delay, pairing.add, args=(msg,))
    thread.start()
    return thread


def test_exact_stamp_wins_over_newer():
    p = ci.CameraInfoPairing(lambda: 1)
    for i, fx in enumerate((100.0, 110.0, 120.0)):
        p.add(info(100 * S + i, fx))
    assert p.for_frame(100 * S + 1).k[0] == 110.0


def test_the_first_frame_waits_for_its_camera_info():
    p = ci.CameraInfoPairing(lambda: 1)
    t = later(p, info(5 * S, 300.0), 0.3)
    assert p.for_frame(5 * S).k[0] == 300.0
    t.join()


def test_stale_camera_info_of_a_previous_camera_is_not_used():
    p = ci.CameraInfoPairing(lambda: 1)
    p.add(info(5 * S, 100.0))
    assert p.for_frame(5 * S).k[0] == 100.0  # this camera stamps CameraInfo like its images
    t = later(p, info(60 * S, 200.0), 0.3)  # a new camera, a minute later, its CameraInfo late
    assert p.for_frame(60 * S).k[0] == 200.0
    t.join()


def test_camera_info_stamped_otherwise_is_used_as_it_comes():
    p = ci.CameraInfoPairing(lambda: 1)
    p.add(info(0, 150.0))  # a publisher that leaves the stamp at 0
    start = time.monotonic()
    assert p.for_frame(1000 * S).k[0] == 150.0
    assert time.monotonic() - start < ci.FIRST_WAIT_S / 2  # no wait (generous bound: a loaded machine)


def test_no_publisher_waits_briefly_once_and_a_wait_in_vain_is_not_repeated():
    p = ci.CameraInfoPairing(lambda: 0)
    start = time.monotonic()
    assert p.for_frame(5 * S) is None
    assert time.monotonic() - start >= ci.DISCOVERY_GRACE_S
    start = time.monotonic()
    assert p.for_frame(6 * S) is None
    assert time.monotonic() - start < ci.FIRST_WAIT_S / 2  # no second wait (generous bound)
    p.restart()  # a camera (re)appears: its first frame may wait again
    t = later(p, info(7 * S, 90.0), 0.1)
    assert p.for_frame(7 * S).k[0] == 90.0
    t.join()
