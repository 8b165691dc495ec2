"""Images lost in transport, per camera: what the camera sent versus what reached the node.

Four independent signs, each a lower bound of the loss, are combined by taking the largest of
their running totals (they see the same missing frames from different angles, sometimes one
period apart, so they are never added):

- **the publisher's sequence numbers** (exact, when the middleware reports them and the topic has
  one publisher): every sample a writer sends carries the next number (``publication_sequence_number``
  of the message info); a jump from n to n + k means k - 1 samples never reached the callback, lost
  on the wire or overwritten in the node's keep-last queue by a burst. A number at or below the
  last one is a new or restarted publisher, not loss. Where this sign judges an image, its stamp
  gap is not counted (stamps only estimate what the numbers count).

- **camera_info without its image**: a driver publishes one CameraInfo per image with the same
  stamp; the small CameraInfo gets through when the large image does not. Once at least one image
  has been seen with a CameraInfo's stamp (the driver pairs them), every CameraInfo whose image has
  not arrived ``grace_s`` after it counts as one lost frame. If images never arrive at all while
  CameraInfo does, each CameraInfo counts.
- **stamp gaps against the camera's own rate** (when no CameraInfo is paired): the median interval
  between consecutive image stamps estimates the camera's period; a gap of more than 1.5 periods
  counts round(gap/period) - 1 frames (the median keeps jitter from counting; under heavy loss it
  underestimates). A gap longer than 2 s and 20 periods is a pause or restart, not loss.
- **the middleware's own count** of samples it knows were lost (DDS "sample lost" events of a
  best-effort reader: sequence-number gaps, incomplete fragmented samples).

Frames the node itself skips (newest-frame policy, ``max_frame_age_ms``) arrive first and are not
counted here; they are ``dropped_frames``. Frames that never reached the callbacks because the
node could not take them as fast as they came (a flood of tiny images, a starved executor) are
lost in the node's own subscription queue: the signs above count them too, so the warning says
so when the thread that runs the callbacks was busy (:class:`CallbackLoad`, at least
:data:`NODE_BUSY` of its time) instead of blaming the network. Pure Python: no rclpy, times and
stamps are numbers.
"""
from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

GAP_FACTOR = 1.5  # a stamp gap longer than this many periods means frames are missing
MIN_INTERVALS = 5
PAUSE_S, PAUSE_PERIODS = 2.0, 20  # a longer gap is the camera pausing or restarting, not loss  # stamp intervals needed before the camera's period is trusted
UNANSWERED_PERIODS = 3  # periods of CameraInfo without any image before those count as lost
WARN_FRACTION = 0.1  # warn when more than this share of the frames sent was lost ...
WARN_MIN_LOST = 2  # ... and at least this many
#: the callback thread busy at least this share of the time: the node, not the network, is the
#: bottleneck (an idle node's callbacks take well under 1% of it; at one half, a keep-last queue of
#: depth 1 is overwritten whenever two images arrive within one callback's work)
NODE_BUSY = 0.5


@dataclass
class LossReport:
    """The loss over the recent window (for the warning) and since start (for the counters)."""

    received: int  # images received in the window
    lost: int  # images lost in the window
    total_lost: int  # since start
    sources: tuple[str, ...]  # which signs saw the loss in the window ("sequence", "camera_info", "stamps", "middleware")

    @property
    def fraction(self) -> float:
        sent = self.received + self.lost
        return self.lost / sent if sent else 0.0

    @property
    def warn(self) -> bool:
        return self.lost >= WARN_MIN_LOST and self.fraction > WARN_FRACTION


