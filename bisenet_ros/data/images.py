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

from ..errors import ImageError

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

#: default budget of pixels per image (width x height), checked before anything is decoded or
#: allocated: 4096 x 2048 (8.4 MP: a 4K UHD camera fits). The node's ``max_pixels`` parameter
#: and the tools' ``--max-pixels`` option change it; never more than :data:`MAX_PIXELS_LIMIT`.
MAX_PIXELS = 4096 * 2048
MAX_PIXELS_LIMIT = 8192 * 8192

#: OpenCV-style aliases some drivers and label tools write, read as these encodings
#: (node, bag tools and evaluation accept the same set)
ENCODING_ALIASES = {"8UC1": "mono8", "8UC3": "bgr8", "16UC1": "mono16"}

#: packed YUV 4:2:2 encodings (ROS names) -> OpenCV conversion to RGB; converted, not viewed
YUV422: dict[str, int] = {
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,  # UYVY, sensor_msgs' "yuv422"
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
    "yuyv": cv2.COLOR_YUV2RGB_YUY2,
}

NATIVE_BIG_ENDIAN = sys.byteorder == "big"

try:  # a broken image is reported in one line by the caller; OpenCV's own warnings would add more
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
except AttributeError:  # pragma: no cover - builds without the logging module
    pass


def _channels_and_bytes(encoding: str) -> tuple[int, int]:
    """(channels, bytes per channel) of a supported encoding, else :class:`ImageError`."""
    if encoding in ENCODINGS:
        return ENCODINGS[encoding][0], 2 if encoding == "mono16" else 1
    if encoding in YUV422:
        return 2, 1
    low = encoding.lower()
    if "32f" in low or "64f" in low or "16f" in low:
        raise ImageError(f"float encoding '{encoding}' is not supported (use rgb8, bgr8, mono8, ...)")
    supported = ", ".join([*ENCODINGS, *YUV422, *ENCODING_ALIASES])
    raise ImageError(f"unsupported encoding '{encoding or '(empty)'}' (supported: {supported})")


