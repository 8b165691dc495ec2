"""Run-time parameter changes: the on-set callback only validates (accept or refuse the whole
change, no side effects); the post-set callback applies -- live settings at once, model
parameters by a background reload whose new pipeline is swapped in only on success (otherwise the
parameters are reverted and the old model keeps serving).
"""
from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from typing import Any, Callable

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..errors import one_line, safe_text
from ..inference.backend_cache import announcing, remeasuring
from ..pipeline import SegmentationPipeline, build_pipeline
from .parameters import (PARAMETERS, RELOAD, as_parameter, check_remap, never_raises, pipeline_options, plain,
                         reload_changes, validate_changes)
from .perception import HEALTH_PARAMETERS
from .points import check_class_parameters

LIVE = {"overlay_alpha", "confidence_threshold"}  # pipeline attributes changed in place


class Reconfigure:
    """The node's parameter callbacks and background model reload."""

    def __init__(self, node: Node, core: SegmentationCore) -> None:  # noqa: F821 (ros/core.py, composing the parts)
        self.node, self.core = node, core
        self.lock = threading.RLock()
        self.reverting = False
        self.thread: threading.Thread | None = None  # a reload (parameters changed, or measure again)
        self.background: threading.Thread | None = None  # auto measured while a quick choice serves
        node.add_on_set_parameters_callback(never_raises(self.validate))  # refuses, never raises
        node.add_post_set_parameters_callback(self.apply)

    @staticmethod
    def _changes(params: list[Parameter]) -> dict[str, Any]:
        """The node's own parameters among ``params`` (not the qos_overrides.* rclpy declares)."""
        return {p.name: plain(p.name, p.value) for p in params if p.name in PARAMETERS}

    def validate(self, params: list[Parameter]) -> SetParametersResult:
        """The on-set callback: accept or refuse the whole change (no side effects here)."""
        with self.lock:
            if self.reverting:
                return SetParametersResult(successful=True)
            changes, values = self._changes(params), self.core.values
            pipeline = self.core.pipeline  # None while unconfigured (lifecycle): checked at configure
            if pipeline is None:
                reason = validate_changes(values, changes)
            else:
                reason = validate_changes(values, changes, pipeline.info.get("num_classes")) \
                    or check_remap(changes, pipeline.source_preset) \
                    or check_class_parameters(changes, pipeline.preset.class_names)
            if not reason and reload_changes(values, changes) and self.reloading():
                reason = "a model reload is in progress; try again when it finishes"
            return SetParametersResult(successful=not reason, reason=reason or "")

    def apply(self, params: list[Parameter]) -> None:
        """The post-set callback: live settings at once, model changes by a background reload."""
        with self.lock:
            if self.reverting:
                return
            changes, values, pipeline = self._changes(params), self.core.values, self.core.pipeline
            if pipeline is None:  # unconfigured (lifecycle): the values are used at configure
                values.update(changes)
                return
            reload = reload_changes(values, changes)
            if reload:
                old = {k: values[k] for k in reload}
                self.thread = threading.Thread(target=self._reload, args=({**values, **changes}, old),
                                               name="segmentation_reload", daemon=True)
                self.thread.start()
            for name, value in changes.items():
                if name not in RELOAD:
                    values[name] = value
                    if name == "publish_points" and self.core.outputs.semantic is not None:
                        self.core.outputs.semantic.wake()
                    if name in LIVE:
                        setattr(pipeline, name, value)
                    if name == "confidence_threshold":
                        self.core.outputs.label_info.publish(pipeline.preset.class_names, value)
            if {"foxglove_port", "foxglove_address"} & set(changes) and self.core.active:
                self.core.outputs.foxglove.restart()
            if set(changes) & set(HEALTH_PARAMETERS):
                self.core.perception.configure(values, pipeline)

    def remeasure(self, done: Callable[[bool], None]) -> str | None:
        """Measure ``auto``'s candidates again (cached figures ignored, replaced) in the background and
        serve its choice; the current pipeline serves meanwhile. ``done(success)`` afterwards; a
        reason (and nothing started) when a reload is already running."""
        with self.lock:
            if self.reloading():
                return "a model reload is in progress; try again when it finishes"
            if self.background is not None and self.background.is_alive():
                return "the backends are being measured in the background already (since the start)"
            self.thread = threading.Thread(target=self._reload, args=(dict(self.core.values), {}, done),
                                           name="segmentation_remeasure", daemon=True)
            self.thread.start()
        return None

    def reloading(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def wait(self) -> None:
        """Let a reload or background measurement in progress finish (cleanup, shutdown)."""
        for thread in (self.thread, self.background):
            if thread is not None and thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout=60.0)

    def _reload(self, candidate: dict[str, Any], old: dict[str, Any],
                done: Callable[[bool], None] | None = None) -> None:
        """:meth:`_load` (no ``old``: the same parameters, ``auto`` measured again), quiet when the
        node is shutting down meanwhile (SIGINT right after a change); then ``done(success)``."""
        ok = False
        try:
            with remeasuring() if not old else nullcontext():
                ok = self._load(candidate, old)
        except Exception as exc:  # noqa: BLE001
            if self.core.worker.stop_event.is_set() or not self.node.context.ok():
                return  # the context went away under the reload: nothing left to tell
            self.core.last_error = f"reload failed: {safe_text(one_line(exc), 300)}"
            self.core.last_error_at = time.monotonic()
            self.node.get_logger().error(self.core.last_error)
        finally:
            if done is not None:
                done(ok)

    def _load(self, candidate: dict[str, Any], old: dict[str, Any]) -> bool:
        """Build the pipeline for ``candidate``; swap it in (True), or revert the parameters to ``old``."""
        core, log = self.core, self.node.get_logger()
        changed = ", ".join(f"{k}={candidate[k]}" for k in old) or "backend auto, measured again"
        log.info(f"loading model for {changed} in the background")
        try:
            with announcing(core.backend_watch.announce):
                pipeline = build_pipeline(pipeline_options(candidate), overlay_alpha=core.values["overlay_alpha"])
        except Exception as exc:  # BisenetError, or torch refusing the device/weights
            keeping = core.pipeline.info.get("weights") if core.pipeline is not None else "no model"
            core.last_error = safe_text(f"reload with {changed} failed, keeping {keeping}: {one_line(exc, 300)}", 500)
            core.last_error_at = time.monotonic()
            log.error(core.last_error)
            self._revert(old)
            return False
        self._swap(pipeline, {k: candidate[k] for k in old})
        return True

    def _swap(self, pipeline: SegmentationPipeline, applied: dict[str, Any]) -> None:
        """Serve ``pipeline``, built for the current values with ``applied`` changed."""
        core, log = self.core, self.node.get_logger()
        pipeline.overlay_alpha = core.values["overlay_alpha"]
        pipeline.confidence_threshold = core.values["confidence_threshold"]
        core.last_error = ""  # before the swap: /diagnostics never shows the new model with the old error
        core.perception.configure_reloaded({**core.values, **applied}, pipeline)
        core.pipeline = pipeline
        with self.lock:
            core.values.update(applied)
        if core.active:
            core.outputs.publish_legend()
        info = pipeline.info
        log.info(f"now serving {info['model']} ({info['num_classes']} classes) from "
                 f"{info['weights']} [{info['backend']}, {info['precision']}], input {info['input_size']}")
        for warning in info.get("warnings", ()):
            log.warning(warning)

    # -- auto measured in the background (quick start) ---------------------------------------------------
    def measure_in_background(self) -> None:
        """The node serves with a quick choice (:func:`~bisenet_ros.inference.backend_cache.quick_start`):
        measure ``auto``'s candidates in a thread of its own and serve the winner, unless the
        parameters changed meanwhile (a user's reload always wins; nothing is refused for this)."""
        self.background = threading.Thread(target=self._measure_and_swap, args=(dict(self.core.values),),
                                           name="segmentation_measure", daemon=True)
        self.background.start()

    def _measure_and_swap(self, values: dict[str, Any]) -> None:
        core, log = self.core, self.node.get_logger()
        try:
            with remeasuring(), announcing(core.backend_watch.announce):
                pipeline = build_pipeline(pipeline_options(values), overlay_alpha=values["overlay_alpha"])
        except Exception as exc:  # noqa: BLE001 - the quick choice keeps serving
            if not (self.core.worker.stop_event.is_set() or not self.node.context.ok()):
                log.warning(safe_text(f"measuring the backends in the background failed, the quick choice keeps "
                                      f"serving: {one_line(exc, 300)}", 500))
            return
        with self.lock:
            if self.reloading() or any(core.values[k] != values[k] for k in RELOAD) or core.pipeline is None:
                log.info("background measurement done, not applied: the model parameters changed meanwhile")
                return
            self._swap(pipeline, {})

    def _revert(self, old: dict[str, Any]) -> None:
        with self.lock:
            self.reverting = True
            try:
                self.node.set_parameters([as_parameter(k, v) for k, v in old.items()])
            finally:
                self.reverting = False
