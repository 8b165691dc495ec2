"""Live replay: a bag's camera images published on ROS topics at the recorded rate, the running
``segmentation_node`` processing them, and what a robot would see measured from outside.

:func:`replay_bag` publishes the image messages exactly as recorded (serialised bytes, original
header stamps; optionally restamped to now) on ``image_topic``, paced by the bag's receive times
divided by ``rate``. It collects ``<node_namespace>/labels`` (and ``/timing``, ``/overlay`` when
asked) and pairs every received label image with its published frame -- and with the bag's ground
truth -- by header stamp. Frames without a reply are counted as dropped.

Node start: with ``node_args`` it starts ``python -m bisenet_ros.ros.node`` in a child process (its
image input remapped to ``image_topic``) and stops it with SIGINT at the end; without, a node
must already be running. Before timing, ``warmup`` copies of the first image go round the whole
loop; that proves the connection and keeps model start-up out of the figures.

This is a ROS adapter (rclpy is imported on use); ``bisenet-ros replay`` wraps it.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..bags import BagError, check_image_topic, image_to_array, list_topics, open_bag, stamp_ns
from ..errors import BisenetError
from ..metrics import GroundTruthScorer, LatencyRecorder, MetricsError, WarningCounter, latency_stats

#: stage keys of the node's per-frame timing message that are reported (prefixed ``node_``)
NODE_STAGES = ("preprocess_ms", "inference_ms", "postprocess_ms", "total_ms")
#: predictions / ground-truth images kept while waiting for their partner (oldest dropped first)
MAX_PENDING = 256


class ReplayError(BisenetError):
    """The replay could not run: no node answering, node exited, bad bag or topic."""


# -- node process ---------------------------------------------------------------------------------
def node_command(node_args: Sequence[str] | Mapping[str, Any] | None, image_topic: str,
                 node_namespace: str = "/segmentation", compressed: bool = False) -> list[str]:
    """``python -m bisenet_ros.ros.node --ros-args ...`` with ``image`` remapped to ``image_topic``.

    ``node_args`` is a list of command-line arguments (``["--ros-args", "-p", "weights:=m.pth"]``)
    or a dict of parameters (``{"weights": "m.pth", "publish_color": False}``). ``compressed``:
    ``image_topic`` carries CompressedImage (it must end in ``/compressed``, as the node expects).
    """
    if compressed:
        if not image_topic.endswith("/compressed"):
            raise ReplayError(f"a CompressedImage topic for the node must end in /compressed, got "
                              f"'{image_topic}' (use publish_topic / --publish-topic)")
        image_topic = image_topic[: -len("/compressed")]
    if isinstance(node_args, Mapping):
        args = ["--ros-args"]
        for key, value in node_args.items():
            args += ["-p", f"{key}:={_param_text(value)}"]
    else:
        args = list(node_args or [])
    if "--ros-args" not in args:
        args.append("--ros-args")
    if not any(a.startswith("image:=") for a in args):
        args += ["-r", f"image:={image_topic}"]
    if compressed and not any(a.startswith("input_transport:=") for a in args):
        args += ["-p", "input_transport:=compressed"]
    ns, _, name = node_namespace.rstrip("/").rpartition("/")
    if name and name != "segmentation" and not any(a.startswith("__node:=") for a in args):
        args += ["-r", f"__node:={name}"]
    if ns and not any(a.startswith("__ns:=") for a in args):
        args += ["-r", f"__ns:={ns}"]
    return [sys.executable, "-m", "bisenet_ros.ros.node", *args]


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_param_text(v) for v in value) + "]"
    return str(value)


class NodeProcess:
    """``segmentation_node`` in a child process (same interpreter and environment), log to a file."""

    def __init__(self, command: list[str], env: Mapping[str, str] | None = None) -> None:
        self.command = command
        log_dir = os.environ.get("ROS_LOG_DIR") or None  # next to the ROS logs when set
        if log_dir:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
        self.log = tempfile.NamedTemporaryFile("w+", prefix="segmentation_node_", suffix=".log", delete=False,
                                               dir=log_dir)
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(env if env is not None else os.environ), start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = Path(self.log.name).read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT (the node shuts down cleanly), then SIGTERM, then SIGKILL; returns the exit code."""
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if self.proc.poll() is not None:
                break
            try:
                self.proc.send_signal(sig)
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        self.log.close()
        return self.proc.poll()


