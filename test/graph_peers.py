"""Stand-alone peers for the graph tests: a camera driver and a viewer, each its own process.

They use rclpy with whatever middleware settings their environment has (plain Fast DDS defaults,
``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA``, a profile file), as a real camera driver or rviz2
would; nothing of bisenet_ros' transport tuning is applied here.

    python graph_peers.py camera --topic /cam/image_raw --size 480x640 --rate 5 --count 12 \
        [--best-effort] [--camera-info] [--wait-subs 1]      -> prints "sent N"
    python graph_peers.py viewer --topic /segmentation/labels [--best-effort] [--timeout 60]
        -> "ready" once the topic has a publisher, then "got <frame_id>" per image and
           "diag <level> <frames_lost_in_transport> <dropped_frames> <frames_processed> <message>"
           per /diagnostics status
"""
from __future__ import annotations

import argparse
import signal
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image


def qos(best_effort: bool, depth: int) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE)


def wait(node, condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        rclpy.spin_once(node, timeout_sec=0.05)
    return condition()


def camera(args: argparse.Namespace, node) -> None:
    h, w = (int(v) for v in args.size.split("x"))
    pub = node.create_publisher(Image, args.topic, qos(args.best_effort, args.depth))
    info_pub = None
    if args.camera_info:
        info_topic = args.topic.rpartition("/")[0] + "/camera_info"
        info_pub = node.create_publisher(CameraInfo, info_topic, qos(args.best_effort, args.depth))
    if not wait(node, lambda: pub.get_subscription_count() >= args.wait_subs, args.timeout):
        print(f"no subscriber after {args.timeout} s", flush=True)
        sys.exit(3)
    # a matched subscription on our side does not mean the reader side has matched us yet
    wait(node, lambda: False, args.settle)
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(small, 8, 0), 8, 1)[:h, :w].copy()
    msg = Image(height=h, width=w, encoding="rgb8", step=w * 3)
    msg.data = image.tobytes()
    t0 = time.perf_counter()
    for i in range(args.count):
        stamp = node.get_clock().now().to_msg()
        msg.header.stamp, msg.header.frame_id = stamp, f"{args.prefix}{i}"
        pub.publish(msg)
        if info_pub is not None:
            info = CameraInfo(width=w, height=h)
            info.header = msg.header
            info_pub.publish(info)
        wait(node, lambda: False, max(0.0, t0 + (i + 1) / args.rate - time.perf_counter()))
    wait(node, lambda: False, args.linger)  # let reliable retransmissions finish
    print(f"sent {args.count}", flush=True)


def viewer(args: argparse.Namespace, node) -> None:
    """Print "got <frame_id>" per complete image and "diag <level> <lost> <dropped> <processed>
    <message>" per /diagnostics status of a segmentation node, until --timeout or SIGTERM."""
    from diagnostic_msgs.msg import DiagnosticArray

    def on_msg(msg: Image) -> None:
        if len(msg.data) == msg.step * msg.height:
            print(f"got {msg.header.frame_id}", flush=True)

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(": segmentation"):
                values = {kv.key: kv.value for kv in status.values}
                level = int.from_bytes(status.level, "little") if isinstance(status.level, bytes) else status.level
                counts = [values.get(k, "0") or "0" for k in ("frames_lost_in_transport", "dropped_frames",
                                                               "frames_processed")]
                print(f"diag {level} {' '.join(counts)} {status.message}", flush=True)

    node.create_subscription(Image, args.topic, on_msg, qos(args.best_effort, args.depth))
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, qos(False, 10))
    wait(node, lambda: node.count_publishers(args.topic) > 0, args.timeout)
    print("ready", flush=True)
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
    except KeyboardInterrupt:
        pass


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=("camera", "viewer"))
    p.add_argument("--topic", required=True)
    p.add_argument("--size", default="240x320")
    p.add_argument("--rate", type=float, default=5.0)
    p.add_argument("--count", type=int, default=12)
    p.add_argument("--best-effort", action="store_true")
    p.add_argument("--depth", type=int, default=1)
    p.add_argument("--camera-info", action="store_true")
    p.add_argument("--wait-subs", type=int, default=1)
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--linger", type=float, default=2.0)
    p.add_argument("--prefix", default="f", help="frame_id prefix (camera)")
    p.add_argument("--timeout", type=float, default=90.0)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    rclpy.init()
    node = rclpy.create_node(f"graph_{args.role}")
    try:
        (camera if args.role == "camera" else viewer)(args, node)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
