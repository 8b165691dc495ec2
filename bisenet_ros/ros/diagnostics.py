"""The node's ``/diagnostics``, in the manner of diagnostic_updater: an object handed the node that
owns the publisher and its timer, and once per ``diagnostics_period`` asks the parts for their
state -- the node's (lifecycle, reload failure), the input checks (:mod:`bisenet_ros.ros.health`),
refused and failed frames, model warnings, transport losses, the semantic outputs -- and
publishes the worst as the level, with the counters and latency percentiles as values.
"""
from __future__ import annotations

import threading
import time
from collections import deque

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from ..evaluation.metrics import latency_stats
from .cameras import Camera
from .health import Health, worst
from .inputs import reliability_name
from .loss import CallbackLoad, loss_message
from .transport import tuning_decision

STATS_WINDOW = 300  # frames kept for the latency percentiles
RELOAD_WARN_S = 30.0  # a failed reload keeps /diagnostics at WARN this long (the old model serves on)
def failure_warnings(cameras: list[Camera]) -> list[str]:
    """One warning per camera whose frames were refused (malformed, over budget) or failed in the
    worker since the last call, with the latest reason."""
    warnings = []
    for cam in cameras:
        rejected, failed = cam.rejected - cam.reported[0], cam.failed - cam.reported[1]
        if rejected:
            warnings.append(f"{cam.label}: {rejected} frames refused ({cam.last_reject})")
        if failed:
            warnings.append(f"{cam.label}: {failed} frames failed ({cam.last_failure})")
        cam.reported = (cam.rejected, cam.failed)
    return warnings


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


class NodeDiagnostics:
    """``/diagnostics`` of one node (publisher, timer, frame statistics)."""

    def __init__(self, node: Node, core: SegmentationCore, period: float) -> None:  # noqa: F821 (ros/core.py)
        self.node, self.core = node, core
        self.publisher = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._lock = threading.Lock()
        self._window: deque[tuple[float, float]] = deque(maxlen=STATS_WINDOW)  # (total, latency) ms
        self._frames = 0  # since the last message
        self._last = time.perf_counter()
        self.forward_passes = 0
        self._callback_load = CallbackLoad()  # sampled by the timer, on the executor's thread
        node.create_timer(period, self.publish)

    def record(self, total_ms: float, latency_ms: float | None) -> None:
        """One published frame (``latency_ms`` None: its stamp says nothing about our latency)."""
        with self._lock:
            self._window.append((total_ms, float("nan") if latency_ms is None else latency_ms))
            self._frames += 1

    def count_forward_pass(self) -> None:
        with self._lock:
            self.forward_passes += 1

    def state(self) -> Health:
        """What the node is doing: serving, or why not (lifecycle state, reload failure)."""
        core = self.core
        if core.pipeline is None:
            return Health(DiagnosticStatus.OK, "unconfigured: no model loaded")
        if not core.active:
            return Health(DiagnosticStatus.OK, "inactive")
        if core.last_error and time.monotonic() - core.last_error_at < RELOAD_WARN_S:
            return Health(DiagnosticStatus.WARN, core.last_error)  # then OK again: the old model serves
        return Health(DiagnosticStatus.OK, "segmenting")

    def transport_warnings(self, cameras: list[Camera]) -> list[str]:
        """Close the loss monitors' period; one warning per camera losing images in transport."""
        now = time.monotonic()
        busy = self._callback_load.sample(now, time.thread_time())  # is the node itself the bottleneck?
        warnings = []
        for cam in cameras:
            report = cam.last_loss = cam.loss.evaluate(now)
            if report.warn:
                image_sub = cam.inputs[0]
                offered = [reliability_name(r) for r in image_sub.publisher_reliabilities()]
                warnings.append(loss_message(cam.label, report, reliability_name(image_sub.reliability), offered,
                                             callback_busy=busy))
        return warnings

    def health(self, now: float) -> tuple[Health, dict[str, str]]:
        """Level and message -- the worst of the node's state, the input checks, refused and failed
        frames, model warnings, transport losses and point-cloud problems -- and the values behind them."""
        state, core, inputs = self.state(), self.core, self.core.inputs
        if not core.active:
            return state, {}
        v = core.values
        health, values = inputs.monitor.check(now, v["expected_rate"], v["rate_tolerance"], v["input_timeout"])
        points_warning, points_values = core.outputs.semantic.status()
        values.update(points_values)
        cameras = inputs.snapshot()
        with inputs.lock:
            failures = failure_warnings(cameras)
        model_warnings = core.pipeline.info.get("warnings", ()) if core.pipeline is not None else ()
        warnings = [Health(DiagnosticStatus.WARN, w) for w in (*failures, *model_warnings,
                                                               *self.transport_warnings(cameras), points_warning) if w]
        result = worst([state, *warnings, health])
        if result.level == DiagnosticStatus.OK:
            if inputs.monitor.last is None:
                result = Health(DiagnosticStatus.OK, "waiting for images")
            elif not any(core.outputs.wanted(c) for c in cameras):
                result = Health(DiagnosticStatus.OK, "no subscribers: not segmenting")
        return result, values

    def publish(self) -> None:
        """One /diagnostics message (the timer calls it once per ``diagnostics_period``)."""
        now = time.perf_counter()
        with self._lock:
            window = list(self._window)
            frames, self._frames = self._frames, 0
            elapsed, self._last = now - self._last, now
        health, input_values = self.health(now)
        info = self.core.pipeline.info if self.core.pipeline is not None else {}
        values = {"fps": f"{frames / elapsed:.2f}" if elapsed > 0 else "0", **self._counters(),
                  "transport": tuning_decision().reason, **input_values, **self._latencies(window)}
        values.update({key: str(info.get(key)) for key in ("device", "model", "weights", "backend", "precision",
                                                            "input_size", "dataset")})
        values.update(cameras=",".join(c.label for c in self.core.inputs.snapshot()), last_error=self.core.last_error)
        status = DiagnosticStatus(level=health.level, name=f"{self.node.get_fully_qualified_name()}: segmentation",
                                  message=health.message, hardware_id=str(info.get("device")))
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status, self.core.perception.status()])  # status[0] stays ours
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.publisher.publish(msg)
        self.core.outputs.foxglove.diagnostics(msg)

    def _counters(self) -> dict[str, str]:
        inputs = self.core.inputs
        with inputs.lock:
            cameras = list(inputs.cameras)
            counts = {key: sum(getattr(c, attr) for c in cameras) for key, attr in (
                ("frames_processed", "processed"), ("dropped_frames", "dropped"), ("rejected_frames", "rejected"),
                ("failed_frames", "failed"), ("idle_frames", "idle"))}
        return {**{k: str(v) for k, v in counts.items()}, "forward_passes": str(self.forward_passes),
                "frames_lost_in_transport": str(sum(c.loss.total_lost for c in cameras)),
                "input_reliability": ",".join(reliability_name(c.inputs[0].reliability) for c in cameras)}

    @staticmethod
    def _latencies(window: list[tuple[float, float]]) -> dict[str, str]:
        total = latency_stats(t for t, _ in window)
        latency = latency_stats(lat for _, lat in window if lat == lat)
        return {**{f"total_ms_{k}": _fmt(total[k]) for k in ("p50", "p90", "p99", "max")},
                **{f"latency_ms_{k}": _fmt(latency[k]) for k in ("p50", "p90", "p99", "max")}}
