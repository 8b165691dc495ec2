"""The one ROS client harness: a client node that talks to a ``segmentation_node``
(:mod:`bisenet_ros.ros.node_process` starts one as a child process).

Used by ``bisenet-ros replay`` (:mod:`bisenet_ros.ros.live_replay`), ``bisenet-ros node-bench`` and the
node tests (``test/node_client.py``):

- :class:`RosClient`: an rclpy node in its own context with an executor thread; publishers, subscriptions
  that record or call back, "wait until" helpers (never fixed sleeps) and the node's parameter services.
  Message types by class or short name (:data:`MESSAGE_TYPES`): callers outside ``ros/`` import no ROS;
- :func:`run_camera`: a camera that publishes frames at a fixed rate (node-bench's load).
"""
from __future__ import annotations

import json
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header, String

from ..data.images import stamp_ns as header_stamp_ns
from .conversions import array_to_image_msg, image_msg_to_array
from .image_cdr import header_stamp_of_cdr, serialize_image
from .transport import apply_fastdds_profile, keep_large_buffers


def qos_profile(reliable: bool = True, depth: int = 10, latched: bool = False) -> QoSProfile:
    """Keep-last ``depth``; reliable or best effort; ``latched``: transient local (late joiners get the last)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


MESSAGE_TYPES: dict[str, type] = {"image": Image, "compressed": CompressedImage, "camera_info": CameraInfo,
                                  "diagnostics": DiagnosticArray, "string": String, "points": PointCloud2}
RELIABLE = qos_profile(depth=200)
LATCHED = qos_profile(depth=1, latched=True)


# -- the client node ------------------------------------------------------------------------------------
@dataclass
class Received:
    """One message as a callback sees it: receipt times and plain accessors."""

    msg: Any
    received: float  # time.perf_counter() at receipt
    received_ns: int  # system clock at receipt (the clock header stamps use)

    @property
    def stamp_ns(self) -> int | None:  # a raw subscription's message: read off its CDR (None: not CDR)
        return header_stamp_of_cdr(self.msg) if isinstance(self.msg, bytes) else header_stamp_ns(self.msg.header)

    def image(self) -> tuple[np.ndarray, str]:
        """An Image's pixels (zero-copy view) and encoding; :class:`BisenetError` if malformed."""
        return image_msg_to_array(self.msg)

    def values(self) -> dict[str, str]:
        """A DiagnosticArray's key/value pairs (all statuses)."""
        return {kv.key: kv.value for status in self.msg.status for kv in status.values}


def message_type(kind: str | type) -> type:
    return MESSAGE_TYPES[kind] if isinstance(kind, str) else kind


