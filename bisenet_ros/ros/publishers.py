"""The node's outputs: per camera the labels, colour, overlay, confidence, their compressed forms,
camera_info and timing (:data:`CAMERA_TOPICS`), the semantic outputs of :mod:`bisenet_ros.ros.points`,
and the class legend (once, transient-local).

Outputs nobody subscribes to are not computed (:meth:`OutputPublishers.wanted_outputs`); every
publisher accepts QoS overrides from parameters the ROS 2 way
(``qos_overrides./segmentation/labels.publisher.reliability: best_effort`` in a parameter file;
docs/node.md), on top of ``output_reliability``/``output_depth``.
"""
from __future__ import annotations

import json
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String

from ..data.images import stamp_ns
from ..pipeline import SegmentationPipeline, SegmentationResult
from .cameras import Camera, Frame
from .conversions import array_to_compressed_msg, output_camera_info
from .foxglove_view import FoxgloveView
from .image_cdr import serialize_image
from .label_info import LabelInfoOutput
from .parameters import SWITCHES
from .points import SemanticOutputs
from .timing import LatencyCheck

#: per camera: publisher key -> (message type, topic below ~/<camera>/)
CAMERA_TOPICS: dict[str, tuple[type, str]] = {
    "labels": (Image, "labels"), "color": (Image, "color"), "overlay": (Image, "overlay"),
    "confidence": (Image, "confidence"), "labels_png": (CompressedImage, "labels/compressed"),
    "overlay_jpeg": (CompressedImage, "overlay/compressed"), "camera_info": (CameraInfo, "camera_info"),
    "timing": (DiagnosticArray, "timing"),
}
QOS_OVERRIDES = QoSOverridingOptions.with_default_policies()  # history, depth, reliability (+ durability)


def output_events(key: str) -> PublisherEventCallbacks:
    """Event handlers of a camera's output publisher: rclpy's default ones (a warning when a
    subscriber asks for incompatible QoS or type) on ``labels`` only. Every handler is an entity the
    executor walks at each wake-up: 2 per publisher on 8 outputs was most of what 200 idle cameras
    cost; all outputs share one QoS, so the warning on ``labels`` says it for all."""
    return PublisherEventCallbacks(use_default_callbacks=key == "labels")


def legend_json(pipeline: SegmentationPipeline) -> str:
    """The class legend: ids, names and RGB colours, plus what model produced them."""
    preset = pipeline.preset
    return json.dumps({
        "dataset": preset.name,
        "num_classes": preset.num_classes,
        "model": pipeline.info.get("model"),
        "weights": pipeline.info.get("weights"),
        **{k: pipeline.info.get(k) for k in ("backend", "device", "precision", "input_size")},
        "classes": [{"id": i, "name": name, "color": [int(c) for c in preset.palette[i]]}
                    for i, name in enumerate(preset.class_names)],
    })


