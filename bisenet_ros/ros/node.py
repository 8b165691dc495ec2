"""ROS 2 node ``segmentation``: camera images in, class labels / colour / overlay / timing out.

Thin adapter over :class:`bisenet_ros.pipeline.SegmentationPipeline`:

- subscription callbacks only keep the newest frame per camera (and count the ones replaced);
  with nobody subscribed to any of a camera's outputs its frames are not segmented at all, as
  image_proc does (``always_process`` forces it);
- one worker thread runs the pipeline on the newest frames -- frames of several cameras that are
  waiting together run as one batch -- and publishes the results with the input's header;
- outputs nobody subscribes to are not computed;
- ``/diagnostics`` once per ``diagnostics_period`` with input health (stopped, rate below
  ``expected_rate``, stamps); the class legend once, transient-local;
- parameters: live switches apply at once, model parameters reload in the background and are
  swapped in only on success (otherwise reverted, the old model keeps serving).

:class:`SegmentationCore` is the behaviour in stages (declare parameters; configure = load the
model; activate = topics and worker; deactivate; cleanup); :class:`SegmentationNode` runs them
all in its constructor, :class:`bisenet_ros.ros.lifecycle.LifecycleSegmentationNode` on its
lifecycle transitions.

Topics, parameters and the legend's JSON format: docs/node.md.
"""
from __future__ import annotations

import copy
import json
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String

from ..data.images import stamp_ns
from ..errors import BisenetError, ConfigError, ImageError, one_line, safe_text
from ..evaluation.metrics import latency_stats
from ..inference.backend_cache import announcing
from .backend_watch import BackendWatch
from ..pipeline import SegmentationPipeline, SegmentationResult, build_pipeline, check_image
from .conversions import (array_to_compressed_msg, array_to_image_msg, check_compressed_msg, compressed_msg_to_array,
                          image_msg_to_array)
from .health import Health, InputMonitor, worst
from .inputs import AdaptiveSubscription, reliability_name
from .loss import CallbackLoad, LossMonitor, LossReport, loss_message
from .parameters import (PARAMETERS, RELOAD, SWITCHES, as_parameter, check_remap, never_raises, pipeline_options,
                         plain, reload_changes, usage_text, validate_changes)
from .camera_info import CameraInfoPairing
from .foxglove_view import FoxgloveView
from .label_info import LabelInfoOutput
from .timing import LatencyCheck
from .perception import HEALTH_PARAMETERS, PerceptionHealth
from .points import SemanticOutputs, check_class_parameters
from .transport import apply_fastdds_profile, tuning_decision

NODE_NAME = "segmentation"
ERROR_THROTTLE_S = 5.0
INPUT_REFRESH_S = 1.0  # input_reliability auto looks at the publishers this soon after they changed
STATS_WINDOW = 300  # frames kept for the latency percentiles in /diagnostics
RELOAD_WARN_S = 30.0  # a failed reload keeps /diagnostics at WARN this long (the old model serves on)


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


def scale_camera_info(info: CameraInfo, header: Header, width: int, height: int) -> CameraInfo:
    """``info`` for the image resized to ``width`` x ``height`` (pixel-centre convention).

    The pipeline resizes with ``align_corners=False``, so a pixel coordinate maps as
    ``x' = (x + 0.5) * sx - 0.5``: focal lengths scale by s, principal points by that rule.
    """
    sx, sy = width / info.width, height / info.height
    out = CameraInfo()
    out.header = header
    out.width, out.height = width, height
    out.distortion_model, out.d, out.r = info.distortion_model, info.d, info.r
    k = list(info.k)
    k[0], k[1], k[2] = k[0] * sx, k[1] * sx, (k[2] + 0.5) * sx - 0.5
    k[4], k[5] = k[4] * sy, (k[5] + 0.5) * sy - 0.5
    out.k = k
    p = list(info.p)
    p[0], p[1], p[2], p[3] = p[0] * sx, p[1] * sx, (p[2] + 0.5) * sx - 0.5, p[3] * sx
    p[5], p[6], p[7] = p[5] * sy, (p[6] + 0.5) * sy - 0.5, p[7] * sy
    out.p = p
    out.binning_x, out.binning_y = info.binning_x, info.binning_y
    roi = info.roi
    out.roi.x_offset, out.roi.y_offset = int(round(roi.x_offset * sx)), int(round(roi.y_offset * sy))
    out.roi.width, out.roi.height = int(round(roi.width * sx)), int(round(roi.height * sy))
    out.roi.do_rectify = roi.do_rectify
    return out


def output_camera_info(info: CameraInfo | None, header: Header, width: int, height: int) -> CameraInfo:
    """The CameraInfo published beside a labels frame of ``width`` x ``height`` with ``header``:
    the camera's (scaled when the output is resized), else an uncalibrated one (all-zero K) that
    still says the frame and size."""
    if info is None or not info.width or not info.height:
        out = CameraInfo(width=width, height=height)
        out.header = header
        return out
    if (info.width, info.height) != (width, height):
        return scale_camera_info(info, header, width, height)
    out = copy.copy(info)
    out.header = header
    return out


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


