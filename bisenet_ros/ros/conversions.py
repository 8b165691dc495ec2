"""sensor_msgs <-> numpy, without cv_bridge.

``image_msg_to_array`` returns a zero-copy view of the message buffer (honouring ``step``, so
padded rows work) and refuses malformed messages with an :class:`~bisenet_ros.errors.ImageError`
whose one-line message names the problem. ``array_to_image_msg`` fills ``msg.data`` with
``array.tobytes()``: assigning a numpy array to ``msg.data`` is element-wise and ~100x slower.
"""
from __future__ import annotations

import copy

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from ..data.images import (MAX_PIXELS, NATIVE_BIG_ENDIAN, check_compressed, decode_compressed, raw_depth_to_array,
                           raw_image_to_array)
from ..data.pointcloud import POINT_DTYPE, POINT_FIELDS
from ..errors import ImageError


def image_msg_to_array(msg: Image, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str]:
    """View an Image's pixels as (H, W) for mono, (H, W, C) otherwise; return (array, encoding).

    The array shares the message buffer (no copy) except for big-endian mono16 and packed
    YUV 4:2:2, which are converted (to native mono16, resp. rgb8 -- the returned encoding says).
    Images above ``max_pixels`` are refused from the header fields, before any work.
    """
    return raw_image_to_array(msg, max_pixels=max_pixels)


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
    msg.is_bigendian = int(NATIVE_BIG_ENDIAN and array.dtype.itemsize > 1)
    channels = 1 if array.ndim == 2 else int(array.shape[2])
    msg.step = msg.width * channels * array.dtype.itemsize
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg


def compressed_msg_to_array(msg: CompressedImage, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Decode a CompressedImage (JPEG or PNG) -> (array, 'bgr8' | 'bgra8' | 'mono8' | 'mono16');
    the size in its header is checked against ``max_pixels`` first."""
    return decode_compressed(msg, max_pixels)


def check_compressed_msg(msg: CompressedImage, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Header-only check of a CompressedImage (JPEG or PNG, size within ``max_pixels``), cheap
    enough for a subscription callback; returns (width, height)."""
    return check_compressed(msg.data, f"compressed image ({msg.format or 'no format'})", max_pixels)


def array_to_compressed_msg(array: np.ndarray, encoding: str, header: Header | None, fmt: str,
                            level: int) -> CompressedImage:
    """A CompressedImage as image_transport's ``compressed`` plugin writes it.

    ``fmt`` is ``jpeg`` (``level`` = quality 1-100; colour images are stored BGR) or ``png``
    (``level`` = compression 0-9; mono8/mono16 kept exactly). ``format`` reads
    ``"<encoding>; <fmt> compressed <stored encoding>"``, e.g. ``rgb8; jpeg compressed bgr8``.
    """
    import cv2

    stored, pixels = encoding, np.ascontiguousarray(array)
    if array.ndim == 3:
        code = {"rgb8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGBA2BGR, "bgra8": cv2.COLOR_BGRA2BGR}.get(encoding)
        pixels = cv2.cvtColor(pixels, code) if code is not None else pixels
        stored = "bgr8"
    if fmt == "jpeg":
        ok, data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(level)])
    elif fmt == "png":
        ok, data = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, int(level)])
    else:
        raise ImageError(f"unknown compressed format '{fmt}' (jpeg or png)")
    if not ok:
        raise ImageError(f"OpenCV could not encode a {encoding} {array.shape} image as {fmt}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f"{encoding}; {fmt} compressed {stored}"
    msg.data = data.tobytes()
    return msg


def depth_msg_to_array(msg: Image) -> tuple[np.ndarray, str]:
    """View a depth Image (16UC1 millimetres or 32FC1 metres) as (H, W) uint16/float32 -> (array, encoding)."""
    return raw_depth_to_array(msg)


def points_to_cloud_msg(points: np.ndarray, header: Header) -> PointCloud2:
    """An unorganised PointCloud2 (height 1) of a :data:`~bisenet_ros.data.pointcloud.POINT_DTYPE` array:
    fields x, y, z, rgb (float32) and label (uint16), little-endian, ``data = points.tobytes()``."""
    if points.dtype != POINT_DTYPE:
        raise ValueError(f"points must have dtype POINT_DTYPE, got {points.dtype}")
    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = 1, int(points.size)
    msg.fields = [PointField(name=name, offset=offset, datatype=datatype, count=1)
                  for name, offset, datatype in POINT_FIELDS]
    msg.is_bigendian = False  # POINT_DTYPE is little-endian on every host
    msg.point_step = POINT_DTYPE.itemsize
    msg.row_step = msg.point_step * msg.width
    msg.data = points.tobytes()
    msg.is_dense = True  # only valid points are sent
    return msg


def cloud_msg_to_points(msg: PointCloud2) -> np.ndarray:
    """A ``~/points`` message back to its :data:`~bisenet_ros.data.pointcloud.POINT_DTYPE` array (a copy);
    ValueError for a cloud of another layout."""
    layout = [(f.name, f.offset, f.datatype) for f in msg.fields]
    if layout != list(POINT_FIELDS) or msg.point_step != POINT_DTYPE.itemsize or msg.is_bigendian:
        raise ValueError(f"not a bisenet_ros point cloud: fields {layout}, point_step {msg.point_step}")
    return np.frombuffer(bytes(msg.data), POINT_DTYPE, count=msg.width * msg.height).copy()


def depth_to_image_msg(depth: np.ndarray, header: Header | None = None) -> Image:
    """A registered depth Image: (H, W) uint16 millimetres as 16UC1, float32 metres as 32FC1."""
    encodings = {np.dtype(np.uint16): "16UC1", np.dtype(np.float32): "32FC1"}
    if depth.ndim != 2 or depth.dtype not in encodings:
        raise ImageError(f"a depth image must be HxW uint16 (mm) or float32 (m), got {depth.dtype} {depth.shape}")
    msg = Image(height=int(depth.shape[0]), width=int(depth.shape[1]), encoding=encodings[depth.dtype],
                is_bigendian=int(NATIVE_BIG_ENDIAN), step=int(depth.shape[1] * depth.dtype.itemsize))
    if header is not None:
        msg.header = header
    msg.data = np.ascontiguousarray(depth).tobytes()
    return msg


def camera_info_msg(height: int, width: int, k: np.ndarray, header: Header | None = None) -> CameraInfo:
    """A plumb-bob CameraInfo of a ``height`` x ``width`` camera with the 3x3 matrix ``k``."""
    info = CameraInfo(height=int(height), width=int(width), distortion_model="plumb_bob")
    info.k = [float(v) for v in np.asarray(k).ravel()]
    if header is not None:
        info.header = header
    return info


def scale_camera_info(info: CameraInfo, header: Header, width: int, height: int) -> CameraInfo:
    """``info`` for the image resized to ``width`` x ``height`` (pixel-centre convention).

    The pipeline resizes with ``align_corners=False``, so a pixel coordinate maps as
    ``x' = (x + 0.5) * sx - 0.5``: focal lengths scale by s, principal points by that rule.
    """
    sx, sy = width / info.width, height / info.height
    out = CameraInfo()
    out.header = header
    out.width, out.height = width, height
    out.distortion_model, out.d, out.r = info.distortion_model, info.d, info.r
    k = list(info.k)
    k[0], k[1], k[2] = k[0] * sx, k[1] * sx, (k[2] + 0.5) * sx - 0.5
    k[4], k[5] = k[4] * sy, (k[5] + 0.5) * sy - 0.5
    out.k = k
    p = list(info.p)
    p[0], p[1], p[2], p[3] = p[0] * sx, p[1] * sx, (p[2] + 0.5) * sx - 0.5, p[3] * sx
    p[5], p[6], p[7] = p[5] * sy, (p[6] + 0.5) * sy - 0.5, p[7] * sy
    out.p = p
    out.binning_x, out.binning_y = info.binning_x, info.binning_y
    roi = info.roi
    out.roi.x_offset, out.roi.y_offset = int(round(roi.x_offset * sx)), int(round(roi.y_offset * sy))
    out.roi.width, out.roi.height = int(round(roi.width * sx)), int(round(roi.height * sy))
    out.roi.do_rectify = roi.do_rectify
    return out


def output_camera_info(info: CameraInfo | None, header: Header, width: int, height: int) -> CameraInfo:
    """The CameraInfo published beside a labels frame of ``width`` x ``height`` with ``header``:
    the camera's (scaled when the output is resized), else an uncalibrated one (all-zero K) that
    still says the frame and size."""
    if info is None or not info.width or not info.height:
        out = CameraInfo(width=width, height=height)
        out.header = header
        return out
    if (info.width, info.height) != (width, height):
        return scale_camera_info(info, header, width, height)
    out = copy.copy(info)
    out.header = header
    return out
