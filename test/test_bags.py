"""Bag I/O (rosbags, no ROS): write/read round trips in both storages, message conversion, pairing."""
from __future__ import annotations

import types

import cv2
import numpy as np
import pytest

from bisenet_ros.data import bags
from bisenet_ros.data.bags import BagError, pair_stamps, write_image_bag

T0 = 1_700_000_000_000_000_000


def _frames(n=4, h=20, w=30, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
             rng.integers(0, 5, (h, w), dtype=np.uint8) if i != 2 else None) for i in range(n)]


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_write_read_round_trip(tmp_path, storage):
    frames = _frames()
    path = tmp_path / "bag"
    assert write_image_bag(path, frames, fps=20.0, storage=storage, start_ns=T0) == 4
    topics = bags.list_topics(path)
    assert {k: (t.msgtype, t.count) for k, t in topics.items()} == {
        "/camera/image_raw": ("sensor_msgs/msg/Image", 4),
        "/camera/labels": ("sensor_msgs/msg/Image", 3),  # frame 2 has no labels
        "/camera/camera_info": ("sensor_msgs/msg/CameraInfo", 4),
    }
    items = list(bags.read_image_topics(path, ["/camera/image_raw", "/camera/labels"]))
    images = [i for i in items if i.topic == "/camera/image_raw"]
    labels = [i for i in items if i.topic == "/camera/labels"]
    assert [i.stamp_ns for i in images] == [T0 + k * 50_000_000 for k in range(4)]
    assert [i.stamp_ns for i in labels] == [T0, T0 + 50_000_000, T0 + 150_000_000]
    assert all(i.log_time_ns == i.stamp_ns and i.frame_id == "camera" for i in items)
    for img, (rgb, _) in zip(images, frames):
        assert img.encoding == "rgb8" and img.array.flags.writeable
        np.testing.assert_array_equal(img.array, rgb)
    for lab, (_, gt) in zip(labels, [frames[0], frames[1], frames[3]]):
        assert lab.encoding == "mono8"
        np.testing.assert_array_equal(lab.array, gt)
    # CameraInfo carries the same stamps and the image size
    with bags.open_bag(path) as reader:
        conns = [c for c in reader.connections if c.topic == "/camera/camera_info"]
        infos = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections=conns)]
    assert [bags.stamp_ns(m.header) for m in infos] == [i.stamp_ns for i in images]
    assert (infos[0].height, infos[0].width) == (20, 30)
    # no calibration given: uncalibrated by the CameraInfo convention (K, R, P all zero), no invented fx
    assert not np.any(infos[0].k) and not np.any(infos[0].p) and not np.any(infos[0].r)
    # the single storage file reads as well as the directory
    (single,) = [p for p in path.iterdir() if p.suffix in (".mcap", ".db3")]
    assert len(list(bags.read_image_topics(single, ["/camera/labels"], decode=False))) == 3


