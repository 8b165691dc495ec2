"""ROS 2 bag I/O without a ROS install (the ``rosbags`` library): camera images in, images out.

Reading: :func:`open_bag` (mcap or sqlite3; a bag directory or a single ``.mcap``/``.db3`` file),
:func:`list_topics`, :func:`read_image_topics` (deserialised sensor_msgs/Image or CompressedImage
messages -> numpy arrays, validated as the node validates them) and :func:`pair_stamps`
(ground truth <-> camera frame by header stamp).

Writing: :class:`BagWriter` (topics of Image/CameraInfo messages) and :func:`write_image_bag`
(a camera recording with optional ground-truth labels and CameraInfo, one stamp per frame).
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..errors import one_line
from ..output_files import BAG, BAG_MARK, OutputError, atomic_dir, check_output
from .bag_messages import (  # noqa: F401 (re-exported: the bag API in one place)
    CAMERA_INFO_TYPE, COMPRESSED_TYPE, IMAGE_TYPE, IMAGE_TYPES, WRITE_ENCODINGS, BagError, array_to_image,
    camera_info, image_to_array, make_header, typestore,
)
from .images import ENCODING_ALIASES, decode_compressed, raw_image_to_array, stamp_ns  # noqa: F401 (re-exported)

STORAGES = ("mcap", "sqlite3")


#: added to "cannot read bag" errors: what to try when a recording was cut off or damaged
REPAIR_HINT = (" (a recording cut off or damaged may be repairable: `mcap recover in.mcap -o out.mcap` "
               "for mcap, `ros2 bag reindex` for a bag directory)")


# -- reading --------------------------------------------------------------------------------------
@contextmanager
def open_bag(path: str | Path) -> Iterator[Any]:
    """An opened ``rosbags.highlevel.AnyReader``, closed on exit: ``with open_bag(p) as reader``.

    ``path`` is a bag directory (with ``metadata.yaml``) or a single ``.mcap``/``.db3`` file.
    """
    from rosbags.highlevel import AnyReader, AnyReaderError

    p = Path(path).expanduser()
    if not p.exists():
        raise BagError(f"bag '{path}' does not exist")
    if p.is_dir() and not (p / "metadata.yaml").is_file():
        files = sorted(p.glob("*.mcap")) + sorted(p.glob("*.db3"))
        if len(files) == 1:  # a directory that lost its metadata.yaml: read the one storage file
            p = files[0]
        else:
            raise BagError(f"'{path}' is not a ROS 2 bag (no metadata.yaml, "
                           f"{len(files)} .mcap/.db3 files)")
    elif p.is_file() and p.suffix not in (".mcap", ".db3"):
        raise BagError(f"'{path}' is not a ROS 2 bag (expected a directory, .mcap or .db3)")
    try:
        reader = AnyReader([p], default_typestore=typestore())
        reader.open()
    except (AnyReaderError, OSError, ValueError, KeyError) as exc:
        raise BagError(f"cannot read bag '{path}': {one_line(exc)}{REPAIR_HINT}") from None
    try:
        yield reader
    finally:
        reader.close()


@dataclass(frozen=True)
class TopicSummary:
    name: str
    msgtype: str
    count: int


def list_topics(path: str | Path) -> dict[str, TopicSummary]:
    """Topic name -> (message type, message count) of a bag."""
    with open_bag(path) as reader:
        return _topics(reader)


def _topics(reader) -> dict[str, TopicSummary]:
    out: dict[str, TopicSummary] = {}
    for conn in reader.connections:
        prev = out.get(conn.topic)
        count = conn.msgcount + (prev.count if prev else 0)
        out[conn.topic] = TopicSummary(conn.topic, conn.msgtype, count)
    return out


def describe_topics(topics: dict[str, TopicSummary]) -> str:
    """``/a (sensor_msgs/msg/Image, 10 msgs), /b (...)`` for error messages."""
    if not topics:
        return "the bag has no topics"
    return ", ".join(f"{t.name} ({t.msgtype}, {t.count} msgs)" for t in sorted(topics.values(), key=lambda t: t.name))


def check_image_topic(topics: dict[str, TopicSummary], topic: str, bag: str | Path, what: str = "image") -> None:
    """Raise :class:`BagError` unless ``topic`` exists and carries Image/CompressedImage messages."""
    if topic not in topics:
        images = [t for t in topics.values() if t.msgtype in IMAGE_TYPES]
        listing = describe_topics({t.name: t for t in images}) if images else describe_topics(topics)
        raise BagError(f"{what} topic '{topic}' is not in bag '{bag}'; "
                       f"{'image topics' if images else 'topics'}: {listing}")
    if topics[topic].msgtype not in IMAGE_TYPES:
        raise BagError(f"{what} topic '{topic}' in bag '{bag}' has type {topics[topic].msgtype}, "
                       f"expected sensor_msgs/msg/Image or CompressedImage")


def label_topic_candidates(topics: dict[str, TopicSummary], image_topic: str) -> list[str]:
    """Image topics other than ``image_topic`` whose last name part says labels (``make-bag``
    writes ``/camera/labels``; ``/gt/label``, ``/seg_labels`` ...): where ground truth would be."""
    return sorted(t.name for t in topics.values() if t.msgtype in IMAGE_TYPES and t.name != image_topic
                  and "label" in t.name.rstrip("/").rsplit("/", 1)[-1].lower())


@dataclass
class BagImage:
    """One image message read from a bag."""

    topic: str
    stamp_ns: int  # header stamp
    log_time_ns: int  # bag receive time
    frame_id: str
    array: np.ndarray | None  # None where the message could not be converted (see error)
    encoding: str = ""
    error: str | None = None


def read_image_topics(
    path: str | Path, topics: Sequence[str], *, decode: bool = True, reader=None
) -> Iterator[BagImage]:
    """Image messages of ``topics`` in recording order; conversion errors are reported, not raised.

    Missing or non-image topics raise :class:`BagError` listing the topics that exist. With
    ``decode=False`` only stamps are read (the array is None): the cheap first pass for pairing.
    """
    if reader is None:
        with open_bag(path) as opened:
            yield from read_image_topics(path, topics, decode=decode, reader=opened)
        return
    available = _topics(reader)
    for topic in topics:
        check_image_topic(available, topic, path)
    conns = [c for c in reader.connections if c.topic in set(topics)]
    for conn, log_time, raw in reader.messages(connections=conns):
        try:
            msg = reader.deserialize(raw, conn.msgtype)
        except Exception as exc:  # noqa: BLE001 - any corrupt message: report, keep going
            yield BagImage(conn.topic, -1, log_time, "", None, error=f"cannot deserialise: {one_line(exc)}")
            continue
        item = BagImage(conn.topic, stamp_ns(msg.header), log_time, str(msg.header.frame_id), None)
        if decode:
            try:
                item.array, item.encoding = image_to_array(msg)
            except BagError as exc:
                item.error = str(exc)
        yield item


@dataclass
class StampPairing:
    """Result of :func:`pair_stamps`."""

    pairs: dict[int, int]  # image stamp -> label stamp
    unmatched_labels: int  # labels with no image close enough
    max_offset_ns: int  # largest |image - label| among the pairs
    closest_ns: int | None  # smallest |image - label| over all combinations (for error messages)


def pair_stamps(image_stamps: Iterable[int], label_stamps: Iterable[int], tolerance_ns: int = 0) -> StampPairing:
    """Pair each label with the camera frame of the same stamp, or the nearest within ``tolerance_ns``.

    Each label is used at most once and each image gets at most one label (the closest);
    exact matches always win.
    """
    images = sorted(set(image_stamps))
    labels = sorted(set(label_stamps))
    candidates: list[tuple[int, int, int]] = []  # (offset, label, image)
    closest: int | None = None
    for lab in labels:
        i = bisect_left(images, lab)
        for j in (i - 1, i):
            if 0 <= j < len(images):
                off = abs(images[j] - lab)
                closest = off if closest is None else min(closest, off)
                if off <= tolerance_ns:
                    candidates.append((off, lab, images[j]))
    candidates.sort()
    pairs: dict[int, int] = {}
    used: set[int] = set()
    for off, lab, img in candidates:
        if img in pairs or lab in used:
            continue
        pairs[img] = lab
        used.add(lab)
    max_off = max((abs(i - l) for i, l in pairs.items()), default=0)
    return StampPairing(pairs, len(labels) - len(used), max_off, closest)


# -- writing (the messages: bag_messages.py) -----------------------------------------------------
class BagWriter:
    """Write a new ROS 2 bag directory (mcap or sqlite3); use as a context manager.

    >>> with BagWriter("out_bag") as bag:
    ...     bag.write("/camera/image_raw", array_to_image(img, "rgb8", stamp, "camera"), stamp)
    """

    def __init__(self, path: str | Path, storage: str = "mcap", overwrite: bool = False,
                 inputs: Sequence[str | Path] = (), tool: str = "") -> None:
        from rosbags.rosbag2 import StoragePlugin

        if storage not in STORAGES:
            raise BagError(f"unknown bag storage '{storage}' (choose from {', '.join(STORAGES)})")
        self.path = Path(path).expanduser()
        check_bag_output(self.path, inputs, overwrite)
        self._plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._tool = tool or "bisenet-ros"
        self._atomic = None
        self._writer = None
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> "BagWriter":
        from .bag_layout import open_writer

        # written under a temporary name, renamed over self.path when complete (outputs.atomic_dir);
        # the storage file is named as rosbag2 names it (<bag>_0.mcap), see bag_layout
        self._atomic = atomic_dir(self.path)
        self._tmp = self._atomic.__enter__()
        try:
            self._writer = open_writer(self._tmp, self.path.name, self._plugin)
            self._writer.set_custom_data(BAG_MARK, f"written by {self._tool}")
            self._writer.open()
        except BaseException:
            self._atomic.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        from .bag_layout import finish

        try:
            self._writer.close()
            if exc_type is None:
                finish(self._tmp, self.path.name)
        except BaseException:
            if exc_type is None:
                self._atomic.__exit__(*sys.exc_info())
                raise
        self._atomic.__exit__(exc_type, exc, tb)  # on error: the temporary bag is removed

    def write(self, topic: str, msg: Any, timestamp_ns: int, qos: Any = None) -> None:
        """Serialise and write ``msg`` on ``topic``. The topic is added on first use, recorded
        as offered with ``qos`` (a :func:`bisenet_ros.bag_layout.qos` profile; default: a camera
        driver's, :data:`~bisenet_ros.bag_layout.CAMERA_QOS`)."""
        from .bag_layout import CAMERA_QOS

        ts = typestore()
        msgtype = msg.__msgtype__
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=ts,
                                               offered_qos_profiles=[qos or CAMERA_QOS])
            self._connections[topic] = conn
            self.counts[topic] = 0
        elif conn.msgtype != msgtype:
            raise BagError(f"topic '{topic}' already carries {conn.msgtype}, cannot add {msgtype}")
        self._writer.write(conn, int(timestamp_ns), ts.serialize_cdr(msg, msgtype))
        self.counts[topic] += 1


def check_bag_output(path: str | Path, inputs: Sequence[str | Path] = (), overwrite: bool = False,
                     option: str = "output bag") -> Path:
    """Refuse a bag output that is, contains or lies inside an input, or replaces a bag that
    bisenet-ros did not write (see :mod:`bisenet_ros.output_files`); :class:`BagError` otherwise."""
    try:
        return check_output(path, inputs, kind=BAG, overwrite=overwrite, option=option)
    except OutputError as exc:
        raise BagError(str(exc)) from None


def write_image_bag(
    path: str | Path,
    frames: Iterable[tuple[np.ndarray, np.ndarray | None]],
    *,
    fps: float = 10.0,
    image_topic: str = "/camera/image_raw",
    label_topic: str | None = "/camera/labels",
    info_topic: str | None = "/camera/camera_info",
    frame_id: str = "camera",
    storage: str = "mcap",
    encoding: str = "rgb8",
    start_ns: int | None = None,
    overwrite: bool = False,
    intrinsics: Sequence[float] | None = None,
    inputs: Sequence[str | Path] = (),
    tool: str = "",
) -> int:
    """Write a camera recording: per frame an Image, its ground-truth labels (mono8, or mono16
    for uint16 labels) when given, and a CameraInfo, all with the same header stamp.

    ``frames`` yields ``(rgb uint8 HxWx3, labels HxW or None)``. Stamps start at ``start_ns``
    (default: now) and advance by ``1/fps``; the bag's receive times equal the stamps. The
    CameraInfo is uncalibrated (all-zero K) unless ``intrinsics`` (fx, fy, cx, cy) are given.
    ``encoding`` is ``rgb8`` or ``bgr8`` (the image is converted). Returns the frames written.
    """
    import time

    if not fps > 0:
        raise BagError(f"fps must be positive, got {fps}")
    if encoding not in ("rgb8", "bgr8"):
        raise BagError(f"image encoding must be rgb8 or bgr8, got '{encoding}'")
    start = time.time_ns() if start_ns is None else int(start_ns)
    n = 0
    with BagWriter(path, storage=storage, overwrite=overwrite, inputs=inputs, tool=tool) as bag:
        for i, frame in enumerate(frames):
            image, labels = frame
            image = np.asarray(image)
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise BagError(f"frame {i}: image must be uint8 HxWx3 RGB, got {image.dtype} {image.shape}")
            stamp = start + round(i * 1e9 / fps)
            out = image[:, :, ::-1] if encoding == "bgr8" else image
            bag.write(image_topic, array_to_image(out, encoding, stamp, frame_id), stamp)
            if labels is not None and label_topic:
                labels = np.asarray(labels)
                if labels.shape != image.shape[:2]:
                    raise BagError(f"frame {i}: labels {labels.shape[1::-1]} and image "
                                   f"{image.shape[1::-1]} differ in size (WxH)")
                if labels.dtype not in (np.uint8, np.uint16):
                    raise BagError(f"frame {i}: labels must be uint8 or uint16, got {labels.dtype}")
                lab_enc = "mono16" if labels.dtype == np.uint16 else "mono8"
                bag.write(label_topic, array_to_image(labels, lab_enc, stamp, frame_id), stamp)
            if info_topic:
                bag.write(info_topic, camera_info(image.shape[0], image.shape[1], stamp, frame_id, intrinsics), stamp)
            n += 1
        if n == 0:
            raise BagError("no frames to write")
    return n
