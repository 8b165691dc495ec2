"""The node's 3D and mask outputs: ``~/points`` (semantic PointCloud2), ``~/mask`` and class areas.

The arithmetic lives in the ROS-free :mod:`bisenet_ros.data.pointcloud`; this module wires it to topics:

- per camera a depth subscription (``depth``, or ``<camera>/depth`` with ``cameras``), which
  exists only while ``publish_points`` is on and someone subscribes to ``~/points`` (checked
  within :data:`FOLLOW_PERIOD_S` after a subscriber came or went -- the publisher's matched event
  -- or ``publish_points`` changed; nothing runs while nothing changes), so no depth message is
  even received otherwise;
- depth messages are checked in the callback (encoding, size, step) and kept in a small buffer
  (:data:`DEPTH_BUFFER` per camera); when a frame's labels are ready the depth with the image's
  stamp (exactly, or within ``depth_tolerance_ms``) is back-projected with the camera_info K;
- problems (no depth, depth of another encoding or size, no camera_info, unknown class names)
  skip that frame's cloud, never its labels: one warning line per :data:`LOG_THROTTLE_S` and a
  WARN in ``/diagnostics`` for :data:`PROBLEM_HOLD_S`.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from rclpy.event_handler import PublisherEventCallbacks, UnsupportedEventTypeError
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile
from rclpy.subscription import Subscription
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from ..data.datasets import DatasetPreset
from ..data.images import stamp_ns
from ..data.pointcloud import (
    CloudOptions, DepthBuffer, PointCloudBuilder, class_areas, class_mask, class_table, depth_intrinsics,
    depth_to_metres, resolve_classes,
)
from ..errors import BisenetError, ImageError, safe_text
from .conversions import array_to_image_msg, depth_msg_to_array, points_to_cloud_msg

DEPTH_BUFFER = 5  # depth messages kept per camera for pairing by stamp
FOLLOW_PERIOD_S = 0.5  # depth subscriptions follow ~/points' subscribers this soon after they change
DEPTH_GRACE_S = 3.0  # "no depth received" is a problem only this long after subscribing
DEPTH_WAIT_S = 0.1  # labels ready before their depth arrived: wait this long for it (worker thread)
LOG_THROTTLE_S = 5.0
PROBLEM_HOLD_S = 5.0  # a problem keeps /diagnostics at WARN this long
CLASS_PARAMETERS = ("points_classes", "mask_classes")


def check_class_parameters(values: dict[str, Any], class_names: Sequence[str]) -> str | None:
    """The reason ``points_classes``/``mask_classes`` in ``values`` do not fit the model's classes."""
    for name in CLASS_PARAMETERS:
        if values.get(name):
            try:
                resolve_classes(values[name], class_names)
            except BisenetError as exc:
                return f"{name}: {exc}"
    return None


@dataclass
class CameraDepth:
    """One camera's depth input, outputs and counters."""

    label: str
    topic: str
    points: Publisher
    mask: Publisher
    buffer: DepthBuffer = field(default_factory=lambda: DepthBuffer(DEPTH_BUFFER))
    subscription: Subscription | None = None
    subscribed_at: float = 0.0
    resolved: str = ""  # the depth subscription's full topic name (for messages)
    clouds: int = 0
    skipped: int = 0