class LossMonitor:
    """Counts one camera's images lost in transport; call :meth:`evaluate` periodically."""

    def __init__(self, grace_s: float = 2.0, window: int = 8, history: int = 50) -> None:
        self.grace_s = grace_s
        self.total_lost = 0
        self._infos: deque[tuple[float, int]] = deque()  # (arrival time, stamp) not yet judged
        self._image_stamps: deque[int] = deque(maxlen=2000)  # stamps of received images (recent)
        self._image_stamp_set: set[int] = set()
        self._paired = False  # the driver stamps CameraInfo and Image alike
        self._silent = 0  # periods with CameraInfo while no image ever arrived
        self._held = 0  # CameraInfo counted in those periods, not yet reported
        self._last_stamp = 0
        self._intervals: deque[int] = deque(maxlen=history)
        self._gap_lost = 0  # since the last evaluation
        self._last_sequence: int | None = None  # the publisher's number of the last image received
        self._sequence_lost = 0  # since the last evaluation
        self._sequenced = False  # the last image's gap was judged by sequence numbers, not stamps
        self._middleware_lost = 0
        self._received = 0
        self._cumulative = {"sequence": 0, "camera_info": 0, "stamps": 0, "middleware": 0}
        self._window: deque[tuple[int, int, tuple[str, ...]]] = deque(maxlen=window)  # (received, lost, sources)

    # -- events (subscription callbacks) -----------------------------------------------------------
    def on_image(self, stamp_ns: int, sequence: int | None = None) -> None:
        """An image arrived: its header stamp (0: none) and its publisher's sequence number
        (None: unknown, or the topic has several publishers, whose numbers interleave)."""
        self._received += 1
        self._on_sequence(sequence)
        if not stamp_ns:
            return
        if len(self._image_stamps) == self._image_stamps.maxlen:
            self._image_stamp_set.discard(self._image_stamps[0])
        self._image_stamps.append(stamp_ns)
        self._image_stamp_set.add(stamp_ns)
        if self._last_stamp and stamp_ns > self._last_stamp:
            interval = stamp_ns - self._last_stamp
            if len(self._intervals) >= MIN_INTERVALS and not (self._paired or self._sequenced):  # exact signs
                period = statistics.median(self._intervals)
                if GAP_FACTOR * period < interval <= max(PAUSE_S * 1e9, PAUSE_PERIODS * period):
                    self._gap_lost += max(0, round(interval / period) - 1)
            self._intervals.append(interval)
        if stamp_ns > self._last_stamp or stamp_ns < self._last_stamp - 10**9 * 3600:
            self._last_stamp = stamp_ns  # ignore reordering; accept a restarted clock (bag loop)

    def _on_sequence(self, sequence: int | None) -> None:
        """Count the numbers missing before ``sequence``; :attr:`_sequenced` says whether this
        image's gap was judged by them (else the stamps judge it)."""
        # None: several publishers, or none reported; the count starts over when they are back
        last, self._last_sequence = self._last_sequence, sequence
        self._sequenced = sequence is not None and last is not None
        if self._sequenced and sequence > last:  # at or below the last: a new or restarted publisher
            self._sequence_lost += sequence - last - 1

    def on_camera_info(self, stamp_ns: int, now: float) -> None:
        if stamp_ns:
            self._infos.append((now, stamp_ns))

    def on_middleware_lost(self, count: int) -> None:
        self._middleware_lost += max(0, int(count))

    def forget_pending(self, arrived_before: float = float("inf")) -> None:
        """A new camera or re-created subscriptions: no gap to what came before (stamps, numbers).
        CameraInfo that arrived before ``arrived_before`` is not judged: all of it after a
        re-creation (the images in flight were dropped by the node, not lost by the camera);
        after a new image publisher, what came before its image path matched; a publisher that
        left (its last matching is older) leaves its last CameraInfo to be judged as usual."""
        while self._infos and self._infos[0][0] < arrived_before:
            self._infos.popleft()
        self._last_stamp = 0
        self._last_sequence = None

    # -- evaluation (diagnostics timer) ------------------------------------------------------------
    def _camera_info_lost(self, now: float, received: int) -> int:
        judged = []
        while self._infos and self._infos[0][0] <= now - self.grace_s:
            judged.append(self._infos.popleft()[1])
        missing = [s for s in judged if s not in self._image_stamp_set]
        if len(missing) < len(judged):
            self._paired = True
        if self._paired:
            return len(missing)
        if self._image_stamps or received:
            self._silent, self._held = 0, 0  # images arrive, never with a CameraInfo's stamp: no verdict
            return 0
        # CameraInfo arrives, images never did: count it once that lasted a few periods (not the
        # moment at start-up when the image subscription has not matched yet)
        if not judged:
            return 0
        self._silent += 1
        self._held += len(judged)
        if self._silent < UNANSWERED_PERIODS:
            return 0
        lost, self._held = self._held, 0
        return lost

    def evaluate(self, now: float) -> LossReport:
        """Close the current period; the report covers the last ``window`` periods."""
        received, self._received = self._received, 0
        counts = {"sequence": self._sequence_lost, "camera_info": self._camera_info_lost(now, received),
                  "stamps": self._gap_lost, "middleware": self._middleware_lost}
        self._gap_lost = self._middleware_lost = self._sequence_lost = 0
        for source, count in counts.items():  # a sign may see a loss a period after another did
            self._cumulative[source] += count
        total = max(self._cumulative.values())
        lost, self.total_lost = total - self.total_lost, total
        self._window.append((received, lost, tuple(k for k, v in counts.items() if v)))
        return LossReport(received=sum(r for r, _, _ in self._window), lost=sum(lo for _, lo, _ in self._window),
                          total_lost=self.total_lost,
                          sources=tuple(dict.fromkeys(s for _, _, src in self._window for s in src)))


