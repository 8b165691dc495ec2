"""Bag directories exactly as rosbag2 (ROS 2 Jazzy) lays them out, written with ``rosbags``.

What ``ros2 bag record`` produces and what :class:`bisenet_ros.data.bags.BagWriter` therefore writes:

- the storage file is ``<bag>_0.mcap`` / ``<bag>_0.db3`` inside the directory ``<bag>`` (rosbags
  names it ``<dir>.mcap`` after the directory it writes into; here that directory is a hidden
  temporary, so :func:`open_writer` writes into ``<tmp>/<bag>_0`` and :func:`finish` moves the
  files up: the names in ``metadata.yaml`` and in the file's own embedded copy are final);
- ``metadata.yaml`` names ``ros_distro: jazzy`` (the message definitions and the format version 8
  are Jazzy's) instead of rosbags' own tag;
- every topic carries the QoS profile its publisher offered (``offered_qos_profiles``), so that
  ``ros2 bag play`` replays with the recorded reliability, durability and depth instead of
  defaults. :data:`CAMERA_QOS` is what a camera driver offers (rclcpp's default publisher
  profile), :data:`LATCHED_QOS` a latched topic; the node's outputs use :func:`qos`.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from ..safe_yaml import load_yaml_text

#: the distribution whose message definitions and bag format the tools write
ROS_DISTRO = "jazzy"
#: rosbag2's "infinite" duration (RMW_DURATION_INFINITE as written into metadata.yaml)
_INFINITE = (9223372036, 854775807)


def qos(reliable: bool = True, depth: int = 10, transient_local: bool = False):
    """A rosbags QoS profile as rosbag2 records it: keep-last ``depth``, the given reliability and
    durability, automatic liveliness, infinite deadline/lifespan/lease."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    inf = QosTime(*_INFINITE)
    return Qos(QosHistory.KEEP_LAST, int(depth),
               QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               inf, inf, QosLiveliness.AUTOMATIC, inf, False)


#: a camera driver's publisher (rclcpp/rclpy default profile: reliable, volatile, keep last 10)
CAMERA_QOS = qos()
#: the node's outputs with its default parameters (output_reliability reliable, output_depth 1)
NODE_OUTPUT_QOS = qos(depth=1)
#: a latched topic (reliable, transient local, keep last 1)
LATCHED_QOS = qos(depth=1, transient_local=True)


_QOS_KEYS = ("history", "depth", "reliability", "durability", "deadline", "lifespan", "liveliness",
             "liveliness_lease_duration", "avoid_ros_namespace_conventions")


def _block_qos(text: str) -> str:
    """A format-8 ``offered_qos_profiles`` string in rosbag2's key order and block style."""
    profiles = load_yaml_text(text, "offered_qos_profiles", "QoS profiles", expect=None) if text else None
    if not isinstance(profiles, list):
        return text
    ordered = [{k: ({"sec": p[k]["sec"], "nsec": p[k]["nsec"]} if isinstance(p.get(k), dict) else p.get(k))
                for k in _QOS_KEYS if k in p} for p in profiles]
    return yaml.safe_dump(ordered, default_flow_style=False, sort_keys=False).strip()


def _jazzy(metadata: str) -> str:
    """The serialized metadata with rosbag2's distribution name instead of rosbags' tag and the
    QoS profiles laid out as rosbag2 writes them."""
    data = load_yaml_text(metadata, "metadata.yaml", "bag metadata", expect=None)
    if isinstance(data, dict):
        inner = data.get("rosbag2_bagfile_information", data)
        inner["ros_distro"] = ROS_DISTRO
        for topic in inner.get("topics_with_message_count") or []:
            meta = topic.get("topic_metadata") or {}
            if isinstance(meta.get("offered_qos_profiles"), str):
                meta["offered_qos_profiles"] = _block_qos(meta["offered_qos_profiles"])
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=False).strip()


def _writer_class():
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.storage_mcap import McapWriter
    from rosbags.rosbag2.storage_sqlite3 import Sqlite3Writer

    class Mcap(McapWriter):
        def close(self, version: int, metadata: str) -> None:
            super().close(version, _jazzy(metadata))

    class Sqlite3(Sqlite3Writer):
        SQLITE_SCHEMA = Sqlite3Writer.SQLITE_SCHEMA.replace("'rosbags'", f"'{ROS_DISTRO}'")

        def close(self, version: int, metadata: str) -> None:
            super().close(version, _jazzy(metadata))

    class Rosbag2Writer(Writer):
        STORAGE_PLUGINS = {StoragePlugin.SQLITE3: Sqlite3, StoragePlugin.MCAP: Mcap}

    return Rosbag2Writer


def open_writer(tmp: Path, name: str, storage_plugin):
    """A rosbags ``Writer`` (format 8, Jazzy's) for the bag ``name`` being built in the new
    directory ``tmp``; its storage file gets rosbag2's name ``<name>_0.<ext>``. Call
    :func:`finish` after closing it."""
    tmp.mkdir(parents=True)
    return _writer_class()(tmp / f"{name}_0", version=8, storage_plugin=storage_plugin)


def finish(tmp: Path, name: str) -> None:
    """After the writer closed: move the bag's files from ``tmp/<name>_0`` into ``tmp`` (which is
    then renamed to ``<name>``) and set the distribution in ``metadata.yaml``."""
    inner = tmp / f"{name}_0"
    for f in inner.iterdir():
        f.replace(tmp / f.name)
    inner.rmdir()
    meta = tmp / "metadata.yaml"
    text = _jazzy(meta.read_text())
    part = meta.with_name(".metadata.yaml.tmp")
    part.write_text(text + "\n")
    part.replace(meta)
