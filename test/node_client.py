"""Test helpers for the segmentation node: start it as a user would, talk to it over real ROS 2.

``start_node`` runs ``.venv/bin/segmentation_node --ros-args ...`` in its own process (log in a
file); :class:`RosClient` is an rclpy node in the test process (own context, executor thread)
that publishes camera frames, records what comes back, and sets parameters through the node's
real parameter services. Waiting is always "until condition or timeout", never a fixed sleep.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import rclpy
from rcl_interfaces.msg import Parameter as ParameterMsg
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from bisenet_ros.ros.conversions import array_to_image_msg

NODE_EXE = Path(sys.executable).with_name("segmentation_node")
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def frame(h: int, w: int, seed: int) -> np.ndarray:
    """A blocky random RGB image (8x8 blocks) so that the labels have some structure."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 8, 0), 8, 1)[:h, :w].copy()


def assert_matches_offline(got: np.ndarray, expected: np.ndarray, pipeline: Any) -> None:
    """Node output vs the offline pipeline (same device/precision defaults as the node): equal on
    the CPU; on a GPU (fp16, kernels not bit-reproducible) equal on >= 99.9% of the pixels."""
    if pipeline.device.type == "cpu":
        np.testing.assert_array_equal(got, expected)
        return
    assert got.shape == expected.shape
    same = got == expected
    assert (same.all(axis=-1) if same.ndim == 3 else same).mean() >= 0.999


def values(status: Any) -> dict[str, str]:
    """A DiagnosticStatus' key/value pairs as a dict."""
    return {kv.key: kv.value for kv in status.values}


class NodeProcess:
    """A ``segmentation_node`` child process with its log file."""

    def __init__(self, env: dict, ros_args: list[str], log: Path, command: list[str] | None = None) -> None:
        self.log_path = log
        self._log = open(log, "w")
        self.proc = subprocess.Popen([*(command or [str(NODE_EXE)]), "--ros-args", *ros_args], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def start_node(env: dict, ros_args: list[str], log: Path, command: list[str] | None = None) -> NodeProcess:
    """``segmentation_node --ros-args ...`` (or ``command --ros-args ...``) in its own process."""
    return NodeProcess(env, ros_args, log, command)


class RosClient:
    """A test-side node: publishers of camera frames and recorders of the node's outputs."""

    def __init__(self, name: str = "test_client") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list[Any]] = {}
        self._cond = threading.Condition()
        self._publishers: dict[str, Any] = {}
        self._param_clients: dict[str, AsyncParameterClient] = {}
        self._clients: dict[tuple, Any] = {}
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # context shut down
            pass

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5.0)

    # -- recording ------------------------------------------------------------------------------
    def subscribe(self, topic: str, msg_type: type, qos: QoSProfile = RELIABLE) -> None:
        """Record every message on ``topic`` (once per topic; later calls do nothing)."""
        if topic in self.received:
            return
        self.received[topic] = []

        def callback(msg: Any) -> None:
            with self._cond:
                self.received[topic].append(msg)
                self._cond.notify_all()
        self.node.create_subscription(msg_type, topic, callback, qos)

    def messages(self, topic: str, pred: Callable[[Any], bool] = lambda m: True) -> list[Any]:
        with self._cond:
            return [m for m in self.received.get(topic, []) if pred(m)]

    def wait_for(self, topic: str, pred: Callable[[Any], bool] = lambda m: True,
                 timeout: float = 20.0) -> Any | None:
        """The first message on ``topic`` satisfying ``pred`` (None after ``timeout`` seconds)."""
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

    def wait_until(self, condition: Callable[[], bool], timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.05)
        return condition()

    # -- publishing -----------------------------------------------------------------------------
    def publisher(self, topic: str, msg_type: type, qos: QoSProfile | None = None):
        if topic not in self._publishers:
            self._publishers[topic] = self.node.create_publisher(
                msg_type, topic, qos or QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        return self._publishers[topic]

    def wait_matched(self, topic: str, msg_type: type, timeout: float = 30.0) -> bool:
        pub = self.publisher(topic, msg_type)
        return self.wait_until(lambda: pub.get_subscription_count() > 0, timeout)

    def publish_image(self, topic: str, array: np.ndarray, encoding: str, frame_id: str,
                      stamp_ns: int | None = None) -> Any:
        from sensor_msgs.msg import Image

        msg = array_to_image_msg(array, encoding)
        msg.header.frame_id = frame_id
        stamp_ns = self.node.get_clock().now().nanoseconds if stamp_ns is None else stamp_ns
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        self.publisher(topic, Image).publish(msg)
        return msg

    def request(self, topic: str, msg: Any, reply_topic: str, timeout: float = 30.0,
                retry_every: float = 3.0) -> Any | None:
        """Publish ``msg`` (again every ``retry_every`` s: input QoS is best effort) until a message
        with its frame_id arrives on ``reply_topic``."""
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

    # -- parameters -----------------------------------------------------------------------------
    def _params(self, node_name: str) -> AsyncParameterClient:
        if node_name not in self._param_clients:
            client = AsyncParameterClient(self.node, node_name)
            if not client.wait_for_services(timeout_sec=30.0):
                raise TimeoutError(f"parameter services of {node_name} not available")
            self._param_clients[node_name] = client
        return self._param_clients[node_name]

    def _result(self, future, timeout: float = 20.0):
        if not self.wait_until(future.done, timeout):
            raise TimeoutError("parameter service did not answer")
        return future.result()

    def set_parameters(self, node_name: str, **values: Any):
        """Set parameters atomically through the node's service; returns its SetParametersResult."""
        params = [Parameter(k, value=v) for k, v in values.items()]
        return self._result(self._params(node_name).set_parameters_atomically(params)).result

    def call(self, srv_type: type, service: str, request: Any, timeout: float = 30.0) -> Any:
        """Call ``service`` once it is available; the response (TimeoutError if none)."""
        key = (srv_type, service)
        if key not in self._clients:
            self._clients[key] = self.node.create_client(srv_type, service)
        client = self._clients[key]
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {service} not available")
        return self._result(client.call_async(request), timeout)

    def get_parameter(self, node_name: str, name: str) -> Any:
        values = self._result(self._params(node_name).get_parameters([name])).values
        return Parameter.from_parameter_msg(ParameterMsg(name=name, value=values[0])).value
