"""The node's view of ``--backend auto``'s measured choice, a part handed the node.

* While the model is built, ``auto`` may measure its candidates (the first start for a model,
  input size and precision on a CPU): :meth:`BackendWatch.announce` logs what it does and how long
  it should take, and publishes it on ``/diagnostics`` at once (the node's timer cannot run while
  the model is being built).
* While serving, every frame's model time goes to a :class:`~bisenet_ros.inference.latency_watch.LatencyWatch`:
  a model that runs far from the cached figure is logged once (WARN), with the machine's load.
* On request, ``~/measure_backends`` (``diagnostic_msgs/srv/SelfTest``, as ROS self tests are
  called) measures ``auto``'s candidates again, interleaved, in the background while the current
  pipeline keeps serving, caches the new figures and serves the winner; the response names the
  choice, its figures and the load they were measured under (provisional when busy).
"""
from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from diagnostic_msgs.srv import SelfTest
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.task import Future

from ..errors import safe_text
from ..inference.backend_cache import describe
from ..inference.latency_watch import LatencyWatch


SERVICE = "~/measure_backends"


class BackendWatch:
    """Handed the node and its ``/diagnostics`` publisher (and the core, for the re-measure service)."""

    def __init__(self, node: Any, diagnostics_publisher: Any, core: Any = None) -> None:
        self.node = node
        self.publisher = diagnostics_publisher
        self._pipeline = None
        self._watch: LatencyWatch | None = None
        self.core = core
        if core is not None:  # groups of their own: a waiting request must not hold the node's default
            # group (every subscription and timer), and the wake-up must run while the request waits
            self._wake = node.create_guard_condition(lambda: None, callback_group=MutuallyExclusiveCallbackGroup())
            self.service = node.create_service(SelfTest, SERVICE, self._on_measure,
                                               callback_group=MutuallyExclusiveCallbackGroup())

    # -- ~/measure_backends ------------------------------------------------------------------------------
    def _refusal(self) -> str | None:
        pipeline = self.core.pipeline
        if pipeline is None:
            return "no model loaded (configure the node first)"
        if self.core.values["backend"] != "auto":
            return f"backend is '{self.core.values['backend']}': only 'auto' measures its candidates"
        if pipeline.device.type != "cpu":
            return f"on {pipeline.device} 'auto' takes the first candidate of its order; nothing to measure"
        return None

    async def _on_measure(self, request: SelfTest.Request, response: SelfTest.Response) -> SelfTest.Response:
        """Measure again in the background; the executor serves everything else while this waits."""
        response.id = f"{self.node.get_fully_qualified_name()}: backend"
        reason = self._refusal()
        finished = Future()
        def done(ok: bool) -> None:  # in the reload thread
            finished.set_result(ok)
            self._wake.trigger()  # the executor resumes this request now, not at its next wake-up

        if reason is None:
            self.node.get_logger().info("measuring the inference backends again (~/measure_backends)")
            reason = self.core.reconfigure.remeasure(done)
        if reason is not None:
            response.passed = b"\x00"  # a byte field: bytes, not int
            response.status = [self._status(DiagnosticStatus.ERROR, reason)]
            return response
        ok = await finished
        runner = self.core.pipeline.runner
        entry = getattr(runner, "cache_entry", None) or {}
        response.passed = bytes([int(bool(ok))])
        if not ok:
            response.status = [self._status(DiagnosticStatus.ERROR, self.core.last_error or "measuring failed")]
            return response
        level = DiagnosticStatus.WARN if entry.get("provisional") else DiagnosticStatus.OK
        status = self._status(level, safe_text((getattr(runner, "selection", None) or ["?"])[-1], 600))
        status.values = [KeyValue(key="backend", value=str(getattr(runner, "name", "?"))),
                         KeyValue(key="cached", value=safe_text(describe(entry), 600) if entry else "not cached")]
        response.status = [status]
        return response

    def _status(self, level: int, message: str) -> DiagnosticStatus:
        return DiagnosticStatus(level=level, message=message, name=f"{self.node.get_fully_qualified_name()}: backend")

    def announce(self, message: str) -> None:
        """A start-up step worth a line and a /diagnostics message (e.g. measuring for ~10 s)."""
        text = safe_text(message, 400)
        self.node.get_logger().info(text)
        status = DiagnosticStatus(level=DiagnosticStatus.OK, message=text,
                                  name=f"{self.node.get_fully_qualified_name()}: segmentation")
        status.values = [KeyValue(key="state", value="choosing the inference backend")]
        msg = DiagnosticArray()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.status = [status]
        try:
            self.publisher.publish(msg)
        except Exception:  # noqa: BLE001  (a context shut down while building: the log line stays)
            pass

    def frame(self, pipeline: Any, results: list) -> None:
        """One batch's results: compare its model time with the cached figure (batch 1 only)."""
        if pipeline is not self._pipeline:
            self._pipeline = pipeline
            self._watch = LatencyWatch(pipeline.runner)
        if self._watch is None or not self._watch.active or len(results) != 1 or results[0] is None:
            return
        message = self._watch.add(results[0].timings.get("inference_ms", 0.0))
        if message:
            self.node.get_logger().warning(safe_text(message, 600))

    @property
    def note(self) -> str | None:
        """What the watch said (for /diagnostics values), or None."""
        return self._watch.reported if self._watch is not None else None