def test_bgr8_and_mono16_labels(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 200  # red
    labels = np.full((4, 6), 300, np.uint16)
    write_image_bag(tmp_path / "b", [(rgb, labels)], encoding="bgr8", info_topic=None, start_ns=T0)
    img, lab = bags.read_image_topics(tmp_path / "b", ["/camera/image_raw", "/camera/labels"])
    assert img.encoding == "bgr8" and img.array[0, 0].tolist() == [0, 0, 200]
    assert lab.encoding == "mono16" and lab.array.dtype == np.uint16 and int(lab.array[0, 0]) == 300
    assert set(bags.list_topics(tmp_path / "b")) == {"/camera/image_raw", "/camera/labels"}


def test_write_errors_leave_no_bag(tmp_path):
    img = np.zeros((4, 6, 3), np.uint8)
    with pytest.raises(BagError, match="differ in size"):
        write_image_bag(tmp_path / "b", [(img, np.zeros((4, 5), np.uint8))])
    assert not (tmp_path / "b").exists()
    with pytest.raises(BagError, match="uint8 HxWx3"):
        write_image_bag(tmp_path / "b", [(img[..., 0], None)])
    with pytest.raises(BagError, match="no frames"):
        write_image_bag(tmp_path / "b", [])
    write_image_bag(tmp_path / "b", [(img, None)])
    with pytest.raises(BagError, match="exists already"):
        write_image_bag(tmp_path / "b", [(img, None)])
    assert write_image_bag(tmp_path / "b", [(img, None)] * 2, overwrite=True) == 2
    (tmp_path / "plain").mkdir()
    with pytest.raises(BagError, match="not a ROS 2 bag written by bisenet-ros"):
        write_image_bag(tmp_path / "plain", [(img, None)], overwrite=True)
    with pytest.raises(BagError, match="storage"):
        write_image_bag(tmp_path / "c", [(img, None)], storage="rosbag1")


def test_read_errors(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        bags.list_topics(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="not a ROS 2 bag"):
        bags.list_topics(tmp_path / "empty")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(BagError, match="not a ROS 2 bag"):
        bags.list_topics(tmp_path / "x.txt")
    write_image_bag(tmp_path / "b", _frames(2))
    with pytest.raises(BagError, match=r"'/nope' is not in bag .*image topics: /camera/image_raw \(sensor_msgs/msg/Image, 2 msgs\)"):
        list(bags.read_image_topics(tmp_path / "b", ["/nope"]))
    with pytest.raises(BagError, match="has type sensor_msgs/msg/CameraInfo"):
        list(bags.read_image_topics(tmp_path / "b", ["/camera/camera_info"]))


def _msg(data, h, w, enc, step, big=0):
    return types.SimpleNamespace(data=np.frombuffer(bytes(data), np.uint8), height=h, width=w,
                                 encoding=enc, step=step, is_bigendian=big)


def test_image_to_array_conversions():
    # row padding dropped
    raw = np.arange(2 * 8, dtype=np.uint8)  # 2 rows, step 8, 2 px rgb8 = 6 bytes per row
    arr, enc = bags.image_to_array(_msg(raw, 2, 2, "rgb8", 8))
    assert enc == "rgb8" and arr.tolist() == [[[0, 1, 2], [3, 4, 5]], [[8, 9, 10], [11, 12, 13]]]
    # big-endian 16-bit, and the 16UC1 alias
    arr, enc = bags.image_to_array(_msg(np.array([1, 2, 0, 7], np.uint8), 1, 2, "16UC1", 4, big=1))
    assert enc == "mono16" and arr.tolist() == [[258, 7]]
    arr, enc = bags.image_to_array(_msg(np.array([1, 2, 0, 7], np.uint8), 1, 2, "mono16", 4, big=0))
    assert arr.tolist() == [[513, 1792]]
    arr, enc = bags.image_to_array(_msg(np.arange(6, dtype=np.uint8), 1, 2, "8UC3", 6))
    assert enc == "bgr8" and arr.shape == (1, 2, 3)
    arr, enc = bags.image_to_array(_msg(np.full(8, 128, np.uint8), 1, 4, "yuv422", 8))
    assert enc == "rgb8" and arr.shape == (1, 4, 3)
    for msg, match in [
        (_msg(np.zeros(4, np.uint8), 1, 4, "32FC1", 16), "float encoding '32FC1' is not supported"),
        (_msg(np.zeros(5, np.uint8), 2, 3, "mono8", 3), "fewer than height\\*step"),
        (_msg(np.zeros(6, np.uint8), 1, 3, "rgb8", 6), "step 6 is smaller than width\\*channels\\*bytes"),
        (_msg(np.zeros(0, np.uint8), 0, 3, "mono8", 3), "out of range"),
    ]:
        with pytest.raises(BagError, match=match):
            bags.image_to_array(msg)


def test_compressed_images_keep_label_values():
    lab = np.array([[0, 1, 2], [255, 18, 7]], np.uint8)
    ok, png = cv2.imencode(".png", lab)
    arr, enc = bags.image_to_array(types.SimpleNamespace(format="png", data=np.frombuffer(png, np.uint8)))
    assert enc == "mono8" and arr.tolist() == lab.tolist()
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 2] = 250
    ok, jpg = cv2.imencode(".jpg", bgr)
    arr, enc = bags.image_to_array(types.SimpleNamespace(format="rgb8; jpeg compressed bgr8",
                                                         data=np.frombuffer(jpg, np.uint8)))
    assert enc == "bgr8" and abs(int(arr[0, 0, 2]) - 250) <= 3
    with pytest.raises(BagError, match="cannot be decoded"):
        bags.image_to_array(types.SimpleNamespace(format="jpeg", data=np.zeros(10, np.uint8)))


def test_compressed_topic_in_a_bag(tmp_path):
    ts = bags.typestore()
    Compressed = ts.types[bags.COMPRESSED_TYPE]
    img = np.zeros((6, 8, 3), np.uint8)
    img[:, :4] = (0, 0, 255)
    ok, png = cv2.imencode(".png", img)
    with bags.BagWriter(tmp_path / "c", storage="sqlite3") as w:
        w.write("/cam/compressed", Compressed(header=bags.make_header(T0, "cam"), format="png",
                                              data=np.frombuffer(png, np.uint8)), T0)
    (item,) = bags.read_image_topics(tmp_path / "c", ["/cam/compressed"])
    assert item.encoding == "bgr8" and item.array[0, 0].tolist() == [0, 0, 255] and item.stamp_ns == T0


def test_pair_stamps():
    imgs = [100, 200, 300, 400]
    exact = pair_stamps(imgs, [200, 400, 999])
    assert exact.pairs == {200: 200, 400: 400} and exact.unmatched_labels == 1
    near = pair_stamps(imgs, [103, 198, 251], tolerance_ns=5)
    assert near.pairs == {100: 103, 200: 198} and near.unmatched_labels == 1 and near.max_offset_ns == 3
    none = pair_stamps(imgs, [150], tolerance_ns=10)
    assert none.pairs == {} and none.closest_ns == 50
    # the exact match wins over a nearer-but-later candidate; each image gets one label
    assert pair_stamps([100], [100, 101], tolerance_ns=5).pairs == {100: 100}
