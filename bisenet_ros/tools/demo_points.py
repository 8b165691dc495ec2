"""``make demo-points`` (``python -m bisenet_ros.tools.demo_points``): the semantic point cloud end to end.

1. renders a synthetic drive (:mod:`bisenet_ros.data.synthetic_scenes`) with its exact depth and the renderer's
   camera matrix: camera images, registered depth (alternately 16UC1 millimetres and 32FC1 metres)
   and CameraInfo with one stamp per frame;
2. starts the real ``segmentation_node`` with the shipped demo weights and ``publish_points:=true``,
   publishes the frames one at a time (each waits for its cloud) and collects ``~/points``,
   ``~/labels`` and ``~/timing``;
3. checks every cloud against a back-projection of the depth it was sent, computed here with the
   labels the node published for that frame, and prints the figures (points, largest deviation,
   label agreement, ``points_ms`` per frame);
4. writes ``demo_output/points/cloud.png``: camera | predicted classes on top, the labelled cloud
   of the last frame seen from above and behind | top-down below, coloured by class;
   and ``demo_output/points/points.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import BisenetError, ConfigError, run_reporting
from .common import cpu_name, hw_type
from .demo import demo_weights

IMAGE, DEPTH, INFO = "/camera/image_raw", "/camera/depth", "/camera/camera_info"
NODE = "/segmentation"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bisenet_ros.tools.demo_points",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("demo_output") / "points", help="output folder")
    p.add_argument("--weights", type=Path, default=None, help="checkpoint (default: the shipped demo weights)")
    p.add_argument("--frames", type=int, default=12, help="frames of the drive (default 12)")
    p.add_argument("--size", type=hw_type(), default=(480, 640), help="camera HxW (default 480x640)")
    p.add_argument("--seed", type=int, default=2024, help="street (default 2024)")
    p.add_argument("--max-depth", type=float, default=40.0, help="points_max_depth in metres (default 40)")
    p.add_argument("--device", default="auto", help="node device: auto, cpu, cuda")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the node / a cloud")
    return p


def render_frames(frames: int, size: tuple[int, int], seed: int):
    """(image, depth metres float32 with inf = sky, K 3x3) per frame of a synthetic drive."""
    from ..data.synthetic_scenes import camera_matrix, drive_sequence

    k = camera_matrix(size)
    for f in drive_sequence(seed, frames, size, with_depth=True):
        yield f.image, f.depth.astype(np.float32), k


def depth_to_send(depth_m: np.ndarray, encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """The registered depth as published -- 16UC1 millimetres (0 = none, beyond 65.535 m none) or
    32FC1 metres -- and the metres it stands for."""
    if encoding == "16UC1":
        mm = np.where(np.isfinite(depth_m) & (depth_m < 65.5), np.round(depth_m * 1000), 0).astype(np.uint16)
        return mm, mm.astype(np.float64) / 1000
    return depth_m.astype(np.float32), depth_m.astype(np.float64)


def check_cloud(cloud: np.ndarray, sent_depth: np.ndarray, k: np.ndarray, labels: np.ndarray,
                max_depth: float) -> dict:
    """The cloud against the back-projection of the sent depth with the node's labels."""
    valid = np.isfinite(sent_depth) & (sent_depth > 0) & (sent_depth <= max_depth)
    v, u = np.nonzero(valid)
    z = sent_depth[valid]
    ref = np.stack([(u - k[0, 2]) * z / k[0, 0], (v - k[1, 2]) * z / k[1, 1], z], 1)
    got = np.stack([cloud["x"], cloud["y"], cloud["z"]], 1).astype(np.float64)
    same_count = len(got) == len(ref)
    return {
        "points": int(len(got)), "valid_depth_pixels": int(valid.sum()), "one_point_per_pixel": same_count,
        "max_deviation_mm": float(np.abs(got - ref).max() * 1000) if same_count and len(ref) else None,
        "labels_equal": bool(same_count and np.array_equal(cloud["label"], labels[valid])),
    }


def start_node(weights: Path, device: str, max_depth: float):
    from ..ros.node_process import NodeProcess, node_command

    params = {"weights": str(weights.resolve()), "device": device, "publish_points": True,
              "points_max_depth": max_depth, "publish_overlay": False}
    return NodeProcess(node_command(params, IMAGE) + ["-r", f"depth:={DEPTH}", "-r", f"camera_info:={INFO}"])


def connect(client) -> None:
    """Publishers of image, depth and CameraInfo; recorders of the node's points, labels and timing."""
    for topic, kind in ((IMAGE, "image"), (DEPTH, "image"), (INFO, "camera_info")):
        client.publisher(topic, kind)
    for kind, msg_type in (("points", "points"), ("labels", "image"), ("timing", "diagnostics")):
        client.subscribe(f"{NODE}/{kind}", msg_type)


def send_frame(client, i: int, image: np.ndarray, depth_m: np.ndarray, k: np.ndarray,
               timeout: float) -> tuple[str, np.ndarray, dict]:
    """Publish frame ``i`` (image, depth, CameraInfo; one stamp) until its cloud and labels came back."""
    from ..ros.conversions import array_to_image_msg, camera_info_msg, depth_to_image_msg

    encoding = ("16UC1", "32FC1")[i % 2]
    frame_id = f"camera_{i:03d}"
    depth, sent = depth_to_send(depth_m, encoding)
    msgs = {IMAGE: array_to_image_msg(image, "rgb8"), DEPTH: depth_to_image_msg(depth),
            INFO: camera_info_msg(image.shape[0], image.shape[1], k)}
    stamp = divmod(time.time_ns(), 1_000_000_000)
    for m in msgs.values():
        (m.header.stamp.sec, m.header.stamp.nanosec), m.header.frame_id = stamp, frame_id
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for topic in (INFO, DEPTH, IMAGE):
            client.publisher(topic).publish(msgs[topic])
        got = {kind: client.wait_for(f"{NODE}/{kind}", lambda m: m.header.frame_id == frame_id,
                                     min(5.0, max(0.1, deadline - time.monotonic())))
               for kind in ("points", "labels", "timing")}
        if all(got.values()):
            return encoding, sent, got
    raise BisenetError(f"no point cloud for frame {i} within {timeout:g} s")


