"""``bisenet-ros segment``: segment image files or videos offline with the shared pipeline.

For each image ``D/<stem>_labels.png`` (class ids, input size; 16-bit PNG above 256 classes),
``D/<stem>_color.png`` and ``D/<stem>_overlay.png``; for each video ``D/<stem>_overlay.mp4``
(H.264 when PyAV is installed, see :mod:`bisenet_ros.data.video`) and ``D/<stem>_labels/NNNNNN.png``
(the class ids of every frame), with a progress bar on a terminal.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from ..data.images import check_pixels, decode_image_bytes
from ..data.video import VideoWriter
from ..errors import BisenetError, ImageError, file_problem, safe_text
from ..output_files import MARKER, REPORT_DIR, OutputError, atomic_file, check_in_dir, check_output, check_own_dir, prepare_dir
from .common import add_model_arguments, number, pipeline_from_args

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
    parser.add_argument("--alpha", type=number(float, 0, 1), default=0.5, help="overlay opacity of the mask, 0-1")
    parser.add_argument("--max-frames", type=number(int, 0), default=0, help="videos: stop after N frames (0 = all)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files in a directory bisenet-ros did not create")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar for videos (there is none anyway when stderr is not a terminal)")
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
            stem = "_".join(path.resolve().relative_to(base).parts).replace(".", "_")
        unique, n = stem, 2
        while unique in taken:
            unique, n = f"{stem}-{n}", n + 1
        taken.add(unique)
        stems[path] = unique
    return stems


def output_names(path: Path, stem: str) -> list[str]:
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return [f"{stem}_overlay.mp4", f"{stem}_labels"]
    return [f"{stem}_labels.png", f"{stem}_color.png", f"{stem}_overlay.png"]


def check_outputs(args: argparse.Namespace, paths: list[Path], stems: dict[Path, str]) -> None:
    """Before the model loads: no output over an input or over a user's file."""
    check_output(args.out, paths, kind=REPORT_DIR, overwrite=args.overwrite, option="--out")
    names = [n for p in paths for n in output_names(p, stems[p])]
    inputs = {p.resolve() for p in paths}
    clash = [n for n in names if (args.out / n).resolve() in inputs]
    if clash:
        raise OutputError(f"output {args.out / clash[0]} would replace an input; choose another --out")
    check_in_dir(args.out, [n for n in names if not n.endswith("_labels")], overwrite=args.overwrite)
    for name in names:  # a video's label folder: ours, new, or empty
        if name.endswith("_labels") and (args.out / name).exists():
            check_own_dir(args.out / name, paths, overwrite=args.overwrite or (args.out / MARKER).is_file())


def run(args: argparse.Namespace) -> int:
    paths = list(dict.fromkeys(Path(p) for p in args.inputs))  # each input once
    problems = [(p, why) for p in paths if (why := file_problem(p))]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ImageError(f"{problems[0][0]}: {problems[0][1]}{more}")
    stems = output_stems(paths)
    check_outputs(args, paths, stems)
    pipeline = pipeline_from_args(args, overlay_alpha=args.alpha)
    prepare_dir(args.out, "segment")
    info = pipeline.info
    print(f"model {info['model']} ({info['num_classes']} classes, {info['dataset']}) on {info['device']}, "
          f"backend {info['backend']}, input {info['input_size']}"
          + (f", classes remapped by {info['class_remap']}" if info.get('class_remap') else ""), file=sys.stderr)
    failed: list[str] = []
    for path in paths:  # a bad file is reported and skipped; the others are still done
        try:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                out = segment_video(pipeline, path, args.out, args.max_frames, progress=not args.no_progress,
                                    stem=stems[path])
            else:
                out = segment_image(pipeline, path, args.out, stems[path])
        except BisenetError as exc:
            failed.append(safe_text(str(exc)))
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


def segment_video(pipeline, path: Path, out_dir: Path, max_frames: int = 0, progress: bool = True,
                  stem: str | None = None) -> Path:
    """Write ``<stem>_overlay.mp4`` (every frame's overlay) and ``<stem>_labels/NNNNNN.png``
    (every frame's class ids); a progress bar on a terminal. Returns the video path."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ImageError(f"{path}: not a readable video")
    try:
        check_pixels(int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     pipeline.max_pixels)  # before any frame is decoded
    except ImageError as exc:
        cap.release()
        raise ImageError(f"{path}: {exc}") from None
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if math.isfinite(fps) and 0 < fps <= 1000 else 10.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    total = min(total, max_frames) if max_frames and total else (max_frames or total or None)
    stem = stem or path.stem
    labels_dir = prepare_dir(out_dir / f"{stem}_labels", "segment")
    final = out_dir / f"{stem}_overlay.mp4"
    from ..progress import progress_bar

    bar = progress_bar(total=total, unit="frame", desc=path.name, enabled=progress)  # on a terminal only
    with atomic_file(final) as tmp:  # an interrupted run leaves no half-written video
        writer = VideoWriter(tmp, fps, order="bgr")
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
    print(f"{labels_dir}/ ({writer.frames} label PNGs), {final} ({writer.codec})", file=sys.stderr)
    return final


def _write(path: Path, image: np.ndarray) -> None:
    with atomic_file(path) as tmp:  # never a half-written PNG
        if not cv2.imwrite(str(tmp), image):
            raise OutputError(f"{path}: could not be written")
