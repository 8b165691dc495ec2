"""Semantic point clouds, class masks and class areas from labels + a registered depth image (ROS-free).

The node's ``~/points``, ``~/mask`` and per-class area values are computed here; the ROS layer only
wraps the arrays in messages (``bisenet_ros/ros/conversions.py``).

- :func:`depth_to_metres`: a 16UC1 (millimetres) or 32FC1 (metres) depth array -> float32 metres,
  NaN where there is no measurement (0, NaN, +-inf, negative).
- :func:`depth_intrinsics`: the colour camera's K (CameraInfo of size ``W x H``) for a depth image
  or label image of another resolution of the same optical frame (pixel-centre convention, as the
  pipeline resizes), refusing sizes that are not a clean scale of the camera's, depth more than
  :data:`MAX_DEPTH_SCALE` times larger or :data:`MAX_DEPTH_DOWNSCALE` times smaller than the camera
  per side, and intrinsics that are not finite and plausible (:func:`check_intrinsics`).
- :class:`PointCloudBuilder`: vectorised back-projection ``X = (u - cx) z / fx``, ``Y = (v - cy) z / fy``,
  ``Z = z`` (undistorted depth assumed), with stride, depth limits and a class filter, each depth
  pixel labelled with the label pixel under its centre; packed into a structured array with the
  PointCloud2 layout :data:`POINT_DTYPE` (x, y, z float32, rgb float32 packed as PCL/rviz2 read it,
  label uint16).
- :func:`class_mask`, :func:`class_areas`, :func:`resolve_classes`;
- :class:`DepthBuffer`: a few recent depth messages, paired with an image by stamp.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ..errors import ConfigError, ImageError
from .images import DEPTH_ENCODINGS

#: the largest depth image, per side, relative to the colour image: bounds one cloud's size
MAX_DEPTH_SCALE = 2
#: the smallest depth image: at least 1/MAX_DEPTH_DOWNSCALE of the colour image per side (a 640x480
#: camera takes depth from 80x60 up); a 1x1 or 2x3 "depth" is no scale of a 320x240 camera
MAX_DEPTH_DOWNSCALE = 8
#: plausible focal lengths, in units of the image's larger side: below 1/20 the field of view is
#: over ~170 degrees (no pinhole camera), above 1000 it is under ~0.06 degrees
FOCAL_RANGE = (0.05, 1000.0)
#: the principal point may lie outside the image (a crop) but at most one image size beyond it
PRINCIPAL_MARGIN = 1.0
#: PointField datatype codes (sensor_msgs/PointField)
FLOAT32, UINT16 = 7, 4
#: the point layout: (name, offset, PointField datatype); point_step = POINT_DTYPE.itemsize
POINT_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("x", 0, FLOAT32), ("y", 4, FLOAT32), ("z", 8, FLOAT32), ("rgb", 12, FLOAT32), ("label", 16, UINT16))
POINT_DTYPE = np.dtype({"names": [f[0] for f in POINT_FIELDS],
                        "formats": ["<f4", "<f4", "<f4", "<u4", "<u2"],  # rgb: the float's bits
                        "offsets": [f[1] for f in POINT_FIELDS], "itemsize": 20})


def depth_to_metres(depth: np.ndarray, encoding: str) -> np.ndarray:
    """Depth in metres (float32), NaN where there is no valid measurement."""
    if encoding not in DEPTH_ENCODINGS:
        raise ImageError(f"depth encoding '{encoding}' is not supported (16UC1 in millimetres or 32FC1 in metres)")
    scale = DEPTH_ENCODINGS[encoding][1]
    out = depth.astype(np.float32) if scale == 1.0 else depth.astype(np.float32) * np.float32(scale)
    with np.errstate(invalid="ignore"):
        out[~(np.isfinite(out) & (out > 0))] = np.nan
    return out


def scale_k(k: Sequence[float], src: tuple[int, int], dst: tuple[int, int]) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of row-major K for an image ``src`` (H, W) resized to ``dst`` (H, W).

    Pixel-centre convention (as ``align_corners=False`` resizing): ``c' = (c + 0.5) s - 0.5``.
    """
    sy, sx = dst[0] / src[0], dst[1] / src[1]
    return (float(k[0]) * sx, float(k[4]) * sy, (float(k[2]) + 0.5) * sx - 0.5, (float(k[5]) + 0.5) * sy - 0.5)


def check_clean_scale(what: str, size: tuple[int, int], camera: tuple[int, int]) -> None:
    """Refuse ``size`` (H, W) unless it is the camera's (H, W) scaled by one factor (1 px rounding)."""
    h, w = size
    ch, cw = camera
    if abs(h - ch * w / cw) > 1.0 or abs(w - cw * h / ch) > 1.0:
        raise ImageError(f"{what} size {w}x{h} is not a scale of the camera's {cw}x{ch}")


def depth_intrinsics(k: Sequence[float], info_size: tuple[int, int], depth_size: tuple[int, int],
                     image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) for the depth image: K is the CameraInfo's, for ``info_size`` (H, W; zeros =
    the colour image's ``image_size``); the depth image is the same optical frame at any clean scale."""
    if len(k) != 9 or not (float(k[0]) > 0 and float(k[4]) > 0):
        raise ImageError("camera_info has no valid K (fx, fy must be > 0)")
    if not (info_size[0] and info_size[1]):
        info_size = image_size
    check_intrinsics((float(k[0]), float(k[4]), float(k[2]), float(k[5])), info_size)
    check_clean_scale("camera_info", image_size, info_size)
    check_clean_scale("depth", depth_size, info_size)
    if depth_size[0] > MAX_DEPTH_SCALE * image_size[0] or depth_size[1] > MAX_DEPTH_SCALE * image_size[1]:
        raise ImageError(f"depth size {depth_size[1]}x{depth_size[0]} is more than {MAX_DEPTH_SCALE}x the camera's "
                         f"{image_size[1]}x{image_size[0]} (a bound on what one cloud may cost)")
    if depth_size[0] * MAX_DEPTH_DOWNSCALE < image_size[0] or depth_size[1] * MAX_DEPTH_DOWNSCALE < image_size[1]:
        raise ImageError(f"depth size {depth_size[1]}x{depth_size[0]} is less than 1/{MAX_DEPTH_DOWNSCALE} of the "
                         f"camera's {image_size[1]}x{image_size[0]} per side (no depth image of this camera)")
    return scale_k(k, info_size, depth_size)


def check_intrinsics(intrinsics: tuple[float, float, float, float], size: tuple[int, int]) -> None:
    """Refuse (fx, fy, cx, cy) for an image of ``size`` (H, W) unless all are finite, the focal
    lengths within :data:`FOCAL_RANGE` times the larger side and the principal point within
    :data:`PRINCIPAL_MARGIN` image sizes of the image: back-projecting with anything else gives
    non-finite or absurd points (cx = NaN, fx = 1e-300 or inf, cx = 1e38)."""
    fx, fy, cx, cy = intrinsics
    h, w = size
    side = max(h, w)
    for name, value in (("fx", fx), ("fy", fy), ("cx", cx), ("cy", cy)):
        if not math.isfinite(value):
            raise ImageError(f"camera_info K has {name} = {value} (must be finite): no cloud from it")
    for name, value in (("fx", fx), ("fy", fy)):
        if not FOCAL_RANGE[0] * side <= value <= FOCAL_RANGE[1] * side:
            raise ImageError(f"camera_info K has {name} = {value:.6g}, implausible for a {w}x{h} image (expected "
                             f"{FOCAL_RANGE[0]:g}..{FOCAL_RANGE[1]:g} times its larger side): no cloud from it")
    for name, value, extent in (("cx", cx, w), ("cy", cy, h)):
        margin = PRINCIPAL_MARGIN * extent
        if not -margin <= value <= extent + margin:
            raise ImageError(f"camera_info K has {name} = {value:.6g}, far outside the {w}x{h} image (allowed "
                             f"{-margin:g}..{extent + margin:g}): no cloud from it")