def run(args: argparse.Namespace) -> dict:
    """Run the demo; returns the figures written to ``points.json``."""
    from ..data.images import raw_image_to_array
    from ..ros.conversions import cloud_msg_to_points

    weights = demo_weights(args.weights)
    if args.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {args.frames}")
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_LOG_DIR", str((args.out / "ros_log").resolve()))
    from ..ros.transport import apply_fastdds_profile

    apply_fastdds_profile()  # 640x480 depth + image over shared memory, as the node does
    h, w = args.size
    print(f"[1/3] synthetic drive: {args.frames} frames {w}x{h} with exact depth (seed {args.seed})")
    frames = list(render_frames(args.frames, args.size, args.seed))
    print(f"[2/3] segmentation_node with {weights.name}, publish_points:=true, points_max_depth:={args.max_depth:g}")
    from ..ros.client import RosClient

    child = start_node(weights, args.device, args.max_depth)
    client = RosClient("demo_points")
    try:
        connect(client)
        _wait_ready(client, child, args.timeout)
        results, last = [], None
        for i, (image, depth_m, k) in enumerate(frames):
            encoding, sent, msgs = send_frame(client, i, image, depth_m, k, args.timeout)
            labels = raw_image_to_array(msgs["labels"])[0]
            timing = {kv.key: kv.value for kv in msgs["timing"].status[0].values}
            cloud = cloud_msg_to_points(msgs["points"])
            results.append({"frame": i, "encoding": encoding, "points_ms": float(timing["points_ms"]),
                            **check_cloud(cloud, sent, k, labels, args.max_depth)})
            last = (image, labels, cloud)
    finally:
        client.close()
        code = child.stop()
    print("[3/3] outputs")
    report = summarise(results, args, weights, code)
    picture = args.out / "cloud.png"
    write_picture(picture, *last, max_depth=args.max_depth, class_names=class_names_of(weights))
    report["picture"] = str(picture)
    (args.out / "points.json").write_text(json.dumps(report, indent=2))
    return report


def _wait_ready(client, child, timeout: float) -> None:
    """Until the node subscribes to the image, and to the depth (it does once ~/points is wanted)."""
    subscribed = lambda topic: client.publisher(topic).get_subscription_count() > 0  # noqa: E731
    if client.wait_until(lambda: not child.alive() or (subscribed(IMAGE) and subscribed(DEPTH)), timeout):
        child.check_alive()
        return
    raise BisenetError(f"the node did not subscribe to {IMAGE} and {DEPTH}: {child.log_tail(3)}")


def summarise(results: list[dict], args: argparse.Namespace, weights: Path, exit_code) -> dict:
    """Print and return the figures."""
    cpu = cpu_name()
    ms = np.array([r["points_ms"] for r in results])
    lines = []
    for enc in ("16UC1", "32FC1"):
        rs = [r for r in results if r["encoding"] == enc]
        if rs:
            dev = max(r["max_deviation_mm"] or 0.0 for r in rs)
            ok = all(r["one_point_per_pixel"] and r["labels_equal"] for r in rs)
            lines.append(f"      {enc}: {len(rs)} clouds, {sum(r['points'] for r in rs)} points, one point per "
                         f"valid depth pixel and the node's label on every point: {'yes' if ok else 'NO'}, "
                         f"largest deviation from the back-projection {dev:.4f} mm")
    print("\n".join(lines))
    print(f"      points_ms per {args.size[1]}x{args.size[0]} frame: p50 {np.median(ms):.1f}, max {ms.max():.1f} "
          f"(node's ~/timing; CPU {cpu})")
    print(f"      {args.out / 'cloud.png'}, {args.out / 'points.json'}")
    return {"weights": str(weights), "size": list(args.size), "frames": results, "cpu": cpu,
            "points_ms_p50": float(np.median(ms)), "points_ms_max": float(ms.max()), "node_exit_code": exit_code,
            "all_ok": all(r["one_point_per_pixel"] and r["labels_equal"] and (r["max_deviation_mm"] or 0) < 2.0
                          for r in results)}


def write_picture(path: Path, image: np.ndarray, labels: np.ndarray, cloud: np.ndarray, max_depth: float,
                  class_names: list[str] | None = None) -> None:
    """camera | classes over perspective view | top-down view (metres) of the cloud, coloured by
    its rgb field, with titles and the class legend (:func:`cloud_view.cloud_figure`)."""
    import matplotlib.pyplot as plt

    from .cloud_view import cloud_figure

    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], 1)
    rgb = cloud["rgb"].astype(np.uint32)
    colours = np.stack([(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255], 1).astype(np.uint8)
    fig = cloud_figure(image, labels, xyz, colours, np.asarray(cloud["label"]), max_depth, class_names)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def class_names_of(weights: Path) -> list[str]:
    from ..data.datasets import sidecar_preset
    from ..models.checkpoint import read_sidecar

    return list(sidecar_preset(read_sidecar(weights), str(weights)).class_names)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code, report = run_reporting("demo-points", lambda: run(args))
    return code if report is None else (0 if report["all_ok"] else 1)


if __name__ == "__main__":
    sys.exit(main())