class CallbackLoad:
    """How busy the thread that runs the node's subscription callbacks is: its CPU time over the
    wall time between two :meth:`sample` calls, both read by the caller on that thread (a timer of
    the same executor: ``time.thread_time()``, ``time.monotonic()``)."""

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None
        self.busy: float | None = None  # share of the last interval, None before two samples

    def sample(self, now: float, cpu: float) -> float | None:
        if self._last is not None and now > self._last[0]:
            self.busy = min(1.0, max(0.0, (cpu - self._last[1]) / (now - self._last[0])))
        self._last = (now, cpu)
        return self.busy


def loss_message(camera: str, report: LossReport, subscribed: str, offered: list[str],
                 callback_busy: float | None = None) -> str:
    """The /diagnostics warning: how much was lost, the likely cause and the fix (one line).

    ``subscribed`` is the node's image subscription reliability, ``offered`` the publishers';
    ``callback_busy`` the share of the time the node's callback thread was busy
    (:class:`CallbackLoad`): from :data:`NODE_BUSY` on, the node itself is named as the bottleneck.
    """
    sent = report.received + report.lost
    if callback_busy is not None and callback_busy >= NODE_BUSY:
        return (f"{camera}: {report.lost} of {sent} images lost ({report.fraction:.0%}) before the node took them: "
                f"its callback thread was {callback_busy:.0%} busy, so the node itself, not the network, is the "
                f"bottleneck (its subscription queue is overwritten faster than it is read); lower the camera's "
                f"rate, throttle the topic, or spread the cameras over several nodes; see docs/node.md, Transport")
    head = (f"{camera}: {report.lost} of {sent} images lost in transport "
            f"({report.fraction:.0%}, seen by {', '.join(report.sources) or 'stamps'})")
    if subscribed == "best_effort" and offered and all(o == "reliable" for o in offered):
        return (f"{head}: the camera publishes reliable but the node subscribes best effort, so lost "
                f"fragments are not repaired; set input_reliability to auto or reliable")
    if subscribed == "best_effort":
        return (f"{head}: the camera publishes best effort and large images (over Fast DDS' 512 KB "
                f"default shared-memory segment, or over UDP fragments) are dropped under load; make "
                f"the camera driver publish reliable, or give it a transport for large data "
                f"(FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA for camera and node, or the bisenet_ros Fast DDS "
                f"profile on the same host) and raise net.core.rmem_max; see docs/node.md, Transport")
    return (f"{head} although the input is reliable: the network or the camera host cannot keep up "
            f"(reliable history overwritten before delivery); lower the camera's rate or resolution, use "
            f"compressed input, or raise net.core.rmem_max; see docs/node.md, Transport")
