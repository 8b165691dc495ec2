"""Does the model run as fast as ``auto`` measured? The node's check of the cached backend choice.

``auto`` caches its CPU choice with the time it measured (:mod:`bisenet_ros.inference.backend_cache`). The
node feeds every frame's model time to a :class:`LatencyWatch`; once a window of frames is full
and its median is more than ``factor`` away from the cached figure (either way), it says so once,
with the machine's load now. When the machine is quiet now, the cached figure is what is wrong
(measured under load, or another machine's state): the entry is marked provisional, so the next
start on a quiet machine measures again; the node's ``~/measure_backends`` service and
``bisenet-ros bench --remeasure`` do it at once. When
the machine is busy now, the load explains the gap and nothing is marked.
"""
from __future__ import annotations

import statistics

from . import backend_cache

WINDOW = 30  #: frames whose median is compared
FACTOR = 2.0  #: how far (either way) the median may be from the cached figure before it is said


class LatencyWatch:
    """Feed :meth:`add` each frame's model milliseconds; it returns a message once on a large gap."""

    def __init__(self, runner, window: int = WINDOW, factor: float = FACTOR) -> None:
        self.expected = getattr(runner, "expected_ms", None)
        self.key = getattr(runner, "cache_key", None)
        self.backend = getattr(runner, "name", "?")
        self.entry = getattr(runner, "cache_entry", None) or {}
        self.window = int(window)
        self.factor = float(factor)
        self._times: list[float] = []
        self.reported: str | None = None  # the message, once said (for /diagnostics)

    @property
    def active(self) -> bool:
        return self.expected is not None and self.reported is None

    def add(self, model_ms: float, batch: int = 1) -> str | None:
        """A message the first time the window's median is far from the cached figure, else None."""
        if not self.active or batch != 1:
            return None
        self._times.append(float(model_ms))
        if len(self._times) < self.window:
            return None
        median = statistics.median(self._times)
        self._times.clear()
        ratio = median / self.expected
        if 1.0 / self.factor <= ratio <= self.factor:
            return None
        self.reported = self._message(median, ratio)
        return self.reported

    def _message(self, median: float, ratio: float) -> str:
        busy = backend_cache.busy_reason()
        load = backend_cache.load_average()
        cpus = backend_cache.cpu_count()
        now = f"load average now {load:.1f} on {cpus} CPUs" if load is not None else "load unknown"
        head = (f"model latency p50 {median:.0f} ms over {self.window} frames is {ratio:.1f}x the {self.expected:.0f} ms "
                f"'auto' measured for {self.backend} ({backend_cache.describe(self.entry)}); {now}")
        if busy:
            return f"{head}: other work shares the cores, the cached choice is kept"
        marked = self.key is not None and backend_cache.mark_provisional(
            self.key, f"the node measured {median:.0f} ms for {self.backend} on a quiet machine, "
                      f"{ratio:.1f}x the cached figure")
        what = "marked to be measured again at the next start" if marked else "not cached here"
        return (f"{head}: the cached figures do not describe this machine now ({what}; to measure at once: "
                f"the node's ~/measure_backends service, or bisenet-ros bench --remeasure with its model options)")
