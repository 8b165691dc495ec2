"""Image message buffers -> numpy, without ROS: shared by the node and the bag tools.

Works on anything shaped like sensor_msgs/Image (``height``, ``width``, ``step``, ``encoding``,
``is_bigendian``, ``data``) or CompressedImage (``format``, ``data``): rclpy messages and the
``rosbags`` library's deserialised messages alike. Malformed messages raise
:class:`~bisenet_ros.errors.ImageError` with a one-line message naming the problem.
"""
from __future__ import annotations

import sys
from typing import Any

import cv2
import numpy as np

from .errors import ImageError

#: encodings the pipeline reads, with their channel count and channel order (None = mono)
ENCODINGS: dict[str, tuple[int, tuple[int, int, int] | None]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, None),
    "mono16": (1, None),
}

#: the largest image side accepted (a guard against absurd sizes in malformed messages)
MAX_SIDE = 16384

#: packed YUV 4:2:2 encodings (ROS names) -> OpenCV conversion to RGB; converted, not viewed
YUV422: dict[str, int] = {
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,  # UYVY, sensor_msgs' "yuv422"
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
    "yuyv": cv2.COLOR_YUV2RGB_YUY2,
}

NATIVE_BIG_ENDIAN = sys.byteorder == "big"


def _channels_and_bytes(encoding: str) -> tuple[int, int]:
    """(channels, bytes per channel) of a supported encoding, else :class:`ImageError`."""
    if encoding in ENCODINGS:
        return ENCODINGS[encoding][0], 2 if encoding == "mono16" else 1
    if encoding in YUV422:
        return 2, 1
    low = encoding.lower()
    if "32f" in low or "64f" in low or "16f" in low:
        raise ImageError(f"float encoding '{encoding}' is not supported (use rgb8, bgr8, mono8, ...)")
    supported = ", ".join([*ENCODINGS, *YUV422])
    raise ImageError(f"unsupported encoding '{encoding or '(empty)'}' (supported: {supported})")


def raw_image_to_array(msg: Any, encoding: str | None = None) -> tuple[np.ndarray, str]:
    """View an Image's pixels as (H, W) for mono, (H, W, C) otherwise; return (array, encoding).

    ``encoding`` overrides ``msg.encoding`` (e.g. an alias resolved by the caller). The array
    shares the message buffer (no copy) except for big-endian mono16 and packed YUV 4:2:2, which
    are converted (to native mono16, resp. rgb8 -- the returned encoding says).
    """
    encoding = str(msg.encoding) if encoding is None else encoding
    channels, nbytes = _channels_and_bytes(encoding)
    if encoding in YUV422 and int(msg.width) % 2:
        raise ImageError(f"{encoding} image width {int(msg.width)} must be even")
    buf = _pixel_rows(msg, channels, nbytes)
    h, w = buf.shape[0], int(msg.width)
    if encoding in YUV422:
        rgb = cv2.cvtColor(np.ascontiguousarray(buf).reshape(h, w, 2), YUV422[encoding])
        return rgb, "rgb8"
    arr = _native(buf, np.uint16, bool(msg.is_bigendian)) if nbytes == 2 else buf
    return (arr if channels == 1 else arr.reshape(h, w, channels)), encoding


def _pixel_rows(msg: Any, channels: int, nbytes: int) -> np.ndarray:
    """The (H, width*channels*nbytes) uint8 view of an Image's pixel rows, after the size, step
    and data-length checks (:class:`ImageError` naming the problem)."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h < 1 or w < 1 or h > MAX_SIDE or w > MAX_SIDE:
        raise ImageError(f"image size {w}x{h} is out of range (1..{MAX_SIDE} per side)")
    row = w * channels * nbytes
    if step < row:
        raise ImageError(f"step {step} is smaller than width*channels*bytes = {w}*{channels}*{nbytes} = {row}")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < h * step:
        raise ImageError(f"data has {data.size} bytes, fewer than height*step = {h}*{step} = {h * step}")
    return data[: h * step].reshape(h, step)[:, :row]


def _native(buf: np.ndarray, dtype: type, big_endian: bool) -> np.ndarray:
    """uint8 rows viewed as ``dtype`` in native byte order (a copy only when unaligned or swapped)."""
    item = np.dtype(dtype).itemsize
    if buf.strides[0] % item or buf.ctypes.data % item:
        buf = buf.copy()  # rows not aligned to the item size: copy before viewing
    arr = buf.view(np.dtype(dtype).newbyteorder(">" if big_endian else "<"))
    return arr.astype(dtype) if big_endian != NATIVE_BIG_ENDIAN else arr.view(dtype)


#: depth encodings (REP 118): bytes per pixel and the scale to metres
DEPTH_ENCODINGS: dict[str, tuple[type, float]] = {
    "16UC1": (np.uint16, 1e-3),  # millimetres, 0 = no measurement
    "mono16": (np.uint16, 1e-3),  # what some drivers call 16UC1
    "32FC1": (np.float32, 1.0),  # metres, NaN/inf/<=0 = no measurement
}


def raw_depth_to_array(msg: Any) -> tuple[np.ndarray, str]:
    """View a depth Image (16UC1 millimetres or 32FC1 metres) as (H, W) uint16/float32, native
    byte order, sharing the buffer when possible; return (array, encoding)."""
    encoding = str(msg.encoding)
    if encoding not in DEPTH_ENCODINGS:
        raise ImageError(f"depth encoding '{encoding or '(empty)'}' is not supported "
                         "(16UC1 in millimetres or 32FC1 in metres)")
    dtype = DEPTH_ENCODINGS[encoding][0]
    buf = _pixel_rows(msg, 1, np.dtype(dtype).itemsize)
    return _native(buf, dtype, bool(msg.is_bigendian)), encoding


def decode_compressed(msg: Any) -> tuple[np.ndarray, str]:
    """Decode a CompressedImage (JPEG, PNG, ...) -> (array, 'bgr8' | 'bgra8' | 'mono8' | 'mono16')."""
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageError(f"compressed image ({msg.format or 'no format'}) has no data")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f"compressed image ({msg.format or 'no format'}, {data.size} bytes) cannot be decoded")
    if image.ndim == 2:
        if image.dtype == np.uint16:
            return image, "mono16"
        if image.dtype == np.uint8:
            return image, "mono8"
    elif image.dtype == np.uint8 and image.shape[2] in (3, 4):
        return image, "bgr8" if image.shape[2] == 3 else "bgra8"
    elif image.dtype == np.uint16 and image.shape[2] in (3, 4):  # 16-bit colour PNG -> 8 bit
        return (image[:, :, :3] >> 8).astype(np.uint8), "bgr8"
    raise ImageError(f"compressed image decodes to unsupported shape {image.shape}, dtype {image.dtype}")


def stamp_ns(header: Any) -> int:
    """A message header's stamp in nanoseconds (ROS and rosbags messages alike)."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
