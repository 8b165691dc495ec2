"""Frames for ``bisenet-ros camera`` (ROS-free): a video file, an image folder or a V4L2 device
through OpenCV, and camera intrinsics from a YAML in the camera_info_manager format.

The calibration file is the one ``camera_calibration`` writes and camera drivers read
(``image_width``, ``image_height``, ``camera_name``, ``camera_matrix``, ``distortion_model``,
``distortion_coefficients``, ``rectification_matrix``, ``projection_matrix``; each matrix as
``{rows, cols, data}``). Without one the camera is uncalibrated: K, R, P all zero, as
camera_info_manager publishes it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..errors import BisenetError, ImageError, one_line
from ..safe_yaml import load_yaml_file
from .images import MAX_PIXELS, check_pixels, decode_image_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_MATRICES = {"camera_matrix": (3, 3), "rectification_matrix": (3, 3), "projection_matrix": (3, 4)}


class CameraError(BisenetError):
    """A camera source or calibration file that cannot be used."""


@dataclass(frozen=True)
class Calibration:
    """CameraInfo content (row-major lists as in sensor_msgs/CameraInfo)."""

    width: int
    height: int
    k: tuple[float, ...]
    d: tuple[float, ...]
    r: tuple[float, ...]
    p: tuple[float, ...]
    distortion_model: str
    camera_name: str = ""

    @classmethod
    def uncalibrated(cls, width: int, height: int) -> Calibration:
        return cls(width, height, (0.0,) * 9, (), (0.0,) * 9, (0.0,) * 12, "")


def _matrix(data: dict, key: str, shape: tuple[int, int] | None, source: str) -> tuple[float, ...] | None:
    entry = data.get(key)
    if entry is None:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("data"), list):
        raise CameraError(f"{source}: '{key}' must be a mapping with rows, cols and data")
    values = entry["data"]
    rows, cols = entry.get("rows"), entry.get("cols")
    if shape is not None and (rows, cols) != shape:
        raise CameraError(f"{source}: '{key}' must be {shape[0]}x{shape[1]}, got {rows}x{cols}")
    if not isinstance(rows, int) or not isinstance(cols, int) or rows * cols != len(values):
        raise CameraError(f"{source}: '{key}' has {len(values)} values for {rows}x{cols}")
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise CameraError(f"{source}: '{key}' values must be numbers") from None
    if not all(math.isfinite(v) for v in out):
        raise CameraError(f"{source}: '{key}' values must be finite")
    return out


def read_calibration(path: str | Path) -> Calibration:
    """A camera_info_manager YAML -> :class:`Calibration`; :class:`CameraError` when unusable."""
    path = Path(path).expanduser()
    source = str(path)
    if not path.exists():
        raise CameraError(f"{source}: camera info file not found")
    data = load_yaml_file(path, "camera info YAML (camera_info_manager format)", error=CameraError)
    w, h = data.get("image_width"), data.get("image_height")
    if not isinstance(w, int) or not isinstance(h, int) or w < 1 or h < 1:
        raise CameraError(f"{source}: 'image_width' and 'image_height' must be positive integers")
    k = _matrix(data, "camera_matrix", _MATRICES["camera_matrix"], source)
    if k is None:
        raise CameraError(f"{source}: 'camera_matrix' is missing")
    d = _matrix(data, "distortion_coefficients", None, source) or ()
    r = _matrix(data, "rectification_matrix", _MATRICES["rectification_matrix"], source) or tuple(
        np.eye(3).reshape(-1).tolist())
    p = _matrix(data, "projection_matrix", _MATRICES["projection_matrix"], source) or (
        k[0], k[1], k[2], 0.0, k[3], k[4], k[5], 0.0, k[6], k[7], k[8], 0.0)
    model = str(data.get("distortion_model") or ("plumb_bob" if len(d) == 5 else ""))
    return Calibration(w, h, k, d, r, p, model, str(data.get("camera_name") or ""))


# -- frame sources -------------------------------------------------------------------------------------
class FrameSource:
    """Frames as (array, encoding); ``fps`` is the source's own rate when it has one."""

    kind = "source"
    fps: float | None = None
    live = False

    def frames(self) -> Iterator[tuple[np.ndarray, str]]:
        raise NotImplementedError

    def size(self) -> tuple[int, int] | None:
        """(width, height) of the frames when known before playing."""
        return None

    def check_calibration(self, cal: Calibration | None) -> None:
        size = self.size()
        if cal is not None and size is not None and (cal.width, cal.height) != size:
            raise CameraError(f"the camera info is for {cal.width}x{cal.height} images, the {self.kind} "
                              f"gives {size[0]}x{size[1]}")

    def close(self) -> None:
        pass


