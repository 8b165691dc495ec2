"""Foxglove live view: the node's outputs over the Foxglove WebSocket protocol, no ROS needed on the viewer.

With ``foxglove_port`` > 0 the node serves a Foxglove WebSocket server (``foxglove-sdk``) on
``foxglove_address:foxglove_port``; the Foxglove app (desktop or web, "Open connection" ->
"Foxglove WebSocket" -> ``ws://HOST:PORT``) shows it live. Channels carry the ROS topic names
(resolved as the node resolves its own):

- ``~/overlay/compressed``: the overlay, JPEG (``jpeg_quality``), ``foxglove.CompressedImage``;
- ``~/color``: the colour mask, PNG (lossless, ``png_level``), ``foxglove.CompressedImage``;
- ``~/labels/compressed``: the class ids, PNG (mono8/mono16, exact), ``foxglove.CompressedImage``;
- ``~/points``: the semantic point cloud (``publish_points``), ``foxglove.PointCloud``;
- ``~/timing`` and ``/diagnostics``: JSON with the same keys as the DiagnosticArray (numbers as numbers);
- ``~/legend``: the legend JSON, sent again every :data:`LATCH_PERIOD_S` while subscribed (the
  protocol has no latching).

Nothing is encoded for a channel without a Foxglove subscriber; a frame nobody (ROS or Foxglove)
wants is not segmented. The server binds ``foxglove_address`` (default 127.0.0.1: this host only);
docs/node.md says when and how to open it. ``foxglove-sdk`` is optional: without it the node
says once how to install it and runs without the view.
"""
from __future__ import annotations

import json
from typing import Any

from rclpy.node import Node

from ..errors import one_line
from .conversions import array_to_compressed_msg

MISSING = "foxglove_port is set but foxglove-sdk is not installed: pip install foxglove-sdk (the Foxglove view is off)"
LATCH_PERIOD_S = 1.0
#: sensor_msgs/PointField datatype -> foxglove numeric type name ("rgb", packed bytes, as Uint32)
POINT_TYPES = {1: "Int8", 2: "Uint8", 3: "Int16", 4: "Uint16", 5: "Int32", 6: "Uint32", 7: "Float32", 8: "Float64"}


def sdk() -> Any:
    """The foxglove-sdk modules (imported when the view is first started), or None without it."""
    try:
        import foxglove
        import foxglove.channels
        import foxglove.messages
    except ImportError:
        return None
    return foxglove


def _stamp(header: Any) -> Any:
    from foxglove.messages import Timestamp

    return Timestamp(sec=header.stamp.sec, nsec=header.stamp.nanosec)


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def status_json(status: Any) -> dict:
    """A DiagnosticStatus as JSON (values that read as numbers become numbers, for Foxglove's plots)."""
    return {"level": int.from_bytes(status.level, "little") if isinstance(status.level, bytes) else int(status.level),
            "name": status.name, "message": status.message, "hardware_id": status.hardware_id,
            "values": {kv.key: _number(kv.value) for kv in status.values}}


def diagnostics_json(msg: Any) -> dict:
    return {"stamp": {"sec": msg.header.stamp.sec, "nsec": msg.header.stamp.nanosec},
            "frame_id": msg.header.frame_id, "status": [status_json(s) for s in msg.status]}


class CameraChannels:
    """One camera's image, cloud and timing channels."""

    def __init__(self, node: Node, context: Any, prefix: str) -> None:
        import foxglove
        from foxglove.channels import CompressedImageChannel, PointCloudChannel

        topic = lambda name: node.resolve_topic_name(f"~/{prefix}{name}")  # noqa: E731
        self.overlay = CompressedImageChannel(topic("overlay/compressed"), context=context)
        self.color = CompressedImageChannel(topic("color"), context=context)
        self.labels = CompressedImageChannel(topic("labels/compressed"), context=context)
        self.points = PointCloudChannel(topic("points"), context=context)
        self.timing = foxglove.Channel(topic("timing"), context=context)

    def all(self) -> list[Any]:
        return [self.overlay, self.color, self.labels, self.points, self.timing]


