"""``bisenet-ros node-bench``: the segmentation node under load, over real ROS 2.

Three processes: a *camera* publishing ``sensor_msgs/Image`` (bgr8, ``--frame-size``; ``--frame``: a
rendered street scene by default, as ``bench``, or uniform noise) at ``--rate`` Hz, best effort (like a camera driver); the *node* (``segmentation_node``, the shipped
console script, with the model options given here as parameters); and this command as the
*collector*, subscribed to ``/segmentation/labels``, ``color``, ``overlay`` (so the node computes
them, as for a viewer) and ``timing``. After ``--warmup`` camera frames (``--warmup / --rate``
seconds of load) it measures for ``--duration`` seconds:

* ``node_fps``: labels messages received per second;
* ``latency_ms``: receipt time minus the camera stamp (same host clock), p50/p90/p99;
* ``drops``: frames the camera sent that never came out, and the node's own ``dropped_frames``;
* ``cpu_percent``: where the CPUs' time went in the window (node, camera, collector, other, idle;
  percent of one CPU), since all three processes share the machine;

and compares them with the in-process pipeline speed that ``bench`` measures for the same options
(``pipeline_fps``, measured first unless ``--pipeline-fps`` is given): the node should run at
>= 0.8x of it, with latency p90 < 2 pipeline periods + 50 ms (stale frames dropped, not queued).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..data.images import check_pixels
from ..errors import BisenetError, ConfigError
from ..evaluation.metrics import latency_stats
from ..inference.cpu import cpu_sample, cpu_shares
from ..output_files import JSON, check_output, write_text
from .bench import DEFAULT_FRAME_SIZE, camera_frame, machine_info, time_calls
from .common import (add_model_arguments, hw_type, input_size_of, number, options_from_args, pipeline_from_args,
                     random_init_weights)

HELP = "benchmark the ROS 2 node under load (camera process, node process, collector)"
EXAMPLES = """\
  bisenet-ros node-bench --weights models/bisenetv2_synthetic_street.pth --frame-size 240x320 --rate 10
  bisenet-ros node-bench --model bisenetv2 --input-size 512x1024 --rate 30 --duration 60 --json node.json
