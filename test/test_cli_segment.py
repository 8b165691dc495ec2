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
               "--weights", str(tiny_checkpoints["bisenetv2"]), "--out-dir", str(out), "--device", "cpu"])
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


def test_segment_errors_are_one_line(tiny_checkpoints, tmp_path):
    exe = Path(sys.executable).with_name("bisenet-ros")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    cases = [
        ([str(tmp_path / "missing.png")], "no such file"),
        ([str(bad)], "not a readable image"),
    ]
    for inputs, fragment in cases:
        proc = subprocess.run([str(exe), "segment", *inputs, "--weights", str(tiny_checkpoints["bisenetv1"]),
                               "--out-dir", str(tmp_path / "o")], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert fragment in lines[-1] and "Traceback" not in proc.stderr
    proc = subprocess.run([str(exe), "segment", str(bad), "--weights", str(tmp_path / "none.pth"),
                           "--out-dir", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2 and "weights file not found" in proc.stderr and "Traceback" not in proc.stderr
