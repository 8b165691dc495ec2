"""What the tools write around their results: progress bars only on a terminal, honest CameraInfo.

The tools run as a user runs them (``python -m bisenet_ros.cli ...`` child processes), once with
stderr a pipe (as in CI, logs, ``2>file``) and once with stderr a pseudo-terminal.
"""
from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import cv2
import numpy as np
import pytest

from bisenet_ros.data import bags


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(folder / f"f{i}.png"), rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    return folder


def make_bag(args: list[str], tty: bool) -> tuple[int, str]:
    """Run ``bisenet-ros make-bag`` with stderr a pipe or a pseudo-terminal; (exit status, stderr)."""
    cmd = [sys.executable, "-m", "bisenet_ros.cli", "make-bag", *args]
    if not tty:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ))
        return proc.returncode, proc.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=slave, env=dict(os.environ))
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=300), b"".join(chunks).decode(errors="replace")


def test_progress_bar_only_on_a_terminal(image_dir, tmp_path):
    rc, err = make_bag(["--images", str(image_dir), "--out", str(tmp_path / "pipe")], tty=False)
    assert rc == 0, err
    assert "\r" not in err and "make-bag:" not in err  # no bar in a pipe or a log file
    rc, err = make_bag(["--images", str(image_dir), "--out", str(tmp_path / "tty")], tty=True)
    assert rc == 0, err
    assert "make-bag:" in err and "3/3" in err  # the bar, on a terminal
    rc, err = make_bag(["--images", str(image_dir), "--out", str(tmp_path / "quiet"), "--no-progress"], tty=True)
    assert rc == 0, err
    assert "make-bag:" not in err


def _infos(path: Path) -> list:
    with bags.open_bag(path) as reader:
        conns = [c for c in reader.connections if c.topic == "/camera/camera_info"]
        return [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections=conns)]


def test_make_bag_camera_info_uncalibrated_unless_intrinsics_given(image_dir, tmp_path):
    rc, err = make_bag(["--images", str(image_dir), "--out", str(tmp_path / "plain")], tty=False)
    assert rc == 0, err
    info = _infos(tmp_path / "plain")[0]
    assert (info.width, info.height) == (32, 24)
    assert not np.any(info.k) and not np.any(info.p)  # K[0] == 0: uncalibrated, nothing invented
    rc, err = make_bag(["--images", str(image_dir), "--out", str(tmp_path / "calib"),
                        "--intrinsics", "30.5,31,15.5,11.5"], tty=False)
    assert rc == 0, err
    info = _infos(tmp_path / "calib")[0]
    np.testing.assert_array_equal(info.k, [30.5, 0, 15.5, 0, 31, 11.5, 0, 0, 1])
    np.testing.assert_array_equal(info.p, [30.5, 0, 15.5, 0, 0, 31, 11.5, 0, 0, 0, 1, 0])
    assert info.distortion_model == "plumb_bob" and not np.any(info.d)
    for bad in ("1,2,3", "0,30,15,11", "a,b,c,d"):
        rc, err = make_bag(["--images", str(image_dir), "--out", str(tmp_path / "bad"), "--intrinsics", bad],
                           tty=False)
        assert rc == 2 and "--intrinsics" in err and "Traceback" not in err
        assert not (tmp_path / "bad").exists()