#: per camera: publisher key -> (message type, topic below ~/<camera>/)
OUTPUTS: dict[str, tuple[type, str]] = {
    "labels": (Image, "labels"), "color": (Image, "color"), "overlay": (Image, "overlay"),
    "confidence": (Image, "confidence"), "labels_png": (CompressedImage, "labels/compressed"),
    "overlay_jpeg": (CompressedImage, "overlay/compressed"), "camera_info": (CameraInfo, "camera_info"),
    "timing": (DiagnosticArray, "timing"),
}


def output_events(key: str) -> PublisherEventCallbacks:
    """Event handlers of a camera's output publisher: rclpy's default ones (a warning when a
    subscriber asks for incompatible QoS or type) on ``labels`` only. Every handler is an entity the
    executor walks at each wake-up: 2 per publisher on 8 outputs was most of what 200 idle cameras
    cost; all outputs share one QoS, so the warning on ``labels`` says it for all."""
    return PublisherEventCallbacks(use_default_callbacks=key == "labels")


def sibling_topic(topic: str, name: str = "camera_info") -> str:
    """``/camera/image_raw`` -> ``/camera/camera_info`` (image_transport's camera_info rule)."""
    head, sep, _ = topic.rpartition("/")
    return f"{head}{sep}{name}" if sep else name


