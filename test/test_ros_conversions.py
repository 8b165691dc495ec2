"""sensor_msgs <-> numpy conversions: round trips, zero copy, padded rows, malformed messages."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from bisenet_ros.errors import ImageError  # noqa: E402
from bisenet_ros.data.images import MAX_SIDE  # noqa: E402
from bisenet_ros.ros.conversions import (  # noqa: E402
                                         array_to_image_msg,
                                         compressed_msg_to_array,
                                         image_msg_to_array,
                                         )

rng = np.random.default_rng(0)


def make_msg(h: int, w: int, encoding: str, step: int, data: bytes) -> Image:
    msg = Image()
    msg.height, msg.width, msg.encoding, msg.step = h, w, encoding, step
    msg.data = data
    return msg


@pytest.mark.parametrize("encoding,shape,dtype", [
    ("rgb8", (6, 9, 3), np.uint8), ("bgr8", (6, 9, 3), np.uint8), ("rgba8", (5, 4, 4), np.uint8),
    ("bgra8", (5, 4, 4), np.uint8), ("mono8", (7, 3), np.uint8), ("mono16", (7, 3), np.uint16),
])
def test_round_trip_and_zero_copy(encoding, shape, dtype):
    array = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = array_to_image_msg(array, encoding, header)
    assert isinstance(msg.data, (bytes, bytearray)) or msg.data.typecode == "B"
    assert (msg.height, msg.width, msg.encoding) == (shape[0], shape[1], encoding)
    assert msg.step == shape[1] * (shape[2] if len(shape) == 3 else 1) * np.dtype(dtype).itemsize
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 345
    back, enc = image_msg_to_array(msg)
    assert enc == encoding and back.dtype == dtype and back.shape == shape
    np.testing.assert_array_equal(back, array)
    assert np.shares_memory(back, np.frombuffer(msg.data, np.uint8))


def test_padded_rows_are_honoured():
    h, w, step = 4, 5, 5 * 3 + 7
    rows = rng.integers(0, 255, (h, step), dtype=np.uint8)
    back, enc = image_msg_to_array(make_msg(h, w, "rgb8", step, rows.tobytes()))
    np.testing.assert_array_equal(back, rows[:, :15].reshape(h, w, 3))
    # extra bytes after the last row are ignored
    back, _ = image_msg_to_array(make_msg(h, w, "rgb8", step, rows.tobytes() + b"\0" * 9))
    assert back.shape == (h, w, 3)


def test_big_endian_mono16_is_converted():
    values = rng.integers(0, 65535, (3, 4), dtype=np.uint16)
    msg = make_msg(3, 4, "mono16", 8, values.astype(">u2").tobytes())
    msg.is_bigendian = 1
    back, enc = image_msg_to_array(msg)
    assert enc == "mono16" and back.dtype == np.uint16
    np.testing.assert_array_equal(back, values)


def _bt601_yuv(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Studio-swing BT.601 Y, U (Cb), V (Cr) of one RGB colour (the textbook formulas)."""
    r, g, b = (c / 255 for c in rgb)
    return (round(16 + 65.481 * r + 128.553 * g + 24.966 * b),
            round(128 - 37.797 * r - 74.203 * g + 112.0 * b),
            round(128 + 112.0 * r - 93.786 * g - 18.214 * b))


@pytest.mark.parametrize("encoding,y_index", [("yuv422", 1), ("uyvy", 1), ("yuv422_yuy2", 0), ("yuyv", 0)])
def test_yuv422_is_converted_to_rgb(encoding, y_index):
    colour = (200, 40, 60)
    y, u, v = _bt601_yuv(colour)
    packed = np.empty((4, 6, 2), np.uint8)
    packed[:, :, y_index] = y
    packed[:, 0::2, 1 - y_index] = u
    packed[:, 1::2, 1 - y_index] = v
    back, enc = image_msg_to_array(make_msg(4, 6, encoding, 12, packed.tobytes()))
    assert enc == "rgb8" and back.shape == (4, 6, 3)
    assert np.abs(back.astype(int) - np.array(colour)).max() <= 2


@pytest.mark.parametrize("h,w,encoding,step,nbytes,message", [
    (4, 4, "32FC1", 16, 64, "float encoding '32FC1'"),
    (4, 4, "64FC3", 96, 384, "float encoding"),
    (4, 4, "bayer_rggb8", 4, 16, "unsupported encoding 'bayer_rggb8'"),
    (4, 4, "8UC4", 16, 64, "yuyv, 8UC1, 8UC3, 16UC1)"),  # the OpenCV aliases are named too
    (4, 4, "", 12, 48, "unsupported encoding '(empty)'"),
    (4, 4, "rgb8", 12, 47, "data has 47 bytes, fewer than height*step = 4*12 = 48"),
    (4, 4, "rgb8", 11, 64, "step 11 is smaller than width*channels*bytes = 4*3*1 = 12"),
    (4, 4, "mono16", 4, 64, "step 4 is smaller than width*channels*bytes = 4*1*2 = 8"),
    (0, 4, "rgb8", 12, 0, "image size 4x0 is out of range"),
    (4, 0, "mono8", 0, 0, "image size 0x4 is out of range"),
    (MAX_SIDE + 1, 1, "mono8", 1, 16, f"image size 1x{MAX_SIDE + 1} is out of range"),
    (2, 3, "yuv422", 6, 12, "width 3 must be even"),
])
def test_malformed_messages_are_refused_with_one_line(h, w, encoding, step, nbytes, message):
    with pytest.raises(ImageError) as info:
        image_msg_to_array(make_msg(h, w, encoding, step, bytes(nbytes)))
    text = str(info.value)
    assert message in text and "\n" not in text


