"""The node's view of ``--backend auto``'s measured choice, a part handed the node.

* While the model is built, ``auto`` may measure its candidates (the first start for a model,
  input size and precision on a CPU): :meth:`BackendWatch.announce` logs what it does and how long
  it should take, and publishes it on ``/diagnostics`` at once (the node's timer cannot run while
  the model is being built).
* While serving, every frame's model time goes to a :class:`~bisenet_ros.inference.latency_watch.LatencyWatch`:
  a model that runs far from the cached figure is logged once (WARN), with the machine's load.
"""
from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from ..errors import safe_text
from ..inference.latency_watch import LatencyWatch


class BackendWatch:
    """Handed the node and its ``/diagnostics`` publisher."""

    def __init__(self, node: Any, diagnostics_publisher: Any) -> None:
        self.node = node
        self.publisher = diagnostics_publisher
        self._pipeline = None
        self._watch: LatencyWatch | None = None

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