class FolderSource(FrameSource):
    kind = "image folder"

    def __init__(self, folder: Path, max_pixels: int) -> None:
        if folder.is_file():  # a single image: a folder of one
            self.kind, self.files = "image", [folder]
        else:
            self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise CameraError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        self.max_pixels = max_pixels

    def size(self) -> tuple[int, int] | None:
        image, _ = next(self.frames())
        return image.shape[1], image.shape[0]

    def frames(self) -> Iterator[tuple[np.ndarray, str]]:
        for path in self.files:
            try:
                image, enc = decode_image_bytes(path.read_bytes(), str(path), self.max_pixels)
            except (OSError, ImageError) as exc:
                raise CameraError(f"{path}: {one_line(exc)}") from None
            if enc == "bgra8":
                image, enc = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR), "bgr8"
            yield image, enc


class CaptureSource(FrameSource):
    """A video file or a V4L2 device read by OpenCV."""

    def __init__(self, capture: cv2.VideoCapture, name: str, live: bool, max_pixels: int) -> None:
        self.capture, self.name, self.live = capture, name, live
        self.kind = "V4L2 device" if live else "video file"
        w, h = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if w > 0 and h > 0:  # bounded before the first frame is read
            try:
                check_pixels(w, h, max_pixels)
            except ImageError as exc:
                raise CameraError(f"{name}: {exc}") from None
        self._size = (w, h) if w > 0 and h > 0 else None
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and math.isfinite(fps) and 0 < fps <= 1000 else None
        self.max_pixels = max_pixels

    def size(self) -> tuple[int, int] | None:
        return self._size

    def frames(self) -> Iterator[tuple[np.ndarray, str]]:
        if not self.live:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        while True:
            ok, frame = self.capture.read()
            if not ok or frame is None:
                return
            check_pixels(frame.shape[1], frame.shape[0], self.max_pixels)
            if frame.ndim == 2:
                yield frame, "mono8"
            else:
                yield frame[:, :, :3] if frame.shape[2] == 4 else frame, "bgr8"

    def close(self) -> None:
        self.capture.release()


def open_source(spec: str, max_pixels: int = MAX_PIXELS) -> FrameSource:
    """``spec``: a folder of images, a video file, or a V4L2 device (``/dev/videoN`` or ``N``)."""
    device = re.fullmatch(r"(?:/dev/video)?(\d+)", spec)
    if device or spec.startswith("/dev/"):
        target = int(device.group(1)) if device and not spec.startswith("/dev/") else spec
        if isinstance(target, str) and not Path(target).exists():
            raise CameraError(f"{spec}: no such device")
        capture = cv2.VideoCapture(target, cv2.CAP_V4L2)
        if not capture.isOpened():
            raise CameraError(f"{spec}: cannot open the V4L2 device (is it a camera, and free?)")
        return CaptureSource(capture, spec, True, max_pixels)
    path = Path(spec).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES):
        return FolderSource(path, max_pixels)
    if not path.is_file():
        raise CameraError(f"{spec}: no such file, folder or device")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise CameraError(f"{spec}: not a video OpenCV can read")
    source = CaptureSource(capture, spec, False, max_pixels)
    ok, _ = capture.read()
    if not ok:
        capture.release()
        raise CameraError(f"{spec}: the video holds no readable frame")
    return source
