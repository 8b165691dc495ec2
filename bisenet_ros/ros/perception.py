"""Perception health in ``/diagnostics``: does the node still deserve trust in its own labels?

:class:`PerceptionHealth` is a part handed the node, as diagnostic_updater is: the node gives it
each processed frame's health statistics (:mod:`bisenet_ros.inference.health`, computed by the pipeline
from the 1/8 logits and a subsample of the image); it keeps one
:class:`~bisenet_ros.inference.health.HealthMonitor` per camera (hold times on the node's receive clock),
adds the statistics to ``~/timing`` (with each frame's verdict, ``perception`` OK/WARN), logs each
change, and gives the node a ``/diagnostics`` status named ``<node>: perception``, published beside
the node's own status (``status[1]`` of the same message) every ``diagnostics_period``.
Thresholds: ``health_baseline`` (a YAML from ``bisenet-ros health-baseline``; by default the one
beside the weights), else the documented defaults, overridden by the ``health_*`` parameters.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from ..errors import BisenetError
from ..inference.health import DEFAULT_BASELINE, SYMPTOMS, Baseline, HealthMonitor, resolve_baseline, with_overrides

#: the node parameters this part reads (declared in parameters.PARAMETERS)
HEALTH_PARAMETERS = ("health_enabled", "health_hold_time", "health_baseline", "health_confidence_level",
                     "health_low_confidence_max", "health_frozen_frames", "health_checks")
TIMING_KEYS = ("confidence_mean", "low_confidence_fraction", "entropy_mean", "brightness_mean",
               "brightness_std", "saturated_fraction")


def baseline_for(values: dict[str, Any], weights: str | None) -> Baseline:
    """The thresholds the parameters ask for, for the checkpoint file ``weights`` (raises
    ConfigError for an unreadable baseline)."""
    base = resolve_baseline(values["health_baseline"], weights)
    return with_overrides(base, confidence_level=values["health_confidence_level"],
                          low_confidence_max=values["health_low_confidence_max"])


class PerceptionHealth:
    """The node's perception-health part: per-camera monitors and their ``/diagnostics`` status."""

    def __init__(self, node: Any, values: dict[str, Any]) -> None:
        self.node, self.values = node, values
        self._lock = threading.Lock()
        self._monitors: dict[str, HealthMonitor] = {}
        self._warn: dict[str, bool] = {}
        self.baseline: Baseline = DEFAULT_BASELINE

    @property
    def enabled(self) -> bool:
        return bool(self.values["health_enabled"])

    def configure(self, values: dict[str, Any], pipeline: Any) -> None:
        """Thresholds and monitor settings from ``values`` (at start, after a parameter change or a
        reload); sets the pipeline's confidence level. The monitors keep their history."""
        self.values = values
        weights = pipeline.info.get("weights") if pipeline is not None else None  # a file, names resolved
        baseline = baseline_for(values, weights or values["weights"] or None)
        with self._lock:
            self.baseline = baseline
            for mon in self._monitors.values():
                mon.configure(baseline, values["health_hold_time"], values["health_frozen_frames"],
                              self._checks())
        if pipeline is not None:
            pipeline.health_level = baseline.confidence_level
        self.node.get_logger().info(f"perception health: {baseline.describe()}"
                                    if self.enabled else "perception health: disabled (health_enabled false)")

    def configure_reloaded(self, values: dict[str, Any], pipeline: Any) -> None:
        """:meth:`configure` for a newly loaded model (its own baseline); the default thresholds
        (and an error line) when that baseline cannot be read: the reload itself goes on."""
        try:
            self.configure(values, pipeline)
        except BisenetError as exc:
            self.node.get_logger().error(f"{exc}; perception health uses the default thresholds")
            self.configure({**values, "health_baseline": "none"}, pipeline)

    def _checks(self) -> set[str]:
        return set(self.values["health_checks"] or SYMPTOMS)

    def reset(self) -> None:
        """Forget every camera's history (the node was deactivated)."""
        with self._lock:
            self._monitors.clear()
            self._warn.clear()

    def update(self, camera: str, now: float, stats: dict[str, float] | None) -> dict[str, str]:
        """One processed frame of ``camera`` received at ``now``: the values for ``~/timing``
        (a change of the camera's verdict is logged)."""
        if stats is None or not self.enabled:
            return {}
        with self._lock:
            mon = self._monitors.get(camera)
            if mon is None:
                mon = self._monitors[camera] = HealthMonitor(
                    self.baseline, self.values["health_hold_time"], self.values["health_frozen_frames"],
                    self._checks())
            verdict = mon.update(now, stats)
            self._warn[camera] = verdict.warn
        out = {k: f"{stats[k]:.4f}" for k in TIMING_KEYS if k in stats}
        out["perception"] = "WARN" if verdict.warn else "OK"
        if verdict.changed:
            level = "WARN" if verdict.warn else "OK"
            log = self.node.get_logger().warning if verdict.warn else self.node.get_logger().info
            log(f"perception {level}: {camera}: {verdict.message or 'labels trustworthy again'}")
        return out

    def status(self) -> DiagnosticStatus:
        """``<node>: perception``: WARN when any camera shows a symptom, counts in the values."""
        now = time.perf_counter()
        name = f"{self.node.get_fully_qualified_name()}: perception"
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name=name)
        values = {"enabled": str(self.enabled).lower(), "baseline": self.baseline.describe(),
                  "hold_time_s": f"{self.values['health_hold_time']:g}"}
        if not self.enabled:
            status.message = "disabled (health_enabled false)"
        with self._lock:
            monitors = dict(self._monitors)
            verdicts = {cam: mon.verdict(now) for cam, mon in monitors.items()}
        several = len(monitors) > 1
        messages = []
        for cam, verdict in verdicts.items():
            prefix = f"{cam}." if several else ""
            values.update({prefix + k: v for k, v in verdict.values.items()})
            if verdict.warn:
                messages.append(f"{cam}: {verdict.message}" if several else verdict.message)
        if messages:
            status.level, status.message = DiagnosticStatus.WARN, "; ".join(messages)
        elif self.enabled:
            status.message = "labels trustworthy" if monitors else "no frame processed yet"
            if self.baseline.source is None:
                status.message += " (no baseline: default thresholds)"
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        return status
