"""``bisenet-ros segment``: segment image files or videos offline with the shared pipeline.

For each image ``D/<stem>_labels.png`` (class ids, input size; 16-bit PNG above 256 classes),
``D/<stem>_color.png`` and ``D/<stem>_overlay.png``; for each video ``D/<stem>_overlay.mp4``
(H.264 when PyAV is installed, see :mod:`bisenet_ros.video`) and ``D/<stem>_labels/NNNNNN.png``
(the class ids of every frame), with a progress bar on a terminal.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from ..errors import ImageError
from ..video import VideoWriter
from .common import add_model_arguments, pipeline_from_args

HELP = "segment images or videos; writes labels, colour and overlay files"
EXAMPLES = """\
  bisenet-ros segment street.jpg --weights models/bisenetv2_synthetic_street.pth --out out/
  bisenet-ros segment frames/*.png --weights model_final_v2_city.pth --input-size 512x1024 --out out/
  bisenet-ros segment drive.mp4 --weights models/bisenetv2_synthetic_street.pth --out out/ --max-frames 100
"""

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files or video files")
    parser.add_argument("--out", "--out-dir", dest="out", required=True, type=Path,
                        help="output directory (created; --out-dir is the old spelling)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the mask, 0-1")
    parser.add_argument("--max-frames", type=int, default=0, help="videos: stop after N frames (0 = all)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar for videos (there is none anyway when stderr is not a terminal)")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    missing = [p for p in args.inputs if not Path(p).is_file()]
    if missing:
        raise ImageError(f"{missing[0]}: no such file" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    pipeline = pipeline_from_args(args, overlay_alpha=args.alpha)
    args.out.mkdir(parents=True, exist_ok=True)
    info = pipeline.info
    print(f"model {info['model']} ({info['num_classes']} classes, {info['dataset']}) on {info['device']}, "
          f"backend {info['backend']}, input {info['input_size']}"
          + (f", classes remapped by {info['class_remap']}" if info.get('class_remap') else ""), file=sys.stderr)
    for name in args.inputs:
        path = Path(name)
        if path.suffix.lower() in VIDEO_SUFFIXES:
            out = segment_video(pipeline, path, args.out, args.max_frames, progress=not args.no_progress)
        else:
            out = segment_image(pipeline, path, args.out)
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


def segment_video(pipeline, path: Path, out_dir: Path, max_frames: int = 0, progress: bool = True) -> Path:
    """Write ``<stem>_overlay.mp4`` (every frame's overlay) and ``<stem>_labels/NNNNNN.png``
    (every frame's class ids); a progress bar on a terminal. Returns the video path."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ImageError(f"{path}: not a readable video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    total = min(total, max_frames) if max_frames and total else (max_frames or total or None)
    labels_dir = out_dir / f"{path.stem}_labels"
    labels_dir.mkdir(parents=True, exist_ok=True)
    writer = VideoWriter(out_dir / f"{path.stem}_overlay.mp4", fps, order="bgr")
    from ..progress import progress_bar

    bar = progress_bar(total=total, unit="frame", desc=path.name, enabled=progress)  # on a terminal only
    try:
        while not max_frames or writer.frames < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            res = pipeline(frame, "bgr8", outputs=("overlay",))
            _write(labels_dir / f"{writer.frames:06d}.png", res.labels)
            writer.write(res.overlay)
            bar.update(1)
    finally:
        bar.close()
        cap.release()
        writer.close()
    if writer.frames == 0:
        raise ImageError(f"{path}: no frames could be decoded")
    print(f"{labels_dir}/ ({writer.frames} label PNGs), {writer.path} ({writer.codec})", file=sys.stderr)
    return writer.path


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
