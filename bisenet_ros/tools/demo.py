"""``make demo`` (``python -m bisenet_ros.tools.demo``): the whole system on a generated recording.

1. generates the sample recording: a drive down a synthetic street (:mod:`bisenet_ros.data.synthetic_scenes`,
   fixed seed) written as a ROS 2 bag with camera images, CameraInfo and ground-truth labels;
2. starts the real ``segmentation_node`` with the shipped demo weights
   (``models/bisenetv2_synthetic_street.pth``; class names, palette, mean/std and input size come
   from its sidecar YAML) and plays the recording into it at its frame rate
   (:func:`bisenet_ros.ros.live_replay.replay_bag`);
3. scores the labels the node publishes against the ground truth and writes
   ``demo_output/metrics.json`` (mIoU, per-class IoU, fps, latency, drops), the node's overlay
   images and ``overlay.mp4`` (H.264 where PyAV is installed), and ``montage.png``: three frames
   side by side under the titles camera | ground truth | prediction, each with its mIoU, above
   the class legend;
4. prints a short summary and exits.

The demo weights were trained on synthetic scenes only (see models/README.md): they show the
pipeline working end to end, not real-world accuracy.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import ConfigError, run_reporting, terminate_as_interrupt
from ..options import PipelineOptions
from ..output_files import atomic_file, check_own_dir, prepare_dir, write_text
from .common import hw_type, number

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEMO_WEIGHTS = "bisenetv2_synthetic_street.pth"
#: the recording: image, label and camera-info topics
IMAGE_TOPIC, LABEL_TOPIC, INFO_TOPIC = "/camera/image_raw", "/camera/labels", "/camera/camera_info"


def default_weights() -> Path:
    """The shipped demo weights: ``models/`` of the source tree, else the installed share dir."""
    candidates = [PACKAGE_ROOT.parent / "models" / DEMO_WEIGHTS]
    try:  # installed with colcon: share/bisenet_ros/models
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("bisenet_ros")) / "models" / DEMO_WEIGHTS)
    except Exception:  # ament_index is not there in a plain venv
        pass
    candidates.append(Path(sys.prefix) / "share" / "bisenet_ros" / "models" / DEMO_WEIGHTS)
    for cand in candidates:
        if cand.is_file():
            return cand
    return candidates[0]


def demo_weights(given: Path | None) -> Path:
    """``given`` (a file or a public checkpoint's name), else the shipped demo weights; ConfigError
    when the file is not there."""
    from ..models.weights_catalog import resolve_weights

    weights = Path(resolve_weights(str(given))) if given else default_weights()
    if not weights.is_file():
        raise ConfigError(f"{weights}: demo weights not found (they ship in models/; see models/README.md)")
    return weights


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bisenet_ros.tools.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default demo_output)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --out folder that bisenet-ros did not create")
    p.add_argument("--weights", type=Path, default=None, help="checkpoint (default: the shipped demo weights)")
    p.add_argument("--frames", type=number(int, 1, 100000), default=80, help="frames in the sample recording (default 80)")
    p.add_argument("--fps", type=number(float, 0.01, 1000), default=10.0, help="frame rate of the recording (default 10)")
    p.add_argument("--size", type=hw_type(), default=(240, 320), help="camera HxW (default 240x320)")
    p.add_argument("--seed", type=number(int, 0), default=2024, help="street of the sample recording (default 2024)")
    p.add_argument("--rate", type=number(float, 0.01, 100), default=1.0, help="replay speed factor (default 1 = recorded rate)")
    p.add_argument("--device", default="auto", help="node device: auto (default: CUDA when available), cpu, cuda")
    p.add_argument("--min-miou", type=number(float, 0, 1), default=None,
                   help="exit with status 1 when the mIoU is below this (for tests and CI)")
    p.add_argument("--timeout", type=number(float, 0.1), default=120.0, help="seconds to wait for the node to come up")
    p.add_argument("--foxglove", type=number(int, 1, 65535), default=None, metavar="PORT",
                   help="then keep a node serving the Foxglove live view on ws://127.0.0.1:PORT, replaying the "
                        "recording in a loop until Ctrl-C (needs foxglove-sdk; make demo FOXGLOVE=1: port 8765)")
    return p


def write_recording(path: Path, frames: int, fps: float, size: tuple[int, int], seed: int) -> tuple[int, list]:
    """The sample bag (mcap): images, labels and CameraInfo of a synthetic drive. Returns the
    frame count and three (frame index, image, labels) samples for the montage."""
    from ..data.bags import write_image_bag
    from ..data.synthetic_scenes import camera_matrix, drive_sequence

    keep: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    picks = {0, frames // 2, frames - 1}

    k = camera_matrix(size)  # the renderer's own calibration: the recording's CameraInfo is real

    def gen():
        for i, frame in enumerate(drive_sequence(seed, frames, size, fps)):
            if i in picks:
                keep[i] = (i, frame.image, frame.labels)
            yield frame.image, frame.labels

    n = write_image_bag(path, gen(), fps=fps, image_topic=IMAGE_TOPIC, label_topic=LABEL_TOPIC,
                        info_topic=INFO_TOPIC, frame_id="camera", storage="mcap", start_ns=1_700_000_000 * 10 ** 9,
                        overwrite=True, intrinsics=(k[0, 0], k[1, 1], k[0, 2], k[1, 2]))
    return n, [keep[i] for i in sorted(keep)]


def write_montage(path: Path, samples: list, weights: Path, device: str) -> list[float | None]:
    """A picture that explains itself: column titles (camera | ground truth | prediction), each
    row's frame and mIoU, and the class legend; predictions through the same pipeline as the node.
    Returns the per-row mIoU."""
    import cv2

    from ..evaluation.metrics import ConfusionMatrix
    from ..pipeline import build_pipeline

    pipe = build_pipeline(weights=weights, device=device, input_size=None)
    names, palette = list(pipe.preset.class_names), pipe.preset.palette
    rows, mious = [], []
    for frame, img, gt in samples:
        res = pipe(img, "rgb8", outputs=("color",))
        truth = palette[np.where(gt < pipe.num_classes, gt, 0)]
        truth[gt >= pipe.num_classes] = 0  # ignored pixels: black
        cm = ConfusionMatrix(pipe.num_classes, pipe.preset.ignore_index)
        cm.update(res.labels, gt)
        miou = cm.compute(names)["miou"]
        mious.append(miou)
        caption = f"frame {frame}: mIoU {miou:.2f} (classes in view)" if miou is not None \
            else f"frame {frame}: no labelled pixels"
        rows.append(_caption(caption, img.shape[1] * 3))
        rows.append(np.concatenate([img, truth, res.color], axis=1))
    width = rows[0].shape[1]
    titles = np.concatenate([_caption(t, img.shape[1], scale=0.6, centre=True)
                             for t in ("camera", "ground truth", "prediction")], axis=1)
    picture = np.concatenate([titles, *rows, _legend(names, palette, width)], axis=0)
    with atomic_file(path) as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    return mious


def _caption(text: str, width: int, scale: float = 0.5, centre: bool = False) -> np.ndarray:
    """A white strip with black text (RGB)."""
    import cv2

    strip = np.full((26, width, 3), 255, np.uint8)
    (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x = max(4, (width - tw) // 2) if centre else 6
    cv2.putText(strip, text, (x, 18), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def _legend(names: list[str], palette: np.ndarray, width: int) -> np.ndarray:
    """Colour swatches with class names, wrapped over as many lines as needed (RGB)."""
    import cv2

    items, line, x = [], [], 6
    for i, name in enumerate(names):
        (tw, _), _ = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        if x + 22 + tw > width and line:
            items.append(line)
            line, x = [], 6
        line.append((x, i, name))
        x += 22 + tw + 14
    items.append(line)
    out = np.full((8 + 22 * len(items), width, 3), 255, np.uint8)
    for row, entries in enumerate(items):
        y = 6 + 22 * row
        for x0, i, name in entries:
            colour = tuple(int(c) for c in palette[i])
            cv2.rectangle(out, (x0, y), (x0 + 16, y + 14), colour, -1)
            cv2.rectangle(out, (x0, y), (x0 + 16, y + 14), (0, 0, 0), 1)
            cv2.putText(out, name, (x0 + 22, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def run(args: argparse.Namespace) -> dict:
    """Run the demo; returns the metrics written to ``metrics.json``."""
    from ..models.checkpoint import read_sidecar

    weights = demo_weights(args.weights)
    if args.frames < 2:
        raise ConfigError(f"--frames must be >= 2, got {args.frames}")
    side = read_sidecar(weights)
    out: Path = args.out
    check_own_dir(out, [weights], overwrite=args.overwrite)
    prepare_dir(out, "demo")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # keep the demo on this machine
    os.environ.setdefault("ROS_LOG_DIR", str((out / "ros_log").resolve()))
    h, w = args.size

    t0 = time.perf_counter()
    print(f"[1/3] sample recording: {args.frames} frames {w}x{h} at {args.fps:g} Hz (synthetic street, seed {args.seed})")
    bag = out / "sample_recording"
    n, samples = write_recording(bag, args.frames, args.fps, (h, w), args.seed)
    print(f"      {bag} ({IMAGE_TOPIC}, {INFO_TOPIC}, {LABEL_TOPIC}) in {time.perf_counter() - t0:.1f} s")

    from ..ros.live_replay import pop_latency_samples, replay_bag

    print(f"[2/3] segmentation_node with {weights.name} ({side.get('arch', '?')}, "
          f"{side.get('num_classes', '?')} classes, device {args.device}); replaying at {args.rate:g}x")
    overlays = out / "overlays"
    for old in overlays.glob("overlay_*.png"):
        old.unlink()
    report = replay_bag(bag, image_topic=IMAGE_TOPIC, label_topic=LABEL_TOPIC, rate=args.rate,
                        node_args=PipelineOptions(weights=str(weights), device=args.device).to_parameters(),
                        save_overlays=overlays, timeout_s=args.timeout, progress=sys.stderr.isatty())
    pop_latency_samples(report)

    print("[3/3] outputs")
    montage = out / "montage.png"
    report["montage_miou"] = write_montage(montage, samples, weights, args.device)
    report["demo"] = {
        "weights": str(weights), "recording": str(bag), "frames": n, "fps_recorded": args.fps,
        "size": [h, w], "seed": args.seed, "montage": str(montage),
        "note": "demo weights trained on synthetic street scenes only (models/README.md)",
    }
    write_text(out / "metrics.json", json.dumps(report, indent=2))
    _summary(report, out, time.perf_counter() - t0)
    if args.foxglove:
        keep_view(args, bag, weights)
    return report


def keep_view(args: argparse.Namespace, bag: Path, weights: Path) -> None:
    """A node with the Foxglove view on ``args.foxglove``, fed the recording (restamped to now) in a
    loop until Ctrl-C."""
    try:
        import foxglove  # noqa: F401
    except ImportError:
        print("demo: --foxglove needs foxglove-sdk (pip install foxglove-sdk); skipping the live view", file=sys.stderr)
        return
    from ..ros.node_process import NodeProcess, node_command
    from ..ros.live_replay import replay_bag

    params = {**PipelineOptions(weights=str(weights), device=args.device).to_parameters(),
              "foxglove_port": args.foxglove}
    node = NodeProcess(node_command(params, IMAGE_TOPIC))
    print(f"[view] Foxglove live view on ws://127.0.0.1:{args.foxglove} (Foxglove: Open connection -> "
          f"Foxglove WebSocket); replaying {bag.name} in a loop, Ctrl-C to stop")
    try:
        while True:
            node.check_alive()
            replay_bag(bag, image_topic=IMAGE_TOPIC, rate=args.rate, restamp=True, timeout_s=args.timeout)
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()


def _summary(r: dict, out: Path, seconds: float) -> None:
    lat = (r.get("latency_ms") or {}).get("end_to_end_ms") or {}
    ious = r.get("per_class_iou") or {}
    per_class = ", ".join(f"{k} {v:.2f}" for k, v in ious.items() if v is not None) if isinstance(ious, dict) else ""
    fps = f"{r['fps']:.1f}" if r.get("fps") else "n/a"
    p50 = f"{lat['p50']:.0f} ms" if lat.get("p50") is not None else "n/a"
    miou = f"{r['miou']:.3f}" if r.get("miou") is not None else "n/a"
    video = (r.get("overlays") or {}).get("video")
    print(f"      node labelled {r['frames_received']}/{r['frames_published']} frames "
          f"({r['dropped']} skipped by its newest-frame policy), {fps} fps, end-to-end latency p50 {p50}")
    print(f"      mIoU {miou} on {r.get('labelled_frames', 0)} frames ({per_class})")
    print(f"      {out / 'metrics.json'}, {out / 'montage.png'}, {out / 'overlays'}/ "
          f"({(r.get('overlays') or {}).get('frames', 0)} PNGs{', ' + str(video) if video else ''})")
    print(f"demo finished in {seconds:.0f} s")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code, report = run_reporting("demo", lambda: run(args))
    if report is None:
        return code
    if args.min_miou is not None and (report.get("miou") or 0.0) < args.min_miou:
        print(f"demo: mIoU {report.get('miou')} is below --min-miou {args.min_miou}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
