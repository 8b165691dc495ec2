"""The node's worker thread: takes the newest frame of every camera (frames of several cameras that
are waiting together run as one batch), segments them with the current pipeline and hands each
result to the output publishers. Whatever goes wrong with a frame costs only that frame: it is
counted per camera, logged and reported in /diagnostics; the node keeps serving.
"""
from __future__ import annotations

import threading

from rclpy.node import Node

from ..data.images import check_image, stamp_ns
from ..errors import ImageError, one_line, safe_text
from ..pipeline import SegmentationPipeline, SegmentationResult
from .cameras import ERROR_THROTTLE_S, Camera, Frame
from .conversions import compressed_msg_to_array

Batch = list[tuple[Camera, Frame]]


class Worker:
    """One thread segmenting the cameras' newest frames while the node is active."""

    def __init__(self, node: Node, core: SegmentationCore) -> None:  # noqa: F821 (ros/core.py, composing the parts)
        self.node, self.core = node, core
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.stop_event.clear()
        self.thread = threading.Thread(target=self._run, name="segmentation_worker", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop and join the thread (a native thread left running aborts at exit)."""
        self.stop_event.set()
        self.core.inputs.wake()
        if self.thread is not None and self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=60.0)
        self.thread = None

    @property
    def stopping(self) -> bool:
        """The node is deactivating or its context went away (shutdown): errors are expected, not news."""
        return self.stop_event.is_set() or not self.node.context.ok()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            batch = self.core.inputs.take(self.stop_event, timeout=0.5)
            if batch and not self.stop_event.is_set():
                try:
                    self.process(batch)
                except Exception as exc:  # the node keeps serving whatever went wrong with a frame
                    if self.stopping:
                        return
                    for cam, frame in batch:
                        self.fail(cam, frame, exc)

    def process(self, batch: Batch) -> None:
        """Convert, segment (one batch) and publish the given frames."""
        pipeline = self.core.pipeline  # a reload may swap it; this batch uses one pipeline throughout
        ready, images, encodings = self._ready(batch)
        if not ready or pipeline is None:
            return
        results = self._segment(pipeline, ready, images, encodings)
        self.core.backend_watch.frame(pipeline, results)
        self.core.diagnostics.count_forward_pass()
        for (cam, frame), result in zip(ready, results):
            if result is None:
                continue
            try:
                self.core.outputs.publish(cam, frame, result, len(ready), pipeline)
            except Exception as exc:  # noqa: BLE001 - e.g. the context ends during shutdown
                if self.stopping:
                    return
                self.fail(cam, frame, exc)

    def fail(self, cam: Camera, frame: Frame, exc: BaseException) -> None:
        """A frame lost to an error in the worker: counted per camera, logged, and /diagnostics WARN."""
        reason = safe_text(one_line(exc), 300)
        with self.core.inputs.lock:
            cam.failed += 1
            cam.last_failure = reason
        self.node.get_logger().error(
            f"{cam.label} frame (frame_id '{safe_text(frame.msg.header.frame_id, 80)}') failed: {reason}",
            throttle_duration_sec=ERROR_THROTTLE_S)

    def _ready(self, batch: Batch) -> tuple[Batch, list, list]:
        """The frames of ``batch`` to segment (decoded, not too old) with their images and encodings."""
        max_age, max_pixels = self.core.values["max_frame_age_ms"], self.core.values["max_pixels"]
        now_ns = self.node.get_clock().now().nanoseconds
        ready: Batch = []
        images, encodings = [], []
        for cam, frame in batch:
            image, encoding = frame.image, frame.encoding
            if image is None:  # compressed: decoded here, in the worker
                try:
                    image, encoding = compressed_msg_to_array(frame.msg, max_pixels)
                    check_image(image, encoding, max_pixels)
                except ImageError as exc:
                    self.core.inputs.reject(cam, frame.msg, str(exc))
                    continue
            stamp = stamp_ns(frame.msg.header)
            if max_age > 0 and stamp and now_ns - stamp > max_age * 1e6:  # any stamp, even negative
                with self.core.inputs.lock:
                    cam.dropped += 1
                continue
            frame.size = image.shape[:2]
            ready.append((cam, frame))
            images.append(image)
            encodings.append(encoding)
        return ready, images, encodings

    def _segment(self, pipeline: SegmentationPipeline, ready: Batch, images: list,
                 encodings: list) -> list[SegmentationResult | None]:
        """One batch; when it fails, each frame alone, so one bad frame costs no other camera its
        answer (None for the frames that failed, counted by :meth:`fail`)."""
        wanted = self.core.outputs.wanted_outputs([c for c, _ in ready])
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
                self.fail(cam, frame, exc)
                results.append(None)
        return results
