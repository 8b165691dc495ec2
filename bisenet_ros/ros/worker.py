"""The node's worker: two threads while the node is active.

The *model thread* takes the newest frame of every camera (frames of several cameras that are
waiting together run as one batch), converts them and runs the model
(:meth:`SegmentationPipeline.start`); the *output thread* finishes them (labels, colour outputs,
health: :meth:`SegmentationPipeline.finish`) and publishes. So one frame's postprocessing and
publishing overlap the next frame's model pass. Between the two is a slot for one batch: the model
thread takes new frames only once the output thread has taken the last batch from it, so at most
two batches are in flight and the model always gets the newest frame.

Whatever goes wrong with a frame costs only that frame: it is counted per camera, logged and
reported in /diagnostics; the node keeps serving.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from rclpy.node import Node

from ..data.images import check_image, stamp_ns
from ..errors import ImageError, one_line, safe_text
from ..pipeline import PendingBatch, SegmentationPipeline, SegmentationResult
from .cameras import ERROR_THROTTLE_S, Camera, Frame
from .conversions import compressed_msg_to_array

Batch = list[tuple[Camera, Frame]]


@dataclass
class Part:
    """Frames that ran through the model together, with the images and the model's pending output."""

    frames: Batch
    images: list[np.ndarray]
    encodings: list[str]
    pending: PendingBatch


@dataclass
class Started:
    """One batch handed from the model thread to the output thread."""

    pipeline: SegmentationPipeline
    parts: list[Part]  # one, or one per frame after the batch failed


class Worker:
    """The model thread and the output thread segmenting the cameras' newest frames."""

    def __init__(self, node: Node, core: SegmentationCore) -> None:  # noqa: F821 (ros/core.py, composing the parts)
        self.node, self.core = node, core
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.slot: Started | None = None  # model thread -> output thread
        self.slot_cond = threading.Condition()

    def start(self) -> None:
        self.stop_event.clear()
        self.slot = None
        self.threads = [threading.Thread(target=target, name=name, daemon=True)
                        for target, name in ((self._run_model, "segmentation_model"),
                                             (self._run_outputs, "segmentation_outputs"))]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        """Stop and join the threads (a native thread left running aborts at exit)."""
        self.stop_event.set()
        self.core.inputs.wake()
        with self.slot_cond:
            self.slot_cond.notify_all()
        for thread in self.threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout=60.0)
        self.threads = []
        with self.slot_cond:
            left, self.slot = self.slot, None
        if left is not None:  # started but never published: counted as dropped, not lost silently
            with self.core.inputs.lock:
                for part in left.parts:
                    for cam, _ in part.frames:
                        cam.dropped += 1

    @property
    def stopping(self) -> bool:
        """The node is deactivating or its context went away (shutdown): errors are expected, not news."""
        return self.stop_event.is_set() or not self.node.context.ok()

    # -- the two threads --------------------------------------------------------------------------------
    def _run_model(self) -> None:
        while not self.stop_event.is_set():
            with self.slot_cond:  # new frames only once the output thread took the last batch
                self.slot_cond.wait_for(lambda: self.slot is None or self.stop_event.is_set())
            batch = self.core.inputs.take(self.stop_event, timeout=0.5)
            if not batch or self.stop_event.is_set():
                continue
            try:
                started = self.start_batch(batch)
            except Exception as exc:  # the node keeps serving whatever went wrong with a frame
                if self.stopping:
                    return
                for cam, frame in batch:
                    self.fail(cam, frame, exc)
                continue
            if started is not None:
                with self.slot_cond:
                    self.slot = started
                    self.slot_cond.notify_all()

    def _run_outputs(self) -> None:
        while True:
            with self.slot_cond:
                self.slot_cond.wait_for(lambda: self.slot is not None or self.stop_event.is_set())
                if self.stop_event.is_set():
                    return
                started, self.slot = self.slot, None
                self.slot_cond.notify_all()
            try:
                self.finish_batch(started)
            except Exception as exc:  # noqa: BLE001 - the node keeps serving
                if self.stopping:
                    return
                for part in started.parts:
                    for cam, frame in part.frames:
                        self.fail(cam, frame, exc)

    # -- the stages ---------------------------------------------------------------------------------------
    def process(self, batch: Batch) -> None:
        """Convert, segment (one batch) and publish the given frames, in this thread."""
        started = self.start_batch(batch)
        if started is not None:
            self.finish_batch(started)

    def start_batch(self, batch: Batch) -> Started | None:
        """Convert and run the model on the frames of ``batch`` (None: nothing left to segment). When
        the batch fails, each frame alone, so one bad frame costs no other camera its answer."""
        pipeline = self.core.pipeline  # a reload may swap it; this batch uses one pipeline throughout
        ready, images, encodings = self._ready(batch)
        if not ready or pipeline is None:
            return None
        wanted = self.core.outputs.wanted_outputs([c for c, _ in ready])
        try:
            return Started(pipeline, [Part(ready, images, encodings, pipeline.start(images, encodings, wanted))])
        except Exception:  # noqa: BLE001
            if len(ready) == 1:
                raise
        parts = []
        for (cam, frame), image, encoding in zip(ready, images, encodings):
            try:
                parts.append(Part([(cam, frame)], [image], [encoding], pipeline.start([image], [encoding], wanted)))
            except Exception as exc:  # noqa: BLE001
                self.fail(cam, frame, exc)
        return Started(pipeline, parts) if parts else None

    def finish_batch(self, started: Started) -> None:
        """Finish and publish a started batch."""
        pipeline = started.pipeline
        for part in started.parts:
            results = self._finish(pipeline, part)
            self.core.backend_watch.frame(pipeline, [r for r in results if r is not None])
            self.core.diagnostics.count_forward_pass()
            for (cam, frame), result in zip(part.frames, results):
                if result is None:
                    continue
                try:
                    self.core.outputs.publish(cam, frame, result, len(part.frames), pipeline)
                except Exception as exc:  # noqa: BLE001 - e.g. the context ends during shutdown
                    if self.stopping:
                        return
                    self.fail(cam, frame, exc)

    def _finish(self, pipeline: SegmentationPipeline, part: Part) -> list[SegmentationResult | None]:
        """The part's results; when finishing the batch fails, each frame again alone (None: failed)."""
        try:
            return pipeline.finish(part.pending)
        except Exception:  # noqa: BLE001
            if len(part.frames) == 1:
                raise
        results: list[SegmentationResult | None] = []
        for (cam, frame), image, encoding in zip(part.frames, part.images, part.encodings):
            try:
                results.append(pipeline.run_batch([image], [encoding], outputs=part.pending.wanted)[0])
            except Exception as exc:  # noqa: BLE001
                self.fail(cam, frame, exc)
                results.append(None)
        return results

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