"""

#: the criteria of the node under load (docs/benchmarks.md)
MIN_FPS_RATIO = 0.8
LATENCY_PERIODS = 2.0
LATENCY_SLACK_MS = 50.0
NODE_START_TIMEOUT_S = 180.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, weights_required=False, input_size_fallback="512x1024")
    g = parser.add_argument_group("load")
    g.add_argument("--frame-size", type=hw_type(), default=hw_type()(DEFAULT_FRAME_SIZE),
                   help=f"camera frame HxW (default {DEFAULT_FRAME_SIZE})")
    g.add_argument("--frame", choices=["synthetic", "noise"], default="synthetic",
                   help="camera frame content: a generated street scene (default, as bench) or uniform noise "
                        "(every logit cell a class boundary: the costliest postprocess)")
    g.add_argument("--rate", type=number(float, 0.1, 1000), default=30.0, help="camera rate in Hz (default 30)")
    g.add_argument("--duration", type=number(float, 0.1), default=30.0, help="measured seconds (default 30)")
    g.add_argument("--warmup", type=number(int, 0), default=150,
                   help="untimed frames before timing: camera frames of load before measuring "
                        "(default 150, i.e. 5 s at 30 Hz)")
    g.add_argument("--outputs", default="color,overlay",
                   help="optional outputs the collector subscribes to (default color,overlay; labels always)")
    g.add_argument("--pipeline-fps", type=number(float, 0.001), default=None,
                   help="reference pipeline fps (default: measured here first, like bench)")
    g.add_argument("--pipeline-frames", type=number(int, 1), default=20, help="frames for the reference measurement")
    g.add_argument("--json", type=Path, default=None, help="write the results as JSON to this file")
    g.add_argument("--overwrite", action="store_true", help="replace an existing JSON result at --json")


# -- camera process ---------------------------------------------------------------------------------
def camera_main(argv: list[str]) -> int:
    """``python -m bisenet_ros.tools.node_bench camera --rate R --frame-size HxW --duration S``."""
    p = argparse.ArgumentParser(prog="node_bench camera")
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--frame-size", type=hw_type(), required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--topic", default="image")
    p.add_argument("--frame", choices=["synthetic", "noise"], default="noise")
    a = p.parse_args(argv)
    from ..ros.client import run_camera

    base = camera_frame(a.frame, *a.frame_size)
    print(json.dumps(run_camera(a.rate, a.frame_size, a.duration, a.topic, base)), flush=True)
    return 0


# -- collector (this command) -----------------------------------------------------------------------
def _child_env() -> dict[str, str]:
    """The full environment plus an isolated ROS domain on this host and the Fast DDS profile."""
    from ..ros.transport import apply_fastdds_profile

    apply_fastdds_profile()
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(110, 200)))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _node_command(args: argparse.Namespace) -> list[str]:
    from ..ros.node_process import node_command

    return node_command(options_from_args(args).to_parameters(), "image")


def run(args: argparse.Namespace) -> int:
    if args.rate <= 0 or args.duration <= 0 or args.warmup < 0:
        raise ConfigError("--rate and --duration must be > 0, --warmup >= 0")
    check_pixels(args.frame_size[1], args.frame_size[0], args.max_pixels)  # before a frame is rendered
    if args.json:
        check_output(args.json, [args.weights], kind=JSON, overwrite=args.overwrite, option="--json")
    outputs = [o.strip() for o in args.outputs.split(",") if o.strip()]
    bad = set(outputs) - {"color", "overlay", "confidence"}
    if bad:
        raise ConfigError(f"--outputs: unknown {sorted(bad)} (choose from color, overlay, confidence)")
    random_init = args.weights is None
    with tempfile.TemporaryDirectory(prefix="bisenet-node-bench-") as tmp:
        if random_init:
            args.weights = random_init_weights(args, tmp, "node-bench")
        if args.pipeline_fps is None:
            ref = _reference(args, outputs)
        else:
            ref = {"pipeline_fps": args.pipeline_fps, "backend": None, "precision": None, "measured": False}
        result = _run_load(args, outputs, Path(tmp))
    result["reference"] = ref
    result["random_init"] = random_init
    _judge(result)
    _print(result)
    if args.json:
        write_text(args.json, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _reference(args: argparse.Namespace, outputs: list[str]) -> dict:
    """``bench``'s pipeline figure for these options (in this process, before the load starts)."""
    import torch

    pipeline = pipeline_from_args(args)
    fh, fw = args.frame_size
    frame = camera_frame(args.frame, fh, fw)
    ms = time_calls(lambda: pipeline(frame, "bgr8", outputs=outputs), args.pipeline_frames, 3, pipeline.device)
    ref = {"pipeline_fps": len(ms) * 1e3 / sum(ms), "pipeline_latency_ms": latency_stats(ms),
           "backend": pipeline.info["backend"], "precision": pipeline.info["precision"], "measured": True,
           "frames": len(ms)}
    del pipeline
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return ref


class _Outputs:
    """What the collector receives from the node (filled by the client's callbacks)."""

    def __init__(self) -> None:
        self.received: list[tuple[float, float]] = []  # (receipt time s, latency ms) per labels message
        self.timing: list[dict[str, float]] = []
        self.ready = False  # the legend arrived: the node is up

    def on_labels(self, msg) -> None:
        self.received.append((time.monotonic(), (msg.received_ns - msg.stamp_ns) / 1e6))

    def on_timing(self, msg) -> None:
        vals = {}
        for key, value in msg.values().items():
            try:
                vals[key] = float(value)
            except ValueError:
                pass
        vals["t"] = time.monotonic()
        self.timing.append(vals)

    def on_legend(self, msg) -> None:
        self.ready = True