class FoxgloveView:
    """The node's Foxglove WebSocket server and channels (handed the node, as diagnostic_updater is)."""

    def __init__(self, node: Node, values: dict[str, Any]) -> None:
        self._node, self._values = node, values
        self._server = None
        self._context = None
        self._cameras: dict[str, CameraChannels] = {}
        self._legend_channel = self._diag_channel = None
        self._legend: dict | None = None
        self._timer = None
        self._told_missing = False
        self._prefixes: dict[str, str] = {}

    @property
    def on(self) -> bool:
        return self._server is not None

    def start(self, cameras: dict[str, str]) -> None:
        """Serve ``cameras`` (label -> topic prefix) when ``foxglove_port`` > 0; a port that cannot be
        served is one error line, the node keeps segmenting without the view."""
        self._prefixes = dict(cameras)
        port, address = self._values["foxglove_port"], self._values["foxglove_address"]
        if not port:
            return
        foxglove = sdk()
        if foxglove is None:
            if not self._told_missing:
                self._told_missing = True
                self._node.get_logger().warning(MISSING)
            return
        self._context = foxglove.Context()
        try:
            self._server = foxglove.start_server(name=self._node.get_fully_qualified_name(), host=address, port=port,
                                                 context=self._context)
        except Exception as exc:  # noqa: BLE001 - the SDK's error for a busy port or an address not here
            self._context = None
            self._node.get_logger().error(f"Foxglove view off: cannot serve on {address}:{port}: {one_line(exc)}")
            return
        self._cameras = {label: CameraChannels(self._node, self._context, prefix) for label, prefix in cameras.items()}
        self._legend_channel = foxglove.Channel(self._node.resolve_topic_name("~/legend"), context=self._context)
        self._diag_channel = foxglove.Channel("/diagnostics", context=self._context)
        self._timer = self._node.create_timer(LATCH_PERIOD_S, self._resend_legend)
        self._node.get_logger().info(
            f"Foxglove view on ws://{address}:{self._server.port} (Foxglove: Open connection -> Foxglove WebSocket)")

    def restart(self) -> None:
        """foxglove_port/foxglove_address changed at run time: serve on the new ones (or stop)."""
        self.stop()
        self.start(self._prefixes)

    def stop(self) -> None:
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
            self._timer = None
        for channel in [c for cam in self._cameras.values() for c in cam.all()] + \
                [self._legend_channel, self._diag_channel]:
            if channel is not None:
                channel.close()
        self._cameras, self._legend_channel, self._diag_channel = {}, None, None
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._context = None

    # -- what Foxglove subscribers want ---------------------------------------------------------------
    def wanted(self, label: str) -> set[str]:
        """The outputs of camera ``label`` a Foxglove client subscribed to ('labels', 'overlay', 'color', ...)."""
        cam = self._cameras.get(label)
        if cam is None:
            return set()
        found = {name for name in ("overlay", "color", "labels", "points", "timing")
                 if getattr(cam, name).has_sinks()}
        return found | ({"labels"} if found else set())

    def wants_points(self, label: str) -> bool:
        cam = self._cameras.get(label)
        return cam is not None and cam.points.has_sinks()

    # -- per frame and per message ------------------------------------------------------------------------
    def frame(self, label: str, header: Any, res: Any, label_encoding: str) -> None:
        """The frame's images on the channels that have subscribers (worker thread)."""
        cam = self._cameras.get(label)
        if cam is None:
            return
        from foxglove.messages import CompressedImage

        v = self._values
        images = ((cam.overlay, res.overlay, res.overlay_encoding, "jpeg", v["jpeg_quality"]),
                  (cam.color, res.color, "rgb8", "png", v["png_level"]),
                  (cam.labels, res.labels, label_encoding, "png", v["png_level"]))
        for channel, array, encoding, fmt, level in images:
            if array is not None and channel.has_sinks():
                msg = array_to_compressed_msg(array, encoding, None, fmt, level)
                channel.log(CompressedImage(timestamp=_stamp(header), frame_id=header.frame_id, data=bytes(msg.data),
                                            format=fmt))

    def timing(self, label: str, msg: Any) -> None:
        cam = self._cameras.get(label)
        if cam is not None and cam.timing.has_sinks():
            cam.timing.log(diagnostics_json(msg))

    def diagnostics(self, msg: Any) -> None:
        if self._diag_channel is not None and self._diag_channel.has_sinks():
            self._diag_channel.log(diagnostics_json(msg))

    def legend(self, text: str) -> None:
        self._legend = json.loads(text)
        self._resend_legend()

    def _resend_legend(self) -> None:
        if self._legend is not None and self._legend_channel is not None and self._legend_channel.has_sinks():
            self._legend_channel.log(self._legend)

    def points(self, label: str, cloud: Any) -> None:
        """A ``~/points`` PointCloud2 as a foxglove.PointCloud (same bytes, same fields)."""
        cam = self._cameras.get(label)
        if cam is None or not cam.points.has_sinks():
            return
        from foxglove.messages import PackedElementField, PackedElementFieldNumericType, PointCloud, Pose, Quaternion, Vector3

        fields = [PackedElementField(name=f.name, offset=f.offset, type=getattr(
            PackedElementFieldNumericType, "Uint32" if f.name in ("rgb", "rgba") else POINT_TYPES[f.datatype]))
            for f in cloud.fields]
        cam.points.log(PointCloud(
            timestamp=_stamp(cloud.header), frame_id=cloud.header.frame_id, point_stride=cloud.point_step,
            pose=Pose(position=Vector3(x=0.0, y=0.0, z=0.0), orientation=Quaternion(x=0.0, y=0.0, z=0.0, w=1.0)),
            fields=fields, data=bytes(cloud.data)))
