"""What a live replay collects from the node: :class:`Collector` pairs the node's replies (labels,
timing, legend, overlay) with the frames :mod:`bisenet_ros.ros.live_replay` published, and
:class:`OverlayWriter` saves the received overlays. No ROS types: tests feed them directly.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BisenetError
from ..evaluation.metrics import LatencyRecorder, WarningCounter, latency_stats
from ..evaluation.recording import StampMatcher
from .client import Received, parse_legend

#: stage keys of the node's per-frame timing message that are reported (prefixed ``node_``)
NODE_STAGES = ("wait_ms", "preprocess_ms", "inference_ms", "postprocess_ms", "total_ms")


# -- what comes back ----------------------------------------------------------------------------------
@dataclass
class Collector:
    """The node's replies paired with what was published; fed by the subscription callbacks
    (any thread) and the publishing loop, all under ``lock``. No ROS types: tests feed it directly."""

    warn: WarningCounter
    score_labels: bool = False  # decode label images and hand them to ``matcher``
    overlays: OverlayWriter | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    published: dict[int, float] = field(default_factory=dict)  # published stamp -> perf_counter
    original: dict[int, int] = field(default_factory=dict)  # published stamp -> bag stamp
    received: dict[int, float] = field(default_factory=dict)  # published stamp -> perf_counter
    warmup: set[int] = field(default_factory=set)
    warmup_received: set[int] = field(default_factory=set)
    latency: list[float] = field(default_factory=list)
    node_timing: LatencyRecorder = field(default_factory=LatencyRecorder)
    node_dropped: int = 0
    last_activity: float = 0.0
    legend: dict | None = None
    unexpected: int = 0  # labels with stamps this replay did not publish
    matcher: StampMatcher | None = None

    def publishing(self, stamp: int, original: int) -> float:
        """Record a frame about to be published; returns the publish time (perf_counter)."""
        with self.lock:
            now = time.perf_counter()
            self.published[stamp] = now
            self.original[stamp] = original
        return now

    def ground_truth(self, stamp: int, array: np.ndarray, encoding: str, error: str | None) -> None:
        with self.lock:
            if self.matcher is not None:
                self.matcher.add_ground_truth(stamp, array, encoding, error)

    def on_labels(self, msg: Received) -> None:
        try:
            self._labels(msg)
        except Exception as exc:  # noqa: BLE001 - an exception would stop the executor silently
            self.warn.add("callback_errors", f"handling labels: {type(exc).__name__}: {exc}")

    def _labels(self, msg: Received) -> None:
        stamp = msg.stamp_ns
        with self.lock:
            self.last_activity = msg.received
            if stamp in self.warmup:
                self.warmup_received.add(stamp)
                return
            sent = self.published.get(stamp)
            if sent is None:
                self.unexpected += 1
                return
            if stamp in self.received:
                return
            self.received[stamp] = msg.received
            self.latency.append((msg.received - sent) * 1e3)
            if not self.score_labels or self.matcher is None:
                return
            pred = self._image(msg, "bad_predictions", "labels")
            if pred is not None:
                self.matcher.add_prediction(self.original[stamp], pred[0].copy())

    def on_timing(self, msg: Received) -> None:
        values: dict[str, float] = {}
        dropped = None
        for key, value in msg.values().items():
            if key in NODE_STAGES:
                try:
                    values[f"node_{key}"] = float(value)
                except ValueError:
                    pass
            elif key == "dropped_frames" and value.isdigit():
                dropped = int(value)
        stamp = msg.stamp_ns
        with self.lock:
            if stamp in self.published and stamp not in self.warmup:
                self.node_timing.add(values)
            if dropped is not None:
                self.node_dropped = max(self.node_dropped, dropped)

    def on_legend(self, msg: Received) -> None:
        found = parse_legend(msg)
        if found is not None:
            with self.lock:
                self.legend = found

    def on_overlay(self, msg: Received) -> None:
        stamp = msg.stamp_ns
        with self.lock:
            if stamp not in self.published or stamp in self.warmup:
                return
        overlay = self._image(msg, "bad_overlays", "overlay")
        if overlay is not None:
            self.overlays.put(stamp, *overlay)

    def _image(self, msg: Received, warning: str, what: str) -> tuple[np.ndarray, str] | None:
        """The message's pixels and encoding, or None with a counted ``warning`` if it is malformed."""
        try:
            return msg.image()
        except BisenetError as exc:
            self.warn.add(warning, f"{what} from the node: {exc}")
            return None

    def holds(self, predicate) -> bool:
        with self.lock:
            return bool(predicate())

    def figures(self, first_pub: float, last_pub: float, n_pub: int) -> tuple[dict, dict]:
        """Counts, rates and latencies for the report, and the raw latency samples."""
        with self.lock:
            received = len(self.received)
            last_rx = max(self.received.values(), default=first_pub)
            first_rx = min(self.received.values(), default=first_pub)
            figures = {
                "frames_published": n_pub,
                "frames_received": received,
                "dropped": n_pub - received,
                "drop_rate": (n_pub - received) / n_pub if n_pub else None,
                "fps": (received - 1) / (last_rx - first_rx) if received > 1 and last_rx > first_rx else None,
                "input_fps": (n_pub - 1) / (last_pub - first_pub) if n_pub > 1 and last_pub > first_pub else None,
                "fps_definition": "labelled frames per second received from the node (first to last reply); "
                                  "input_fps: images published per second",
                "latency_ms": {"end_to_end_ms": latency_stats(self.latency), **self.node_timing.summary()},
                "node_dropped_frames": self.node_dropped,
                "unexpected_labels": self.unexpected,
            }
            samples = {"end_to_end_ms": list(self.latency), **self.node_timing.samples}
            if self.legend:
                figures["model"] = {k: self.legend.get(k) for k in ("model", "weights", "dataset", "num_classes",
                                                                     "backend", "device", "precision", "input_size")
                                    if k in self.legend}
        return figures, samples


# -- the replay in stages -----------------------------------------------------------------------------


class OverlayWriter:
    """Writes received overlay frames (PNG per frame, plus ``overlay.mp4``: H.264 where PyAV is
    installed, see :mod:`bisenet_ros.data.video`) from a background thread."""

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
        from ..data.video import VideoWriter

        with VideoWriter(self.out_dir / "overlay.mp4", fps, order="bgr") as writer:
            for f in files:
                img = cv2.imread(str(f))
                if img is not None and img.shape[:2] == (h, w):
                    writer.write(img)
        self.video_path = writer.path
        self.video_codec = writer.codec