class SemanticOutputs:
    """``~/points``, ``~/mask`` and class areas for the cameras of one node."""

    def __init__(self, node: Node, values: dict[str, Any], depth_qos: QoSProfile,
                 create_publisher: Callable[..., Publisher] | None = None) -> None:
        self._node = node
        self._create_publisher = create_publisher or node.create_publisher
        self._values = values  # the node's live parameter values (read, never written)
        self._qos = depth_qos
        self._cameras: dict[str, CameraDepth] = {}
        self._builder = PointCloudBuilder()
        self._tables: dict[tuple, np.ndarray] = {}
        self._lock = threading.Lock()
        self._problems: dict[str, tuple[float, str]] = {}  # kind -> (monotonic time, text)
        self._logged: dict[str, float] = {}  # kind -> when last logged
        self._events = True  # ~/points publishers report matching; False: follow_subscribers polls
        self._timer = node.create_timer(FOLLOW_PERIOD_S, self.follow_subscribers)
        # other consumers of a camera's clouds (the Foxglove view): wanted? and each cloud made
        self.extra_subscribers: Callable[[str], bool] = lambda label: False
        self.on_cloud: Callable[[str, PointCloud2], None] | None = None

    def add_camera(self, label: str, prefix: str, out_qos: QoSProfile) -> dict[str, Publisher]:
        """Publishers ``~/[<camera>/]points`` and ``mask`` for a camera; returns them by name."""
        try:  # a subscriber coming or going wakes follow_subscribers
            points = self._create_publisher(PointCloud2, f"~/{prefix}points", out_qos,
                                            event_callbacks=PublisherEventCallbacks(
                                                matched=lambda _: self.wake(), use_default_callbacks=False))
        except UnsupportedEventTypeError:  # a middleware without matched events: poll
            self._events = False
            points = self._create_publisher(PointCloud2, f"~/{prefix}points", out_qos)
        self.wake()
        mask = self._create_publisher(Image, f"~/{prefix}mask", out_qos,  # no handlers: see publishers.output_events
                                      event_callbacks=PublisherEventCallbacks(use_default_callbacks=False))
        self._cameras[label] = CameraDepth(label, f"{prefix}depth", points, mask)
        return {"points": points, "mask": mask}

    def close(self) -> None:
        """Stop following subscribers and drop the depth subscriptions (the node's publishers of
        ``points``/``mask`` are destroyed with the node's other outputs)."""
        self._node.destroy_timer(self._timer)
        for cam in self._cameras.values():
            if cam.subscription is not None:
                self._node.destroy_subscription(cam.subscription)
                cam.subscription = None
                cam.buffer.clear()

    # -- depth input ---------------------------------------------------------------------------------
    def wake(self) -> None:
        """Who wants ``~/points`` may have changed (a subscriber, ``publish_points``): follow within
        FOLLOW_PERIOD_S."""
        if self._timer.is_canceled():
            self._timer.reset()

    def follow_subscribers(self) -> None:
        """Subscribe to a camera's depth while ``~/points`` is wanted, unsubscribe otherwise; then
        sleep until :meth:`wake` (unless the middleware has no matched events)."""
        if self._events:
            self._timer.cancel()
        for cam in self._cameras.values():
            wanted = bool(self._values["publish_points"]) and (cam.points.get_subscription_count() > 0
                                                               or self.extra_subscribers(cam.label))
            if wanted and cam.subscription is None:
                cam.subscription = self._node.create_subscription(Image, cam.topic, self._on_depth(cam), self._qos)
                cam.subscribed_at, cam.resolved = time.monotonic(), cam.subscription.topic_name
            elif not wanted and cam.subscription is not None:
                self._node.destroy_subscription(cam.subscription)
                cam.subscription = None
                cam.buffer.clear()

    def _on_depth(self, cam: CameraDepth):
        def callback(msg: Image) -> None:
            try:
                depth_msg_to_array(msg)  # cheap checks (a view); the conversion runs when paired
            except ImageError as exc:
                self._report(f"depth on '{cam.resolved}' refused: {exc}")
                return
            cam.buffer.add(stamp_ns(msg.header), msg)
        return callback

    # -- per frame (worker thread) ------------------------------------------------------------------
    def publish(self, label: str, header: Header, labels: np.ndarray, camera_size: tuple[int, int],
                info: CameraInfo | None, preset: DatasetPreset) -> tuple[dict[str, float], dict[str, int]]:
        """Publish the mask and the cloud of one labelled frame if wanted; returns the timing values
        (``points_ms``) and counts (``points``) for ``~/timing``, empty when no cloud was made."""
        cam = self._cameras[label]
        if self._values["mask_classes"] and cam.mask.get_subscription_count() > 0:
            table = self._table("mask_classes", preset)
            if table is not None:
                cam.mask.publish(array_to_image_msg(class_mask(labels, table), "mono8", header))
        if cam.subscription is None or not self._values["publish_points"]:
            return {}, {}
        start = time.perf_counter()
        try:
            cloud = self._cloud(cam, header, labels, camera_size, info, preset)
        except BisenetError as exc:
            cam.skipped += 1
            self._report(f"no point cloud for the {cam.label} frame: {exc}")
            return {}, {}
        if cloud is None:
            cam.skipped += 1
            return {}, {}
        cam.points.publish(cloud)
        if self.on_cloud is not None:
            self.on_cloud(cam.label, cloud)
        cam.clouds += 1
        return {"points_ms": (time.perf_counter() - start) * 1e3}, {"points": int(cloud.width)}

    def _cloud(self, cam: CameraDepth, header: Header, labels: np.ndarray, camera_size: tuple[int, int],
               info: CameraInfo | None, preset: DatasetPreset) -> PointCloud2 | None:
        tolerance_ns = int(round(self._values["depth_tolerance_ms"] * 1e6))
        msg, diff = cam.buffer.match(stamp_ns(header), tolerance_ns, DEPTH_WAIT_S)
        if msg is None:
            if diff is None:
                if cam.buffer.received or time.monotonic() - cam.subscribed_at > DEPTH_GRACE_S:
                    raise ImageError(f"no depth image received on '{cam.resolved}'")
                return None  # just subscribed: the first depth images are on their way
            raise ImageError(f"no depth image within depth_tolerance_ms = {self._values['depth_tolerance_ms']:g} "
                             f"of the image stamp (nearest {diff / 1e6:.1f} ms away)")
        if info is None:
            raise ImageError("no camera_info received: K is needed to back-project the depth")
        if msg.header.frame_id and header.frame_id and msg.header.frame_id != header.frame_id:
            self._report(f"depth frame_id '{safe_text(msg.header.frame_id, 80)}' differs from the image's "
                         f"'{safe_text(header.frame_id, 80)}' "
                         "(the depth must be registered to the colour camera); using it as registered")
        depth, encoding = depth_msg_to_array(msg)
        intrinsics = depth_intrinsics(info.k, (info.height, info.width), depth.shape, camera_size)
        classes = None
        if self._values["points_classes"]:
            table = self._table("points_classes", preset)
            if table is None:
                return None
            classes = np.flatnonzero(table)
        options = CloudOptions(stride=self._values["points_stride"], min_depth=self._values["points_min_depth"],
                               max_depth=self._values["points_max_depth"], classes=classes)
        points = self._builder.build(depth_to_metres(depth, encoding), intrinsics, labels, preset.palette, options)
        return points_to_cloud_msg(points, header)

    def _table(self, name: str, preset: DatasetPreset) -> np.ndarray | None:
        """Boolean class table of parameter ``name`` for the model's classes (None: unknown names, reported)."""
        key = (name, tuple(self._values[name]), preset.class_names)
        with self._lock:
            table = self._tables.get(key)
        if table is None:
            try:
                table = class_table(resolve_classes(self._values[name], preset.class_names), preset.num_classes)
            except BisenetError as exc:
                self._report(f"{name}: {exc}")
                return None
            with self._lock:
                if len(self._tables) > 8:
                    self._tables.clear()
                self._tables[key] = table
        return table

    @staticmethod
    def areas(labels: np.ndarray, preset: DatasetPreset) -> dict[str, float]:
        """``area_<class>``: fraction of the pixels per class present in the frame."""
        return {f"area_{name}": frac for name, frac in class_areas(labels, preset.class_names).items()}

    # -- problems and diagnostics -------------------------------------------------------------------
    def _report(self, text: str) -> None:
        """Log ``text`` (at most once per LOG_THROTTLE_S per kind of problem: the text without its
        numbers and quoted names) and keep it for /diagnostics. ``text`` may quote a message's
        strings (frame_id, encoding): escaped and cut here, whoever made it."""
        text = safe_text(text, 300)
        kind = re.sub(r"\d+(\.\d+)?", "#", re.sub(r"'[^']*'", "''", text))  # quoted names: one kind
        now = time.monotonic()
        with self._lock:
            self._problems[kind] = (now, text)
            if len(self._problems) > 16:  # bounded: forget the oldest kind
                self._problems.pop(min(self._problems, key=lambda k: self._problems[k][0]))
            log = now - self._logged.get(kind, -LOG_THROTTLE_S) >= LOG_THROTTLE_S
            if log:
                self._logged[kind] = now
                if len(self._logged) > 64:  # bounded: forget kinds not logged for a while
                    self._logged = {k: t for k, t in self._logged.items() if now - t < LOG_THROTTLE_S}
        if log:
            self._node.get_logger().warning(text)

    def status(self) -> tuple[str | None, dict[str, str]]:
        """(warning for /diagnostics or None, values): clouds published/skipped, last problem.
        The warning joins the problems of the last PROBLEM_HOLD_S, newest first."""
        now = time.monotonic()
        with self._lock:
            problems = sorted(self._problems.values(), reverse=True)
        recent = [text for when, text in problems if now - when < PROBLEM_HOLD_S]
        text = problems[0][1] if problems else ""
        values = {
            "points_clouds": str(sum(c.clouds for c in self._cameras.values())),
            "points_skipped": str(sum(c.skipped for c in self._cameras.values())),
            "depth_subscribed": ",".join(c.label for c in self._cameras.values() if c.subscription is not None),
            "points_last_problem": text,
        }
        return ("; ".join(recent[:3]) if recent else None), values
