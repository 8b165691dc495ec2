"""CameraInfo paired with images by stamp, so a camera's first frames never go out uncalibrated.

A camera driver publishes ``camera_info`` with the same header as each image, on its own topic:
the two arrive in either order, and at start-up one can be lost (``input_reliability: auto``
re-creates the subscriptions about a second after a camera appears, discovery matches the two
topics at different moments). Taking "the latest CameraInfo" then gives the first labels frames an
all-zero K although the camera sent its K.

Per camera the last :data:`KEEP` CameraInfo messages are kept; for a frame the worker takes

1. the one with the image's stamp;
2. else, for a camera whose CameraInfo stamps have matched its images before and whose newest
   one is older than the image, the image's own, waited for up to :data:`WAIT_S` (it is on its way);
3. else the nearest by stamp among the usable ones: all for a camera that stamps CameraInfo
   otherwise (e.g. stamp 0), those within :data:`STALE_S` of the image for one that stamps them
   like its images (older ones belong to a camera that has gone, e.g. a previous run);
4. else, when a camera_info publisher exists, the first usable one, waited for up to
   :data:`FIRST_WAIT_S` (a lost message is followed by the next one a frame period later, same
   K); once per gap in the CameraInfo stream: after a wait in vain the frames go on uncalibrated
   until one arrives;
5. else none: the node publishes an uncalibrated CameraInfo (all-zero K) of the output size.

The waits run in the worker and are bounded; a camera without a camera_info publisher waits at
most :data:`DISCOVERY_GRACE_S`, once.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

from sensor_msgs.msg import CameraInfo

from ..data.images import stamp_ns

KEEP = 10  # CameraInfo messages kept per camera
WAIT_S = 0.1  # for the image's own CameraInfo when it is still on its way
FIRST_WAIT_S = 2.0  # for the first CameraInfo after a camera (re)appears (covers the re-subscription)
STALE_S = 2.0  # CameraInfo this far from the image's stamp belongs to another camera run
DISCOVERY_GRACE_S = 0.3  # the camera_info publisher may be discovered a little after the image's
POLL_S = 0.05


class CameraInfoPairing:
    """One camera's recent CameraInfo messages and the rule that picks one for a frame."""

    def __init__(self, publishers: Callable[[], int], keep: int = KEEP) -> None:
        self._publishers = publishers  # how many publishers the camera_info topic has
        self._cond = threading.Condition()
        self._infos: deque[tuple[int, CameraInfo]] = deque(maxlen=keep)  # (stamp ns, message)
        self._stamps_match = False  # this camera stamps CameraInfo like its images
        self._may_wait = True  # for a first CameraInfo (again after one was used)

    def add(self, msg: CameraInfo) -> None:
        """The camera_info callback."""
        with self._cond:
            self._infos.append((stamp_ns(msg.header), msg))
            self._cond.notify_all()

    def restart(self) -> None:
        """A camera (re)appeared on the topic: its first frames may wait for its first CameraInfo."""
        with self._cond:
            self._may_wait = True

    def _exact(self, stamp: int) -> CameraInfo | None:
        return next((msg for s, msg in reversed(self._infos) if s == stamp), None)

    def _usable(self, stamp: int) -> list[tuple[int, CameraInfo]]:
        if not self._stamps_match:
            return list(self._infos)
        return [(s, msg) for s, msg in self._infos if abs(s - stamp) <= STALE_S * 1e9]

    def for_frame(self, stamp: int) -> CameraInfo | None:
        """The CameraInfo for the image stamped ``stamp`` (see the module docstring); may wait."""
        with self._cond:
            found = self._exact(stamp)
            if found is None and self._stamps_match and self._infos and self._infos[-1][0] < stamp:
                self._cond.wait_for(lambda: self._exact(stamp) is not None or self._infos[-1][0] >= stamp, WAIT_S)
                found = self._exact(stamp)
            if found is None and not self._usable(stamp) and self._may_wait:
                self._wait_first(stamp)
                found = self._exact(stamp)
            if found is not None:
                self._stamps_match = True
            else:
                usable = self._usable(stamp)
                found = min(reversed(usable), key=lambda item: abs(item[0] - stamp))[1] if usable else None
            self._may_wait = found is not None or self._may_wait
            return found

    def _wait_first(self, stamp: int) -> None:
        """Wait (releasing the lock) for a usable CameraInfo while a publisher exists; in vain: no
        more waiting until one arrives."""
        start = time.monotonic()
        while not self._usable(stamp):
            elapsed = time.monotonic() - start
            if elapsed >= FIRST_WAIT_S or (elapsed >= DISCOVERY_GRACE_S and self._publishers() == 0):
                self._may_wait = False
                return
            self._cond.wait(POLL_S)
