"""The node's camera inputs: one :class:`Camera` per input stream, its subscriptions (image and
camera_info, reliability fixed or following the publishers: :mod:`bisenet_ros.ros.inputs`) and its
newest-frame slot.

Raw images are taken serialized and read in place (:mod:`bisenet_ros.ros.image_cdr`): a frame the
node drops for a newer one costs no conversion. Subscription callbacks only check a raw image's header (a bad frame never displaces a good
waiting one) and keep the newest frame per camera, counting the ones it replaces; with nobody
subscribed to any of a camera's outputs its frames are not segmented at all, as image_proc does
(``always_process`` forces it). The worker takes the waiting frames of all cameras together
(:meth:`CameraInputs.take`).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..data.images import check_image, stamp_ns
from ..errors import ImageError, one_line, safe_text
from .camera_info import CameraInfoPairing
from .conversions import check_compressed_msg, image_msg_to_array
from .health import InputMonitor
from .image_cdr import parse_image
from .inputs import AdaptiveSubscription, reliability_name
from .loss import LossMonitor, LossReport

INPUT_REFRESH_S = 1.0  # input_reliability auto looks at the publishers this soon after they changed
ERROR_THROTTLE_S = 5.0


@dataclass
class Frame:
    """A received message waiting for the worker."""

    msg: Image | CompressedImage
    received: float  # time.perf_counter() at receipt
    image: np.ndarray | None = None  # raw images are checked and viewed in the callback
    encoding: str = ""
    taken: float = 0.0  # time.perf_counter() when the worker took it
    size: tuple[int, int] = (0, 0)  # the camera image's (H, W), known once decoded


@dataclass
class Camera:
    """One input stream with its publishers and counters."""

    name: str  # '' = the single default camera
    publishers: dict[str, Publisher] = field(default_factory=dict)
    pending: Frame | None = None
    info: CameraInfoPairing | None = None  # recent CameraInfo, paired with frames by stamp
    inputs: list[AdaptiveSubscription] = field(default_factory=list)  # image, camera_info
    loss: LossMonitor = field(default_factory=LossMonitor)
    last_loss: LossReport | None = None
    dropped: int = 0  # replaced by a newer frame before processing, or too old
    rejected: int = 0  # malformed messages
    processed: int = 0
    idle: int = 0  # received while nobody subscribed to any output: not segmented
    failed: int = 0  # frames lost to an error in the worker (segmenting or publishing)
    last_failure: str = ""
    last_reject: str = ""
    reported: tuple[int, int] = (0, 0)  # (rejected, failed) at the last /diagnostics message

    @property
    def label(self) -> str:
        return self.name or "image"

    @property
    def prefix(self) -> str:
        """The camera's topic namespace below the node's (``''`` for the single default camera)."""
        return f"{self.name}/" if self.name else ""


def sibling_topic(topic: str, name: str = "camera_info") -> str:
    """``/camera/image_raw`` -> ``/camera/camera_info`` (image_transport's camera_info rule)."""
    head, sep, _ = topic.rpartition("/")
    return f"{head}{sep}{name}" if sep else name


class CameraInputs:
    """The cameras of one node: subscriptions, newest-frame slots, input health and refusals.

    ``lock`` guards the cameras' slots and counters; the worker waits on it for frames."""

    def __init__(self, node: Node, core: SegmentationCore) -> None:  # noqa: F821 (ros/core.py, composing the parts)
        self.node, self.core = node, core
        self.lock = threading.Condition()
        self.cameras: list[Camera] = []
        self.monitor = InputMonitor()  # receive times and stamp delays, for /diagnostics
        self.subscriptions: list[AdaptiveSubscription] = []
        # runs only while an input's publishers changed (matched events wake it): idle cameras cost nothing
        self.refresh_timer = node.create_timer(INPUT_REFRESH_S, self.refresh)

    def depth_qos(self) -> QoSProfile:
        """Depth images: fixed reliability (best effort unless input_reliability is reliable)."""
        values = self.core.values
        reliable = values["input_reliability"] == "reliable"
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=values["input_depth"],
                          durability=DurabilityPolicy.VOLATILE,
                          reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)

    def subscribe(self) -> list[Camera]:
        """A :class:`Camera` per name in ``cameras`` (or the default one) with its subscriptions."""
        values = self.core.values
        compressed = values["input_transport"] == "compressed"
        mode, depth = values["input_reliability"], values["input_depth"]
        cameras = [Camera(name) for name in (values["cameras"] or [""])]
        for cam in cameras:
            image_topic, info_topic = self.input_topics(cam.prefix)
            cam.inputs = [  # reliability fixed, or following the publishers (input_reliability auto)
                AdaptiveSubscription(self.node, CompressedImage if compressed else Image,
                                     image_topic + ("/compressed" if compressed else ""), self._on_image(cam),
                                     mode, depth, on_lost=cam.loss.on_middleware_lost, on_change=self.wake_refresh,
                                     raw=not compressed),  # raw images: read in place (image_cdr)
                AdaptiveSubscription(self.node, CameraInfo, info_topic, self._on_camera_info(cam), mode, depth,
                                     on_change=self.wake_refresh),
            ]
            cam.info = CameraInfoPairing(lambda sub=cam.inputs[1]: self.node.count_publishers(sub.topic))
            self.subscriptions += cam.inputs
        self.monitor.reset(time.perf_counter())
        with self.lock:
            self.cameras = cameras
        self.wake_refresh()  # the new inputs' first look at their publishers
        return cameras

    def unsubscribe(self) -> None:
        """Remove every subscription (re-created ones too) and forget the cameras."""
        for sub in self.subscriptions:
            self.node.destroy_subscription(sub.subscription)
        self.subscriptions = []
        with self.lock:
            self.cameras = []
            self.lock.notify_all()

    def input_topics(self, prefix: str) -> tuple[str, str]:
        """(image topic, camera_info topic) after remapping.

        camera_info follows image_transport's rule: beside the resolved image topic (``-r
        image:=/camera/image_raw`` -> ``/camera/camera_info``), unless ``camera_info`` itself is remapped.
        """
        image = self.node.resolve_topic_name(f"{prefix}image")
        info = f"{prefix}camera_info"
        remapped = self.node.resolve_topic_name(info) != self.node.resolve_topic_name(info, only_expand=True)
        return image, (self.node.resolve_topic_name(info) if remapped else sibling_topic(image))

    def snapshot(self) -> list[Camera]:
        with self.lock:
            return list(self.cameras)

    # -- callbacks: keep only the newest frame -------------------------------------------------------
    def _on_image(self, cam: Camera) -> Callable[[Image | CompressedImage | bytes, dict], None]:
        def callback(msg: Image | CompressedImage | bytes, info: dict) -> None:  # info: rclpy's message info
            received = time.perf_counter()
            raw = None
            if isinstance(msg, bytes):  # a raw image's CDR: its pixels stay where they are
                try:
                    raw = parse_image(msg)
                    msg = raw.message() if raw is not None else deserialize_message(msg, Image)
                except Exception as exc:  # noqa: BLE001 - not an Image the middleware could read either
                    self.reject(cam, Image(), f"unreadable message ({safe_text(one_line(exc), 120)})")
                    return
            stamp = stamp_ns(msg.header)
            cam.loss.on_image(stamp, cam.inputs[0].sequence_number(info))
            self.monitor.tick(received, (self.node.get_clock().now().nanoseconds - stamp) / 1e9 if stamp else None)
            if not self.core.outputs.wanted(cam):  # nobody listens: no inference, counted
                with self.lock:
                    cam.idle += 1
                return
            frame = Frame(msg, received)
            max_pixels = self.core.values["max_pixels"]
            try:  # cheap header checks here, so a bad frame never displaces a good waiting one
                if isinstance(msg, Image):
                    frame.image, frame.encoding = image_msg_to_array(raw or msg, max_pixels)
                    check_image(frame.image, frame.encoding, max_pixels)
                else:  # compressed: the size in the JPEG/PNG header, nothing decoded here
                    check_compressed_msg(msg, max_pixels)
            except ImageError as exc:
                self.reject(cam, msg, str(exc))
                return
            with self.lock:
                if cam.pending is not None:
                    cam.dropped += 1
                cam.pending = frame
                self.lock.notify()
        return callback

    def _on_camera_info(self, cam: Camera) -> Callable[[CameraInfo], None]:
        def callback(msg: CameraInfo) -> None:
            cam.info.add(msg)
            cam.loss.on_camera_info(stamp_ns(msg.header), time.monotonic())
        return callback

    def take(self, stop: threading.Event, timeout: float) -> list[tuple[Camera, Frame]]:
        """Wait up to ``timeout`` for waiting frames; take the newest of every camera (the slots empty)."""
        with self.lock:
            self.lock.wait_for(lambda: stop.is_set() or any(c.pending for c in self.cameras), timeout=timeout)
            batch = [(c, c.pending) for c in self.cameras if c.pending is not None]
            taken = time.perf_counter()
            for cam, frame in batch:
                cam.pending = None
                frame.taken = taken
        return batch

    def wake(self) -> None:
        """Wake a worker waiting in :meth:`take` (to stop)."""
        with self.lock:
            self.lock.notify_all()

    def reject(self, cam: Camera, msg: Image | CompressedImage, reason: str) -> None:
        """A malformed or over-budget frame: counted per camera, logged (throttled), in /diagnostics."""
        with self.lock:
            cam.rejected += 1
            cam.last_reject = safe_text(reason, 300)
        self.node.get_logger().error(  # frame_id and reason come from the sender: escaped and cut
            f"dropping {cam.label} frame (frame_id '{safe_text(msg.header.frame_id, 80)}'): {cam.last_reject}",
            throttle_duration_sec=ERROR_THROTTLE_S)

    def wake_refresh(self) -> None:
        """An input's publishers changed: :meth:`refresh` runs within INPUT_REFRESH_S."""
        if self.refresh_timer.is_canceled():
            self.refresh_timer.reset()

    def refresh(self) -> None:
        """input_reliability auto: follow the publishers' reliability as they come and go. Only
        inputs whose publishers changed are looked at; with none left the timer stops until the
        next matched event (:meth:`wake_refresh`)."""
        cameras = self.snapshot()
        if all(not sub.dirty and sub.events for cam in cameras for sub in cam.inputs):
            self.refresh_timer.cancel()
            return
        for cam in cameras:
            changed = [sub for sub in cam.inputs if sub.refresh()]
            for sub in changed:
                offered = ", ".join(reliability_name(r) for r in sub.publisher_reliabilities()) or "nothing"
                self.node.get_logger().info(f"{sub.topic}: publishers offer {offered}; subscribed "
                                            f"{reliability_name(sub.reliability)}")
            if changed:  # re-created: the images in flight were dropped here, not lost by the camera
                cam.loss.forget_pending()
            elif cam.inputs[0].publishers_changed:  # a camera came or went: no gap to its predecessor
                cam.loss.forget_pending(arrived_before=cam.inputs[0].joined_at)
            if cam.inputs[0].publishers_changed or cam.inputs[1].publishers_changed:
                cam.info.restart()  # its first frames may wait for its first CameraInfo
