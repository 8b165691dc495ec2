"""The ROS-free semantic point cloud core: depth decoding, intrinsics scaling, back-projection,
the packed point layout, class masks and areas (bisenet_ros/data/pointcloud.py, images.raw_depth_to_array)."""
from __future__ import annotations

import struct
from types import SimpleNamespace

import numpy as np
import pytest

from bisenet_ros.errors import ConfigError, ImageError
from bisenet_ros.data.images import raw_depth_to_array
from bisenet_ros.data.pointcloud import (
    POINT_DTYPE, POINT_FIELDS, CloudOptions, PointCloudBuilder, class_areas, class_mask, depth_intrinsics,
    depth_to_metres, resolve_classes, sample_labels,
)

K = [300.0, 0.0, 31.5, 0.0, 280.0, 23.5, 0.0, 0.0, 1.0]
PALETTE = np.array([[128, 64, 128], [244, 35, 232], [70, 70, 70], [0, 0, 142]], np.uint8)


def depth_msg(arr: np.ndarray, encoding: str, big: bool = False, pad: int = 0):
    a = arr.astype(arr.dtype.newbyteorder(">" if big else "<"))
    rows = a.view(np.uint8).reshape(arr.shape[0], -1)
    rows = np.concatenate([rows, np.zeros((arr.shape[0], pad), np.uint8)], 1)
    return SimpleNamespace(height=arr.shape[0], width=arr.shape[1], step=rows.shape[1], encoding=encoding,
                           is_bigendian=int(big), data=rows.tobytes())


def reference_points(depth_m, k, labels):
    """Independent per-pixel loop: (x, y, z, label) of every valid pixel."""
    pts = []
    for v in range(depth_m.shape[0]):
        for u in range(depth_m.shape[1]):
            z = float(depth_m[v, u])
            if np.isfinite(z) and z > 0:
                pts.append(((u - k[2]) * z / k[0], (v - k[5]) * z / k[4], z, int(labels[v, u])))
    return np.array(pts)


@pytest.mark.parametrize("big", [False, True])
def test_depth_messages_decode_both_encodings_with_padding_and_byte_order(big):
    mm = np.array([[0, 1000, 65535], [1500, 1, 2]], np.uint16)
    arr, enc = raw_depth_to_array(depth_msg(mm, "16UC1", big, pad=3))
    assert enc == "16UC1" and arr.dtype == np.uint16 and np.array_equal(arr, mm)
    m = np.array([[np.nan, 1.25, -1.0], [np.inf, 0.0, 2.5]], np.float32)
    arr, enc = raw_depth_to_array(depth_msg(m, "32FC1", big, pad=1))
    assert enc == "32FC1" and arr.dtype == np.float32
    np.testing.assert_array_equal(arr, m)
    metres = depth_to_metres(arr, enc)
    assert np.isnan(metres[[0, 0, 1, 1], [0, 2, 0, 1]]).all() and metres[0, 1] == 1.25
    np.testing.assert_allclose(depth_to_metres(mm, "16UC1"), [[np.nan, 1.0, 65.535], [1.5, 0.001, 0.002]],
                               rtol=1e-6)


def test_bad_depth_messages_are_refused_with_one_line():
    with pytest.raises(ImageError, match="depth encoding 'rgb8' is not supported"):
        raw_depth_to_array(depth_msg(np.zeros((2, 2), np.uint16), "rgb8"))
    msg = depth_msg(np.zeros((4, 4), np.float32), "32FC1")
    msg.data = msg.data[:20]
    with pytest.raises(ImageError, match="fewer than height\\*step"):
        raw_depth_to_array(msg)