def resolve_classes(spec: Sequence[str | int], class_names: Sequence[str]) -> np.ndarray:
    """Class ids of ``spec`` (names or ids, as strings or ints); ConfigError naming unknown entries."""
    ids, unknown = [], []
    lookup = {name: i for i, name in enumerate(class_names)}
    for item in spec:
        text = str(item).strip()
        if text in lookup:
            ids.append(lookup[text])
        elif text.isdigit() and int(text) < len(class_names):
            ids.append(int(text))
        else:
            unknown.append(text)
    if unknown:
        raise ConfigError(f"unknown classes {unknown} (ids 0..{len(class_names) - 1} or names such as "
                          f"{', '.join(class_names[:4])})")
    return np.unique(np.asarray(ids, np.int64))


def class_table(ids: np.ndarray | None, num_classes: int) -> np.ndarray | None:
    """Boolean lookup table over label values (None = all classes kept)."""
    if ids is None:
        return None
    table = np.zeros(max(num_classes, 1 + int(ids.max(initial=0))), bool)
    table[ids] = True
    return table


def class_mask(labels: np.ndarray, table: np.ndarray) -> np.ndarray:
    """mono8 mask: 255 where the label's class is in ``table``, 0 elsewhere (labels out of range: 0)."""
    lut = np.zeros(max(len(table), int(labels.max(initial=0)) + 1), np.uint8)
    lut[: len(table)][table] = 255
    return lut[labels]