def test_absurd_size_with_tiny_data_does_not_allocate():
    msg = make_msg(2048, 2048, "rgb8", 2048 * 3, bytes(10))
    with pytest.raises(ImageError, match="fewer than height\\*step"):
        image_msg_to_array(msg)
    msg = make_msg(MAX_SIDE, MAX_SIDE, "rgb8", MAX_SIDE * 3, bytes(10))  # beyond the pixel budget
    with pytest.raises(ImageError, match="exceeds the budget"):
        image_msg_to_array(msg)


def test_array_to_image_msg_refuses_float_arrays():
    with pytest.raises(ImageError, match="float32"):
        array_to_image_msg(np.zeros((2, 2), np.float32), "32FC1")


def test_compressed_images_decode():
    bgr = rng.integers(0, 255, (8, 10, 3), dtype=np.uint8)
    msg = CompressedImage(format="png")
    msg.data = cv2.imencode(".png", bgr)[1].tobytes()
    back, enc = compressed_msg_to_array(msg)
    assert enc == "bgr8"
    np.testing.assert_array_equal(back, bgr)
    mono = rng.integers(0, 255, (8, 10), dtype=np.uint8)
    msg.data = cv2.imencode(".png", mono)[1].tobytes()
    back, enc = compressed_msg_to_array(msg)
    assert enc == "mono8"
    np.testing.assert_array_equal(back, mono)
    msg.format = "jpeg"
    msg.data = cv2.imencode(".jpg", bgr)[1].tobytes()
    back, enc = compressed_msg_to_array(msg)
    assert enc == "bgr8" and back.shape == bgr.shape


@pytest.mark.parametrize("data,message", [(b"", "has no data"), (b"not an image at all", "cannot be decoded")])
def test_undecodable_compressed_images_are_refused(data, message):
    msg = CompressedImage(format="jpeg")
    msg.data = data
    with pytest.raises(ImageError, match=message):
        compressed_msg_to_array(msg)


@pytest.mark.parametrize("alias,encoding,shape,dtype", [
    ("8UC1", "mono8", (4, 5), np.uint8), ("8UC3", "bgr8", (4, 5, 3), np.uint8), ("16UC1", "mono16", (4, 5), np.uint16),
])
def test_opencv_aliases_are_read_as_the_bag_tools_read_them(alias, encoding, shape, dtype):
    """One set of accepted encodings: what eval-bag/replay accept from a bag, the node accepts live."""
    from bisenet_ros.data import bags

    array = rng.integers(0, 200, shape, dtype=dtype)
    msg = make_msg(shape[0], shape[1], alias, shape[1] * (shape[2] if len(shape) == 3 else 1) * array.itemsize,
                   array.tobytes())
    live, live_enc = image_msg_to_array(msg)
    recorded, rec_enc = bags.image_to_array(msg)
    assert live_enc == rec_enc == encoding
    np.testing.assert_array_equal(live, array)
    np.testing.assert_array_equal(recorded, array)


def test_point_cloud_message_round_trip_and_layout():
    from bisenet_ros.data.pointcloud import POINT_DTYPE
    from bisenet_ros.ros.conversions import cloud_msg_to_points, points_to_cloud_msg

    pts = np.zeros(3, POINT_DTYPE)
    pts["x"], pts["label"], pts["rgb"] = [1.0, -2.0, 3.5], [0, 7, 65535], [0x804080, 0, 0xFFFFFF]
    header = Header(frame_id="cam")
    msg = points_to_cloud_msg(pts, header)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 3, 20, 60)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 12, 7, 1), ("label", 16, 4, 1)]
    assert msg.header.frame_id == "cam" and msg.is_dense and not msg.is_bigendian
    assert bytes(msg.data) == pts.tobytes()
    np.testing.assert_array_equal(cloud_msg_to_points(msg), pts)
    msg.point_step = 32
    with pytest.raises(ValueError, match="not a bisenet_ros point cloud"):
        cloud_msg_to_points(msg)
    empty = points_to_cloud_msg(np.zeros(0, POINT_DTYPE), header)
    assert empty.width == 0 and len(empty.data) == 0
