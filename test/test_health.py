"""The input checks of /diagnostics (bisenet_ros/ros/health.py), fed with chosen times."""
from __future__ import annotations

import pytest

pytest.importorskip("diagnostic_msgs")
from bisenet_ros.ros.health import OK, WARN, Health, InputMonitor, worst  # noqa: E402


def test_no_image_then_stopped_after_timeout():
    mon = InputMonitor(window_s=5.0)
    mon.reset(100.0)
    assert mon.check(102.0, 0.0, 0.1, 3.0)[0].level == OK  # not yet: within input_timeout
    health, values = mon.check(103.5, 0.0, 0.1, 3.0)
    assert health.level == WARN and health.message == "no image yet for 3.5 s"
    for i in range(20):
        mon.tick(104.0 + i * 0.1, 0.01)
    assert mon.check(106.0, 0.0, 0.1, 3.0)[0].level == OK
    health, values = mon.check(109.0, 0.0, 0.1, 3.0)  # last image at 105.9
    assert health.level == WARN and health.message.startswith("input stopped: no image for 3.1 s")
    assert values["since_last_image_s"] == "3.1"
    assert mon.check(109.0, 0.0, 0.1, 0.0)[0].level == OK  # input_timeout 0: never


def test_rate_below_expected_within_tolerance_and_future_stamps():
    mon = InputMonitor(window_s=5.0)
    mon.reset(0.0)
    for i in range(50):  # 10 Hz for 5 s
        mon.tick(1.0 + i * 0.1, 0.02)
    health, values = mon.check(6.0, 10.5, 0.1, 3.0)  # 10 Hz vs 10.5 expected: inside 10 %
    assert health.level == OK and float(values["input_rate"]) == pytest.approx(10.0, abs=0.3)
    assert values["stamp_delay_ms_min"] == "20.0"
    health, _ = mon.check(6.0, 30.0, 0.1, 3.0)
    assert health.level == WARN and "below the expected 30 Hz" in health.message
    mon.tick(6.05, -2.5)  # a stamp 2.5 s ahead of the node clock
    health, _ = mon.check(6.1, 0.0, 0.1, 3.0)
    assert health.level == WARN and "ahead of the node clock" in health.message


def test_worst_joins_equally_severe_messages():
    assert worst([Health(OK, "segmenting"), Health(WARN, "a"), Health(WARN, "b")]) == Health(WARN, "a; b")
    assert worst([]).level == OK