# -- collection -----------------------------------------------------------------------------------
@dataclass
class _Shared:
    """State shared by the publishing loop and the subscription callbacks (under ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    published: dict[int, float] = field(default_factory=dict)  # published stamp -> perf_counter
    original: dict[int, int] = field(default_factory=dict)  # published stamp -> bag stamp
    received: dict[int, float] = field(default_factory=dict)  # published stamp -> perf_counter
    warmup: set[int] = field(default_factory=set)
    warmup_received: set[int] = field(default_factory=set)
    latency: list[float] = field(default_factory=list)
    node_timing: LatencyRecorder = field(default_factory=LatencyRecorder)
    node_dropped: int = 0
    pending_pred: dict[int, np.ndarray] = field(default_factory=dict)  # bag stamp -> labels
    pending_gt: dict[int, tuple[np.ndarray, str]] = field(default_factory=dict)
    last_activity: float = 0.0
    legend: dict | None = None
    unexpected: int = 0  # labels with stamps this replay did not publish


def replay_bag(
    bag: str | Path,
    *,
    image_topic: str = "/camera/image_raw",
    label_topic: str | None = None,
    rate: float = 1.0,
    node_args: Sequence[str] | Mapping[str, Any] | None = None,
    node_namespace: str = "/segmentation",
    publish_topic: str | None = None,
    timeout_s: float = 60.0,
    drain_s: float = 2.0,
    warmup: int = 1,
    save_overlays: str | Path | None = None,
    max_frames: int = 0,
    restamp: bool = False,
    ignore_index: int = 255,
    label_lut: np.ndarray | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    reliable: bool = True,
    progress: bool = False,
    env: Mapping[str, str] | None = None,
) -> dict:
    """Replay ``bag`` through a live segmentation node and return the report (a JSON-ready dict).

    Report keys: ``frames_published``, ``frames_received`` (the node labelled them),
    ``dropped``, ``drop_rate``, ``fps`` (received frames per second of replay), ``input_fps``,
    ``latency_ms`` (``end_to_end_ms``: publish -> labels received, and the node's own stage
    times ``node_*``), ``node_dropped_frames``; with ``label_topic`` also ``labelled_frames``,
    ``miou``, ``per_class_iou``, ``pixel_accuracy``, ... over the frames the node labelled.
    ``publish_topic`` (default ``image_topic``) is where the images are published;
    ``save_overlays=DIR`` subscribes to the overlay and writes PNGs plus ``overlay.mp4``.
    """
    if not rate > 0:
        raise ReplayError(f"rate must be positive, got {rate}")
    bag = Path(bag).expanduser()
    topics = list_topics(bag)
    check_image_topic(topics, image_topic, bag, "image")
    if label_topic:
        check_image_topic(topics, label_topic, bag, "label")
    if topics[image_topic].count == 0:
        raise BagError(f"image topic '{image_topic}' in bag '{bag}' has no messages")
    out_topic = publish_topic or image_topic
    ns = "/" + node_namespace.strip("/")
    warn = WarningCounter()
    shared = _Shared()
    child: NodeProcess | None = None
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    from .transport import apply_fastdds_profile

    apply_fastdds_profile()
    context = rclpy.Context()
    rclpy.init(args=["bisenet_replay"], context=context)
    executor = None
    frames = None
    spin_thread = None
    overlay_writer = None
    node = None
    try:
        if node_args is not None:
            compressed = topics[image_topic].msgtype.endswith("CompressedImage")
            child = NodeProcess(node_command(node_args, out_topic, ns, compressed), env)
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import String

        from .conversions import image_msg_to_array

        node = rclpy.create_node(f"bisenet_replay_{os.getpid()}", context=context)
        msg_cls = CompressedImage if topics[image_topic].msgtype.endswith("CompressedImage") else Image
        pub_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                             reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)
        publisher = node.create_publisher(msg_cls, out_topic, pub_qos)
        sub_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        scorer_box: list[GroundTruthScorer] = []

        def on_labels(msg: Image) -> None:
            try:
                _on_labels(msg)
            except Exception as exc:  # noqa: BLE001 - an exception would stop the executor silently
                warn.add("callback_errors", f"handling labels: {type(exc).__name__}: {exc}")

        def _on_labels(msg: Image) -> None:
            now = time.perf_counter()
            stamp = stamp_ns(msg.header)
            with shared.lock:
                shared.last_activity = now
                if stamp in shared.warmup:
                    shared.warmup_received.add(stamp)
                    return
                sent = shared.published.get(stamp)
                if sent is None:
                    shared.unexpected += 1
                    return
                if stamp in shared.received:
                    return
                shared.received[stamp] = now
                shared.latency.append((now - sent) * 1e3)
                if not label_topic:
                    return
                try:
                    pred, _ = image_msg_to_array(msg)
                except BisenetError as exc:
                    warn.add("bad_predictions", f"labels from the node: {exc}")
                    return
                orig = shared.original[stamp]
                gt = shared.pending_gt.pop(orig, None)
                if gt is None:
                    shared.pending_pred[orig] = pred.copy()
                    if len(shared.pending_pred) > MAX_PENDING:  # frames without ground truth
                        del shared.pending_pred[next(iter(shared.pending_pred))]
                elif scorer_box:
                    _score(scorer_box[0], pred, gt[0], gt[1], orig)

        def on_timing(msg: DiagnosticArray) -> None:
            stamp = stamp_ns(msg.header)
            values: dict[str, float] = {}
            dropped = None
            for status in msg.status:
                for kv in status.values:
                    if kv.key in NODE_STAGES:
                        try:
                            values[f"node_{kv.key}"] = float(kv.value)
                        except ValueError:
                            pass
                    elif kv.key == "dropped_frames" and kv.value.isdigit():
                        dropped = int(kv.value)
            with shared.lock:
                if stamp in shared.published and stamp not in shared.warmup:
                    shared.node_timing.add(values)
                if dropped is not None:
                    shared.node_dropped = max(shared.node_dropped, dropped)

        def on_legend(msg: String) -> None:
            try:
                shared.legend = json.loads(msg.data)
            except ValueError:
                pass

        node.create_subscription(Image, f"{ns}/labels", on_labels, sub_qos)
        node.create_subscription(DiagnosticArray, f"{ns}/timing", on_timing, sub_qos)
        node.create_subscription(String, f"{ns}/legend", on_legend, latched)
        if save_overlays:
            overlay_writer = OverlayWriter(Path(save_overlays))

            def on_overlay(msg: Image) -> None:
                stamp = stamp_ns(msg.header)
                with shared.lock:
                    if stamp not in shared.published or stamp in shared.warmup:
                        return
                try:
                    arr, enc = image_msg_to_array(msg)
                except BisenetError as exc:
                    warn.add("bad_overlays", f"overlay from the node: {exc}")
                    return
                overlay_writer.put(stamp, arr, enc)

            node.create_subscription(Image, f"{ns}/overlay", on_overlay, sub_qos)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        spin_thread = threading.Thread(target=executor.spin, name="bisenet_replay_spin", daemon=True)
        spin_thread.start()

        frames = _bag_frames(bag, image_topic, label_topic)
        first = next(frames, None)
        while first is not None and first[0] != "image":
            first = next(frames, None)
        if first is None:
            raise BagError(f"image topic '{image_topic}' in bag '{bag}' has no readable messages")

        # wait until the node is up and one warm-up frame has gone round the loop
        deadline = time.perf_counter() + timeout_s
        _wait_matched(node, publisher, f"{ns}/labels", child, deadline, out_topic)
        for k in range(max(1, warmup)):
            stamp = time.time_ns()  # now: accepted even by a node that drops old frames
            with shared.lock:
                shared.warmup.add(stamp)
            raw = _restamp(first[3], first[4], stamp)
            while True:
                publisher.publish(raw)
                if _wait_for(lambda: stamp in shared.warmup_received, 1.0 if k == 0 else 30.0, shared.lock):
                    break
                _check_child(child)
                if time.perf_counter() > deadline:
                    raise ReplayError(f"no labels on {ns}/labels for the warm-up frame within {timeout_s:g} s "
                                      f"(is segmentation_node running and subscribed to {out_topic}?)"
                                      + _child_hint(child))
        if label_topic:
            legend = shared.legend or {}
            n = num_classes or legend.get("num_classes")
            if not n:
                _wait_for(lambda: shared.legend is not None, 3.0, shared.lock)
                legend = shared.legend or {}
                n = num_classes or legend.get("num_classes")
            if not n:
                raise ReplayError(f"class count unknown: no legend on {ns}/legend; pass num_classes")
            if class_names is None and legend.get("classes"):
                class_names = [c["name"] for c in legend["classes"]]
            scorer_box.append(GroundTruthScorer(int(n), ignore_index, label_lut, warn))

        # the replay itself
        bar = None
        if progress:
            from ..progress import progress_bar

            total = topics[image_topic].count if not max_frames else min(max_frames, topics[image_topic].count)
            bar = progress_bar(total=total, unit="frame", desc="replay")
        n_pub = 0
        t0_bag = first[2]
        t0 = time.perf_counter()
        first_pub = last_pub = t0
        item = first
        while item is not None:
            kind = item[0]
            if kind == "label":
                _, orig, arr, enc = item
                with shared.lock:
                    pred = shared.pending_pred.pop(orig, None)
                    if pred is None:
                        shared.pending_gt[orig] = (arr, enc)
                        if len(shared.pending_gt) > MAX_PENDING:  # its frame was dropped long ago
                            del shared.pending_gt[next(iter(shared.pending_gt))]
                    elif scorer_box:
                        _score(scorer_box[0], pred, arr, enc, orig)
            else:
                if max_frames and n_pub >= max_frames:
                    break
                _, orig, log_time, raw, _msg = item
                target = t0 + (log_time - t0_bag) / 1e9 / rate
                delay = target - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                stamp = time.time_ns() if restamp else orig
                data = _restamp(raw, _msg, stamp) if restamp else bytes(raw)
                with shared.lock:
                    now = time.perf_counter()
                    shared.published[stamp] = now
                    shared.original[stamp] = orig
                publisher.publish(data)
                last_pub = now
                if n_pub == 0:
                    first_pub = now
                n_pub += 1
                if bar:
                    bar.update(1)
                if child is not None and n_pub % 20 == 0:
                    _check_child(child)
            item = next(frames, None)
        if label_topic:  # ground truth recorded after the last published image
            for item in frames:
                if item[0] == "label":
                    with shared.lock:
                        pred = shared.pending_pred.pop(item[1], None)
                        if pred is not None and scorer_box:
                            _score(scorer_box[0], pred, item[2], item[3], item[1])
        if bar:
            bar.close()
        # drain: wait for replies still in flight
        with shared.lock:
            shared.last_activity = max(shared.last_activity, time.perf_counter())
        while True:
            with shared.lock:
                done = len(shared.received) >= n_pub
                idle = time.perf_counter() - shared.last_activity
            if done or idle > drain_s:
                break
            time.sleep(0.02)
        time.sleep(0.05)  # timing messages follow their labels
    finally:
        if frames is not None:
            frames.close()  # closes the bag
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
        if spin_thread is not None:
            spin_thread.join(timeout=5.0)
        if overlay_writer is not None:
            overlay_writer.close(rate)
        exit_code = child.stop() if child is not None else None

    with shared.lock:
        received = len(shared.received)
        last_rx = max(shared.received.values(), default=first_pub)
        first_rx = min(shared.received.values(), default=first_pub)
        report: dict[str, Any] = {
            "tool": "replay",
            "bag": str(bag),
            "image_topic": image_topic,
            "published_on": out_topic,
            "label_topic": label_topic,
            "node_namespace": ns,
            "rate": rate,
            "frames_published": n_pub,
            "frames_received": received,
            "dropped": n_pub - received,
            "drop_rate": (n_pub - received) / n_pub if n_pub else None,
            "fps": (received - 1) / (last_rx - first_rx) if received > 1 and last_rx > first_rx else None,
            "input_fps": (n_pub - 1) / (last_pub - first_pub) if n_pub > 1 and last_pub > first_pub else None,
            "fps_definition": "labelled frames per second received from the node (first to last reply); "
                              "input_fps: images published per second",
            "latency_ms": {"end_to_end_ms": latency_stats(shared.latency), **shared.node_timing.summary()},
            "node_dropped_frames": shared.node_dropped,
            "unexpected_labels": shared.unexpected,
            "restamped": restamp,
        }
        latency_samples = {"end_to_end_ms": list(shared.latency), **shared.node_timing.samples}
        if shared.legend:
            report["model"] = {k: shared.legend.get(k) for k in ("model", "weights", "dataset", "num_classes")}
    if child is not None:
        report["node_exit_code"] = exit_code
        if exit_code != 0:
            report["node_log"] = child.log.name
    if received == 0:
        raise ReplayError(f"the node labelled none of the {n_pub} frames published on {out_topic} "
                          "(does it drop old stamps, max_frame_age_ms? try restamping)" + _child_hint(child))
    if scorer_box:
        scorer = scorer_box[0]
        report["labelled_frames"] = scorer.scored
        report.update(scorer.metrics(class_names))
        report["class_names"] = list(class_names) if class_names else None
        if scorer.scored == 0:
            warn.add("no_ground_truth", "no labelled frame had ground truth with the same stamp")
    if save_overlays and overlay_writer is not None:
        report["overlays"] = {"dir": str(save_overlays), "frames": overlay_writer.count,
                              "video": str(overlay_writer.video_path) if overlay_writer.video_path else None,
                              "video_codec": overlay_writer.video_codec}
    report["warnings"] = dict(warn.counts)
    report["warning_messages"] = dict(warn.messages)
    report["_latency_samples"] = latency_samples
    if child is not None and exit_code == 0:
        Path(child.log.name).unlink(missing_ok=True)  # a clean run leaves no log behind
    return report


def pop_latency_samples(report: dict) -> dict[str, list[float]]:
    """Take the raw latency samples out of a replay report (they are not part of metrics.json)."""
    return report.pop("_latency_samples", {})


# -- helpers --------------------------------------------------------------------------------------
def _score(scorer: GroundTruthScorer, pred: np.ndarray, gt: np.ndarray, encoding: str, stamp: int) -> None:
    """Score one frame; predictions the scorer cannot take (e.g. class ids beyond the legend's
    class count) are counted as ``bad_predictions`` instead of stopping the replay."""
    try:
        scorer.score(pred, gt, encoding, f"stamp {stamp}")
    except MetricsError as exc:
        scorer.warnings.add("bad_predictions", f"labels from the node at stamp {stamp}: {exc}")


def _bag_frames(bag: Path, image_topic: str, label_topic: str | None):
    """("image", stamp, log_time, raw, msg) and ("label", stamp, array, encoding) in bag order."""
    with open_bag(bag) as reader:
        topics = [image_topic] + ([label_topic] if label_topic else [])
        conns = [c for c in reader.connections if c.topic in topics]
        for conn, log_time, raw in reader.messages(connections=conns):
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception:  # noqa: BLE001 - a corrupt message is skipped like a lost one
                continue
            if conn.topic == image_topic:
                yield ("image", stamp_ns(msg.header), log_time, raw, msg)
            else:
                try:
                    arr, enc = image_to_array(msg)
                except BagError:
                    arr, enc = np.zeros((0, 0), np.uint8), "invalid"
                yield ("label", stamp_ns(msg.header), arr, enc)


def _restamp(raw: bytes, msg: Any, stamp: int) -> bytes:
    """The serialised message with its header stamp set to ``stamp`` (other fields unchanged)."""
    from ..bags import typestore

    ts = typestore()
    msg.header.stamp = ts.types["builtin_interfaces/msg/Time"](sec=stamp // 1_000_000_000,
                                                               nanosec=stamp % 1_000_000_000)
    return bytes(ts.serialize_cdr(msg, msg.__msgtype__))


def _wait_for(predicate, timeout: float, lock: threading.Lock) -> bool:
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        with lock:
            if predicate():
                return True
        time.sleep(0.01)
    with lock:
        return bool(predicate())


def _check_child(child: NodeProcess | None) -> None:
    if child is not None and not child.alive():
        raise ReplayError(f"segmentation_node exited with code {child.proc.returncode}: {child.log_tail(3)}")


def _child_hint(child: NodeProcess | None) -> str:
    if child is None:
        return ""
    return f"; node log {child.log.name}: {child.log_tail(2)}"


def _wait_matched(node, publisher, labels_topic: str, child: NodeProcess | None, deadline: float,
                  out_topic: str) -> None:
    """Until the node subscribes to our images and publishes labels (or the deadline)."""
    while time.perf_counter() < deadline:
        _check_child(child)
        if publisher.get_subscription_count() > 0 and node.count_publishers(labels_topic) > 0:
            return
        time.sleep(0.05)
    raise ReplayError(f"no segmentation node found: nobody subscribes to {out_topic} and publishes "
                      f"{labels_topic} (start one, or pass node parameters to start it)" + _child_hint(child))


class OverlayWriter:
    """Writes received overlay frames (PNG per frame, plus ``overlay.mp4``: H.264 where PyAV is
    installed, see :mod:`bisenet_ros.video`) from a background thread."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self.count = 0
        self.video_path: Path | None = None
        self.video_codec: str | None = None
        self._stamps: list[int] = []
        self._queue: queue.Queue = queue.Queue(maxsize=64)
        self._thread = threading.Thread(target=self._run, name="overlay_writer", daemon=True)
        self._thread.start()

    def put(self, stamp: int, array: np.ndarray, encoding: str) -> None:
        self._queue.put((stamp, np.array(array, copy=True), encoding))

    def _run(self) -> None:
        import cv2

        while True:
            item = self._queue.get()
            if item is None:
                return
            stamp, arr, enc = item
            bgr = arr if enc == "bgr8" else cv2.cvtColor(arr, cv2.COLOR_RGB2BGR if enc == "rgb8" else cv2.COLOR_GRAY2BGR)
            cv2.imwrite(str(self.out_dir / f"overlay_{self.count:06d}_{stamp}.png"), bgr)
            self._stamps.append(stamp)
            self.count += 1

    def close(self, rate: float = 1.0) -> None:
        """Finish the PNGs and assemble ``overlay.mp4`` at the recorded frame rate."""
        self._queue.put(None)
        self._thread.join(timeout=60.0)
        if self.count < 1:
            return
        import cv2

        files = sorted(self.out_dir.glob("overlay_*.png"))
        span = (max(self._stamps) - min(self._stamps)) / 1e9 if len(self._stamps) > 1 else 0.0
        fps = (len(self._stamps) - 1) / span if span > 0 else 10.0
        first = cv2.imread(str(files[0]))
        h, w = first.shape[:2]
        from ..video import VideoWriter

        with VideoWriter(self.out_dir / "overlay.mp4", fps, order="bgr") as writer:
            for f in files:
                img = cv2.imread(str(f))
                if img is not None and img.shape[:2] == (h, w):
                    writer.write(img)
        self.video_path = writer.path
        self.video_codec = writer.codec