def class_areas(labels: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Fraction of the pixels per class present ({name: fraction}, classes with no pixel left out)."""
    # mono8 labels: OpenCV's histogram, a quarter of bincount's time on a 720p frame (bincount widens
    # every pixel to int64); its float32 counts are exact below 2**24 pixels
    if labels.dtype == np.uint8 and labels.ndim == 2 and labels.size < 2 ** 24:
        counts = cv2.calcHist([np.ascontiguousarray(labels)], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    else:
        counts = np.bincount(labels.ravel(), minlength=len(class_names))
    total = max(int(labels.size), 1)
    return {(class_names[i] if i < len(class_names) else str(i)): counts[i] / total
            for i in np.flatnonzero(counts)}


def pack_rgb(palette: np.ndarray) -> np.ndarray:
    """Palette (N, 3) uint8 RGB -> uint32 0x00RRGGBB per class: the bits of PCL's float ``rgb``."""
    p = palette.astype(np.uint32)
    return (p[:, 0] << 16) | (p[:, 1] << 8) | p[:, 2]


@dataclass
class CloudOptions:
    """What goes into the cloud: every ``stride``-th pixel (rows and columns from 0), depth in
    [``min_depth``, ``max_depth``] metres (``max_depth`` 0 = no limit), classes in ``classes`` (None = all)."""

    stride: int = 1
    min_depth: float = 0.0
    max_depth: float = 0.0
    classes: np.ndarray | None = None


class PointCloudBuilder:
    """Back-projects depth pixels into labelled points; caches the per-pixel ray factors per size."""

    def __init__(self) -> None:
        self._rays: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def rays(self, size: tuple[int, int], fx: float, fy: float, cx: float, cy: float,
             stride: int) -> tuple[np.ndarray, np.ndarray]:
        """(x/z, y/z) of the strided pixel grid, (h, w) float32 each (cached; at most 8 kept)."""
        key = (size, fx, fy, cx, cy, stride)
        if key not in self._rays:
            if len(self._rays) >= 8:
                self._rays.pop(next(iter(self._rays)))
            u = (np.arange(0, size[1], stride, dtype=np.float64) - cx) / fx
            v = (np.arange(0, size[0], stride, dtype=np.float64) - cy) / fy
            self._rays[key] = (np.broadcast_to(u.astype(np.float32), (len(v), len(u))),
                               np.broadcast_to(v.astype(np.float32)[:, None], (len(v), len(u))))
        return self._rays[key]

    def build(self, depth_m: np.ndarray, intrinsics: tuple[float, float, float, float],
              labels: np.ndarray, palette: np.ndarray, options: CloudOptions) -> np.ndarray:
        """Structured array (:data:`POINT_DTYPE`) of the valid, kept depth pixels in row-major order.

        ``depth_m`` (H, W) float32 metres with NaN for no measurement (:func:`depth_to_metres`);
        ``labels`` (h, w) at any clean scale of the depth: each depth pixel takes the label pixel
        under its centre.
        """
        s = max(int(options.stride), 1)
        z = depth_m[::s, ::s]
        lab = sample_labels(labels, depth_m.shape, s)
        with np.errstate(invalid="ignore"):
            keep = np.isfinite(z) & (z > 0) & (z >= options.min_depth)
            if options.max_depth > 0:
                keep &= z <= options.max_depth
            keep &= lab < len(palette)  # the unknown label (confidence threshold) is no class: no point
        if options.classes is not None:
            table = class_table(options.classes, len(palette))
            keep &= table[np.minimum(lab, len(table) - 1)] & (lab < len(table))
        xr, yr = self.rays(depth_m.shape, *intrinsics, s)
        zk = z[keep]
        with np.errstate(over="ignore", invalid="ignore"):
            x, y = xr[keep] * zk, yr[keep] * zk
        lk = lab[keep]
        finite = np.isfinite(x) & np.isfinite(y)  # a float32 overflow (depth near 3e38) is no point:
        if not finite.all():                       # the cloud says is_dense
            x, y, zk, lk = x[finite], y[finite], zk[finite], lk[finite]
        out = np.zeros(zk.size, POINT_DTYPE)  # zeros: the padding bytes are defined
        out["x"] = x
        out["y"] = y
        out["z"] = zk
        colours = pack_rgb(palette)
        out["rgb"] = colours[np.minimum(lk, len(colours) - 1)]
        out["label"] = lk
        return out


def sample_labels(labels: np.ndarray, depth_size: tuple[int, int], stride: int = 1) -> np.ndarray:
    """The label under the centre of every ``stride``-th depth pixel: ``floor((u + 0.5) w / W)``."""
    h, w = labels.shape[:2]
    dh, dw = depth_size
    if (h, w) == (dh, dw):
        return labels[::stride, ::stride]
    rows = ((np.arange(0, dh, stride) + 0.5) * h / dh).astype(np.int64)
    cols = ((np.arange(0, dw, stride) + 0.5) * w / dw).astype(np.int64)
    return labels[np.minimum(rows, h - 1)[:, None], np.minimum(cols, w - 1)[None, :]]


class DepthBuffer:
    """The last ``size`` depth messages of one camera, found again by stamp (thread-safe)."""

    def __init__(self, size: int = 5) -> None:
        self._items: deque[tuple[int, object]] = deque(maxlen=size)
        self._cond = threading.Condition()
        self.received = 0

    def add(self, stamp_ns: int, item: object) -> None:
        with self._cond:
            self._items.append((stamp_ns, item))
            self.received += 1
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._items.clear()

    def match(self, stamp_ns: int, tolerance_ns: int, wait_s: float = 0.0) -> tuple[object | None, int | None]:
        """(item, |stamp difference| ns) of the nearest stamp if within ``tolerance_ns``, else
        (None, nearest difference or None when empty). While every stamp held is older than
        ``stamp_ns - tolerance_ns`` (the matching one may still be on its way), waits up to
        ``wait_s`` for it."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            while True:
                if self._items:
                    diff, item = min(((abs(s - stamp_ns), it) for s, it in self._items), key=lambda p: p[0])
                    if diff <= tolerance_ns:
                        return item, diff
                    late = max(s for s, _ in self._items) < stamp_ns - tolerance_ns
                else:
                    diff, late = None, self.received > 0
                left = deadline - time.monotonic()
                if not late or left <= 0:
                    return None, diff
                self._cond.wait(left)