class RosClient:
    """A client node in its own context, spun by an executor thread; see the module docstring."""

    def __init__(self, name: str = "bisenet_client") -> None:
        apply_fastdds_profile()  # before the participant is created, as the node does
        keep_large_buffers()  # images taken on the executor thread: no page faults per message
        self.context = rclpy.Context()
        rclpy.init(args=["bisenet_client"], context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list[Any]] = {}
        self._cond = threading.Condition()
        self._publishers: dict[str, Any] = {}
        self._param_clients: dict[str, AsyncParameterClient] = {}
        self._service_clients: dict[tuple, Any] = {}
        self._thread = threading.Thread(target=self._spin, name=f"{name}_spin", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - the context was shut down
            pass

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5.0)

    def __enter__(self) -> RosClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- subscriptions ------------------------------------------------------------------------------------
    def subscribe(self, topic: str, kind: str | type, qos: QoSProfile = RELIABLE,
                  callback: Callable[[Received], None] | None = None, raw: bool = False) -> None:
        """Record every message on ``topic`` in :attr:`received` (no ``callback``; once per topic),
        or hand each one to ``callback`` as :class:`Received` (exceptions there are the caller's);
        ``raw``: its ``msg`` is the serialized message (bytes), never converted to Python objects
        (what a benchmark's collector needs of a 2.7 MB image it only counts)."""
        if callback is None:
            if topic in self.received:
                return
            self.received[topic] = []

            def record(msg: Any) -> None:
                with self._cond:
                    self.received[topic].append(msg)
                    self._cond.notify_all()
            self.node.create_subscription(message_type(kind), topic, record, qos)
            return
        self.node.create_subscription(
            message_type(kind), topic,
            lambda msg: callback(Received(msg, time.perf_counter(), time.time_ns())), qos, raw=raw)

    def messages(self, topic: str, pred: Callable[[Any], bool] = lambda m: True) -> list[Any]:
        with self._cond:
            return [m for m in self.received.get(topic, []) if pred(m)]

    def wait_for(self, topic: str, pred: Callable[[Any], bool] = lambda m: True,
                 timeout: float = 20.0) -> Any | None:
        """The first recorded message on ``topic`` satisfying ``pred`` (None after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in self.received.get(topic, []) if pred(m)]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.2))

    @staticmethod
    def wait_until(condition: Callable[[], bool], timeout: float = 20.0, poll: float = 0.02) -> bool:
        """Until ``condition()`` (True) or ``timeout`` seconds (its last value)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(poll)
        return bool(condition())

    def count_publishers(self, topic: str) -> int:
        return self.node.count_publishers(topic)

    # -- publishing ---------------------------------------------------------------------------------------
    def publisher(self, topic: str, kind: str | type = "image", qos: QoSProfile | None = None):
        """The client's publisher on ``topic`` (created on first use; reliable, depth 5 unless ``qos``)."""
        if topic not in self._publishers:
            self._publishers[topic] = self.node.create_publisher(
                message_type(kind), topic, qos or QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        return self._publishers[topic]

    def wait_matched(self, topic: str, kind: str | type = "image", timeout: float = 120.0) -> bool:
        """Until a subscriber of ``topic`` matched our publisher (a node starting up loads its model
        and may measure the auto backend first: tens of seconds on a loaded machine)."""
        pub = self.publisher(topic, kind)
        return self.wait_until(lambda: pub.get_subscription_count() > 0, timeout)

    def publish_image(self, topic: str, array: np.ndarray, encoding: str, frame_id: str,
                      stamp_ns: int | None = None) -> Image:
        """Publish ``array`` as an Image stamped ``stamp_ns`` (default now); returns the message."""
        msg = array_to_image_msg(array, encoding)
        msg.header.frame_id = frame_id
        stamp_ns = self.node.get_clock().now().nanoseconds if stamp_ns is None else stamp_ns
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        self.publisher(topic, Image).publish(msg)
        return msg

    def request(self, topic: str, msg: Any, reply_topic: str, timeout: float = 30.0,
                retry_every: float = 3.0) -> Any | None:
        """Publish ``msg`` (again every ``retry_every`` s: input QoS is best effort) until a message
        with its frame_id arrives on ``reply_topic`` (recorded with :meth:`subscribe`)."""
        frame_id = msg.header.frame_id
        deadline = time.monotonic() + timeout
        pub = self._publishers[topic]
        while time.monotonic() < deadline:
            pub.publish(msg)
            reply = self.wait_for(reply_topic, lambda m: m.header.frame_id == frame_id,
                                  min(retry_every, max(0.0, deadline - time.monotonic())))
            if reply is not None:
                return reply
        return None

    # -- parameters ---------------------------------------------------------------------------------------
    def _params(self, node_name: str) -> AsyncParameterClient:
        if node_name not in self._param_clients:
            client = AsyncParameterClient(self.node, node_name)
            if not client.wait_for_services(timeout_sec=30.0):
                raise TimeoutError(f"parameter services of {node_name} not available")
            self._param_clients[node_name] = client
        return self._param_clients[node_name]

    def _result(self, future, timeout: float = 20.0):
        if not self.wait_until(future.done, timeout, poll=0.05):
            raise TimeoutError("parameter service did not answer")
        return future.result()

    def set_parameters(self, node_name: str, **values: Any):
        """Set parameters atomically through the node's service; returns its SetParametersResult."""
        params = [Parameter(k, value=v) for k, v in values.items()]
        return self._result(self._params(node_name).set_parameters_atomically(params)).result

    def call(self, srv_type: type, service: str, request: Any, timeout: float = 30.0,
             retry_every: float | None = None) -> Any:
        """Call ``service`` (e.g. a lifecycle node's ``change_state``) once it is available; its response.

        ``retry_every`` (idempotent requests only, e.g. ``get_state``): send the request again after
        that many seconds without an answer. A service found available may still not have matched
        this client's response reader: Fast DDS then drops the response ("client will not receive
        response"), which a process still starting under load can hit."""
        key = (srv_type, service)
        if key not in self._service_clients:
            self._service_clients[key] = self.node.create_client(srv_type, service)
        client = self._service_clients[key]
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {service} not available")
        deadline = time.monotonic() + timeout
        while retry_every is not None and time.monotonic() + retry_every < deadline:
            future = client.call_async(request)
            if self.wait_until(future.done, retry_every, poll=0.05):
                return future.result()
            client.remove_pending_request(future)
        return self._result(client.call_async(request), max(deadline - time.monotonic(), 1.0))

    def get_parameter(self, node_name: str, name: str) -> Any:
        values = self._result(self._params(node_name).get_parameters([name])).values
        return Parameter.from_parameter_msg(ParameterMsg(name=name, value=values[0])).value


# -- a camera at a fixed rate -----------------------------------------------------------------------------
def run_camera(rate: float, frame_size: tuple[int, int], duration: float, topic: str = "image",
               base: np.ndarray | None = None) -> dict:
    """Publish bgr8 frames (4 prebuilt ones in turn: ``base``, default uniform noise, shifted
    sideways; stamped now) best effort at ``rate`` Hz for ``duration`` s once someone subscribes
    (30 s at most); never bursts to catch up. Returns ``{"published", "elapsed_s", "rate_hz"}``."""
    h, w = frame_size
    if base is None:
        base = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    header = Header(frame_id="bench_camera")
    # serialized once (a camera driver in C++ costs about that): each publish only writes the stamp
    frames = [memoryview(serialize_image(np.roll(base, 97 * i, axis=1), "bgr8", header)) for i in range(4)]
    sent, elapsed = 0, 0.0
    with RosClient("bench_camera") as client:
        pub = client.publisher(topic, Image, qos_profile(reliable=False, depth=1))
        client.wait_until(lambda: pub.get_subscription_count() > 0, 30.0, poll=0.05)
        period = 1.0 / rate
        start = next_t = time.monotonic()
        try:
            while time.monotonic() - start < duration:
                cdr = frames[sent % len(frames)]
                stamp = client.node.get_clock().now().to_msg()
                pub.publish(b"".join((cdr[:4], struct.pack("<iI", stamp.sec, stamp.nanosec), cdr[12:])))
                sent += 1
                next_t += period
                delay = next_t - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_t = time.monotonic()  # cannot keep the rate: do not burst to catch up
        except KeyboardInterrupt:
            pass
        elapsed = time.monotonic() - start
    return {"published": sent, "elapsed_s": elapsed, "rate_hz": sent / elapsed if elapsed else 0.0}


def parse_legend(received: Received) -> dict | None:
    """The node's class legend (JSON on ``~/legend``), None if unreadable."""
    try:
        return json.loads(received.msg.data)
    except ValueError:
        return None
