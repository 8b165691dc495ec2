"""``~/label_info``: the model's classes as ``vision_msgs/LabelInfo``, ROS 2's convention for them.

Beside ``~/legend`` (JSON with colours and the model), for clients that expect the vision_msgs
4.x message: ``class_map`` holds the same ids and names as
the legend, ``threshold`` the node's ``confidence_threshold``. Reliable and transient local, depth
1, so a subscriber that starts later still gets it; published at activation, after every model
change and when ``confidence_threshold`` changes.

vision_msgs has no PyPI wheel: a ROS install gets it from rosdep (``ros-jazzy-vision-msgs``), the
development venv builds it from ``../shared/vision_msgs`` (``make setup``). Where it cannot be
imported the node runs without ``~/label_info`` and says so once at start-up.
"""
from __future__ import annotations

from typing import Any, Sequence

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

try:
    from vision_msgs.msg import LabelInfo, VisionClass
except ImportError as _exc:  # no vision_msgs in this environment: the topic is off
    LabelInfo = VisionClass = None
    UNAVAILABLE = (f"~/label_info (vision_msgs/LabelInfo) is off: vision_msgs cannot be imported ({_exc}); "
                   "install ros-jazzy-vision-msgs (rosdep) or build ../shared/vision_msgs (make setup)")
else:
    UNAVAILABLE = ""

TOPIC = "~/label_info"
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def label_info_msg(class_names: Sequence[str], threshold: float, stamp: Any = None) -> Any:
    """A LabelInfo with ids 0..N-1 named ``class_names`` and ``threshold`` (needs vision_msgs)."""
    msg = LabelInfo()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.class_map = [VisionClass(class_id=i, class_name=str(name)) for i, name in enumerate(class_names)]
    msg.threshold = float(threshold)
    return msg


class LabelInfoOutput:
    """The node's ``~/label_info`` publisher (created on :meth:`advertise`, removed on :meth:`withdraw`)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._pub = None
        self.available = LabelInfo is not None
        if not self.available:
            node.get_logger().info(UNAVAILABLE)

    def advertise(self) -> None:
        if self.available and self._pub is None:
            self._pub = self._node.create_publisher(LabelInfo, TOPIC, LATCHED)

    def publish(self, class_names: Sequence[str], threshold: float) -> None:
        """Publish (again): at activation, after a model change or a new threshold."""
        if self._pub is not None:
            self._pub.publish(label_info_msg(class_names, threshold, self._node.get_clock().now().to_msg()))

    def withdraw(self) -> None:
        if self._pub is not None:
            self._node.destroy_publisher(self._pub)
            self._pub = None
