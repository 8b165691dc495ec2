"""``bisenet-ros camera SOURCE`` with real processes: a subscriber receives the frames with the
calibration YAML's K (video, looping, stopped with SIGINT: exit 0); an image folder played once
ends by itself with exit 0; bad input is one line, exit 2."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from bisenet_ros.data.camera_source import CameraError, read_calibration
from bisenet_ros.cli import main
from bisenet_ros.ros.client import qos_profile

EXE = Path(sys.executable).with_name("bisenet-ros")
K = [50.0, 0.0, 32.0, 0.0, 51.0, 24.0, 0.0, 0.0, 1.0]
CALIBRATION = f"""\
image_width: 64
image_height: 48
camera_name: test_cam
camera_matrix: {{rows: 3, cols: 3, data: {K}}}
distortion_model: plumb_bob
distortion_coefficients: {{rows: 1, cols: 5, data: [0.1, -0.01, 0.0, 0.0, 0.0]}}
rectification_matrix: {{rows: 3, cols: 3, data: [1, 0, 0, 0, 1, 0, 0, 0, 1]}}
projection_matrix: {{rows: 3, cols: 4, data: [50.0, 0, 32.0, 0, 0, 51.0, 24.0, 0, 0, 0, 1, 0]}}
"""


@pytest.fixture
def calibration(tmp_path) -> Path:
    path = tmp_path / "camera.yaml"
    path.write_text(CALIBRATION)
    return path


def _video(path: Path, n: int = 6) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(n):
        writer.write(np.full((48, 64, 3), 30 * i, np.uint8))
    writer.release()
    return path


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_video_frames_carry_the_yaml_calibration(ros_env, client, tmp_path, calibration):
    client.subscribe("/cam/image_raw", "image", qos_profile(depth=50))
    client.subscribe("/cam/camera_info", "camera_info", qos_profile(depth=50))
    proc = subprocess.Popen([str(EXE), "camera", str(_video(tmp_path / "drive.avi")), "--camera-info",
                             str(calibration), "--fps", "20", "--topic", "/cam/image_raw", "--frame-id", "cam"],
                            env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert client.wait_until(lambda: len(client.messages("/cam/image_raw")) >= 8, timeout=90), \
            "no frames from the camera process"  # more than the video holds: it loops
    finally:
        rc = _stop(proc)
    out = proc.stdout.read()
    assert rc == 0, out
    images, infos = client.messages("/cam/image_raw"), client.messages("/cam/camera_info")
    img = images[0]
    assert (img.width, img.height, img.encoding, img.header.frame_id) == (64, 48, "bgr8", "cam")
    info = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in infos}
    paired = info[(img.header.stamp.sec, img.header.stamp.nanosec)]  # same stamp as the image
    assert list(paired.k) == K and list(paired.d) == [0.1, -0.01, 0.0, 0.0, 0.0]
    assert paired.distortion_model == "plumb_bob" and (paired.width, paired.height) == (64, 48)
    assert list(paired.p)[:3] == [50.0, 0.0, 32.0]


def test_image_folder_played_once_exits_0(ros_env, client, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"f{i}.png"), np.full((24, 32, 3), 50 * (i + 1), np.uint8))
    client.subscribe("/camera/image_raw", "image", qos_profile(depth=50))
    client.subscribe("/camera/camera_info", "camera_info", qos_profile(depth=50))
    proc = subprocess.run([str(EXE), "camera", str(folder), "--once", "--fps", "10", "--wait-subscriber", "60"],
                          env=ros_env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "published 3 frames" in proc.stderr
    assert client.wait_until(lambda: len(client.messages("/camera/image_raw")) == 3, timeout=30), \
        [int(np.frombuffer(m.data, np.uint8)[0]) for m in client.messages("/camera/image_raw")]
    values = [int(np.frombuffer(m.data, np.uint8)[0]) for m in client.messages("/camera/image_raw")]
    assert values == [50, 100, 150]  # in name order
    assert client.wait_until(lambda: len(client.messages("/camera/camera_info")) == 3, timeout=30), \
        len(client.messages("/camera/camera_info"))
    assert not any(client.messages("/camera/camera_info")[0].k)  # uncalibrated: all-zero K


@pytest.mark.parametrize("argv, needle", [
    (["{tmp}/missing.mp4"], "no such file, folder or device"),
    (["{tmp}/empty"], "no images"),
    (["{tmp}/not_a_video.mp4"], "not a video OpenCV can read"),
    (["{tmp}/frames", "--camera-info", "{tmp}/bad.yaml"], "'camera_matrix' has 5 values for 3x3"),
    (["{tmp}/frames", "--camera-info", "{tmp}/camera.yaml"], "camera info is for 64x48 images"),
    (["{tmp}/frames", "--topic", "bad topic"], "not a valid ROS 2 topic name"),
])
def test_bad_input_is_one_line_exit_2(ros_env, tmp_path, calibration, capsys, argv, needle):
    (tmp_path / "empty").mkdir()
    (tmp_path / "frames").mkdir()
    cv2.imwrite(str(tmp_path / "frames" / "a.png"), np.zeros((10, 12, 3), np.uint8))
    (tmp_path / "not_a_video.mp4").write_bytes(b"\0" * 100)
    (tmp_path / "bad.yaml").write_text(CALIBRATION.replace(str(K), "[1, 2, 3, 4, 5]"))
    assert main(["camera", *[a.format(tmp=tmp_path) for a in argv], "--once"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err, err


def test_calibration_file_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("image_width: 4\nimage_height: 3\ncamera_matrix: {rows: 3, cols: 3, data: [2,0,1,0,2,1,0,0,1]}\n")
    cal = read_calibration(path)
    assert cal.r == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert cal.p == (2.0, 0.0, 1.0, 0.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0) and cal.d == ()
    path.write_text("image_width: 4\nimage_height: 3\ncamera_matrix: {rows: 3, cols: 3, data: [.nan,0,1,0,2,1,0,0,1]}\n")
    with pytest.raises(CameraError, match="finite"):
        read_calibration(path)
