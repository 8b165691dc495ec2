"""Bags as rosbag2 lays them out, from every tool that writes one (make-bag, eval-bag --pred-bag,
the demo recording; mcap and sqlite3): the storage file is ``<bag>_0.mcap`` / ``<bag>_0.db3``,
nothing under a hidden name, ``metadata.yaml`` names ros_distro jazzy and the offered QoS, and a
plain ``cp bag/* copy/`` copy reads back complete."""
from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosDurability, QosHistory, QosReliability

from bisenet_ros.data import bags
from bisenet_ros import cli
from bisenet_ros.tools import demo

EXT = {"mcap": ".mcap", "sqlite3": ".db3"}


def _frames(n=3):
    rng = np.random.default_rng(5)
    return [(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), rng.integers(0, 5, (24, 32), dtype=np.uint8))
            for _ in range(n)]


def _check_layout(bag: Path, storage: str) -> tuple[dict, dict]:
    """The rosbag2 layout; returns ({topic: count}, {topic: offered QoS}) read from a shell-glob copy."""
    names = sorted(p.name for p in bag.iterdir())
    assert names == sorted([f"{bag.name}_0{EXT[storage]}", "metadata.yaml"]), names
    assert not [p for p in bag.parent.iterdir() if p.name.startswith(".")], "hidden leftovers"
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["ros_distro"] == "jazzy" and info["version"] == 8
    assert info["relative_file_paths"] == [f"{bag.name}_0{EXT[storage]}"]
    assert info["files"][0]["path"] == f"{bag.name}_0{EXT[storage]}"
    for topic in info["topics_with_message_count"]:
        profiles = yaml.safe_load(topic["topic_metadata"]["offered_qos_profiles"])
        assert len(profiles) == 1 and {"reliability", "durability", "history", "depth"} <= set(profiles[0])
    copy = bag.parent / f"{bag.name}_copy"
    copy.mkdir()
    subprocess.run(f"cp {bag}/* {copy}/", shell=True, check=True)  # what a user types
    with AnyReader([copy]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        read = sum(1 for _ in reader.messages())
        qos = {c.topic: c.ext.offered_qos_profiles[0] for c in reader.connections}
    assert read == sum(counts.values()) == info["message_count"]
    for q in qos.values():
        assert q.history == QosHistory.KEEP_LAST and q.durability == QosDurability.VOLATILE
        assert q.reliability == QosReliability.RELIABLE and q.depth >= 1
    return counts, qos


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_make_bag_writes_rosbag2_layout(tmp_path, storage):
    (tmp_path / "img").mkdir()
    for i, (img, _) in enumerate(_frames()):
        cv2.imwrite(str(tmp_path / "img" / f"f{i}.png"), img)
    out = tmp_path / "out" / "street"
    assert cli.main(["make-bag", "--out", str(out), "--images", str(tmp_path / "img"), "--storage", storage]) == 0
    counts, qos = _check_layout(out, storage)
    assert counts == {"/camera/image_raw": 3, "/camera/camera_info": 3}
    assert qos["/camera/image_raw"].depth == 10  # a camera driver's default publisher


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_eval_bag_prediction_bag_writes_rosbag2_layout(tmp_path, tiny_checkpoints, storage):
    bags.write_image_bag(tmp_path / "in", _frames(), storage=storage)
    pred = tmp_path / "out" / "pred"
    assert cli.main(["eval-bag", str(tmp_path / "in"), "--weights", str(tiny_checkpoints["bisenetv2"]),
                     "--label-topic", "/camera/labels", "--no-progress", "--out", str(tmp_path / "report"),
                     "--pred-bag", str(pred), "--pred-storage", storage]) == 0
    counts, qos = _check_layout(pred, storage)
    assert counts == {"/segmentation/labels": 3, "/segmentation/color": 3, "/segmentation/overlay": 3}
    assert qos["/segmentation/labels"].depth == 1  # as the node offers its outputs by default


def test_demo_recording_writes_rosbag2_layout(tmp_path):
    bag = tmp_path / "out" / "sample_recording"
    n, _ = demo.write_recording(bag, 3, 10.0, (48, 64), 1)
    counts, _ = _check_layout(bag, "mcap")
    assert n == 3 and set(counts.values()) == {3}


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(bags.BagError):
        bags.write_image_bag(tmp_path / "b", [(np.zeros((4, 4), np.uint8), None)])
    assert list(tmp_path.iterdir()) == []
