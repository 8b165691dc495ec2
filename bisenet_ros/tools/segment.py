"""``bisenet-ros segment``: segment image files or videos offline with the shared pipeline.

For each image ``D/<stem>_labels.png`` (class ids, input size; 16-bit PNG above 256 classes),
``D/<stem>_color.png`` and ``D/<stem>_overlay.png``; for each video ``D/<stem>_overlay.mp4``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from ..errors import ImageError
from .common import add_model_arguments, pipeline_from_args

HELP = "segment images or videos; writes labels, colour and overlay files"

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files or video files")
    parser.add_argument("--out-dir", required=True, type=Path, help="output directory")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the mask, 0-1")
    parser.add_argument("--max-frames", type=int, default=0, help="videos: stop after N frames (0 = all)")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    missing = [p for p in args.inputs if not Path(p).is_file()]
    if missing:
        raise ImageError(f"{missing[0]}: no such file" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    pipeline = pipeline_from_args(args, overlay_alpha=args.alpha)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    info = pipeline.info
    print(f"model {info['model']} ({info['num_classes']} classes, {info['dataset']}) on {info['device']}, "
          f"backend {info['backend']}, input {info['input_size']}", file=sys.stderr)
    for name in args.inputs:
        path = Path(name)
        if path.suffix.lower() in VIDEO_SUFFIXES:
            out = segment_video(pipeline, path, args.out_dir, args.max_frames)
        else:
            out = segment_image(pipeline, path, args.out_dir)
        print(out)
    return 0


def segment_image(pipeline, path: Path, out_dir: Path) -> Path:
    """Write the three PNGs for one image; returns the labels path."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f"{path}: not a readable image")
    encoding = _encoding_of(image, path)
    if image.dtype != np.uint8 and encoding != "mono16":
        raise ImageError(f"{path}: unsupported pixel type {image.dtype}")
    res = pipeline(image, encoding, outputs=("color", "overlay"))
    stem = out_dir / path.stem
    _write(Path(f"{stem}_labels.png"), res.labels)
    _write(Path(f"{stem}_color.png"), cv2.cvtColor(res.color, cv2.COLOR_RGB2BGR))
    overlay = res.overlay if res.overlay_encoding == "bgr8" else cv2.cvtColor(res.overlay, cv2.COLOR_RGB2BGR)
    _write(Path(f"{stem}_overlay.png"), overlay)
    return Path(f"{stem}_labels.png")


def segment_video(pipeline, path: Path, out_dir: Path, max_frames: int = 0) -> Path:
    """Write ``<stem>_overlay.mp4`` with the overlay of every frame."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ImageError(f"{path}: not a readable video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    out_path = out_dir / f"{path.stem}_overlay.mp4"
    writer = None
    frames = 0
    try:
        while not max_frames or frames < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            res = pipeline(frame, "bgr8", outputs=("overlay",))
            if writer is None:
                h, w = res.overlay.shape[:2]
                writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            writer.write(res.overlay)
            frames += 1
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if frames == 0:
        raise ImageError(f"{path}: no frames could be decoded")
    return out_path


def _encoding_of(image: np.ndarray, path: Path) -> str:
    if image.ndim == 2:
        return "mono16" if image.dtype == np.uint16 else "mono8"
    channels = image.shape[2]
    if channels == 3:
        return "bgr8"
    if channels == 4:
        return "bgra8"
    raise ImageError(f"{path}: {channels}-channel images are not supported")


def _write(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise ImageError(f"{path}: could not be written")