def _run_load(args: argparse.Namespace, outputs: list[str], tmp: Path) -> dict:
    """Node and camera in child processes, this process collecting: the measured window."""
    from ..ros.client import LATCHED, RosClient, qos_profile
    from ..ros.node_process import NodeProcess

    warmup_s = args.warmup / args.rate
    env = _child_env()
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    node = NodeProcess(_node_command(args), env, tmp / "node.log")
    out = _Outputs()
    camera_proc = None

    def wait(cond, timeout: float) -> bool:  # False early when the node has exited
        RosClient.wait_until(lambda: cond() or not node.alive(), timeout, poll=0.05)
        return bool(cond())

    try:
        with RosClient("bench_collector") as client:
            client.subscribe("/segmentation/labels", "image", qos_profile(depth=10), out.on_labels,
                             raw=True)  # only its stamp is read (off the CDR)
            for name in outputs:  # so that the node computes them, as for a viewer (raw: not converted here)
                client.subscribe(f"/segmentation/{name}", "image", qos_profile(depth=10), lambda msg: None,
                                 raw=True)
            client.subscribe("/segmentation/timing", "diagnostics", qos_profile(depth=10), out.on_timing)
            client.subscribe("/segmentation/legend", "string", LATCHED, out.on_legend)
            t0 = time.monotonic()
            if not wait(lambda: out.ready, NODE_START_TIMEOUT_S):
                raise BisenetError(f"the node did not come up within {NODE_START_TIMEOUT_S:.0f} s "
                                   f"(exit {node.proc.poll()}): {node.exit_reason()}")
            startup_s = time.monotonic() - t0
            camera_proc = subprocess.Popen(_camera_command(args, warmup_s), env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True)
            if not wait(lambda: bool(out.received), 60.0):
                raise BisenetError("no segmentation output within 60 s of the camera starting")
            t_start = time.monotonic() + warmup_s
            t_end = t_start + args.duration
            pids = {"node": node.proc.pid, "camera": camera_proc.pid, "collector": os.getpid()}
            wait(lambda: time.monotonic() >= t_start, warmup_s + 5)
            cpu_start = cpu_sample(pids)
            wait(lambda: time.monotonic() >= t_end, args.duration + 5)
            cpu = cpu_shares(cpu_start, cpu_sample(pids))
            cam_out, cam_err = camera_proc.communicate(timeout=30)
            wait(lambda: False, 1.0)  # let the last outputs arrive
    finally:
        if camera_proc is not None and camera_proc.poll() is None:
            camera_proc.kill()
        node.stop(timeout=20.0)
    try:
        camera = json.loads(cam_out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BisenetError(f"the camera process failed: {(cam_err.strip().splitlines() or ['?'])[-1]}") from None
    result = _summarize(args, outputs, out, camera, (t_start, t_end), warmup_s, startup_s, node.log.splitlines())
    result["cpu_percent"] = cpu  # of one CPU, in the measured window (None: not Linux)
    return result


def _camera_command(args: argparse.Namespace, warmup_s: float) -> list[str]:
    return [sys.executable, "-m", "bisenet_ros.tools.node_bench", "camera", "--rate", str(args.rate),
            "--frame-size", f"{args.frame_size[0]}x{args.frame_size[1]}", "--frame", args.frame,
            "--duration", str(warmup_s + args.duration)]


def _summarize(args: argparse.Namespace, outputs: list[str], out: _Outputs, camera: dict,
               window_s: tuple[float, float], warmup_s: float, startup_s: float, log_lines: list[str]) -> dict:
    """The figures of the measured window."""
    import torch

    t_start, t_end = window_s
    window = [(t, lat) for t, lat in out.received if t_start <= t < t_end]
    tim = [v for v in out.timing if t_start <= v["t"] < t_end]
    fps = len(window) / args.duration
    dropped_node = (tim[-1]["dropped_frames"] - tim[0]["dropped_frames"]) if len(tim) >= 2 else None
    sent_in_window = camera["rate_hz"] * args.duration
    stages = {k: latency_stats([v[k] for v in tim if k in v])
              for k in ("preprocess_ms", "inference_ms", "postprocess_ms", "total_ms", "latency_ms")}
    backend_line = next((ln for ln in log_lines if "serving" in ln), "")
    return {
        "node_fps": fps,
        "latency_ms": latency_stats([lat for _, lat in window]),
        "node_stages_ms": stages,
        "frames_out": len(window),
        "camera": camera,
        "camera_frames_in_window": sent_in_window,
        "drops_in_window": max(0.0, sent_in_window - len(window)),
        "node_dropped_frames": dropped_node,
        "node_log_serving": backend_line.strip(),
        "node_startup_s": startup_s,
        "frame_size": f"{args.frame_size[0]}x{args.frame_size[1]}",
        "frame": args.frame,
        "rate_hz": args.rate,
        "duration_s": args.duration,
        "warmup_frames": args.warmup,
        "warmup_s": warmup_s,
        "outputs": ["labels", *outputs],
        "input_size": input_size_of(args),
        "backend_requested": args.backend,
        "machine": machine_info(torch.device(args.device if args.device.startswith("cuda") else "cpu")),
    }


def _judge(r: dict) -> None:
    ref_fps = r["reference"]["pipeline_fps"]
    period_ms = 1e3 / ref_fps
    r["fps_ratio"] = r["node_fps"] / ref_fps
    r["latency_limit_ms"] = LATENCY_PERIODS * period_ms + LATENCY_SLACK_MS
    p90 = r["latency_ms"].get("p90")
    r["criteria"] = {
        f"node_fps >= {MIN_FPS_RATIO} x pipeline_fps": r["fps_ratio"] >= MIN_FPS_RATIO,
        "latency p90 < 2 periods + 50 ms": p90 is not None and p90 < r["latency_limit_ms"],
        "stale frames dropped and reported": (
            r["drops_in_window"] <= 0.05 * r["camera_frames_in_window"] or (r["node_dropped_frames"] or 0) > 0),
    }
    r["passed"] = all(r["criteria"].values())


def _print(r: dict) -> None:
    ref = r["reference"]
    lat = r["latency_ms"]
    st = r["node_stages_ms"]
    print(f"camera   : {r['frame_size']} bgr8 {r.get('frame', 'noise')} frames at {r['camera']['rate_hz']:.1f} Hz "
          f"({r['camera']['published']} frames), outputs {', '.join(r['outputs'])}")
    serving = r["node_log_serving"]
    print(f"node     : {serving[serving.find('serving'):] if 'serving' in serving else '(no start-up line)'}")
    how = (f"measured here, backend {ref['backend']}, precision {ref['precision']}" if ref["measured"]
           else "given")
    print(f"reference: pipeline {ref['pipeline_fps']:.2f} fps ({how})")
    print(f"node_fps : {r['node_fps']:.2f} ({r['fps_ratio']:.2f}x pipeline), {r['frames_out']} frames in "
          f"{r['duration_s']:.0f} s")
    if lat["count"]:
        print(f"latency  : p50 {lat['p50']:.0f} p90 {lat['p90']:.0f} p99 {lat['p99']:.0f} ms (stamp -> collector; "
              f"limit p90 {r['latency_limit_ms']:.0f} ms)")
    if st["total_ms"]["count"]:
        print(f"in node  : total p50 {st['total_ms']['p50']:.0f} ms (receipt -> published), inference p50 "
              f"{st['inference_ms']['p50']:.0f}, pre {st['preprocess_ms']['p50']:.0f}, "
              f"post {st['postprocess_ms']['p50']:.0f} ms")
    cpu = r.get("cpu_percent")
    if cpu:
        cpus = r["machine"]["cpu_count"]
        print("cpu      : " + ", ".join(f"{k} {v:.0f}%" for k, v in cpu.items())
              + f" (of {100 * cpus}%: {cpus} CPUs, {r['machine']['cpu']}; measured window)")
    print(f"drops    : {r['drops_in_window']:.0f} of {r['camera_frames_in_window']:.0f} camera frames not segmented "
          f"(node dropped_frames +{r['node_dropped_frames']})")
    for name, ok in r["criteria"].items():
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "camera":
        sys.exit(camera_main(sys.argv[2:]))
    sys.exit("usage: python -m bisenet_ros.tools.node_bench camera --rate R --frame-size HxW --duration S")