def test_back_projection_matches_a_per_pixel_loop_and_the_layout():
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 20, (48, 64)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.1] = np.nan
    depth[5, 7] = 0.0
    labels = rng.integers(0, 4, depth.shape).astype(np.uint8)
    dm = depth_to_metres(depth, "32FC1")
    cloud = PointCloudBuilder().build(dm, depth_intrinsics(K, (48, 64), (48, 64), (48, 64)), labels, PALETTE,
                                      CloudOptions())
    ref = reference_points(dm, K, labels)
    assert cloud.dtype.itemsize == 20 and len(cloud) == len(ref) == np.isfinite(dm).sum()
    got = np.stack([cloud["x"], cloud["y"], cloud["z"]], 1)
    np.testing.assert_allclose(got, ref[:, :3], atol=1e-4)
    np.testing.assert_array_equal(cloud["label"], ref[:, 3])
    # the bytes: parse point 3 by the declared offsets
    raw = cloud.tobytes()
    off = {name: o for name, o, _ in POINT_FIELDS}
    p = raw[3 * 20:4 * 20]
    x, = struct.unpack_from("<f", p, off["x"])
    label, = struct.unpack_from("<H", p, off["label"])
    rgb, = struct.unpack_from("<I", p, off["rgb"])
    assert x == pytest.approx(ref[3, 0], abs=1e-4) and label == ref[3, 3]
    assert ((rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255) == tuple(PALETTE[label])
    assert POINT_DTYPE.fields["rgb"][1] == 12


def test_stride_limits_and_class_filter():
    depth = np.full((40, 60), 5.0, np.float32)
    depth[:, :20] = 1.0
    depth[:, 40:] = 50.0
    labels = np.zeros((40, 60), np.uint8)
    labels[20:] = 3
    b = PointCloudBuilder()
    intr = depth_intrinsics(K, (0, 0), (40, 60), (40, 60))
    cloud = b.build(depth, intr, labels, PALETTE, CloudOptions(stride=4))
    assert len(cloud) == 10 * 15
    cloud = b.build(depth, intr, labels, PALETTE, CloudOptions(min_depth=2.0, max_depth=10.0))
    assert len(cloud) == 40 * 20 and (cloud["z"] == 5.0).all()
    ids = resolve_classes(["3"], ["a", "b", "c", "d"])
    cloud = b.build(depth, intr, labels, PALETTE, CloudOptions(classes=ids))
    assert len(cloud) == 20 * 60 and (cloud["label"] == 3).all()
    assert (cloud["y"] / cloud["z"] * K[4] + K[5]).min() == pytest.approx(20.0)  # rows 20.. only


def test_depth_at_another_resolution_scales_intrinsics_and_samples_labels():
    labels = np.zeros((48, 64), np.uint8)
    labels[:, 32:] = 2
    depth = np.full((24, 32), 4.0, np.float32)
    fx, fy, cx, cy = depth_intrinsics(K, (48, 64), (24, 32), (48, 64))
    assert (fx, fy) == (150.0, 140.0) and (cx, cy) == ((31.5 + 0.5) / 2 - 0.5, (23.5 + 0.5) / 2 - 0.5)
    cloud = PointCloudBuilder().build(depth, (fx, fy, cx, cy), labels, PALETTE, CloudOptions())
    assert len(cloud) == 24 * 32
    assert (cloud["label"].reshape(24, 32)[:, 16:] == 2).all() and (cloud["label"].reshape(24, 32)[:, :16] == 0).all()
    # the same ray: depth pixel (u=16) at half resolution is camera pixel centre 32.5 - 0.5 = 32.5
    x = cloud["x"].reshape(24, 32)[0, 16]
    assert x == pytest.approx((32.5 - 31.5) * 4.0 / 300.0, abs=1e-6)
    assert sample_labels(labels, (24, 32)).shape == (24, 32)


def test_sizes_that_are_not_a_clean_scale_and_missing_k_are_refused():
    with pytest.raises(ImageError, match="depth size 40x24 is not a scale of the camera's 64x48"):
        depth_intrinsics(K, (48, 64), (24, 40), (48, 64))
    with pytest.raises(ImageError, match="depth size 192x144 is more than 2x the camera's 64x48"):
        depth_intrinsics(K, (48, 64), (144, 192), (48, 64))
    with pytest.raises(ImageError, match="no valid K"):
        depth_intrinsics([0.0] * 9, (48, 64), (48, 64), (48, 64))


def test_depth_buffer_pairs_by_stamp_and_waits_for_a_late_depth():
    import threading

    from bisenet_ros.data.pointcloud import DepthBuffer
    buf = DepthBuffer(3)
    assert buf.match(100, 0) == (None, None)
    for stamp in (100, 200, 300, 400):  # bounded: the oldest (100) is gone
        buf.add(stamp, f"d{stamp}")
    assert buf.match(300, 0) == ("d300", 0)
    assert buf.match(100, 0) == (None, 100)
    assert buf.match(310, 10) == ("d300", 10) and buf.match(310, 9) == (None, 10)
    # labels of stamp 500 are ready before their depth: it is waited for (bounded)
    threading.Timer(0.05, buf.add, (500, "d500")).start()
    assert buf.match(500, 0, wait_s=10.0) == ("d500", 0)
    # no wait when a newer depth than the image is there already (the image's one will not come)
    assert buf.match(450, 0, wait_s=10.0) == (None, 50)


def test_mask_areas_and_class_names():
    labels = np.array([[0, 1, 1, 3]], np.uint8)
    names = ["road", "sidewalk", "building", "car"]
    ids = resolve_classes(["road", "3"], names)
    assert ids.tolist() == [0, 3]
    from bisenet_ros.data.pointcloud import class_table
    assert class_mask(labels, class_table(ids, 4)).tolist() == [[255, 0, 0, 255]]
    assert class_areas(labels, names) == {"road": 0.25, "sidewalk": 0.5, "car": 0.25}
    # mono8 labels are counted by OpenCV's histogram, mono16 by bincount: the same fractions
    rng = np.random.default_rng(3)
    big = rng.integers(0, 19, (48, 64), dtype=np.uint8)
    big[:, 5] = 255  # the unknown label of confidence_threshold, past the class names
    expected = np.bincount(big.ravel(), minlength=256) / big.size
    want = {(f"c{i}" if i < 19 else str(i)): expected[i] for i in np.flatnonzero(expected)}
    names19 = [f"c{i}" for i in range(19)]
    assert class_areas(big, names19) == want
    assert class_areas(big.astype(np.uint16), names19) == want
    assert class_areas(big[:, ::2], names19) == class_areas(np.ascontiguousarray(big[:, ::2]).astype(np.uint16), names19)
    with pytest.raises(ConfigError, match="unknown classes \\['tree', '9'\\]"):
        resolve_classes(["tree", "9"], names)
