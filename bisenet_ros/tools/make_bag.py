"""``bisenet-ros make-bag``: a ROS 2 bag (camera images, optional ground truth, CameraInfo) from a
video or an image folder, e.g. to evaluate a model on a labelled dataset with ``eval-bag``.

Image folders are read in sorted order (recursively). Labels in ``--labels`` are matched to
images by name: the same stem (``a.jpg`` <-> ``a.png``), or Cityscapes pairs
``<city>_<seq>_<frame>_leftImg8bit.png`` <-> ``..._gtFine_labelTrainIds.png`` (or
``..._gtFine_labelIds.png`` together with ``--label-map labelIds``).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..data.bags import STORAGES, BagError, check_bag_output, write_image_bag
from ..data.datasets import load_preset
from ..data.images import read_image_file
from ..errors import ConfigError, file_problem
from ..progress import progress_bar
from .common import number

HELP = "write a ROS 2 bag (Image + ground-truth labels + CameraInfo) from a video or image folder"
EXAMPLES = """\
  bisenet-ros make-bag --video drive.mp4 --out drive_bag --every 2
  bisenet-ros make-bag --images cityscapes/leftImg8bit/val --labels cityscapes/gtFine/val \\
      --label-map labelIds --out city_val_bag
"""

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}
CITY_IMAGE = "_leftImg8bit"
#: a ROS 2 topic name: '/'-separated tokens of letters, digits and '_', no token starting with a digit
TOPIC_NAME = re.compile(r"/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")
CITY_LABELS = ("_gtFine_labelTrainIds", "_gtFine_labelIds", "_gtCoarse_labelTrainIds", "_gtCoarse_labelIds")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="bag directory to create")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", type=Path, help="video file (any format OpenCV reads)")
    src.add_argument("--images", type=Path, help="folder of images (sorted by path, searched recursively)")
    parser.add_argument("--labels", type=Path, default=None,
                        help="folder of ground-truth label images (class ids; matched to --images by name)")
    parser.add_argument("--label-map", default=None,
                        help="convert raw label values with a preset label map (e.g. labelIds for Cityscapes)")
    parser.add_argument("--dataset", default="cityscapes", help="preset that holds --label-map (default cityscapes)")
    parser.add_argument("--fps", type=number(float, 0.01, 10000), default=None,
                        help="frame rate of the stamps (default: the video's rate, else 10)")
    parser.add_argument("--topic", default="/camera/image_raw", help="camera image topic")
    parser.add_argument("--label-topic", default="/camera/labels", help="ground-truth label topic")
    parser.add_argument("--info-topic", default="/camera/camera_info", help="CameraInfo topic ('' for none)")
    parser.add_argument("--frame-id", default="camera", help="header frame_id")
    parser.add_argument("--intrinsics", type=intrinsics_type, default=None, metavar="FX,FY,CX,CY",
                        help="pinhole intrinsics in pixels for the CameraInfo (no distortion); "
                             "default: none, the CameraInfo says uncalibrated (all-zero K)")
    parser.add_argument("--encoding", choices=["rgb8", "bgr8"], default="rgb8", help="image encoding in the bag")
    parser.add_argument("--storage", choices=STORAGES, default="mcap", help="bag storage plugin")
    parser.add_argument("--max-frames", type=number(int, 0), default=0, help="stop after N frames (0 = all)")
    parser.add_argument("--every", type=number(int, 1), default=1, help="video: keep every N-th frame")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bag at --out")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (there is none anyway when stderr is not a terminal)")


def intrinsics_type(text: str) -> tuple[float, float, float, float]:
    """``'600,600,320,240'`` -> (fx, fy, cx, cy) (argparse type): focal lengths positive."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not FX,FY,CX,CY (four numbers)") from None
    if len(values) != 4 or not all(np.isfinite(values)):
        raise argparse.ArgumentTypeError(f"'{text}' needs four finite numbers FX,FY,CX,CY")
    if values[0] <= 0 or values[1] <= 0:
        raise argparse.ArgumentTypeError(f"focal lengths must be positive, got fx={values[0]:g} fy={values[1]:g}")
    return values  # type: ignore[return-value]


def _stem_key(path: Path) -> str:
    """Name used to match an image with its label: the Cityscapes prefix or the plain stem."""
    stem = path.stem
    for suffix in (CITY_IMAGE, *CITY_LABELS):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise BagError(f"{folder}: no such directory")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    city = [p for p in files if p.stem.endswith(CITY_IMAGE)]
    return city or files


def match_labels(images: list[Path], label_dir: Path, label_map: str | None) -> list[Path]:
    """The label file of every image (Cityscapes trainIds preferred over labelIds)."""
    if not label_dir.is_dir():
        raise BagError(f"{label_dir}: no such directory")
    by_key: dict[str, dict[str, Path]] = {}
    for p in sorted(label_dir.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            kind = next((s for s in CITY_LABELS if p.stem.endswith(s)), "")
            if p.stem.endswith(("_color", "_instanceIds", "_polygons")):
                continue  # other Cityscapes annotation files
            by_key.setdefault(_stem_key(p), {})[kind] = p
    out = []
    for img in images:
        cands = by_key.get(_stem_key(img))
        if not cands:
            raise BagError(f"no label image for {img.name} in {label_dir} "
                           f"(expected {_stem_key(img)}.png or {_stem_key(img)}_gtFine_labelTrainIds.png)")
        if label_map:  # raw values to convert: never the already converted trainIds
            order = ["_gtFine_labelIds", "_gtCoarse_labelIds", ""]
        else:
            order = ["_gtFine_labelTrainIds", "_gtCoarse_labelTrainIds", ""]
        pick = next((cands[k] for k in order if k in cands), None)
        if pick is None and label_map:
            raise BagError(f"{next(iter(cands.values())).name} holds Cityscapes trainIds already; "
                           "drop --label-map")
        if pick is None:
            raise BagError(f"{next(iter(cands.values())).name} holds Cityscapes labelIds; "
                           "pass --label-map labelIds to convert them to trainIds")
        out.append(pick)
    return out


def read_label(path: Path, lut: np.ndarray | None) -> np.ndarray:
    lab = read_image_file(path, cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise BagError(f"{path}: not a readable image")
    if lab.ndim == 3:
        if not (np.array_equal(lab[..., 0], lab[..., 1]) and np.array_equal(lab[..., 0], lab[..., 2])):
            raise BagError(f"{path}: label images must be single-channel class ids, got a colour image")
        lab = lab[..., 0]
    if lab.dtype not in (np.uint8, np.uint16):
        raise BagError(f"{path}: label images must be 8- or 16-bit, got {lab.dtype}")
    if lut is not None:
        lab = lut[lab]
        lab = lab.astype(np.uint8 if lab.max(initial=0) < 256 else np.uint16)
    return lab


def read_rgb(path: Path) -> np.ndarray:
    img = read_image_file(path, cv2.IMREAD_COLOR)
    if img is None:
        raise BagError(f"{path}: not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def folder_frames(images: list[Path], labels: list[Path] | None, lut: np.ndarray | None
                  ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    for i, path in enumerate(images):
        rgb = read_rgb(path)
        lab = read_label(labels[i], lut) if labels else None
        if lab is not None and lab.shape != rgb.shape[:2]:
            raise BagError(f"{labels[i].name} ({lab.shape[1]}x{lab.shape[0]}) and {path.name} "
                           f"({rgb.shape[1]}x{rgb.shape[0]}) differ in size")
        yield rgb, lab


def video_frames(path: Path, every: int = 1) -> tuple[Iterator[tuple[np.ndarray, None]], float | None]:
    """Frames of a video (RGB) and its frame rate (None if unknown)."""
    problem = file_problem(path)
    if problem:
        raise BagError(f"{path}: {problem}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise BagError(f"{path}: not a readable video")
    rate = cap.get(cv2.CAP_PROP_FPS)

    def gen():
        i = 0
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                if i % every == 0:
                    yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), None
                i += 1
        finally:
            cap.release()

    return gen(), (rate / every if rate and rate > 0 else None)


def _limit(frames, n: int):
    for i, f in enumerate(frames):
        if n and i >= n:
            break
        yield f


def check_topics(args: argparse.Namespace) -> None:
    """Topic names valid for ROS 2, and one topic per kind of message."""
    named = {"--topic": args.topic, "--label-topic": args.label_topic if args.labels is not None else None,
             "--info-topic": args.info_topic or None}
    for option, topic in named.items():
        if topic is not None and not TOPIC_NAME.fullmatch(topic):
            raise ConfigError(f"{option} {topic!r} is not a valid ROS 2 topic name "
                              "(letters, digits, '_' and '/', e.g. /camera/image_raw)")
    used = [t for t in named.values() if t]
    if len(set(used)) != len(used):
        raise ConfigError(f"--topic, --label-topic and --info-topic must differ, got {used}")


def run(args: argparse.Namespace) -> int:
    check_topics(args)
    sources = [args.video, args.images, args.labels]
    check_bag_output(args.out, [s for s in sources if s is not None], args.overwrite, option="--out")
    if args.video is not None:
        if args.labels is not None:
            raise ConfigError("--labels works with --images (label files are matched to image files)")
        frames, video_fps = video_frames(args.video, args.every)
        fps = args.fps or video_fps or 10.0
    else:
        images = list_images(args.images)
        if not images:
            raise BagError(f"{args.images}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        if args.max_frames:
            images = images[: args.max_frames]
        lut = load_preset(args.dataset).label_lut(args.label_map) if args.label_map else None
        if args.label_map and args.labels is None:
            raise ConfigError("--label-map needs --labels")
        labels = match_labels(images, args.labels, args.label_map) if args.labels is not None else None
        frames = folder_frames(images, labels, lut)
        fps = args.fps or 10.0
    frames = progress_bar(_limit(frames, args.max_frames), enabled=not args.no_progress, unit="frame",
                          desc="make-bag", total=(len(images) if args.video is None else None))
    n = write_image_bag(
        args.out, frames, fps=fps, image_topic=args.topic,
        label_topic=args.label_topic if (args.video is None and args.labels is not None) else None,
        info_topic=args.info_topic or None, frame_id=args.frame_id, storage=args.storage,
        encoding=args.encoding, overwrite=args.overwrite, intrinsics=args.intrinsics,
        inputs=[s for s in sources if s is not None], tool="bisenet-ros make-bag",
    )
    print(f"{args.out}: {n} frames at {fps:g} fps on {args.topic}"
          + (f" with labels on {args.label_topic}" if args.video is None and args.labels is not None else "")
          + f" ({args.storage})")
    return 0
