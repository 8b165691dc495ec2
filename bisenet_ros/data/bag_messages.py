"""ROS 2 message types of bags without a ROS install (``rosbags``' Jazzy typestore): the image
types, and conversions between numpy arrays and sensor_msgs/Image, CompressedImage, CameraInfo and
std_msgs/Header. :mod:`bisenet_ros.data.bags` reads and writes bags with them (and re-exports them).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import BisenetError, ImageError
from .images import decode_compressed, raw_image_to_array

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)

#: encodings written by :func:`array_to_image`: (numpy dtype, channels)
WRITE_ENCODINGS: dict[str, tuple[type, int]] = {
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1), "8UC3": (np.uint8, 3),
    "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1),
}


class BagError(BisenetError):
    """A bag is missing, unreadable, lacks a topic, or holds messages that cannot be used."""


# -- typestore ------------------------------------------------------------------------------------
_TYPESTORE = None


def typestore():
    """The ROS 2 Jazzy message definitions (used to write, and to read bags without definitions)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_typestore

        _TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
    return _TYPESTORE


def image_to_array(msg: Any) -> tuple[np.ndarray, str]:
    """A deserialised sensor_msgs/Image or CompressedImage -> (array, encoding).

    Converted and validated by the same code as the node's messages (:mod:`bisenet_ros.data.images`);
    ``8UC1``/``16UC1`` are read as ``mono8``/``mono16``, ``8UC3`` as ``bgr8``. The array is
    contiguous and writable (row padding dropped). Raises :class:`BagError` with the reason.
    """
    try:
        if hasattr(msg, "format"):
            arr, enc = decode_compressed(msg)
        else:
            arr, enc = raw_image_to_array(msg)
    except ImageError as exc:
        raise BagError(str(exc)) from None
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:  # a view of the message bytes: torch.from_numpy wants writable memory
        arr = arr.copy()
    return arr, enc


def make_header(stamp: int, frame_id: str):
    ts = typestore()
    Time = ts.types["builtin_interfaces/msg/Time"]
    Header = ts.types["std_msgs/msg/Header"]
    return Header(stamp=Time(sec=int(stamp // 1_000_000_000), nanosec=int(stamp % 1_000_000_000)),
                  frame_id=frame_id)


def array_to_image(array: np.ndarray, encoding: str, stamp: int, frame_id: str):
    """numpy array -> rosbags sensor_msgs/Image (mono8/mono16/rgb8/bgr8/rgba8/bgra8 or the
    8UC1/16UC1/8UC3 aliases; 16-bit data little-endian)."""
    if encoding not in WRITE_ENCODINGS:
        raise BagError(f"cannot write encoding '{encoding}'")
    dtype, channels = WRITE_ENCODINGS[encoding]
    arr = np.asarray(array)
    ok = arr.dtype == dtype and (arr.ndim == 2 if channels == 1 else arr.ndim == 3 and arr.shape[2] == channels)
    if not ok:
        raise BagError(f"{encoding} image needs {np.dtype(dtype).name} "
                       f"{'HxW' if channels == 1 else f'HxWx{channels}'}, got {arr.dtype} {arr.shape}")
    h, w = arr.shape[:2]
    data = np.ascontiguousarray(arr.astype("<u2") if dtype is np.uint16 else arr).view(np.uint8).reshape(-1)
    Image = typestore().types[IMAGE_TYPE]
    return Image(header=make_header(stamp, frame_id), height=h, width=w, encoding=encoding,
                 is_bigendian=0, step=w * channels * np.dtype(dtype).itemsize, data=data)


def camera_info(height: int, width: int, stamp: int, frame_id: str,
                intrinsics: Sequence[float] | None = None):
    """The CameraInfo of a ``width`` x ``height`` camera: uncalibrated unless ``intrinsics`` are given.

    Uncalibrated is the CameraInfo convention for "no calibration": K, R and P all zero (what
    camera_info_manager publishes without a calibration file), so consumers (image_geometry,
    rviz2's Camera display) do not project with invented numbers. ``intrinsics`` = (fx, fy, cx, cy)
    of a pinhole camera without distortion: K, P from them, R = identity, ``plumb_bob`` with zero D.
    """
    ts = typestore()
    Info = ts.types[CAMERA_INFO_TYPE]
    Roi = ts.types["sensor_msgs/msg/RegionOfInterest"]
    if intrinsics is None:
        model, d, k, r, p = "", np.zeros(0), np.zeros(9), np.zeros(9), np.zeros(12)
    else:
        fx, fy, cx, cy = (float(v) for v in intrinsics)
        model, d, r = "plumb_bob", np.zeros(5), np.eye(3).reshape(-1)
        k = np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], dtype=np.float64)
        p = np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], dtype=np.float64)
    return Info(
        header=make_header(stamp, frame_id), height=height, width=width, distortion_model=model,
        d=d.astype(np.float64), k=k.astype(np.float64), r=r.astype(np.float64), p=p.astype(np.float64),
        binning_x=0, binning_y=0, roi=Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )
