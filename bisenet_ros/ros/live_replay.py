"""Live replay: a bag's camera images published on ROS topics at the recorded rate, the running
``segmentation_node`` processing them, and what a robot would see measured from outside.

:func:`replay_bag` publishes the image messages exactly as recorded (serialised bytes, original
header stamps; optionally restamped to now) on ``image_topic``, paced by the bag's receive times
divided by ``rate``. It collects ``<node_namespace>/labels`` (and ``/timing``, ``/overlay`` when
asked) and pairs every received label image with its published frame by header stamp, and with
the bag's ground truth by the one stamp rule of :class:`bisenet_ros.evaluation.recording.StampMatcher`.
Frames without a reply are counted as dropped.

Node start: with ``node_args`` it starts ``python -m bisenet_ros.ros.node`` in a child process (its
image input remapped to ``image_topic``) and stops it with SIGINT at the end; without, a node
must already be running. Before timing, ``warmup`` copies of the first image go round the whole
loop; that proves the connection and keeps model start-up out of the figures.

Stages (:class:`Replay`): check the bag, start the node, connect, warm up, set up scoring, publish
paced, drain, report; :class:`~bisenet_ros.ros.replay_collector.Collector` is what the subscriptions feed.
``bisenet-ros replay`` wraps it.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..data.bags import BagError, check_image_topic, image_to_array, list_topics, open_bag
from ..data.images import stamp_ns
from ..evaluation.metrics import GroundTruthScorer, WarningCounter
from ..evaluation.recording import pair_recording, score_frame
from ..progress import progress_bar
from .replay_collector import NODE_STAGES, Collector, OverlayWriter  # noqa: F401 (NODE_STAGES re-exported)
from .client import LATCHED, RosClient, qos_profile
from .node_process import NodeProcess, node_command
from .node_process import NodeError as ReplayError  # the replay could not run: no node answering, node exited, bad bag

__all__ = ["ReplayError", "NodeProcess", "node_command", "replay_bag", "pop_latency_samples", "Replay",
           "Collector", "OverlayWriter"]

#: predictions / ground-truth images kept while waiting for their partner (oldest dropped first)
MAX_PENDING = 256


@dataclass
class ReplaySettings:
    """The options of :func:`replay_bag` (see there)."""

    image_topic: str = "/camera/image_raw"
    label_topic: str | None = None
    rate: float = 1.0
    node_args: Sequence[str] | Mapping[str, Any] | None = None
    node_namespace: str = "/segmentation"
    publish_topic: str | None = None
    timeout_s: float = 60.0
    drain_s: float = 2.0
    warmup: int = 1
    save_overlays: str | Path | None = None
    max_frames: int = 0
    restamp: bool = False
    ignore_index: int = 255
    label_lut: np.ndarray | None = None
    num_classes: int | None = None
    class_names: Sequence[str] | None = None
    reliable: bool = True
    progress: bool = False
    env: Mapping[str, str] | None = None


class Replay:
    """One replay of ``bag`` through a live node: :meth:`run` calls the stages in order."""

    def __init__(self, bag: str | Path, settings: ReplaySettings) -> None:
        self.bag = Path(bag).expanduser()
        self.s = settings
        self.out_topic = settings.publish_topic or settings.image_topic
        self.ns = "/" + settings.node_namespace.strip("/")
        self.warn = WarningCounter()
        self.collector = Collector(self.warn, score_labels=bool(settings.label_topic))
        self.child: NodeProcess | None = None
        self.exit_code: int | None = None
        self.scorer: GroundTruthScorer | None = None
        self.class_names = settings.class_names
        self.n_pub = 0
        self.first_pub = self.last_pub = 0.0

    def run(self) -> dict:
        self.check_bag()
        try:
            self.start_node()
            with RosClient(f"bisenet_replay_{os.getpid()}") as client, self.frames() as frames:
                publisher = self.connect(client)
                first = next(frames, None)
                if first is None:
                    raise BagError(f"image topic '{self.s.image_topic}' in bag '{self.bag}' has no readable messages")
                self.wait_for_node(client, publisher)
                self.warm_up(publisher, first)
                self.set_up_scoring()
                self.publish_paced(publisher, first, frames)
                self.drain()
        finally:
            if self.collector.overlays is not None:
                self.collector.overlays.close(self.s.rate)
            if self.child is not None:
                self.exit_code = self.child.stop(timeout=10.0)
        return self.report()

    def check_bag(self) -> None:
        """Rate, topics and message counts, before anything starts."""
        s = self.s
        if not s.rate > 0:
            raise ReplayError(f"rate must be positive, got {s.rate}")
        self.topics = list_topics(self.bag)
        check_image_topic(self.topics, s.image_topic, self.bag, "image")
        if s.label_topic:
            check_image_topic(self.topics, s.label_topic, self.bag, "label")
        if self.topics[s.image_topic].count == 0:
            raise BagError(f"image topic '{s.image_topic}' in bag '{self.bag}' has no messages")
        self.compressed = self.topics[s.image_topic].msgtype.endswith("CompressedImage")

    def start_node(self) -> None:
        if self.s.node_args is not None:
            self.child = NodeProcess(node_command(self.s.node_args, self.out_topic, self.ns, self.compressed),
                                     self.s.env)

    def frames(self):
        """The bag's images (and labels) in bag order, from the first image; closes the bag on exit."""
        return _closing(_bag_frames(self.bag, self.s.image_topic, self.s.label_topic))

    def connect(self, client: RosClient):
        """Our image publisher and the subscriptions to the node's outputs."""
        c, ns = self.collector, self.ns
        publisher = client.publisher(self.out_topic, "compressed" if self.compressed else "image",
                                     qos_profile(self.s.reliable, depth=10))
        client.subscribe(f"{ns}/labels", "image", qos_profile(depth=100), c.on_labels)
        client.subscribe(f"{ns}/timing", "diagnostics", qos_profile(depth=100), c.on_timing)
        client.subscribe(f"{ns}/legend", "string", LATCHED, c.on_legend)
        if self.s.save_overlays:
            c.overlays = OverlayWriter(Path(self.s.save_overlays))
            client.subscribe(f"{ns}/overlay", "image", qos_profile(depth=100), c.on_overlay)
        return publisher

    def wait_for_node(self, client: RosClient, publisher) -> None:
        """Until the node subscribes to our images and publishes labels (or ``timeout_s``)."""
        self.deadline = time.perf_counter() + self.s.timeout_s
        labels = f"{self.ns}/labels"
        while time.perf_counter() < self.deadline:
            self._check_child()
            if publisher.get_subscription_count() > 0 and client.count_publishers(labels) > 0:
                return
            time.sleep(0.05)
        raise ReplayError(f"no segmentation node found: nobody subscribes to {self.out_topic} and publishes "
                          f"{labels} (start one, or pass node parameters to start it)" + self._child_hint())

    def warm_up(self, publisher, first: tuple) -> None:
        """``warmup`` copies of the first image round the whole loop, stamped now (not timed)."""
        c = self.collector
        for k in range(max(1, self.s.warmup)):
            stamp = time.time_ns()  # now: accepted even by a node that drops old frames
            with c.lock:
                c.warmup.add(stamp)
            raw = _restamp(first[3], first[4], stamp)
            while True:
                publisher.publish(raw)
                if RosClient.wait_until(lambda: c.holds(lambda: stamp in c.warmup_received), 1.0 if k == 0 else 30.0):
                    break
                self._check_child()
                if time.perf_counter() > self.deadline:
                    raise ReplayError(f"no labels on {self.ns}/labels for the warm-up frame within "
                                      f"{self.s.timeout_s:g} s (is segmentation_node running and subscribed "
                                      f"to {self.out_topic}?)" + self._child_hint())

    def set_up_scoring(self) -> None:
        """With a label topic: the class count (given, else the node's legend) and the stamp pairs."""
        s, c = self.s, self.collector
        if not s.label_topic:
            return
        n = s.num_classes or (c.legend or {}).get("num_classes")
        if not n:
            RosClient.wait_until(lambda: c.holds(lambda: c.legend is not None), 3.0)
            n = s.num_classes or (c.legend or {}).get("num_classes")
        if not n:
            raise ReplayError(f"class count unknown: no legend on {self.ns}/legend; pass num_classes")
        if self.class_names is None and (c.legend or {}).get("classes"):
            self.class_names = [x["name"] for x in c.legend["classes"]]
        self.scorer = GroundTruthScorer(int(n), s.ignore_index, s.label_lut, self.warn)
        matcher = pair_recording(self.bag, s.image_topic, s.label_topic, lambda *a: score_frame(self.scorer, *a),
                                 self.warn, max_frames=s.max_frames, max_pending=MAX_PENDING)
        with c.lock:
            c.matcher = matcher

    def publish_paced(self, publisher, first: tuple, frames: Iterator[tuple]) -> None:
        """The replay itself: images at the recorded pace / ``rate``, ground truth to the matcher."""
        s, c = self.s, self.collector
        total = self.topics[s.image_topic].count
        t0_bag, t0 = first[2], time.perf_counter()
        self.first_pub = self.last_pub = t0
        with progress_bar(total=min(s.max_frames, total) if s.max_frames else total, unit="frame", desc="replay",
                          enabled=s.progress) as bar:
            item: tuple | None = first
            while item is not None:
                if item[0] == "label":
                    c.ground_truth(*item[1:])
                elif s.max_frames and self.n_pub >= s.max_frames:
                    break
                else:
                    self._publish(publisher, item, t0 + (item[2] - t0_bag) / 1e9 / s.rate)
                    bar.update(1)
                item = next(frames, None)
        for item in frames:  # ground truth recorded after the last published image
            if item[0] == "label":
                c.ground_truth(*item[1:])

    def _publish(self, publisher, item: tuple, target: float) -> None:
        _, orig, _, raw, msg = item
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        stamp = time.time_ns() if self.s.restamp else orig
        data = _restamp(raw, msg, stamp) if self.s.restamp else bytes(raw)
        now = self.collector.publishing(stamp, orig)
        publisher.publish(data)
        self.last_pub = now
        if self.n_pub == 0:
            self.first_pub = now
        self.n_pub += 1
        if self.child is not None and self.n_pub % 20 == 0:
            self._check_child()

    def drain(self) -> None:
        """Wait for replies still in flight: all of them, or ``drain_s`` without any."""
        c = self.collector
        with c.lock:
            c.last_activity = max(c.last_activity, time.perf_counter())
        RosClient.wait_until(lambda: c.holds(lambda: len(c.received) >= self.n_pub
                                             or time.perf_counter() - c.last_activity > self.s.drain_s),
                             timeout=float("inf"))
        time.sleep(0.05)  # timing messages follow their labels

    def report(self) -> dict:
        """The JSON-ready report; an error if the node labelled nothing."""
        s, c = self.s, self.collector
        figures, samples = c.figures(self.first_pub, self.last_pub, self.n_pub)
        report: dict[str, Any] = {
            "tool": "replay", "bag": str(self.bag), "image_topic": s.image_topic, "published_on": self.out_topic,
            "label_topic": s.label_topic, "node_namespace": self.ns, "rate": s.rate, **figures,
            "restamped": s.restamp,
        }
        if self.child is not None:
            report["node_exit_code"] = self.exit_code
            if self.exit_code != 0:
                report["node_log"] = str(self.child.log_path)
        if figures["frames_received"] == 0:
            raise ReplayError(f"the node labelled none of the {self.n_pub} frames published on {self.out_topic} "
                              "(does it drop old stamps, max_frame_age_ms? try restamping)" + self._child_hint())
        if self.scorer is not None:
            report["labelled_frames"] = self.scorer.scored
            report.update(self.scorer.metrics(self.class_names))
            report["class_names"] = list(self.class_names) if self.class_names else None
            if self.scorer.scored == 0:
                self.warn.add("no_ground_truth", "no labelled frame had ground truth with the same stamp")
        if c.overlays is not None:
            report["overlays"] = {"dir": str(s.save_overlays), "frames": c.overlays.count,
                                  "video": str(c.overlays.video_path) if c.overlays.video_path else None,
                                  "video_codec": c.overlays.video_codec}
        report["warnings"] = dict(self.warn.counts)
        report["warning_messages"] = dict(self.warn.messages)
        report["_latency_samples"] = samples
        if self.child is not None and self.exit_code == 0:
            self.child.log_path.unlink(missing_ok=True)  # a clean run leaves no log behind
        return report

    def _check_child(self) -> None:
        if self.child is not None:
            self.child.check_alive()

    def _child_hint(self) -> str:
        if self.child is None:
            return ""
        return f"; node log {self.child.log_path}: {self.child.exit_reason()}"


