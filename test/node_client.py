"""Test helpers for the segmentation node: start it as a user would, talk to it over real ROS 2.

``start_node`` runs ``.venv/bin/segmentation_node --ros-args ...`` in its own process (log in a
file); :class:`RosClient` (the package's one client harness, :mod:`bisenet_ros.ros.client`) is an
rclpy node in the test process (own context, executor thread) that publishes camera frames,
records what comes back, and sets parameters through the node's real parameter services. Waiting
is always "until condition or timeout", never a fixed sleep.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from bisenet_ros.ros.client import LATCHED, RELIABLE, RosClient  # noqa: F401 (re-exported)
from bisenet_ros.ros.node_process import NodeProcess

NODE_EXE = Path(sys.executable).with_name("segmentation_node")


def frame(h: int, w: int, seed: int) -> np.ndarray:
    """A blocky random RGB image (8x8 blocks) so that the labels have some structure."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 8, 0), 8, 1)[:h, :w].copy()


def assert_matches_offline(got: np.ndarray, expected: np.ndarray, pipeline: Any) -> None:
    """Node output vs the offline pipeline (same device/precision defaults as the node): equal on
    the CPU; on a GPU (fp16, kernels not bit-reproducible) equal on >= 99.9% of the pixels."""
    if pipeline.device.type == "cpu":
        np.testing.assert_array_equal(got, expected)
        return
    assert got.shape == expected.shape
    same = got == expected
    assert (same.all(axis=-1) if same.ndim == 3 else same).mean() >= 0.999


def values(status: Any) -> dict[str, str]:
    """A DiagnosticStatus' key/value pairs as a dict."""
    return {kv.key: kv.value for kv in status.values}


def start_node(env: dict, ros_args: list[str], log: Path, command: list[str] | None = None) -> NodeProcess:
    """The installed console script (or ``command``) with ``ros_args``, logging to ``log``."""
    return NodeProcess([*(command or [str(NODE_EXE)]), "--ros-args", *ros_args], env, log)


def serve_node(env: dict, ros_args: list[str], log: Path) -> Iterator[NodeProcess]:
    """A node for a module fixture (``yield from serve_node(...)``): started, yielded, then stopped
    and checked to have exited cleanly (exit 0, no traceback in its log)."""
    proc = start_node(env, ros_args, log)
    yield proc
    rc = proc.stop()
    assert rc == 0 and "Traceback" not in proc.log, f"exit code {rc}\n{proc.log[-3000:]}"