class SegmentationCore:
    """The node's behaviour, shared by :class:`SegmentationNode` and the lifecycle node.

    Mixed into an rclpy ``Node`` (or ``LifecycleNode``) subclass, which calls the stages:
    :meth:`_init_core` (parameters, diagnostics, parameter callback), :meth:`_configure_pipeline`
    (check the parameters, load the model), :meth:`_activate` (topics, legend, worker),
    :meth:`_deactivate` and :meth:`_cleanup_pipeline`.
    """

    def _init_core(self) -> None:
        self._values = self._declare_parameters()
        self.pipeline: SegmentationPipeline | None = None
        self.cameras: list[Camera] = []
        self._entities: list[Any] = []  # subscriptions and publishers made by _activate
        self._active = False
        self._cond = threading.Condition()
        self._param_lock = threading.RLock()
        self._reverting = False
        self._reload_thread: threading.Thread | None = None
        self._last_error = ""
        self._last_error_at = 0.0  # time.monotonic() of the last reload failure
        self._stats_lock = threading.Lock()
        self._window: deque[tuple[float, float]] = deque(maxlen=STATS_WINDOW)  # (total, latency) ms
        self._frames_since_diag = 0
        self._last_diag = time.perf_counter()
        self._forward_passes = 0
        self._input = InputMonitor()
        self._callback_load = CallbackLoad()  # sampled by the diagnostics timer, on the executor's thread
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._backend_watch = BackendWatch(self, self._diag_pub)  # auto's measurement, said and checked
        self.create_timer(self._values["diagnostics_period"], self._publish_diagnostics)
        # runs only while an input's publishers changed (matched events wake it): idle cameras cost nothing
        self._refresh_timer = self.create_timer(INPUT_REFRESH_S, self._refresh_inputs)
        self._semantic: SemanticOutputs | None = None
        self._perception = PerceptionHealth(self, self._values)
        self._label_info = LabelInfoOutput(self)
        self._latency = LatencyCheck(self)
        self._foxglove = FoxgloveView(self, self._values)
        self.add_on_set_parameters_callback(never_raises(self._on_set_parameters))  # refuses, never raises
        self.add_post_set_parameters_callback(self._on_parameters_set)

    def _configure_pipeline(self) -> None:
        """Check the parameters and load the model (raises ConfigError / the loader's errors)."""
        reason = validate_changes(self._values, {k: self._values[k] for k in ("cameras", *RELOAD)})
        if reason:
            raise ConfigError(reason)
        with announcing(self._backend_watch.announce):
            pipeline = build_pipeline(pipeline_options(self._values))
        reason = check_class_parameters(self._values, pipeline.preset.class_names)
        if reason:
            raise ConfigError(reason)
        self._perception.configure(self._values, pipeline)
        self.pipeline = pipeline

    def _activate(self) -> None:
        """Subscribe, advertise, publish the legend and start the worker."""
        self._make_topics()
        self._publish_legend()
        self._input.reset(time.perf_counter())
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="segmentation_worker", daemon=True)
        self._worker.start()
        self._active = True
        info = self.pipeline.info
        self.get_logger().info(
            f"serving {info['model']} ({info['num_classes']} classes, {info['dataset']}) from "
            f"{info['weights']} on {info['device']} [{info['backend']}, {info['precision']}], input "
            f"{info['input_size']}; cameras: {', '.join(c.label for c in self.cameras)}")

    def _deactivate(self) -> None:
        """Stop the worker and remove the topics (the model stays loaded)."""
        self._active = False
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._worker is not None and self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join(timeout=60.0)  # a native thread left running aborts at exit
        self._worker = None
        for entity in self._entities:
            if isinstance(entity, Publisher):
                self.destroy_publisher(entity)
            else:  # an input (its subscription may have been re-created for another reliability)
                self.destroy_subscription(entity.subscription)
        self._entities = []
        self._perception.reset()
        self._label_info.withdraw()
        self._foxglove.stop()
        if self._semantic is not None:
            self._semantic.close()
            self._semantic = None
        with self._cond:
            self.cameras = []

    def _cleanup_pipeline(self) -> None:
        """Release the model (after a reload in progress has finished)."""
        if self._reload_thread is not None and self._reload_thread.is_alive():
            self._reload_thread.join(timeout=60.0)
        self.pipeline = None

    # -- set-up ----------------------------------------------------------------------------------
    def _declare_parameters(self) -> dict[str, Any]:
        """Declare every parameter with a typed value, so that a batched get_parameters (``ros2
        param dump``, rqt_reconfigure) answers all of them: arrays default to a typed empty list."""
        values = {}
        for name, spec in PARAMETERS.items():
            if isinstance(spec.default, Parameter.Type):  # typed array: [] unless given (rclpy would
                writable = spec.descriptor(name)           # take a bare [] for a byte array)
                writable.read_only = False
                param = self.declare_parameter(name, spec.default, writable)
                if param.type_ == Parameter.Type.NOT_SET:
                    self.set_parameters([Parameter(name, spec.default, [])])
                final = spec.descriptor(name)  # read-only again where the spec says so
                final.type = spec.default.value
                self.set_descriptor(name, final)
                param = self.get_parameter(name)
            else:
                param = self.declare_parameter(name, spec.default, spec.descriptor(name))
            values[name] = plain(name, param.value)
        return values

    def _output_qos(self) -> QoSProfile:
        reliability = (ReliabilityPolicy.RELIABLE if self._values["output_reliability"] == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self._values["output_depth"],
                          reliability=reliability, durability=DurabilityPolicy.VOLATILE)

    def _input_topics(self, prefix: str) -> tuple[str, str]:
        """(image topic, camera_info topic) after remapping.

        camera_info follows image_transport's rule: beside the resolved image topic (``-r
        image:=/camera/image_raw`` -> ``/camera/camera_info``), unless ``camera_info`` itself is remapped.
        """
        image = self.resolve_topic_name(f"{prefix}image")
        info = f"{prefix}camera_info"
        remapped = self.resolve_topic_name(info) != self.resolve_topic_name(info, only_expand=True)
        return image, (self.resolve_topic_name(info) if remapped else sibling_topic(image))

    def _make_topics(self) -> None:
        out_qos = self._output_qos()
        compressed = self._values["input_transport"] == "compressed"
        mode, depth = self._values["input_reliability"], self._values["input_depth"]
        cameras = [Camera(name) for name in (self._values["cameras"] or [""])]
        # depth images: fixed reliability (best effort unless input_reliability is reliable)
        depth_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, durability=DurabilityPolicy.VOLATILE,
                               reliability=ReliabilityPolicy.RELIABLE if mode == "reliable" else ReliabilityPolicy.BEST_EFFORT)
        self._semantic = SemanticOutputs(self, self._values, depth_qos)
        for cam in cameras:
            prefix = f"{cam.name}/" if cam.name else ""
            image_topic, info_topic = self._input_topics(prefix)
            image_type = CompressedImage if compressed else Image
            if compressed:
                image_topic += "/compressed"
            cam.inputs = [  # reliability fixed, or following the publishers (input_reliability auto)
                AdaptiveSubscription(self, image_type, image_topic, self._on_image(cam), mode, depth,
                                     on_lost=cam.loss.on_middleware_lost, on_change=self._wake_refresh),
                AdaptiveSubscription(self, CameraInfo, info_topic, self._on_camera_info(cam), mode, depth,
                                     on_change=self._wake_refresh),
            ]
            cam.info = CameraInfoPairing(lambda sub=cam.inputs[1]: self.count_publishers(sub.topic))
            for key, (msg_type, topic) in OUTPUTS.items():
                cam.publishers[key] = self.create_publisher(msg_type, f"~/{prefix}{topic}", out_qos,
                                                            event_callbacks=output_events(key))
            cam.publishers.update(self._semantic.add_camera(cam.label, prefix, out_qos))
            self._entities += [*cam.inputs, *cam.publishers.values()]
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._legend_pub = self.create_publisher(String, "~/legend", latched)
        self._entities.append(self._legend_pub)
        self._label_info.advertise()
        self._foxglove.start({c.label: (f"{c.name}/" if c.name else "") for c in cameras})
        self._semantic.extra_subscribers, self._semantic.on_cloud = self._foxglove.wants_points, self._foxglove.points
        with self._cond:
            self.cameras = cameras
        self._wake_refresh()  # the new inputs' first look at their publishers

    # -- callbacks: keep only the newest frame -------------------------------------------------------
    def _wanted(self, cam: Camera) -> bool:
        """Whether anyone listens to this camera's outputs (or always_process forces the work)."""
        if self._values["always_process"]:
            return True
        return any(pub.get_subscription_count() > 0 for pub in cam.publishers.values()) \
            or bool(self._foxglove.wanted(cam.label))

    def _on_image(self, cam: Camera) -> Callable[[Image | CompressedImage], None]:
        def callback(msg: Image | CompressedImage) -> None:
            received = time.perf_counter()
            stamp = stamp_ns(msg.header)
            cam.loss.on_image(stamp)
            self._input.tick(received, (self.get_clock().now().nanoseconds - stamp) / 1e9 if stamp else None)
            if not self._wanted(cam):  # nobody listens: no inference, counted
                with self._cond:
                    cam.idle += 1
                return
            frame = Frame(msg, received)
            max_pixels = self._values["max_pixels"]
            try:  # cheap header checks here, so a bad frame never displaces a good waiting one
                if isinstance(msg, Image):
                    frame.image, frame.encoding = image_msg_to_array(msg, max_pixels)
                    check_image(frame.image, frame.encoding, max_pixels)
                else:  # compressed: the size in the JPEG/PNG header, nothing decoded here
                    check_compressed_msg(msg, max_pixels)
            except ImageError as exc:
                with self._cond:
                    self._reject(cam, msg, str(exc))
                return
            with self._cond:
                if cam.pending is not None:
                    cam.dropped += 1
                cam.pending = frame
                self._cond.notify()
        return callback

    def _on_camera_info(self, cam: Camera) -> Callable[[CameraInfo], None]:
        def callback(msg: CameraInfo) -> None:
            cam.info.add(msg)
            cam.loss.on_camera_info(stamp_ns(msg.header), time.monotonic())
        return callback

    def _wake_refresh(self) -> None:
        """An input's publishers changed: :meth:`_refresh_inputs` runs within INPUT_REFRESH_S."""
        if self._refresh_timer.is_canceled():
            self._refresh_timer.reset()

    def _refresh_inputs(self) -> None:
        """input_reliability auto: follow the publishers' reliability as they come and go. Only
        inputs whose publishers changed are looked at; with none left the timer stops until the
        next matched event (:meth:`_wake_refresh`)."""
        with self._cond:
            cameras = list(self.cameras)
        if all(not sub.dirty and sub.events for cam in cameras for sub in cam.inputs):
            self._refresh_timer.cancel()
            return
        for cam in cameras:
            changed = [sub for sub in cam.inputs if sub.refresh()]
            for sub in changed:
                offered = ", ".join(reliability_name(r) for r in sub.publisher_reliabilities()) or "nothing"
                self.get_logger().info(f"{sub.topic}: publishers offer {offered}; subscribed "
                                       f"{reliability_name(sub.reliability)}")
            if changed or cam.inputs[0].publishers_changed:  # a new camera: no gap to its predecessor
                cam.loss.forget_pending()
            if cam.inputs[0].publishers_changed or cam.inputs[1].publishers_changed:
                cam.info.restart()  # its first frames may wait for its first CameraInfo

    # -- worker --------------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait_for(lambda: self._stop.is_set() or any(c.pending for c in self.cameras),
                                    timeout=0.5)
                batch = [(c, c.pending) for c in self.cameras if c.pending is not None]
                taken = time.perf_counter()
                for cam, frame in batch:
                    cam.pending = None
                    frame.taken = taken
            if batch and not self._stop.is_set():
                try:
                    self.process(batch)
                except Exception as exc:  # the node keeps serving whatever went wrong with a frame
                    if self._stop.is_set() or not self.context.ok():
                        return
                    for cam, frame in batch:
                        self._fail(cam, frame, exc)

    def _reject(self, cam: Camera, msg: Image | CompressedImage, reason: str) -> None:
        cam.rejected += 1
        cam.last_reject = safe_text(reason, 300)
        self.get_logger().error(  # frame_id and reason come from the sender: escaped and cut
            f"dropping {cam.label} frame (frame_id '{safe_text(msg.header.frame_id, 80)}'): {cam.last_reject}",
            throttle_duration_sec=ERROR_THROTTLE_S)

    def _fail(self, cam: Camera, frame: Frame, exc: BaseException) -> None:
        """A frame lost to an error in the worker: counted per camera, logged, and /diagnostics WARN."""
        reason = safe_text(one_line(exc), 300)
        with self._cond:
            cam.failed += 1
            cam.last_failure = reason
        self.get_logger().error(
            f"{cam.label} frame (frame_id '{safe_text(frame.msg.header.frame_id, 80)}') failed: {reason}",
            throttle_duration_sec=ERROR_THROTTLE_S)

    def _ready(self, batch: list[tuple[Camera, Frame]]) -> tuple[list[tuple[Camera, Frame]], list, list]:
        """The frames of ``batch`` to segment (decoded, not too old) with their images and encodings."""
        max_age = self._values["max_frame_age_ms"]
        max_pixels = self._values["max_pixels"]
        now_ns = self.get_clock().now().nanoseconds
        ready: list[tuple[Camera, Frame]] = []
        images, encodings = [], []
        for cam, frame in batch:
            image, encoding = frame.image, frame.encoding
            if image is None:  # compressed: decoded here, in the worker
                try:
                    image, encoding = compressed_msg_to_array(frame.msg, max_pixels)
                    check_image(image, encoding, max_pixels)
                except ImageError as exc:
                    with self._cond:
                        self._reject(cam, frame.msg, str(exc))
                    continue
            stamp = stamp_ns(frame.msg.header)
            if max_age > 0 and stamp and now_ns - stamp > max_age * 1e6:  # any stamp, even negative
                with self._cond:
                    cam.dropped += 1
                continue
            frame.size = image.shape[:2]
            ready.append((cam, frame))
            images.append(image)
            encodings.append(encoding)
        return ready, images, encodings

    def _wanted_outputs(self, cameras: list[Camera]) -> set[str]:
        """Pipeline outputs someone subscribed to (with their publish_* switch on), and health."""
        wanted = {"health"} if self._perception.enabled else set()
        for cam in cameras:
            foxglove = self._foxglove.wanted(cam.label)
            for switch, output in SWITCHES.items():
                if not output or not self._values[switch]:
                    continue
                keys = (output, "overlay_jpeg") if output == "overlay" else (output,)
                if output in foxglove or any(cam.publishers[k].get_subscription_count() > 0 for k in keys):
                    wanted.add(output)
        return wanted

    def process(self, batch: list[tuple[Camera, Frame]]) -> None:
        """Convert, segment (one batch) and publish the given frames."""
        pipeline = self.pipeline  # a reload may swap it; this batch uses one pipeline throughout
        ready, images, encodings = self._ready(batch)
        if not ready or pipeline is None:
            return
        results = self._segment(pipeline, ready, images, encodings)
        self._backend_watch.frame(pipeline, results)
        with self._stats_lock:
            self._forward_passes += 1
        for (cam, frame), result in zip(ready, results):
            if result is None:
                continue
            try:
                self._publish(cam, frame, result, len(ready), pipeline)
            except Exception as exc:  # noqa: BLE001 - e.g. the context ends during shutdown
                if self._stop.is_set() or not self.context.ok():
                    return
                self._fail(cam, frame, exc)

    def _segment(self, pipeline: SegmentationPipeline, ready: list[tuple[Camera, Frame]], images: list,
                 encodings: list) -> list[SegmentationResult | None]:
        """One batch; when it fails, each frame alone, so one bad frame costs no other camera its
        answer (None for the frames that failed, counted by :meth:`_fail`)."""
        wanted = self._wanted_outputs([c for c, _ in ready])
        try:
            return pipeline.run_batch(images, encodings, outputs=wanted)
        except Exception:  # noqa: BLE001
            if len(ready) == 1:
                raise
        results: list[SegmentationResult | None] = []
        for (cam, frame), image, encoding in zip(ready, images, encodings):
            try:
                results.append(pipeline.run_batch([image], [encoding], outputs=wanted)[0])
            except Exception as exc:  # noqa: BLE001
                self._fail(cam, frame, exc)
                results.append(None)
        return results

    def _publish(self, cam: Camera, frame: Frame, res: SegmentationResult, batch_size: int,
                 pipeline: SegmentationPipeline) -> None:
        device = pipeline.info.get("device", "")
        header = frame.msg.header
        pubs = cam.publishers
        label_encoding = "mono16" if res.labels.dtype.itemsize == 2 else "mono8"
        pubs["labels"].publish(array_to_image_msg(res.labels, label_encoding, header))
        if res.color is not None and self._values["publish_color"]:
            pubs["color"].publish(array_to_image_msg(res.color, "rgb8", header))
        if res.overlay is not None and self._values["publish_overlay"]:
            pubs["overlay"].publish(array_to_image_msg(res.overlay, res.overlay_encoding, header))
        if res.confidence is not None and self._values["publish_confidence"]:
            pubs["confidence"].publish(array_to_image_msg(res.confidence, "mono8", header))
        self._publish_compressed(pubs, res, label_encoding, header)
        self._foxglove.frame(cam.label, header, res, label_encoding)
        out_h, out_w = res.labels.shape[:2]
        camera_info = cam.info.for_frame(stamp_ns(header))
        pubs["camera_info"].publish(output_camera_info(camera_info, header, out_w, out_h))
        health = self._perception.update(cam.label, frame.received, res.health)
        extra, counts = self._semantic.publish(cam.label, header, res.labels, frame.size, camera_info,
                                               pipeline.preset)
        total_ms = (time.perf_counter() - frame.received) * 1e3
        latency_ms, latency_note = self._latency(stamp_ns(header))  # None: the stamp says nothing about it
        with self._cond:
            cam.processed += 1
            dropped = cam.dropped
        with self._stats_lock:
            self._window.append((total_ms, float("nan") if latency_ms is None else latency_ms))
            self._frames_since_diag += 1
        if self._values["publish_timing"]:
            values = dict(wait_ms=(frame.taken - frame.received) * 1e3, **res.timings, total_ms=total_ms,
                          **({} if latency_ms is None else {"latency_ms": latency_ms}), **extra)
            status = DiagnosticStatus(level=DiagnosticStatus.OK, name=f"{self.get_name()}: {cam.label} timing",
                                      hardware_id=str(device))
            status.values = [KeyValue(key=k, value=f"{v:.3f}") for k, v in values.items()]
            if latency_note:
                status.values.append(KeyValue(key="latency_note", value=latency_note))
            status.values += [KeyValue(key="dropped_frames", value=str(dropped)),
                              KeyValue(key="frames_lost_in_transport", value=str(cam.loss.total_lost)),
                              KeyValue(key="batch_size", value=str(batch_size)),
                              KeyValue(key="model_size", value=f"{res.model_size[0]}x{res.model_size[1]}")]
            status.values += [KeyValue(key=k, value=str(v)) for k, v in counts.items()]
            status.values += [KeyValue(key=k, value=v) for k, v in health.items()]
            status.values += [KeyValue(key=k, value=f"{v:.4f}")
                              for k, v in self._semantic.areas(res.labels, pipeline.preset).items()]
            timing = DiagnosticArray(header=header, status=[status])
            pubs["timing"].publish(timing)
            self._foxglove.timing(cam.label, timing)

    def _publish_compressed(self, pubs: dict[str, Publisher], res: SegmentationResult, label_encoding: str,
                            header: Header) -> None:
        """PNG labels and JPEG overlay, encoded only when someone subscribed to them."""
        if pubs["labels_png"].get_subscription_count() > 0:
            pubs["labels_png"].publish(array_to_compressed_msg(res.labels, label_encoding, header, "png",
                                                               self._values["png_level"]))
        if res.overlay is not None and self._values["publish_overlay"] and \
                pubs["overlay_jpeg"].get_subscription_count() > 0:
            pubs["overlay_jpeg"].publish(array_to_compressed_msg(res.overlay, res.overlay_encoding, header, "jpeg",
                                                                 self._values["jpeg_quality"]))

    # -- legend and diagnostics ----------------------------------------------------------------------
    def _publish_legend(self) -> None:
        legend = legend_json(self.pipeline)
        self._legend_pub.publish(String(data=legend))
        self._foxglove.legend(legend)
        self._label_info.publish(self.pipeline.preset.class_names, self._values["confidence_threshold"])

    def _state(self) -> Health:
        """What the node is doing: serving, or why not (lifecycle state, reload failure)."""
        if self.pipeline is None:
            return Health(DiagnosticStatus.OK, "unconfigured: no model loaded")
        if not self._active:
            return Health(DiagnosticStatus.OK, "inactive")
        if self._last_error and time.monotonic() - self._last_error_at < RELOAD_WARN_S:
            return Health(DiagnosticStatus.WARN, self._last_error)  # then OK again: the old model serves
        return Health(DiagnosticStatus.OK, "segmenting")

    def _transport_warnings(self) -> list[str]:
        """Close the loss monitors' period; one warning per camera losing images in transport."""
        now = time.monotonic()
        busy = self._callback_load.sample(now, time.thread_time())  # is the node itself the bottleneck?
        warnings = []
        with self._cond:
            cameras = list(self.cameras)
        for cam in cameras:
            report = cam.last_loss = cam.loss.evaluate(now)
            if report.warn:
                image_sub = cam.inputs[0]
                offered = [reliability_name(r) for r in image_sub.publisher_reliabilities()]
                warnings.append(loss_message(cam.label, report, reliability_name(image_sub.reliability), offered,
                                             callback_busy=busy))
        return warnings

    def _health(self, now: float) -> tuple[Health, dict[str, str]]:
        """Level and message of /diagnostics -- the worst of the node's state (reload failure), the
        input checks, transport losses and point-cloud problems -- and the values behind them."""
        state = self._state()
        if not self._active:
            return state, {}
        v = self._values
        health, values = self._input.check(now, v["expected_rate"], v["rate_tolerance"], v["input_timeout"])
        points_warning, points_values = self._semantic.status()
        values.update(points_values)
        with self._cond:
            failures = failure_warnings(self.cameras)
        model_warnings = self.pipeline.info.get("warnings", ()) if self.pipeline is not None else ()
        warnings = [Health(DiagnosticStatus.WARN, w) for w in (*failures, *model_warnings, *self._transport_warnings(),
                                                               points_warning) if w]
        result = worst([state, *warnings, health])
        if result.level == DiagnosticStatus.OK:
            with self._cond:
                cameras = list(self.cameras)
            if self._input.last is None:
                result = Health(DiagnosticStatus.OK, "waiting for images")
            elif not any(self._wanted(c) for c in cameras):
                result = Health(DiagnosticStatus.OK, "no subscribers: not segmenting")
        return result, values

    def _publish_diagnostics(self) -> None:
        now = time.perf_counter()
        with self._stats_lock:
            window = list(self._window)
            frames, self._frames_since_diag = self._frames_since_diag, 0
            elapsed, self._last_diag = now - self._last_diag, now
            forward_passes = self._forward_passes
        with self._cond:
            dropped = sum(c.dropped for c in self.cameras)
            rejected = sum(c.rejected for c in self.cameras)
            processed = sum(c.processed for c in self.cameras)
            idle = sum(c.idle for c in self.cameras)
        total = latency_stats(t for t, _ in window)
        latency = latency_stats(lat for _, lat in window if lat == lat)
        info = self.pipeline.info if self.pipeline is not None else {}
        health, input_values = self._health(now)
        values = {
            "fps": f"{frames / elapsed:.2f}" if elapsed > 0 else "0",
            "frames_processed": str(processed),
            "dropped_frames": str(dropped),
            "rejected_frames": str(rejected),
            "failed_frames": str(sum(c.failed for c in self.cameras)),
            "idle_frames": str(idle),
            "forward_passes": str(forward_passes),
            "frames_lost_in_transport": str(sum(c.loss.total_lost for c in self.cameras)),
            "input_reliability": ",".join(reliability_name(c.inputs[0].reliability) for c in self.cameras),
            "transport": tuning_decision().reason,
            **input_values,
            **{f"total_ms_{k}": _fmt(total[k]) for k in ("p50", "p90", "p99", "max")},
            **{f"latency_ms_{k}": _fmt(latency[k]) for k in ("p50", "p90", "p99", "max")},
            "device": str(info.get("device")), "model": str(info.get("model")),
            "weights": str(info.get("weights")), "backend": str(info.get("backend")),
            "precision": str(info.get("precision")), "input_size": str(info.get("input_size")),
            "dataset": str(info.get("dataset")), "cameras": ",".join(c.label for c in self.cameras),
            "last_error": self._last_error,
        }
        status = DiagnosticStatus(level=health.level, name=f"{self.get_fully_qualified_name()}: segmentation",
                                  message=health.message, hardware_id=str(info.get("device")))
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status, self._perception.status()])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)
        self._foxglove.diagnostics(msg)

    # -- run-time parameter changes -------------------------------------------------------------------
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validation only: accept or refuse the whole change (no side effects here)."""
        with self._param_lock:
            if self._reverting:
                return SetParametersResult(successful=True)
            changes = {p.name: plain(p.name, p.value) for p in params}
            pipeline = self.pipeline  # None while unconfigured (lifecycle): checked at configure
            if pipeline is None:
                reason = validate_changes(self._values, changes)
            else:
                reason = validate_changes(self._values, changes, pipeline.info.get("num_classes")) \
                    or check_remap(changes, pipeline.source_preset) \
                    or check_class_parameters(changes, pipeline.preset.class_names)
            if not reason and reload_changes(self._values, changes) and self._reloading():
                reason = "a model reload is in progress; try again when it finishes"
            return SetParametersResult(successful=not reason, reason=reason or "")

    def _on_parameters_set(self, params: list[Parameter]) -> None:
        """Apply accepted changes: live settings at once, model changes by a background reload."""
        with self._param_lock:
            if self._reverting:
                return
            changes = {p.name: plain(p.name, p.value) for p in params}
            if self.pipeline is None:  # unconfigured (lifecycle): the values are used at configure
                self._values.update(changes)
                return
            reload = reload_changes(self._values, changes)
            if reload:
                old = {k: self._values[k] for k in reload}
                self._reload_thread = threading.Thread(target=self._reload, args=({**self._values, **changes}, old),
                                                       name="segmentation_reload", daemon=True)
                self._reload_thread.start()
            for name, value in changes.items():
                if name not in RELOAD:
                    self._values[name] = value
                    if name == "publish_points" and self._semantic is not None:
                        self._semantic.wake()
                    if name == "overlay_alpha" and self.pipeline is not None:
                        self.pipeline.overlay_alpha = value
                    elif name == "confidence_threshold" and self.pipeline is not None:
                        self.pipeline.confidence_threshold = value
                        self._label_info.publish(self.pipeline.preset.class_names, value)
            if {"foxglove_port", "foxglove_address"} & set(changes) and self._active:
                self._foxglove.restart()
            if set(changes) & set(HEALTH_PARAMETERS):
                self._perception.configure(self._values, self.pipeline)

    def _reconfigure_health(self, values: dict[str, Any], pipeline: SegmentationPipeline) -> None:
        """The health thresholds for a new model (its own baseline); the defaults if that one is unreadable."""
        try:
            self._perception.configure(values, pipeline)
        except BisenetError as exc:
            self.get_logger().error(f"{exc}; perception health uses the default thresholds")
            self._perception.configure({**values, "health_baseline": "none"}, pipeline)

    def _reloading(self) -> bool:
        return self._reload_thread is not None and self._reload_thread.is_alive()

    def _reload(self, candidate: dict[str, Any], old: dict[str, Any]) -> None:
        """:meth:`_load`, quiet when the node is shutting down meanwhile (SIGINT right after a change)."""
        try:
            self._load(candidate, old)
        except Exception as exc:  # noqa: BLE001
            if self._stop.is_set() or not self.context.ok():
                return  # the context went away under the reload: nothing left to tell
            self._last_error, self._last_error_at = f"reload failed: {safe_text(one_line(exc), 300)}", time.monotonic()
            self.get_logger().error(self._last_error)

    def _load(self, candidate: dict[str, Any], old: dict[str, Any]) -> None:
        """Build the pipeline for ``candidate``; swap it in, or revert the parameters to ``old``."""
        changed = ", ".join(f"{k}={candidate[k]}" for k in old)
        self.get_logger().info(f"loading model for {changed} in the background")
        try:
            with announcing(self._backend_watch.announce):
                pipeline = build_pipeline(pipeline_options(candidate), overlay_alpha=self._values["overlay_alpha"])
        except Exception as exc:  # BisenetError, or torch refusing the device/weights
            keeping = self.pipeline.info.get("weights") if self.pipeline is not None else "no model"
            reason = safe_text(f"reload with {changed} failed, keeping {keeping}: {one_line(exc, 300)}", 500)
            self._last_error, self._last_error_at = reason, time.monotonic()
            self.get_logger().error(reason)
            with self._param_lock:
                self._reverting = True
                try:
                    self.set_parameters([as_parameter(k, v) for k, v in old.items()])
                finally:
                    self._reverting = False
            return
        pipeline.overlay_alpha = self._values["overlay_alpha"]
        pipeline.confidence_threshold = self._values["confidence_threshold"]
        self._last_error = ""  # before the swap: /diagnostics never shows the new model with the old error
        self._reconfigure_health({**self._values, **{k: candidate[k] for k in old}}, pipeline)
        self.pipeline = pipeline
        with self._param_lock:
            self._values.update({k: candidate[k] for k in old})
        if self._active:
            self._publish_legend()
        info = pipeline.info
        self.get_logger().info(f"now serving {info['model']} ({info['num_classes']} classes) from "
                               f"{info['weights']}, input {info['input_size']}")
        for warning in info.get("warnings", ()):
            self.get_logger().warning(warning)

    # -- shutdown ---------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the worker (and a background model load) and release the node."""
        self._deactivate()
        if self._reload_thread is not None and self._reload_thread.is_alive() \
                and self._reload_thread is not threading.current_thread():
            self._reload_thread.join(timeout=60.0)
        self.destroy_node()