class OutputPublishers:
    """Every publisher of the node but /diagnostics, and what one segmented frame publishes."""

    def __init__(self, node: Node, core: SegmentationCore) -> None:  # noqa: F821 (ros/core.py, composing the parts)
        self.node, self.core = node, core
        self.publishers: list[Publisher] = []
        self.legend: Publisher | None = None
        self.semantic: SemanticOutputs | None = None
        self.label_info = LabelInfoOutput(node)
        self.latency = LatencyCheck(node)
        self.foxglove = FoxgloveView(node, core.values)  # the same outputs to Foxglove, when asked for

    def qos(self) -> QoSProfile:
        """The outputs' QoS from ``output_reliability``/``output_depth`` (before parameter overrides)."""
        values = self.core.values
        reliability = (ReliabilityPolicy.RELIABLE if values["output_reliability"] == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=values["output_depth"],
                          reliability=reliability, durability=DurabilityPolicy.VOLATILE)

    def create(self, msg_type: type, topic: str, qos: QoSProfile, **kwargs) -> Publisher:
        """One output publisher, its QoS overridable by parameters (``qos_overrides.<topic>.publisher.*``)."""
        own = QoSProfile(history=qos.history, depth=qos.depth, reliability=qos.reliability, durability=qos.durability)
        # (its own profile: rclpy writes the overrides into the profile it is given)
        publisher = self.node.create_publisher(msg_type, topic, own, qos_overriding_options=QOS_OVERRIDES, **kwargs)
        self.publishers.append(publisher)
        return publisher

    def advertise(self, cameras: list[Camera], depth_qos: QoSProfile) -> None:
        """The publishers of every camera, the semantic outputs and the legend."""
        qos = self.qos()
        self.semantic = SemanticOutputs(self.node, self.core.values, depth_qos, self.create)
        for cam in cameras:
            for key, (msg_type, topic) in CAMERA_TOPICS.items():
                cam.publishers[key] = self.create(msg_type, f"~/{cam.prefix}{topic}", qos,
                                                  event_callbacks=output_events(key))
            cam.publishers.update(self.semantic.add_camera(cam.label, cam.prefix, qos))
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.legend = self.create(String, "~/legend", latched)
        self.label_info.advertise()
        self.foxglove.start({c.label: c.prefix for c in cameras})
        self.semantic.extra_subscribers, self.semantic.on_cloud = self.foxglove.wants_points, self.foxglove.points

    def withdraw(self) -> None:
        """Destroy every publisher and stop the semantic outputs."""
        for publisher in self.publishers:
            self.node.destroy_publisher(publisher)
        self.publishers, self.legend = [], None
        self.label_info.withdraw()
        self.foxglove.stop()
        if self.semantic is not None:
            self.semantic.close()
            self.semantic = None

    def publish_legend(self) -> None:
        """The legend (and the label info and Foxglove's copy of it) of the pipeline now serving."""
        pipeline = self.core.pipeline
        if self.legend is None or pipeline is None:
            return
        legend = legend_json(pipeline)
        self.legend.publish(String(data=legend))
        self.foxglove.legend(legend)
        self.label_info.publish(pipeline.preset.class_names, self.core.values["confidence_threshold"])

    # -- who listens ---------------------------------------------------------------------------------
    def wanted(self, cam: Camera) -> bool:
        """Whether anyone listens to this camera's outputs (or always_process forces the work)."""
        if self.core.values["always_process"]:
            return True
        return any(pub.get_subscription_count() > 0 for pub in cam.publishers.values()) \
            or bool(self.foxglove.wanted(cam.label))

    def wanted_outputs(self, cameras: list[Camera]) -> set[str]:
        """Pipeline outputs someone subscribed to (with their publish_* switch on), and health."""
        wanted = {"health"} if self.core.perception.enabled else set()
        for cam in cameras:
            foxglove = self.foxglove.wanted(cam.label)
            for switch, output in SWITCHES.items():
                if not output or not self.core.values[switch]:
                    continue
                keys = (output, "overlay_jpeg") if output == "overlay" else (output,)
                if output in foxglove or any(cam.publishers[k].get_subscription_count() > 0 for k in keys):
                    wanted.add(output)
        return wanted

    # -- one frame (worker thread) -----------------------------------------------------------------------
    def publish(self, cam: Camera, frame: Frame, res: SegmentationResult, batch_size: int,
                pipeline: SegmentationPipeline) -> None:
        """Everything one segmented frame publishes, with the input's header."""
        values, header, pubs = self.core.values, frame.msg.header, cam.publishers
        # first, as it may wait for the frame's CameraInfo (bounded): every output of the frame then goes
        # out together, and a client that waits for the labels finds the worker free
        camera_info = cam.info.for_frame(stamp_ns(header))
        label_encoding = "mono16" if res.labels.dtype.itemsize == 2 else "mono8"
        pubs["labels"].publish(serialize_image(res.labels, label_encoding, header))  # CDR: one copy of the pixels
        for key, image, encoding in (("color", res.color, "rgb8"), ("overlay", res.overlay, res.overlay_encoding),
                                     ("confidence", res.confidence, "mono8")):
            if image is not None and values[f"publish_{key}"]:
                pubs[key].publish(serialize_image(image, encoding, header))
        self._publish_compressed(pubs, res, label_encoding, header)
        self.foxglove.frame(cam.label, header, res, label_encoding)
        out_h, out_w = res.labels.shape[:2]
        pubs["camera_info"].publish(output_camera_info(camera_info, header, out_w, out_h))
        health = self.core.perception.update(cam.label, frame.received, res.health)
        extra, counts = self.semantic.publish(cam.label, header, res.labels, frame.size, camera_info,
                                              pipeline.preset)
        total_ms = (time.perf_counter() - frame.received) * 1e3
        latency_ms, latency_note = self.latency(stamp_ns(header))  # None: the stamp says nothing about it
        with self.core.inputs.lock:
            cam.processed += 1
        self.core.diagnostics.record(total_ms, latency_ms)
        if values["publish_timing"]:
            timings = dict(wait_ms=(frame.taken - frame.received) * 1e3, **res.timings, total_ms=total_ms,
                           **({} if latency_ms is None else {"latency_ms": latency_ms}), **extra)
            self._publish_timing(cam, header, res, timings, counts, batch_size, pipeline, latency_note, health)

    def _publish_compressed(self, pubs: dict[str, Publisher], res: SegmentationResult, label_encoding: str,
                            header: Header) -> None:
        """PNG labels and JPEG overlay, encoded only when someone subscribed to them."""
        values = self.core.values
        if pubs["labels_png"].get_subscription_count() > 0:
            pubs["labels_png"].publish(array_to_compressed_msg(res.labels, label_encoding, header, "png",
                                                               values["png_level"]))
        if res.overlay is not None and values["publish_overlay"] and pubs["overlay_jpeg"].get_subscription_count() > 0:
            pubs["overlay_jpeg"].publish(array_to_compressed_msg(res.overlay, res.overlay_encoding, header, "jpeg",
                                                                 values["jpeg_quality"]))

    def _publish_timing(self, cam: Camera, header: Header, res: SegmentationResult, timings: dict[str, float],
                        counts: dict[str, int], batch_size: int, pipeline: SegmentationPipeline,
                        latency_note: str, health: dict[str, str]) -> None:
        """``~/timing``: the stage timings of one frame, its counters and the class areas."""
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name=f"{self.node.get_name()}: {cam.label} timing",
                                  hardware_id=str(pipeline.info.get("device", "")))
        status.values = [KeyValue(key=k, value=f"{v:.3f}") for k, v in timings.items()]
        if latency_note:
            status.values.append(KeyValue(key="latency_note", value=latency_note))
        status.values += [KeyValue(key="dropped_frames", value=str(cam.dropped)),
                          KeyValue(key="frames_lost_in_transport", value=str(cam.loss.total_lost)),
                          KeyValue(key="batch_size", value=str(batch_size)),
                          KeyValue(key="model_size", value=f"{res.model_size[0]}x{res.model_size[1]}")]
        status.values += [KeyValue(key=k, value=str(v)) for k, v in counts.items()]
        status.values += [KeyValue(key=k, value=v) for k, v in health.items()]  # perception health
        status.values += [KeyValue(key=k, value=f"{v:.4f}")
                          for k, v in self.semantic.areas(res.labels, pipeline.preset).items()]
        timing = DiagnosticArray(header=header, status=[status])
        cam.publishers["timing"].publish(timing)
        self.foxglove.timing(cam.label, timing)
