"""sensor_msgs/Image CDR written and read by bisenet_ros.ros.image_cdr against rclpy's own
serialization (the reference: what every subscriber deserializes)."""
from __future__ import annotations

import struct

import numpy as np
import pytest

pytest.importorskip("rclpy")
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from bisenet_ros.ros.conversions import array_to_image_msg, image_msg_to_array  # noqa: E402
from bisenet_ros.ros.image_cdr import header_stamp_of_cdr, parse_image, serialize_image  # noqa: E402

FRAME_IDS = ["", "c", "cam", "camera", "front_camera_optical_frame", "kamera_ü", "相机"]
ENCODINGS = ["mono8", "rgb8", "bgr8", "mono16", "rgba8", "", "8UC3"]


def _cases(n: int = 120):
    rng = np.random.default_rng(7)
    for i in range(n):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        shape, dtype = [((h, w), np.uint8), ((h, w, 3), np.uint8), ((h, w), np.uint16), ((h, w, 4), np.uint8)][i % 4]
        array = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
        header = Header(frame_id=FRAME_IDS[i % len(FRAME_IDS)])
        header.stamp.sec, header.stamp.nanosec = int(rng.integers(-2**31, 2**31)), int(rng.integers(0, 10**9))
        yield array, ENCODINGS[i % len(ENCODINGS)], header


def test_serialized_images_are_what_rclpy_writes():
    """Same length, and deserialized by rclpy into the message array_to_image_msg builds (padding
    bytes aside: rclpy leaves whatever was in memory there)."""
    for array, encoding, header in _cases():
        msg = array_to_image_msg(array, encoding, header)
        mine = serialize_image(array, encoding, header)
        assert len(mine) == len(serialize_message(msg))
        assert deserialize_message(mine, Image) == msg
    view = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)[:, ::2]  # not contiguous
    assert deserialize_message(serialize_image(view, "rgb8", Header()), Image) == array_to_image_msg(view, "rgb8")


def test_parsed_images_are_what_rclpy_reads_and_share_the_bytes():
    for array, encoding, header in _cases():
        raw = serialize_message(array_to_image_msg(array, encoding, header))
        parsed, msg = parse_image(raw), deserialize_message(raw, Image)
        assert parsed.message() == Image(header=msg.header, height=msg.height, width=msg.width,
                                         encoding=msg.encoding, is_bigendian=msg.is_bigendian, step=msg.step)
        assert bytes(parsed.data) == bytes(msg.data)
    raw = serialize_image(np.full((4, 6, 3), 9, np.uint8), "bgr8", Header(frame_id="cam"))
    pixels, encoding = image_msg_to_array(parse_image(raw))
    assert encoding == "bgr8" and pixels.shape == (4, 6, 3) and (pixels == 9).all()
    assert not pixels.flags.owndata and pixels.base is not None  # a view of the received bytes


def test_big_endian_cdr_is_read_too():
    header = struct.pack(">iI", 5, 6) + struct.pack(">I", 4) + b"cam\0"
    body = struct.pack(">II", 1, 2) + struct.pack(">I", 6) + b"mono8\0" + b"\0" + b"\0" + struct.pack(">II", 2, 2)
    parsed = parse_image(b"\x00\x00\x00\x00" + header + body + b"\x07\x08")
    assert (parsed.header.stamp.sec, parsed.header.stamp.nanosec, parsed.header.frame_id) == (5, 6, "cam")
    assert (parsed.height, parsed.width, parsed.encoding, parsed.step, bytes(parsed.data)) == (1, 2, "mono8", 2, b"\x07\x08")


@pytest.mark.parametrize("mangle", [
    lambda raw: raw[:3],  # shorter than the encapsulation
    lambda raw: b"\x00\x07" + raw[2:],  # an encapsulation it does not know (XCDR2, ...)
    lambda raw: raw[:20],  # cut inside the header
    lambda raw: raw[:-1],  # one pixel byte short
    lambda raw: raw + b"\0" * 4,  # trailing bytes beyond a padding
    lambda raw: raw[:12] + struct.pack("<I", 10**6) + raw[16:],  # frame_id length beyond the message
    lambda raw: raw[:16] + b"\xff\xfe" + raw[18:],  # frame_id not UTF-8
])
def test_what_it_does_not_recognise_is_left_to_rclpy(mangle):
    raw = serialize_image(np.zeros((3, 5), np.uint8), "mono8", Header(frame_id="camera"))
    assert parse_image(raw) is not None
    assert parse_image(mangle(raw)) is None


def test_the_header_stamp_is_read_off_any_message_that_starts_with_a_header():
    for array, encoding, header in _cases(24):
        stamp = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        for msg in (array_to_image_msg(array, encoding, header), CompressedImage(header=header, format="png"),
                    DiagnosticArray(header=header)):
            assert header_stamp_of_cdr(serialize_message(msg)) == stamp
    big = b"\x00\x00\x00\x00" + struct.pack(">iI", -3, 7) + b"\0" * 8
    assert header_stamp_of_cdr(big) == -3 * 1_000_000_000 + 7
    assert header_stamp_of_cdr(b"\x00\x01\x00\x00" + b"\0" * 7) is None  # too short
    assert header_stamp_of_cdr(b"\x00\x07\x00\x00" + b"\0" * 12) is None  # not plain CDR