def replay_bag(bag: str | Path, **settings: Any) -> dict:
    """Replay ``bag`` through a live segmentation node and return the report (a JSON-ready dict).

    Settings (:class:`ReplaySettings`): ``image_topic``, ``label_topic``, ``rate``, ``node_args``,
    ``node_namespace``, ``publish_topic`` (default ``image_topic``: where the images are
    published), ``timeout_s``, ``drain_s``, ``warmup``, ``save_overlays=DIR`` (subscribe to the
    overlay, write PNGs plus ``overlay.mp4``), ``max_frames``, ``restamp``, ``ignore_index``,
    ``label_lut``, ``num_classes``, ``class_names``, ``reliable``, ``progress``, ``env``.

    Report keys: ``frames_published``, ``frames_received`` (the node labelled them),
    ``dropped``, ``drop_rate``, ``fps`` (received frames per second of replay), ``input_fps``,
    ``latency_ms`` (``end_to_end_ms``: publish -> labels received, and the node's own stage
    times ``node_*``), ``node_dropped_frames``; with ``label_topic`` also ``labelled_frames``,
    ``miou``, ``per_class_iou``, ``pixel_accuracy``, ... over the frames the node labelled.
    """
    return Replay(bag, ReplaySettings(**settings)).run()


def pop_latency_samples(report: dict) -> dict[str, list[float]]:
    """Take the raw latency samples out of a replay report (they are not part of metrics.json)."""
    return report.pop("_latency_samples", {})