class SegmentationNode(SegmentationCore, Node):
    """The ``segmentation`` node: configured and active from its constructor; see docs/node.md."""

    def __init__(self, **node_kwargs: Any) -> None:
        Node.__init__(self, NODE_NAME, **node_kwargs)
        self._init_core()
        self._configure_pipeline()
        self._activate()


def failure_warnings(cameras: list[Camera]) -> list[str]:
    """One warning per camera whose frames were refused (malformed, over budget) or failed in the
    worker since the last call, with the latest reason."""
    warnings = []
    for cam in cameras:
        rejected, failed = cam.rejected - cam.reported[0], cam.failed - cam.reported[1]
        if rejected:
            warnings.append(f"{cam.label}: {rejected} frames refused ({cam.last_reject})")
        if failed:
            warnings.append(f"{cam.label}: {failed} frames failed ({cam.last_failure})")
        cam.reported = (cam.rejected, cam.failed)
    return warnings


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def main(args: list[str] | None = None) -> int:
    """Console script ``segmentation_node``: run the node until SIGINT/SIGTERM."""
    return spin(SegmentationNode, args)


def spin(factory: Callable[[], SegmentationCore], args: list[str] | None = None,
         program: str = "segmentation_node", lifecycle: bool = False) -> int:
    """Create the node ``factory`` makes and spin it until SIGINT/SIGTERM; exit status 2 (one
    error line) when it cannot start. ``program`` names the executable in ``--help``/``--version``
    (and ``lifecycle`` says it is the managed node)."""
    own = list(sys.argv[1:] if args is None else args)
    own = own[:own.index("--ros-args")] if "--ros-args" in own else own  # ours: before --ros-args
    if {"-h", "--help"} & set(own):
        print(usage_text(program, lifecycle))
        return 0
    if "--version" in own:
        from .. import __version__

        print(f"{program} (bisenet_ros) {__version__}")
        return 0
    transport = tuning_decision()
    apply_fastdds_profile()  # before rclpy.init: Fast DDS reads it when the participant is created
    rclpy.init(args=args)
    logger = rclpy.logging.get_logger(NODE_NAME)
    logger.info(f"transport: {transport.reason}")
    node: SegmentationCore | None = None
    code = 0
    try:
        node = factory()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except BisenetError as exc:
        logger.error(str(exc))
        code = 2
    except Exception as exc:  # parameter type/range errors from rclpy, torch errors at start
        if rclpy.ok():
            logger.error(f"cannot start: {one_line(exc)}")
            code = 2
    finally:
        if node is not None:
            node.close()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
