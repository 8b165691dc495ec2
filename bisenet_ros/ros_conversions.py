"""sensor_msgs <-> numpy, without cv_bridge.

``image_msg_to_array`` returns a zero-copy view of the message buffer (honouring ``step``, so
padded rows work) and refuses malformed messages with an :class:`~bisenet_ros.errors.ImageError`
whose one-line message names the problem. ``array_to_image_msg`` fills ``msg.data`` with
``array.tobytes()``: assigning a numpy array to ``msg.data`` is element-wise and ~100x slower.
"""
from __future__ import annotations

import sys

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from .errors import ImageError
from .pipeline import ENCODINGS, MAX_SIDE

#: packed YUV 4:2:2 encodings (ROS names) -> OpenCV conversion to RGB; converted, not viewed
YUV422: dict[str, int] = {
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,  # UYVY, sensor_msgs' "yuv422"
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
    "yuyv": cv2.COLOR_YUV2RGB_YUY2,
}

_NATIVE_BIG_ENDIAN = sys.byteorder == "big"


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


def image_msg_to_array(msg: Image) -> tuple[np.ndarray, str]:
    """View an Image's pixels as (H, W) for mono, (H, W, C) otherwise; return (array, encoding).

    The array shares the message buffer (no copy) except for big-endian mono16 and packed
    YUV 4:2:2, which are converted (to native mono16, resp. rgb8 -- the returned encoding says).
    """
    encoding = msg.encoding
    channels, nbytes = _channels_and_bytes(encoding)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h < 1 or w < 1 or h > MAX_SIDE or w > MAX_SIDE:
        raise ImageError(f"image size {w}x{h} is out of range (1..{MAX_SIDE} per side)")
    row = w * channels * nbytes
    if encoding in YUV422 and w % 2:
        raise ImageError(f"{encoding} image width {w} must be even")
    if step < row:
        raise ImageError(f"step {step} is smaller than width*channels*bytes = {w}*{channels}*{nbytes} = {row}")
    size = len(msg.data)
    if size < h * step:
        raise ImageError(f"data has {size} bytes, fewer than height*step = {h}*{step} = {h * step}")
    buf = np.frombuffer(msg.data, dtype=np.uint8, count=h * step).reshape(h, step)[:, :row]
    if encoding in YUV422:
        rgb = cv2.cvtColor(np.ascontiguousarray(buf).reshape(h, w, 2), YUV422[encoding])
        return rgb, "rgb8"
    if nbytes == 2:
        if step % 2:
            buf = buf.copy()  # rows not 2-byte aligned: copy before viewing as uint16
        big = bool(msg.is_bigendian)
        arr = buf.view(">u2" if big else "<u2")
        if big != _NATIVE_BIG_ENDIAN:
            arr = arr.astype(np.uint16)
        else:
            arr = arr.view(np.uint16)
    else:
        arr = buf
    return (arr if channels == 1 else arr.reshape(h, w, channels)), encoding


def default_encoding(array: np.ndarray) -> str:
    """mono8 / mono16 / rgb8 / rgba8 from an array's shape and dtype."""
    if array.ndim == 2:
        return "mono16" if array.dtype == np.uint16 else "mono8"
    return {3: "rgb8", 4: "rgba8"}.get(array.shape[2], "")


def array_to_image_msg(array: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """An Image carrying ``array`` (HxW or HxWxC, uint8/uint16) with ``encoding`` and ``header``."""
    if array.ndim not in (2, 3) or array.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"cannot publish an array of shape {array.shape} and dtype {array.dtype}")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(_NATIVE_BIG_ENDIAN and array.dtype.itemsize > 1)
    channels = 1 if array.ndim == 2 else int(array.shape[2])
    msg.step = msg.width * channels * array.dtype.itemsize
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg


def compressed_msg_to_array(msg: CompressedImage) -> tuple[np.ndarray, str]:
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
