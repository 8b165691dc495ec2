"""The end-to-end latency in ``~/timing``: a number only when the image's stamp can give one.

``latency_ms`` is the node clock at publication minus the image's stamp. That says something only
when camera and node share a clock: a replayed recording (``ros2 bag play`` without
``--clock``/``use_sim_time``), a camera on a host with another clock, a zero or future stamp give
values such as 96393368154 ms. Outside :data:`PLAUSIBLE_LATENCY_MS` the value is left out of
``~/timing`` (and of the latency statistics in ``/diagnostics``); the frame's ``~/timing`` says
why in ``latency_note``, and the node logs it once per reason.
"""
from __future__ import annotations

from typing import Any

#: latencies outside this range (ms) come from a wrong stamp (another clock, a replayed recording,
#: a negative or future stamp), not from the node
PLAUSIBLE_LATENCY_MS = (-1000.0, 3.6e6)


def plausible_latency(latency_ms: float) -> bool:
    return PLAUSIBLE_LATENCY_MS[0] <= latency_ms <= PLAUSIBLE_LATENCY_MS[1]


def latency(stamp_ns: int, now_ns: int) -> tuple[float | None, str]:
    """(latency in ms, '') or (None, why there is no plausible value)."""
    if not stamp_ns:
        return None, "the image has no stamp (0)"
    value = (now_ns - stamp_ns) / 1e6
    if plausible_latency(value):
        return value, ""
    if value < 0:
        return None, (f"the image stamp is {-value / 1e3:.1f} s ahead of the node clock (another clock, "
                      "or use_sim_time differs)")
    return None, (f"the image stamp is {value / 3.6e6:.1f} h behind the node clock (a replayed recording: play it "
                  "with --clock and set use_sim_time, or a camera with another clock)")


class LatencyCheck:
    """Per node: the latency value for ``~/timing``, with a one-time log line per kind of reason."""

    def __init__(self, node: Any) -> None:
        self._node = node
        self._told: set[str] = set()

    def __call__(self, stamp_ns: int) -> tuple[float | None, str]:
        value, why = latency(stamp_ns, self._node.get_clock().now().nanoseconds)
        kind = next((k for k in ("no stamp", "ahead", "behind") if k in why), why)  # whatever the figure
        if why and kind not in self._told:
            self._told.add(kind)
            self._node.get_logger().warning(f"~/timing: latency_ms left out: {why}")
        return value, why