def check_pixels(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """Raise :class:`ImageError` unless a ``width`` x ``height`` image fits the budget."""
    if height < 1 or width < 1 or height > MAX_SIDE or width > MAX_SIDE:
        raise ImageError(f"image size {width}x{height} is out of range (1..{MAX_SIDE} per side)")
    if width * height > max_pixels:
        raise ImageError(f"image size {width}x{height} = {width * height} pixels exceeds the budget of "
                         f"{max_pixels} pixels (max_pixels)")


def check_max_pixels(value: int) -> str | None:
    """The reason ``value`` is not a usable pixel budget, or None."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_PIXELS_LIMIT:
        return f"max_pixels must be an integer in 1..{MAX_PIXELS_LIMIT} (8192x8192), got {value!r}"
    return None


def raw_image_to_array(msg: Any, encoding: str | None = None,
                       max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str]:
    """View an Image's pixels as (H, W) for mono, (H, W, C) otherwise; return (array, encoding).

    ``encoding`` overrides ``msg.encoding``; OpenCV aliases (``8UC1``, ``8UC3``, ``16UC1``) are
    read as mono8, bgr8, mono16. The array shares the message buffer (no copy) except for
    big-endian mono16 and packed YUV 4:2:2, which are converted (to native mono16, resp. rgb8 --
    the returned encoding says). Sizes above ``max_pixels`` are refused before any work.
    """
    encoding = str(msg.encoding) if encoding is None else encoding
    encoding = ENCODING_ALIASES.get(encoding, encoding)
    channels, nbytes = _channels_and_bytes(encoding)
    if encoding in YUV422 and int(msg.width) % 2:
        raise ImageError(f"{encoding} image width {int(msg.width)} must be even")
    buf = _pixel_rows(msg, channels, nbytes, max_pixels)
    h, w = buf.shape[0], int(msg.width)
    if encoding in YUV422:
        rgb = cv2.cvtColor(np.ascontiguousarray(buf).reshape(h, w, 2), YUV422[encoding])
        return rgb, "rgb8"
    arr = _native(buf, np.uint16, bool(msg.is_bigendian)) if nbytes == 2 else buf
    return (arr if channels == 1 else arr.reshape(h, w, channels)), encoding


def _pixel_rows(msg: Any, channels: int, nbytes: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The (H, width*channels*nbytes) uint8 view of an Image's pixel rows, after the size, step
    and data-length checks (:class:`ImageError` naming the problem)."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    check_pixels(w, h, max_pixels)
    row = w * channels * nbytes
    if step < row:
        raise ImageError(f"step {step} is smaller than width*channels*bytes = {w}*{channels}*{nbytes} = {row}")
    if step > max_step(row):
        raise ImageError(f"step {step} is more than twice the row of {row} bytes plus {MAX_ROW_PADDING} "
                         "(row padding out of proportion to the pixels)")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < h * step:
        raise ImageError(f"data has {data.size} bytes, fewer than height*step = {h}*{step} = {h * step}")
    if data.size > (h + 1) * step:  # what a message holds is bounded by its pixels: a few trailing
        raise ImageError(f"data has {data.size} bytes, {data.size - h * step} more than "  # bytes, not a payload
                         f"height*step = {h}*{step} = {h * step} (at most one row of trailing bytes)")
    return data[: h * step].reshape(h, step)[:, :row]


#: row padding allowed beyond twice the row (``step <= 2 * row + MAX_ROW_PADDING``): alignment
#: padding, never a payload out of proportion to the pixels
MAX_ROW_PADDING = 4096


def max_step(row: int) -> int:
    """The largest ``step`` accepted for rows of ``row`` bytes."""
    return 2 * row + MAX_ROW_PADDING


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


def compressed_size(data: bytes | np.ndarray) -> tuple[int, int]:
    """(width, height) a JPEG or PNG stream declares, read from its header without decoding.

    Raises :class:`ImageError` for other formats or a header that cannot be read (the node's
    compressed input and the tools accept JPEG and PNG).
    """
    buf = memoryview(np.frombuffer(data, dtype=np.uint8)).cast("B")
    if bytes(buf[:8]) == b"\x89PNG\r\n\x1a\n":
        if len(buf) < 24 or bytes(buf[12:16]) != b"IHDR":
            raise ImageError("PNG header is truncated (no IHDR chunk)")
        return int.from_bytes(buf[16:20], "big"), int.from_bytes(buf[20:24], "big")
    if bytes(buf[:2]) == b"\xff\xd8":
        return _jpeg_size(buf)
    raise UnknownFormat(f"neither JPEG nor PNG (starts with {bytes(buf[:4])!r})")


class UnknownFormat(ImageError):
    """A compressed image whose header :func:`compressed_size` cannot read."""


#: JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic ...): they carry the size
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(buf: memoryview) -> tuple[int, int]:
    """Walk the JPEG marker segments up to the first start-of-frame; (width, height)."""
    i, n = 2, len(buf)
    while i + 4 <= n:
        if buf[i] != 0xFF:
            raise ImageError(f"JPEG header is malformed (no marker at byte {i})")
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        length = int.from_bytes(buf[i + 2:i + 4], "big")
        if length < 2:
            raise ImageError(f"JPEG header is malformed (segment length {length} at byte {i})")
        if marker in _SOF:
            if i + 9 > n:
                break
            return int.from_bytes(buf[i + 7:i + 9], "big"), int.from_bytes(buf[i + 5:i + 7], "big")
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        i += 2 + length
    raise ImageError("JPEG header is truncated (no frame header with the image size)")


def check_compressed(data: bytes | np.ndarray, what: str = "compressed image",
                     max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Header-only check of a compressed image (cheap; for the node's subscription callback).

    Returns (width, height); raises :class:`ImageError` for an empty buffer, an unknown format
    or a size beyond ``max_pixels``.
    """
    if len(data) == 0:
        raise ImageError(f"{what} has no data")
    try:
        w, h = compressed_size(data)
    except UnknownFormat as exc:
        raise UnknownFormat(f"{what} ({len(data)} bytes) cannot be decoded: {exc}") from None
    except ImageError as exc:
        raise ImageError(f"{what} ({len(data)} bytes) cannot be decoded: {exc}") from None
    check_pixels(w, h, max_pixels)
    return w, h


def decode_image_bytes(data: bytes | np.ndarray, what: str, max_pixels: int = MAX_PIXELS,
                       strict: bool = False) -> tuple[np.ndarray, str]:
    """Header-check, then decode a JPEG/PNG buffer -> (array, 'bgr8' | 'bgra8' | 'mono8' | 'mono16').

    The one decoder of the node's compressed input, the bag tools and ``segment`` (image files).
    16-bit colour becomes 8-bit bgr8; 16-bit grey stays mono16. Other formats OpenCV reads are
    decoded (bounded by OpenCV's pixel ceiling) and then checked, unless ``strict``.
    """
    data = np.frombuffer(data, dtype=np.uint8)
    image = _decode_checked(data, what, cv2.IMREAD_UNCHANGED, max_pixels, strict)
    if image is None:
        raise ImageError(f"{what} ({data.size} bytes) cannot be decoded")
    return _normalise_decoded(image)


def read_image_file(path: Any, flags: int = cv2.IMREAD_COLOR, max_pixels: int = MAX_PIXELS) -> np.ndarray | None:
    """``cv2.imread(path, flags)`` with the size a JPEG/PNG header declares checked first (a 74-byte
    PNG may claim 100000x100000; OpenCV would refuse with an assertion, or allocate up to its own
    ceiling). Raises :class:`ImageError` (naming the file) beyond ``max_pixels``; None where
    ``cv2.imread`` gives None (unreadable, not an image)."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    try:
        return _decode_checked(data, str(path), flags, max_pixels)
    except ImageError as exc:
        raise ImageError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None


def _decode_checked(data: np.ndarray, what: str, flags: int, max_pixels: int,
                    strict: bool = False) -> np.ndarray | None:
    """``cv2.imdecode(data, flags)`` after the JPEG/PNG header's size is checked; None where OpenCV
    cannot decode it. Other formats (BMP, TIFF, WebP...) are bounded by OpenCV's own ceiling
    (OPENCV_IO_MAX_IMAGE_PIXELS) while decoding and checked once decoded, or refused if ``strict``."""
    try:
        check_compressed(data, what, max_pixels)
        checked = True
    except UnknownFormat:
        if strict:
            raise
        checked = False
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error:
        return None
    if image is not None and not checked:
        check_pixels(image.shape[1], image.shape[0], max_pixels)
    return image


def decode_compressed(msg: Any, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Decode a CompressedImage (JPEG or PNG) -> (array, 'bgr8' | 'bgra8' | 'mono8' | 'mono16').

    The size in the header is checked against ``max_pixels`` before anything is decoded.
    """
    return decode_image_bytes(msg.data, f"compressed image ({msg.format or 'no format'})", max_pixels)


def _normalise_decoded(image: np.ndarray) -> tuple[np.ndarray, str]:
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


def check_image(image: np.ndarray, encoding: str, max_pixels: int = MAX_PIXELS) -> None:
    """Raise :class:`ImageError` unless ``image`` is a valid array for ``encoding``."""
    if encoding not in ENCODINGS:
        raise ImageError(
            f"unsupported encoding '{encoding}' (supported: {', '.join(ENCODINGS)})"
        )
    channels, _ = ENCODINGS[encoding]
    dtype = np.uint16 if encoding == "mono16" else np.uint8
    if not isinstance(image, np.ndarray):
        raise ImageError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != dtype:
        raise ImageError(f"{encoding} image must be {np.dtype(dtype).name}, got {image.dtype}")
    shape_ok = (image.ndim == 2 and channels == 1) or (image.ndim == 3 and image.shape[2] == channels)
    if not shape_ok:
        raise ImageError(f"{encoding} image must be HxW{'' if channels == 1 else f'x{channels}'}, "
                         f"got shape {image.shape}")
    h, w = image.shape[:2]
    check_pixels(w, h, max_pixels)
