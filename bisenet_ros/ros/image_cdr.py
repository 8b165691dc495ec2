"""sensor_msgs/Image in its serialized form: plain CDR, as every ROS 2 middleware carries it.

The node moves several megabytes of images per frame. Through rclpy's message objects each one
is copied three or four times (``tobytes``, into the message's ``array``, into the C message,
into the CDR buffer) and each camera frame is deserialized (two copies and a Python object)
even when the node then drops it for a newer one. Here:

- :func:`serialize_image` writes an output image's CDR in one copy of its pixels, for
  ``Publisher.publish(bytes)``: what ``rclpy.serialization.serialize_message`` writes for the
  same message, but for the alignment padding, zeros here, whatever was in memory there
  (test_image_cdr checks it);
- :func:`parse_image` reads a camera image taken raw (``create_subscription(..., raw=True)``):
  the header fields, and the pixels as a view of the received bytes (no copy). Anything it does
  not recognise (another encapsulation, lengths that do not add up) gives None, and the caller
  falls back to ``rclpy.serialization.deserialize_message``.

Layout (XCDR1, ``sensor_msgs/msg/Image``): a 4-byte encapsulation header (``00 01``: little-endian
CDR, ``00 00``: big-endian), then, aligned relative to the byte after it: ``header.stamp`` (int32
sec, uint32 nanosec), ``header.frame_id`` (uint32 length with the NUL, the bytes, NUL),
``height``, ``width`` (uint32), ``encoding`` (string), ``is_bigendian`` (uint8), ``step`` (uint32),
``data`` (uint32 length, the bytes).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ..data.images import NATIVE_BIG_ENDIAN

LITTLE_ENDIAN_CDR = b"\x00\x01\x00\x00"
MAX_STRING = 4096  # a frame_id or encoding longer than this is not a camera's: parse_image falls back


def _string(text: str) -> bytes:
    """A CDR string: uint32 length including the NUL, the UTF-8 bytes, the NUL."""
    raw = text.encode()
    return struct.pack("<I", len(raw) + 1) + raw + b"\0"


def _pad(parts: list[bytes], size: int, alignment: int = 4) -> int:
    """Pad to ``alignment`` relative to the payload start (after the encapsulation header)."""
    extra = -(size - 4) % alignment
    if extra:
        parts.append(b"\0" * extra)
    return size + extra


def serialize_image(array: np.ndarray, encoding: str, header: Header) -> bytes:
    """The CDR of an Image carrying ``array`` (HxW or HxWxC, uint8/uint16, as
    :func:`~bisenet_ros.ros.conversions.array_to_image_msg` fills it) with ``header``."""
    h, w = int(array.shape[0]), int(array.shape[1])
    channels = 1 if array.ndim == 2 else int(array.shape[2])
    step = w * channels * array.dtype.itemsize
    pixels = np.ascontiguousarray(array)
    parts = [LITTLE_ENDIAN_CDR, struct.pack("<iI", header.stamp.sec, header.stamp.nanosec), _string(header.frame_id)]
    size = _pad(parts, sum(map(len, parts)))
    parts += [struct.pack("<II", h, w), _string(encoding),
              bytes([int(NATIVE_BIG_ENDIAN and array.dtype.itemsize > 1)])]
    size = _pad(parts, size + sum(map(len, parts[-3:])))
    parts += [struct.pack("<II", step, pixels.nbytes), memoryview(pixels).cast("B")]
    return b"".join(parts)


@dataclass
class RawImage:
    """An Image read from its CDR: the header as a message, the pixel bytes as a view."""

    header: Header
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: memoryview

    def message(self) -> Image:
        """The Image message without its pixels (header and fields), for logs and output headers."""
        return Image(header=self.header, height=self.height, width=self.width, encoding=self.encoding,
                     is_bigendian=self.is_bigendian, step=self.step)


class _Reader:
    def __init__(self, raw: bytes, order: str) -> None:
        self.raw, self.order, self.pos = raw, order, 4

    def align(self, n: int) -> None:
        self.pos += -(self.pos - 4) % n

    def unpack(self, fmt: str) -> tuple:
        values = struct.unpack_from(self.order + fmt, self.raw, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def string(self) -> str:
        self.align(4)
        (n,) = self.unpack("I")
        if n > MAX_STRING or self.pos + n > len(self.raw):
            raise ValueError("string length")
        text = bytes(self.raw[self.pos:self.pos + n])
        self.pos += n
        return text.rstrip(b"\0").decode()  # some writers leave out the NUL of an empty string


def _byte_order(raw: bytes) -> str | None:
    """``struct``'s byte order of plain CDR (encapsulation ``00 01`` or ``00 00``), None for anything else."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] not in (0, 1):
        return None
    return "<" if raw[1] == 1 else ">"


def header_stamp_of_cdr(raw: bytes) -> int | None:
    """The header stamp (ns) of a serialized message that starts with a ``std_msgs/Header`` (Image,
    CompressedImage, DiagnosticArray, ...): its first 8 bytes after the encapsulation; None if not CDR."""
    order = _byte_order(raw)
    if order is None or len(raw) < 12:
        return None
    sec, nanosec = struct.unpack_from(order + "iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


def parse_image(raw: bytes) -> RawImage | None:
    """The Image in ``raw`` (its CDR), its pixels a zero-copy view; None if not recognised."""
    order = _byte_order(raw)
    if order is None:
        return None
    reader = _Reader(raw, order)
    try:
        sec, nanosec = reader.unpack("iI")
        frame_id = reader.string()
        reader.align(4)
        height, width = reader.unpack("II")
        encoding = reader.string()
        (is_bigendian,) = reader.unpack("B")
        reader.align(4)
        step, n = reader.unpack("II")
    except (struct.error, ValueError, UnicodeDecodeError):
        return None
    if reader.pos + n > len(raw) or len(raw) - (reader.pos + n) > 3:  # at most a final padding
        return None
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    return RawImage(header, height, width, encoding, is_bigendian, step,
                    memoryview(raw)[reader.pos:reader.pos + n])
