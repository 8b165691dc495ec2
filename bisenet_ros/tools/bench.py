"""``bisenet-ros bench``: model-only and full-pipeline speed of the shared pipeline, honestly.

* model only: ``runner(x)`` on a normalised (B,3,H,W) tensor already on the device;
* pipeline: one camera frame of ``--frame-size`` (uint8 bgr8 in host memory) through
  :class:`~bisenet_ros.pipeline.SegmentationPipeline` -- upload, preprocess, model, postprocess,
  colour mask and overlay, copy back to host -- exactly what the node does per frame.

Both after ``--warmup`` untimed runs; CUDA work is synchronised before every clock read. The
backend's logits are compared with eager PyTorch float32 on the same input (``rel_err_vs_eager``).
Without ``--weights`` the model is randomly initialised (speed is the same, labels meaningless).

The camera frame is a generated street scene (``--frame synthetic``, real-looking: the exact
postprocess costs more where there are more class boundaries) or noise. On the CPU the labels
stage is also timed against the naive resize-then-argmax on the same logits, interleaved
(``postprocess_vs_naive``). ``--compare-precision P`` builds a second pipeline at precision ``P``
and times both pipelines frame by frame, interleaved, with their label agreement.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from ..inference import backend_cache
from ..data.images import check_pixels
from ..errors import ConfigError
from ..evaluation.metrics import latency_stats
from ..inference.backends import calibration_input
from ..inference.export import relative_error
from ..models import load_model, low_res_view
from ..output_files import JSON, check_output, write_text
from .common import add_model_arguments, cpu_name, hw_type, number, pipeline_from_args, random_init_weights

HELP = "benchmark model-only and full-pipeline speed (fps, latency percentiles, error vs eager)"
EXAMPLES = """\
  bisenet-ros bench --weights models/bisenetv2_synthetic_street.pth --frame-size 240x320
  bisenet-ros bench --model bisenetv2 --input-size 512x1024 --frame-size 720x1280 --compare-eager --json b.json
