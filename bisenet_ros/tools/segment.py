"""``bisenet-ros segment``: segment image files or videos offline with the shared pipeline.

For each image ``D/<stem>_labels.png`` (class ids, input size; 16-bit PNG above 256 classes),
``D/<stem>_color.png`` and ``D/<stem>_overlay.png``; for each video ``D/<stem>_overlay.mp4``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from ..errors import BisenetError, ImageError, one_line
from ..images import check_pixels, decode_image_bytes
from ..outputs import REPORT_DIR, OutputError, atomic_file, check_in_dir, check_output, prepare_dir
from .common import add_model_arguments, number, pipeline_from_args

HELP = "segment images or videos; writes labels, colour and overlay files"

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files or video files")
    parser.add_argument("--out-dir", required=True, type=Path, help="output directory")
    parser.add_argument("--alpha", type=number(float, 0, 1), default=0.5, help="overlay opacity of the mask, 0-1")
    parser.add_argument("--max-frames", type=number(int, 0), default=0, help="videos: stop after N frames (0 = all)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files in a directory bisenet-ros did not create")
    add_model_arguments(parser)


def output_stems(paths: list[Path]) -> dict[Path, str]:
    """A distinct output stem per input: the file stem, or -- where stems collide (``a/x.png``,
    ``b/x.png``, ``x.jpg``) -- the path's parts joined with '_' (``a_x_png``, ``b_x_png``, ``x_jpg``)."""
    by_stem: dict[str, list[Path]] = {}
    for path in paths:
        by_stem.setdefault(path.stem, []).append(path)
    base = Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))
    stems: dict[Path, str] = {}
    taken: set[str] = set()
    for path in paths:
        stem = path.stem
        if len(by_stem[stem]) > 1:
            rel = path.resolve().relative_to(base)
            stem = "_".join(rel.parts).replace(".", "_")
        unique, n = stem, 2
        while unique in taken:
            unique, n = f"{stem}-{n}", n + 1
        taken.add(unique)
        stems[path] = unique
    return stems


def output_names(path: Path, stem: str) -> list[str]:
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return [f"{stem}_overlay.mp4"]
    return [f"{stem}_labels.png", f"{stem}_color.png", f"{stem}_overlay.png"]


def check_outputs(args: argparse.Namespace, paths: list[Path], stems: dict[Path, str]) -> None:
    """Before the model loads: no output over an input or over a user's file."""
    check_output(args.out_dir, paths, kind=REPORT_DIR, overwrite=args.overwrite, option="--out-dir")
    names = [n for p in paths for n in output_names(p, stems[p])]
    inputs = {p.resolve() for p in paths}
    clash = [n for n in names if (args.out_dir / n).resolve() in inputs]
    if clash:
        raise OutputError(f"output {args.out_dir / clash[0]} would replace an input; choose another --out-dir")
    check_in_dir(args.out_dir, names, overwrite=args.overwrite)


def run(args: argparse.Namespace) -> int:
    paths = list(dict.fromkeys(Path(p) for p in args.inputs))  # each input once
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise ImageError(f"{missing[0]}: no such file" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    stems = output_stems(paths)
    check_outputs(args, paths, stems)
    pipeline = pipeline_from_args(args, overlay_alpha=args.alpha)
    prepare_dir(args.out_dir, "segment")
    info = pipeline.info
    print(f"model {info['model']} ({info['num_classes']} classes, {info['dataset']}) on {info['device']}, "
          f"backend {info['backend']}, input {info['input_size']}", file=sys.stderr)
    failed: list[str] = []
    for path in paths:  # a bad file is reported and skipped; the others are still done
        try:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                out = segment_video(pipeline, path, args.out_dir, args.max_frames, stems[path])
            else:
                out = segment_image(pipeline, path, args.out_dir, stems[path])
        except BisenetError as exc:
            failed.append(one_line(str(exc)))
            print(f"bisenet-ros segment: skipped: {failed[-1]}", file=sys.stderr)
            continue
        print(out)
    if failed:
        raise ImageError(f"{len(failed)} of {len(paths)} inputs failed (first: {failed[0]})")
    return 0


def segment_image(pipeline, path: Path, out_dir: Path, stem: str | None = None) -> Path:
    """Write the three PNGs for one image; returns the labels path."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        image, encoding = decode_image_bytes(data, str(path), pipeline.max_pixels)
    except ImageError as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from None
    res = pipeline(image, encoding, outputs=("color", "overlay"))
    base = out_dir / (stem or path.stem)
    _write(Path(f"{base}_labels.png"), res.labels)
    _write(Path(f"{base}_color.png"), cv2.cvtColor(res.color, cv2.COLOR_RGB2BGR))
    overlay = res.overlay if res.overlay_encoding == "bgr8" else cv2.cvtColor(res.overlay, cv2.COLOR_RGB2BGR)
    _write(Path(f"{base}_overlay.png"), overlay)
    return Path(f"{base}_labels.png")


def segment_video(pipeline, path: Path, out_dir: Path, max_frames: int = 0, stem: str | None = None) -> Path:
    """Write ``<stem>_overlay.mp4`` with the overlay of every frame."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ImageError(f"{path}: not a readable video")
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    try:
        check_pixels(w, h, pipeline.max_pixels)  # before any frame is decoded
    except ImageError as exc:
        cap.release()
        raise ImageError(f"{path}: {exc}") from None
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if math.isfinite(fps) and 0 < fps <= 1000 else 10.0
    out_path = out_dir / f"{stem or path.stem}_overlay.mp4"
    writer = None
    frames = 0
    try:
        with atomic_file(out_path) as tmp:
            while not max_frames or frames < max_frames:
                ok, frame = cap.read()
                if not ok:
                    break
                res = pipeline(frame, "bgr8", outputs=("overlay",))
                if writer is None:
                    fh, fw = res.overlay.shape[:2]
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (fw, fh))
                writer.write(res.overlay)
                frames += 1
            if writer is not None:
                writer.release()
            if frames == 0:
                raise ImageError(f"{path}: no frames could be decoded")
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    return out_path


def _write(path: Path, image: np.ndarray) -> None:
    with atomic_file(path) as tmp:  # never a half-written PNG
        if not cv2.imwrite(str(tmp), image):
            raise OutputError(f"{path}: could not be written")
