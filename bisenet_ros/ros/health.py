"""Input health for ``/diagnostics``, in the manner of diagnostic_updater's frequency and
timestamp checks: is the camera still sending, at the expected rate, with sane stamps?

:class:`InputMonitor` is fed one call per received image (:meth:`InputMonitor.tick`) and asked
once per diagnostics period (:meth:`InputMonitor.check`); it needs no ROS and reads no clock of
its own (times are passed in), so it is exercised directly by the tests as well as in the node.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticStatus

OK, WARN = DiagnosticStatus.OK, DiagnosticStatus.WARN
FUTURE_STAMP_S = 1.0  # stamps further ahead of the node clock than this: clocks not synchronised
MAX_EVENTS = 10_000  # receive times kept (bounded whatever the camera rate)


@dataclass
class Health:
    """One check's verdict: level (DiagnosticStatus.OK/WARN/...) and a short message."""

    level: int
    message: str


class InputMonitor:
    """Receive times and stamp delays of the input images (thread-safe)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = float(window_s)
        self._lock = threading.Lock()
        self._times: deque[float] = deque(maxlen=MAX_EVENTS)
        self._delays: list[float] = []  # stamp delays (s) since the last check
        self.started = 0.0
        self.last = None  # receive time of the newest image

    def reset(self, now: float) -> None:
        """Start watching (node activated): "no image yet" counts from ``now``."""
        with self._lock:
            self._times.clear()
            self._delays.clear()
            self.started, self.last = now, None

    def tick(self, now: float, stamp_delay_s: float | None) -> None:
        """One image received at ``now``; ``stamp_delay_s`` = node clock - header stamp (None: zero stamp)."""
        with self._lock:
            self._times.append(now)
            self.last = now
            if stamp_delay_s is not None:
                self._delays.append(stamp_delay_s)

    def rate(self, now: float) -> float:
        """Images per second over the last ``window_s`` (or since the start, if shorter)."""
        with self._lock:
            while self._times and self._times[0] < now - self.window_s:
                self._times.popleft()
            span = min(self.window_s, now - self.started)
            return len(self._times) / span if span > 0 else 0.0

    def check(self, now: float, expected_rate: float, tolerance: float, timeout_s: float
              ) -> tuple[Health, dict[str, str]]:
        """The input's health and the values behind it; clears the stamp delays of this period."""
        rate = self.rate(now)
        with self._lock:
            delays, self._delays = self._delays, []
            last = self.last
        values = {"input_rate": f"{rate:.2f}", "expected_rate": f"{expected_rate:g}",
                  "stamp_delay_ms_min": f"{min(delays) * 1e3:.1f}" if delays else "",
                  "stamp_delay_ms_max": f"{max(delays) * 1e3:.1f}" if delays else ""}
        silent = now - (last if last is not None else self.started)
        values["since_last_image_s"] = f"{silent:.1f}"
        if timeout_s > 0 and silent > timeout_s:
            what = "no image yet" if last is None else "input stopped: no image"
            return Health(WARN, f"{what} for {silent:.1f} s"), values
        if expected_rate > 0 and now - self.started >= self.window_s and rate < expected_rate * (1 - tolerance):
            return Health(WARN, f"input rate {rate:.1f} Hz below the expected {expected_rate:g} Hz"), values
        if delays and min(delays) < -FUTURE_STAMP_S:
            return Health(WARN, f"image stamps {-min(delays):.1f} s ahead of the node clock "
                                "(clocks not synchronised?)"), values
        return Health(OK, ""), values


def worst(checks: list[Health]) -> Health:
    """The most severe of several checks (messages of equally severe ones joined)."""
    level = max((c.level for c in checks), default=OK)
    return Health(level, "; ".join(c.message for c in checks if c.level == level and c.message))
