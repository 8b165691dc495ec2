"""``bisenet-ros camera``: a camera driver for users without one (no usb_cam, v4l2_camera or
image_publisher in a pip-only environment): frames of a :class:`~bisenet_ros.data.camera_source.FrameSource`
published as ``sensor_msgs/Image`` + ``sensor_msgs/CameraInfo`` with the same stamp, at a rate.

Topics as a camera driver names them: ``<ns>/image_raw`` and ``<ns>/camera_info`` beside it.
QoS: keep-last ``depth``, reliable (default, what rclcpp drivers offer) or best effort; volatile.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from ..data.camera_source import Calibration, CameraError, FrameSource
from .conversions import array_to_image_msg
from .transport import apply_fastdds_profile


@dataclass
class CameraSettings:
    image_topic: str = "/camera/image_raw"
    info_topic: str = "/camera/camera_info"
    frame_id: str = "camera"
    rate: float | None = None  # Hz; None = the source's own (video fps), else 10
    loop: bool = True
    max_frames: int = 0  # 0 = no limit
    reliable: bool = True
    depth: int = 5
    wait_subscriber: float = 0.0  # seconds to wait for a subscriber before the first frame


def info_message(cal: Calibration, frame_id: str) -> CameraInfo:
    msg = CameraInfo()
    msg.header.frame_id = frame_id
    msg.width, msg.height = cal.width, cal.height
    msg.distortion_model = cal.distortion_model
    msg.d = [float(v) for v in cal.d]
    msg.k = np.asarray(cal.k, dtype=np.float64)
    msg.r = np.asarray(cal.r, dtype=np.float64)
    msg.p = np.asarray(cal.p, dtype=np.float64)
    return msg


class CameraNode(Node):
    """Publishes the frames; :meth:`play` runs until the source ends (``loop`` off) or Ctrl-C."""

    def __init__(self, source: FrameSource, calibration: Calibration | None, settings: CameraSettings,
                 context=None) -> None:
        super().__init__("camera", context=context)
        self.source, self.calibration, self.s = source, calibration, settings
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=settings.depth,
                         reliability=ReliabilityPolicy.RELIABLE if settings.reliable else ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.VOLATILE)
        self.image_pub = self.create_publisher(Image, settings.image_topic, qos)
        self.info_pub = self.create_publisher(CameraInfo, settings.info_topic, qos)
        self.published = 0
        self._info: CameraInfo | None = None

    def _camera_info(self, width: int, height: int) -> CameraInfo:
        if self._info is None:
            cal = self.calibration
            if cal is not None and (cal.width, cal.height) != (width, height):
                raise CameraError(f"the camera info is for {cal.width}x{cal.height} images, the {self.source.kind} "
                                  f"gives {width}x{height}")
            self._info = info_message(cal or Calibration.uncalibrated(width, height), self.s.frame_id)
        return self._info

    def publish(self, image: np.ndarray, encoding: str) -> None:
        info = self._camera_info(image.shape[1], image.shape[0])
        msg = array_to_image_msg(np.ascontiguousarray(image), encoding)
        stamp = self.get_clock().now().to_msg()
        msg.header.stamp = info.header.stamp = stamp
        msg.header.frame_id = self.s.frame_id
        self.info_pub.publish(info)  # first: a consumer pairing by stamp has it when the image comes
        self.image_pub.publish(msg)
        self.published += 1

    def wait_for_subscriber(self) -> bool:
        """Until the image and the camera_info topics both have a subscriber (a consumer such as
        the node takes both), at most ``wait_subscriber`` s; True if the image topic has one."""
        deadline = time.monotonic() + self.s.wait_subscriber
        while time.monotonic() < deadline:
            if self.image_pub.get_subscription_count() > 0 and self.info_pub.get_subscription_count() > 0:
                return True
            time.sleep(0.02)
        return self.image_pub.get_subscription_count() > 0

    def play(self) -> int:
        """Publish at the rate (never bursting to catch up); returns the frames published."""
        period = 1.0 / (self.s.rate or self.source.fps or 10.0)
        if self.s.wait_subscriber > 0:
            self.wait_for_subscriber()
        next_t = time.monotonic()
        while True:
            any_frame = False
            for image, encoding in self.source.frames():
                any_frame = True
                delay = next_t - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.publish(image, encoding)
                next_t += period
                if next_t < time.monotonic():  # cannot keep the rate: do not burst to catch up
                    next_t = time.monotonic()
                if self.s.max_frames and self.published >= self.s.max_frames:
                    return self.published
            if not self.s.loop or self.source.live or not any_frame:
                return self.published


def run_camera_node(source: FrameSource, calibration: Calibration | None, settings: CameraSettings) -> int:
    """Init rclpy (with the package's Fast DDS profile, as the node), play, shut down."""
    apply_fastdds_profile()
    context = rclpy.Context()
    rclpy.init(args=["bisenet-ros-camera"], context=context)
    node = CameraNode(source, calibration, settings, context=context)
    try:
        sent = node.play()
        if settings.reliable:  # the last frames reach the subscribers before the publishers go
            from rclpy.duration import Duration

            for pub in (node.info_pub, node.image_pub):
                pub.wait_for_all_acked(Duration(seconds=5))
        return sent
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