# -- helpers --------------------------------------------------------------------------------------
class _closing:
    """A generator as a context manager that closes it (and so the bag) on exit."""

    def __init__(self, gen) -> None:
        self.gen = gen

    def __enter__(self):
        return self.gen

    def __exit__(self, *exc: Any) -> None:
        self.gen.close()


def _bag_frames(bag: Path, image_topic: str, label_topic: str | None) -> Iterator[tuple]:
    """From the first readable image on, in bag order: ("image", stamp, log_time, raw, msg) and
    ("label", stamp, array, encoding, error)."""
    started = False
    with open_bag(bag) as reader:
        topics = [image_topic] + ([label_topic] if label_topic else [])
        conns = [c for c in reader.connections if c.topic in topics]
        for conn, log_time, raw in reader.messages(connections=conns):
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception:  # noqa: BLE001 - a corrupt message is skipped like a lost one
                continue
            if conn.topic == image_topic:
                started = True
                yield ("image", stamp_ns(msg.header), log_time, raw, msg)
            elif started:
                try:
                    yield ("label", stamp_ns(msg.header), *image_to_array(msg), None)
                except BagError as exc:
                    yield ("label", stamp_ns(msg.header), None, "", str(exc))


def _restamp(raw: bytes, msg: Any, stamp: int) -> bytes:
    """The serialised message with its header stamp set to ``stamp`` (other fields unchanged)."""
    from ..data.bags import typestore

    ts = typestore()
    msg.header.stamp = ts.types["builtin_interfaces/msg/Time"](sec=stamp // 1_000_000_000,
                                                               nanosec=stamp % 1_000_000_000)
    return bytes(ts.serialize_cdr(msg, msg.__msgtype__))