"""

#: what a camera typically sends; the pipeline's own input size is --input-size
DEFAULT_FRAME_SIZE = "720x1280"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, weights_required=False, input_size_fallback="512x1024")
    g = parser.add_argument_group("benchmark")
    g.add_argument("--frame-size", type=hw_type(), default=hw_type()(DEFAULT_FRAME_SIZE),
                   help=f"camera frame HxW for the pipeline figures (default {DEFAULT_FRAME_SIZE})")
    g.add_argument("--frames", type=number(int, 1), default=50, help="timed frames (forward passes) of each measurement")
    g.add_argument("--warmup", type=number(int, 0), default=5,
                   help="untimed frames before timing each measurement (default 5)")
    g.add_argument("--batch", type=number(int, 1, 1024), default=1, help="model-only batch size")
    g.add_argument("--compare-eager", action="store_true",
                   help="also time eager PyTorch float32 (model only) and report the speed-up")
    g.add_argument("--frame", choices=["synthetic", "noise"], default="synthetic",
                   help="camera frame content: a generated street scene (default) or uniform noise")
    g.add_argument("--compare-precision", choices=["fp32", "bf16"], default=None,
                   help="also build the pipeline at this precision; time both interleaved and "
                        "report the speed-up and the label agreement")
    g.add_argument("--remeasure", action="store_true",
                   help="measure auto's backend choice again on this machine (ignore and replace the "
                        "cached figures; best on a quiet machine)")
    g.add_argument("--json", type=Path, default=None, help="write the results as JSON to this file")
    g.add_argument("--overwrite", action="store_true", help="replace an existing JSON result at --json")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, frames: int, warmup: int, device: torch.device) -> list[float]:
    """Milliseconds of each of ``frames`` calls of ``fn()`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(frames):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _summary(ms: list[float], per_call: int = 1) -> dict:
    stats = latency_stats(ms)
    fps = per_call * len(ms) * 1e3 / sum(ms) if ms and sum(ms) > 0 else None
    return {"fps": fps, "latency_ms": stats}


def load_report(load_start: float | None) -> dict:
    """The machine's 1-minute load average at the start and the end of the run, the CPU count and
    why the figures are not trustworthy (or None)."""
    end = backend_cache.load_average()
    worst = max((v for v in (load_start, end) if v is not None), default=None)
    return {"load_average_start": load_start, "load_average_end": end, "cpus": backend_cache.cpu_count(),
            "untrustworthy": backend_cache.busy_reason(worst) if worst is not None else None}


def cache_report(runner) -> dict | None:
    """What ``auto`` has cached for this model on this machine (None when no measured choice)."""
    if not getattr(runner, "cache_key", None):
        return None
    return {"file": str(backend_cache.cache_file()), "key": runner.cache_key,
            "entry": getattr(runner, "cache_entry", None)}


def machine_info(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        import onnxruntime
        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info



def run(args: argparse.Namespace) -> int:
    if args.frames < 1 or args.warmup < 0 or args.batch < 1:
        raise ConfigError("--frames and --batch must be >= 1, --warmup >= 0")
    check_pixels(args.frame_size[1], args.frame_size[0], args.max_pixels)  # before a frame is rendered
    if args.json:
        check_output(args.json, [args.weights], kind=JSON, overwrite=args.overwrite, option="--json")
    random_init = args.weights is None
    with tempfile.TemporaryDirectory(prefix="bisenet-bench-") as tmp:
        if random_init:
            args.weights = random_init_weights(args, tmp, "bench")
        result = _bench(args)
    result["weights"] = None if random_init else result["weights"]
    result["random_init"] = random_init
    _print(result)
    if args.json:
        write_text(args.json, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _bench(args: argparse.Namespace) -> dict:
    load_start = backend_cache.load_average()
    t0 = time.perf_counter()
    with backend_cache.remeasuring() if args.remeasure else nullcontext():
        pipeline = pipeline_from_args(args)
    startup_s = time.perf_counter() - t0
    info = pipeline.info
    device = pipeline.device
    runner = pipeline.runner
    fh, fw = args.frame_size
    model_hw = pipeline.model_size_for(fh, fw)

    # model only, on a fixed normalised input already on the device
    x = calibration_input(device, model_hw).repeat(args.batch, 1, 1, 1)
    model_ms = time_calls(lambda: runner(x), args.frames, args.warmup, device)

    rel_err, eager_ms = _eager_reference(args, info, runner, x, device)
    frame = camera_frame(args.frame, fh, fw)
    pipe_ms, stages, compare = _time_pipelines(args, pipeline, frame, device)

    model = _summary(model_ms, args.batch)
    pipe = _summary(pipe_ms)
    result = {
        "model": info["model"],
        "weights": info["weights"],
        "num_classes": info["num_classes"],
        "device": str(device),
        "backend": info["backend"],
        "precision": info["precision"],
        "backend_selection": list(getattr(runner, "selection", [])),
        "input_size": f"{model_hw[0]}x{model_hw[1]}",
        "frame_size": f"{fh}x{fw}",
        "batch": args.batch,
        "frames": args.frames,
        "warmup": args.warmup,
        "startup_s": startup_s,
        "model_fps": model["fps"],
        "model_latency_ms": model["latency_ms"],
        "pipeline_fps": pipe["fps"],
        "pipeline_latency_ms": pipe["latency_ms"],
        "pipeline_stages_ms": {k: latency_stats(v) for k, v in stages.items()},
        "rel_err_vs_eager": rel_err,
        "frame": args.frame,
        "machine": machine_info(device),
        "load": load_report(load_start),
        "backend_cache": cache_report(runner),
    }
    if compare is not None:
        result["compare_precision"] = compare
    if device.type == "cpu":
        result["postprocess_vs_naive"] = postprocess_vs_naive(pipeline, frame, args.frames, args.warmup)
    if eager_ms is not None:
        eager_sum = _summary(eager_ms, args.batch)
        result["eager_model_fps"] = eager_sum["fps"]
        result["eager_model_latency_ms"] = eager_sum["latency_ms"]
        result["speedup_vs_eager"] = model["fps"] / eager_sum["fps"] if eager_sum["fps"] else None
    return result


def _eager_reference(args, info: dict, runner, x: torch.Tensor, device: torch.device):
    """(relative error of the runner vs eager float32 on ``x``, eager timings or None)."""
    source = info.get("source_weights", args.weights)
    if source is None:  # a quantized model whose float source is not at hand
        return None, None
    eager = load_model(info["model"], weights=source, num_classes=info["num_classes"], device=device)
    with torch.inference_mode():
        out = runner(x).float()
        # the runner returns the 1/8 logits when the pipeline built it so (models.low_res_view)
        ref_model = eager if tuple(out.shape[-2:]) == tuple(x.shape[-2:]) else low_res_view(eager)
        ref = ref_model(x).float()
    eager_ms = None
    if args.compare_eager:
        with torch.inference_mode():
            eager_ms = time_calls(lambda: eager(x), args.frames, args.warmup, device)
    return relative_error(out, ref), eager_ms


def camera_frame(kind: str, h: int, w: int) -> np.ndarray:
    """A bgr8 frame: a generated street scene (``synthetic``) or uniform noise."""
    if kind == "noise":
        return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    from ..data.synthetic_scenes import generate_scene

    image, _ = generate_scene(0, (h, w))
    return np.ascontiguousarray(image[..., ::-1])


def _time_pipelines(args, pipeline, frame: np.ndarray, device: torch.device):
    """Pipeline latencies and stage timings; with --compare-precision, both pipelines interleaved."""
    other = None
    if args.compare_precision:
        other = pipeline_from_args(args, precision=args.compare_precision)
    stages: dict[str, list[float]] = {}
    other_ms: list[float] = []

    def one_frame():
        res = pipeline(frame, "bgr8", outputs=("color", "overlay", "health"))  # as the node: health on
        for k, v in res.timings.items():
            stages.setdefault(k, []).append(v)
        if other is not None:  # timed separately, between two frames of the main pipeline
            t0 = time.perf_counter()
            other(frame, "bgr8", outputs=("color", "overlay"))
            _sync(device)
            other_ms.append((time.perf_counter() - t0) * 1e3)

    def main_only():  # the main pipeline's time excludes the other's
        t0 = time.perf_counter()
        one_frame()
        return (time.perf_counter() - t0) * 1e3 - (other_ms[-1] if other_ms else 0.0)

    for _ in range(args.warmup):
        main_only()
    pipe_ms = [main_only() for _ in range(args.frames)]
    for k in stages:  # keep the timed iterations only
        stages[k] = stages[k][args.warmup:]
    if other is None:
        return pipe_ms, stages, None
    return pipe_ms, stages, _precision_summary(pipeline, other, frame, pipe_ms, other_ms[args.warmup:])


def _precision_summary(pipeline, other, frame: np.ndarray, pipe_ms: list[float], other_ms: list[float]) -> dict:
    a = pipeline(frame, "bgr8", outputs=()).labels
    b = other(frame, "bgr8", outputs=()).labels
    mine, theirs = latency_stats(pipe_ms), latency_stats(other_ms)
    x = pipeline.model_input(frame, "bgr8")
    model_ms: dict[str, list[float]] = {"main": [], "other": []}
    with torch.inference_mode():
        for _ in range(max(3, len(pipe_ms))):  # model only, the two runners alternating
            for key, runner in (("main", pipeline.runner), ("other", other.runner)):
                t0 = time.perf_counter()
                runner(x)
                model_ms[key].append((time.perf_counter() - t0) * 1e3)
    m_main, m_other = (float(np.median(model_ms[k][1:])) for k in ("main", "other"))
    return {"precision": other.info["precision"], "backend": other.info["backend"],
            "backend_selection": list(getattr(other.runner, "selection", [])),
            "pipeline_latency_ms": theirs, "labels_equal": float((a == b).mean()),
            "speedup_vs_main": mine["p50"] / theirs["p50"] if theirs["p50"] else None,
            "model_ms_p50": {"main": m_main, "other": m_other}, "model_speedup_vs_main": m_main / m_other}


def postprocess_vs_naive(pipeline, frame: np.ndarray, frames: int, warmup: int) -> dict:
    """The labels stage on one frame's logits: exact-cheap (:mod:`bisenet_ros.inference.postprocess`) vs the
    naive bilinear resize of the model-resolution logits then argmax, and vs naive including the
    model's own final upsampling; timed interleaved in this run."""
    from ..inference import postprocess
    from ..pipeline import logit_stride

    fh, fw = frame.shape[:2]
    model_hw = pipeline.model_size_for(fh, fw)
    with torch.inference_mode():
        logits = pipeline.runner(pipeline.model_input(frame, "bgr8")).float()
        stride = logit_stride(tuple(logits.shape[-2:]), model_hw)
        full = postprocess.naive_logits(logits, stride, model_hw)  # what the model used to return
        low = logits[0].numpy()
        threads = torch.get_num_threads()
        work = {
            "exact_cheap": lambda: postprocess.labels(low, stride, (fh, fw), threads),
            "naive_resize_argmax": lambda: postprocess.naive_logits(full, 1, (fh, fw))[0].max(0)[1],
            "naive_with_model_upsampling": lambda: postprocess.naive_logits(logits, stride, (fh, fw))[0].max(0)[1],
        }
        times: dict[str, list[float]] = {k: [] for k in work}
        for i in range(warmup + frames):
            for k, fn in work.items():
                t0 = time.perf_counter()
                fn()
                if i >= warmup:
                    times[k].append((time.perf_counter() - t0) * 1e3)
        fast = work["exact_cheap"]()
        naive = work["naive_with_model_upsampling"]().numpy()
    p50 = {k: latency_stats(v)["p50"] for k, v in times.items()}
    return {"frame_size": f"{fh}x{fw}", "logits": f"{low.shape[1]}x{low.shape[2]} (stride {stride})",
            "p50_ms": p50, "ratio": p50["exact_cheap"] / p50["naive_resize_argmax"],
            "ratio_with_model_upsampling": p50["exact_cheap"] / p50["naive_with_model_upsampling"],
            "labels_equal": float((fast == naive).mean())}


def _fmt_lat(stats: dict) -> str:
    return " ".join(f"{k} {stats[k]:.1f}" for k in ("p50", "p90", "p99") if stats.get(k) is not None) + " ms"


def _print(r: dict) -> None:
    weights = "random init (no --weights: speed only, labels meaningless)" if r["random_init"] else r["weights"]
    print(f"{r['model']} ({r['num_classes']} classes), weights: {weights}")
    print(f"device {r['device']} ({r['machine'].get('gpu') or r['machine']['cpu']}), backend {r['backend']}, "
          f"precision {r['precision']}, input {r['input_size']}, start-up {r['startup_s']:.1f} s")
    for line in r["backend_selection"]:
        print(f"  auto: {line}")
    print(f"model    : {r['model_fps']:.2f} fps (batch {r['batch']}), latency {_fmt_lat(r['model_latency_ms'])}")
    if "eager_model_fps" in r:
        print(f"eager    : {r['eager_model_fps']:.2f} fps, latency {_fmt_lat(r['eager_model_latency_ms'])}, "
              f"speed-up {r['speedup_vs_eager']:.2f}x")
    print(f"pipeline : {r['pipeline_fps']:.2f} fps for {r['frame_size']} bgr8 frames, "
          f"latency {_fmt_lat(r['pipeline_latency_ms'])}")
    stages = ", ".join(f"{k.removesuffix('_ms')} {v['p50']:.1f}" for k, v in r["pipeline_stages_ms"].items())
    print(f"  stages p50 (ms): {stages}")
    health = r["pipeline_stages_ms"].get("health_ms")
    if health and r["pipeline_latency_ms"].get("p50"):
        print(f"  perception health: p50 {health['p50']:.2f} ms per frame = "
              f"{100 * health['p50'] / r['pipeline_latency_ms']['p50']:.2f}% of the pipeline "
              "(statistics of the 1/8 logits and an image subsample)")
    err = "n/a" if r["rel_err_vs_eager"] is None else f"{r['rel_err_vs_eager']:.2e}"
    print(f"rel_err_vs_eager: {err} ({r['frames']} frames after {r['warmup']} warm-up, {r['frame']} frame)")
    _print_comparisons(r)
    _print_trust(r)


def _print_trust(r: dict) -> None:
    """The backend cache (what is cached, how to measure again) and the machine's load."""
    cache = r.get("backend_cache")
    if cache:
        entry = cache["entry"]
        held = backend_cache.describe(entry) if entry else "nothing (a single candidate: not measured)"
        print(f"backend cache {cache['file']}: {held}; to measure again: bisenet-ros bench --remeasure "
              f"(same model options), best on a quiet machine")
    load = r["load"]
    start, end = (f"{v:.1f}" if v is not None else "n/a"
                  for v in (load["load_average_start"], load["load_average_end"]))
    print(f"machine load: 1-min load average {start} at start, {end} at end, {load['cpus']} CPUs")
    if load["untrustworthy"]:
        print(f"warning: {load['untrustworthy']}: absolute figures are not trustworthy; compare only ratios "
              f"measured interleaved in one run (--compare-precision, the labels stage) and re-run on a quiet "
              f"machine", file=sys.stderr)
    model_p50 = r["model_latency_ms"].get("p50")
    stage_p50 = r["pipeline_stages_ms"].get("inference_ms", {}).get("p50")
    if model_p50 and stage_p50 and r["batch"] == 1 and not 0.5 <= stage_p50 / model_p50 <= 2.0:
        print(f"warning: the model took {stage_p50:.0f} ms inside the pipeline and {model_p50:.0f} ms alone "
              f"(p50): the machine's load changed during the run; these figures do not compare",
              file=sys.stderr)


def _print_comparisons(r: dict) -> None:
    pp = r.get("postprocess_vs_naive")
    if pp:
        t = pp["p50_ms"]
        print(f"labels at {pp['frame_size']} from {pp['logits']} logits, p50: exact-cheap "
              f"{t['exact_cheap']:.1f} ms, naive resize+argmax {t['naive_resize_argmax']:.1f} ms "
              f"({pp['ratio']:.2f}x), naive incl. the model's upsampling "
              f"{t['naive_with_model_upsampling']:.1f} ms ({pp['ratio_with_model_upsampling']:.2f}x); "
              f"labels equal {pp['labels_equal']:.4%}")
    cp = r.get("compare_precision")
    if cp:
        print(f"precision {cp['precision']} ({cp['backend']}), same run interleaved: pipeline "
              f"{_fmt_lat(cp['pipeline_latency_ms'])}, speed-up vs {r['precision']} "
              f"{cp['speedup_vs_main']:.2f}x; model only p50 {cp['model_ms_p50']['other']:.0f} ms vs "
              f"{cp['model_ms_p50']['main']:.0f} ms ({cp['model_speedup_vs_main']:.2f}x); labels equal "
              f"{cp['labels_equal']:.4%}")
        for line in cp["backend_selection"]:
            print(f"  auto ({cp['precision']}): {line}")
