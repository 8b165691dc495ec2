"""``bisenet-ros segment`` on images and a video, through the console entry point."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from bisenet_ros.cli import main
from bisenet_ros.pipeline import build_pipeline


def test_segment_images_and_video(tiny_checkpoints, tmp_path, capsys):
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "street.png"), bgr)
    cv2.imwrite(str(tmp_path / "gray.png"), bgr[..., 0])
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (70, 45))
    for _ in range(3):
        writer.write(bgr)
    writer.release()
    out = tmp_path / "out"
    rc = main(["segment", str(tmp_path / "street.png"), str(tmp_path / "gray.png"), str(video),
               "--weights", str(tiny_checkpoints["bisenetv2"]), "--out", str(out), "--device", "cpu"])
    assert rc == 0
    labels = cv2.imread(str(out / "street_labels.png"), cv2.IMREAD_UNCHANGED)
    color = cv2.imread(str(out / "street_color.png"))
    overlay = cv2.imread(str(out / "street_overlay.png"))
    assert labels.shape == (45, 70) and labels.dtype == np.uint8
    assert color.shape == overlay.shape == (45, 70, 3)
    # same labels as the pipeline used directly on the same frame
    pipe = build_pipeline(weights=tiny_checkpoints["bisenetv2"], device="cpu")
    np.testing.assert_array_equal(labels, pipe(bgr, "bgr8").labels)
    np.testing.assert_array_equal(color[..., ::-1], pipe.preset.palette[labels])
    assert (out / "gray_labels.png").is_file()
    cap = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 3
    # the video's class ids too, one PNG per frame, equal to the pipeline's
    video_labels = sorted((out / "clip_labels").glob("*.png"))
    assert [p.name for p in video_labels] == ["000000.png", "000001.png", "000002.png"]
    first = cv2.imread(str(video_labels[0]), cv2.IMREAD_UNCHANGED)
    cap = cv2.VideoCapture(str(video))
    np.testing.assert_array_equal(first, pipe(cap.read()[1], "bgr8").labels)


def test_segment_video_is_h264_and_old_out_dir_spelling_works(tiny_checkpoints, tmp_path):
    """Browsers play H.264 MP4s, not mp4v: with PyAV installed (requirements.txt) the video is H.264."""
    from bisenet_ros.data.video import h264_available

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (71, 45))  # odd width
    for i in range(2):
        writer.write(np.full((45, 71, 3), 60 * i, np.uint8))
    writer.release()
    assert main(["segment", str(video), "--weights", str(tiny_checkpoints["bisenetv2"]),
                 "--out-dir", str(tmp_path / "o"), "--device", "cpu"]) == 0
    assert h264_available()
    cap = cv2.VideoCapture(str(tmp_path / "o" / "clip_overlay.mp4"))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    assert fourcc in ("avc1", "h264", "H264"), fourcc


def test_segment_errors_are_one_line(tiny_checkpoints, tmp_path):
    exe = Path(sys.executable).with_name("bisenet-ros")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    cases = [
        ([str(tmp_path / "missing.png")], "missing.png: not found"),
        ([str(tmp_path)], f"{tmp_path}: is a directory"),
        ([str(bad)], "not a readable image"),
    ]
    for inputs, fragment in cases:
        proc = subprocess.run([str(exe), "segment", *inputs, "--weights", str(tiny_checkpoints["bisenetv1"]),
                               "--out", str(tmp_path / "o")], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert fragment in lines[-1] and "Traceback" not in proc.stderr
    proc = subprocess.run([str(exe), "segment", str(bad), "--weights", str(tmp_path / "none.pth"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2 and "weights file not found" in proc.stderr and "Traceback" not in proc.stderr


def test_video_without_h264_writes_mp4v_with_a_clear_note(tmp_path, monkeypatch, capsys):
    """Where no H.264 encoder is installed the video is still written, and the user is told why it
    may not play in a browser and how to convert it."""
    from bisenet_ros.data import video

    monkeypatch.setattr(video, "h264_available", lambda: False)
    with video.VideoWriter(tmp_path / "v.mp4", 5.0) as writer:
        for i in range(3):
            writer.write(np.full((20, 30, 3), 50 * i, np.uint8))
    assert writer.codec == "mp4v" and writer.frames == 3
    err = capsys.readouterr().err
    assert "will not play in web browsers" in err and "pip install av" in err and "libx264" in err
    cap = cv2.VideoCapture(str(tmp_path / "v.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode() in ("mp4v", "FMP4")  # MPEG-4 Part 2
    assert cap.read()[0]
