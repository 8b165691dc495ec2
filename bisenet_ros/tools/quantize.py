"""``bisenet-ros quantize``: post-training int8 quantization from unlabelled calibration data.

Writes ``OUT.onnx`` and its sidecar ``OUT.onnx.yaml`` (architecture, classes, palette, mean/std,
input size, how it was quantized, the figures below), loadable with ``--weights OUT.onnx`` by every
tool and by the node (``weights``). With ``--activations auto`` it quantizes with symmetric and with
asymmetric activations and keeps one (:func:`~bisenet_ros.inference.quantization.choose_activations`,
on the held-out frames). Every 5th frame of ``--calibration`` is held out: the command
prints the model speed-up over float32 (both on ``auto`` backends, timed interleaved) and the label
agreement with the float32 pipeline on the held-out frames; with ``--val`` (a labelled folder:
images/ + labels/) also mIoU before and after. It refuses to write over its inputs or over files it
did not create, and replaces its own earlier output only with ``--overwrite``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from ..errors import BisenetError, ConfigError
from ..inference import quantization as q
from ..inference.onnx_model import CREATED_BY, sidecar_of
from ..models.architectures import ARCHITECTURES
from ..options import PipelineOptions
from ..output_files import ONNX, Kind, atomic_file, check_output, write_text
from ..pipeline import build_pipeline
from ..progress import progress_bar
from ..safe_yaml import load_yaml_file
from .common import float_triple

HELP = "int8 post-training quantization (ONNX) from unlabelled images, a video or a bag topic"
EXAMPLES = """\
  bisenet-ros quantize --weights models/bisenetv2_synthetic_street.pth --calibration frames/ --out street_int8.onnx
  bisenet-ros quantize --weights model.pth --calibration drive.mcap --topic /camera/image_raw --out m_int8.onnx --val val/
  bisenet-ros segment img.png --out seg/ --weights street_int8.onnx
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True,
                        help="float checkpoint (.pth/.pt/.safetensors) or a public checkpoint's name "
                             "(bisenet-ros weights list)")
    parser.add_argument("--calibration", required=True, metavar="DATA",
                        help="unlabelled frames: an image folder, a video or a ROS 2 bag (with --topic)")
    parser.add_argument("--out", required=True, type=Path, help="the int8 model to write (.onnx)")
    parser.add_argument("--topic", default=None, help="image topic when DATA is a bag")
    parser.add_argument("--val", default=None, help="labelled folder (images/ + labels/): mIoU before/after")
    parser.add_argument("--max-frames", type=int, default=100, help="frames taken from DATA, spread evenly")
    parser.add_argument("--method", choices=q.METHODS, default="minmax", help="activation range calibration")
    parser.add_argument("--activations", choices=("auto", *q.ACTIVATIONS), default="auto",
                        help="uint8 activation ranges: symmetric (zero point 128), asymmetric, or auto "
                             "(default): both, keeping the one whose labels agree more with fp32 on the "
                             f"held-out frames unless it runs over {q.SLOWER_OK}x slower")
    parser.add_argument("--quantize-classifier", action="store_true",
                        help="quantize the last convolution too (default: it stays float32)")
    parser.add_argument("--bench-runs", type=int, default=10, help="timed model runs of each precision")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an int8 model (and its sidecar) that bisenet-ros quantize wrote at --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (none off a terminal anyway)")
    g = parser.add_argument_group("model")
    g.add_argument("--model", choices=list(ARCHITECTURES), default=None,
                   help="architecture (default: from the checkpoint's sidecar or key layout)")
    g.add_argument("--num-classes", type=int, default=None, help="class count (default: from the checkpoint)")
    g.add_argument("--dataset", default=None, help="preset name or YAML (default: the sidecar's, else cityscapes)")
    g.add_argument("--mean", type=float_triple, default=None, help="override mean, R,G,B on a 0-1 scale")
    g.add_argument("--std", type=float_triple, default=None, help="override std, R,G,B on a 0-1 scale")
    g.add_argument("--input-size", default=None,
                   help="the fixed model input HxW of the int8 model (default: the checkpoint sidecar's)")


def _written_by_quantize(side: Path) -> bool:
    try:
        return load_yaml_file(side).get("created_by") == CREATED_BY
    except BisenetError:
        return False


#: what quantize may replace with --overwrite: its own model (known by its sidecar) and sidecar
INT8_MODEL = Kind(f"int8 ONNX model written by {CREATED_BY}", False,
                  lambda p: ONNX.recognise(p) and _written_by_quantize(sidecar_of(p)))
INT8_SIDECAR = Kind(f"sidecar written by {CREATED_BY}", False, _written_by_quantize)


def check_output_paths(args: argparse.Namespace) -> None:
    """The model and its sidecar: never an input, never a user's file (:mod:`bisenet_ros.output_files`)."""
    if args.out.suffix.lower() != ".onnx":
        raise ConfigError(f"--out {args.out}: the int8 model is an ONNX file; name it *.onnx")
    inputs = [args.weights, args.calibration, args.val]
    check_output(args.out, inputs, kind=INT8_MODEL, overwrite=args.overwrite)
    check_output(sidecar_of(args.out), inputs, kind=INT8_SIDECAR, overwrite=args.overwrite)


def run(args: argparse.Namespace) -> int:
    if args.max_frames < 2 or args.bench_runs < 1:
        raise ConfigError("--max-frames must be >= 2 and --bench-runs >= 1")
    from ..models.weights_catalog import resolve_weights

    args.weights = resolve_weights(args.weights)  # a public checkpoint's name -> the cached file
    check_output_paths(args)
    fp32 = build_pipeline(PipelineOptions.from_args(args, device="cpu", precision="fp32", backend="auto"))
    if fp32.input_size is None:
        raise ConfigError(f"{args.weights} has no input size in its sidecar: pass --input-size HxW "
                          f"(the int8 model is exported at one size)")
    # every input checked before anything is written: --val, then the calibration frames
    val = check_val(args.val, fp32.preset, fp32.max_pixels, not args.no_progress) if args.val else None
    source = fp32.source_preset
    frames = q.read_frames(args.calibration, args.topic, args.max_frames, fp32.max_pixels,
                           labels=(source.num_classes, source.ignore_index))
    calib_idx, held_idx = q.split_held_out(len(frames))
    inputs = [fp32.model_input(*frames[i]) for i in calib_idx]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done, held_out = _quantize(args, fp32, inputs, [frames[i] for i in held_idx])
    int8 = build_pipeline(weights=str(args.out), input_size=None)
    report = {"held_out": held_out}
    if val is not None:
        report["val"] = _miou(fp32, int8, val)
    _write_sidecar(args, fp32, done, report)
    _print(args, fp32, int8, done, report)
    return 0


def _quantize(args: argparse.Namespace, fp32, inputs: list[torch.Tensor], held: list) -> tuple[dict, dict]:
    """Quantize with each activation scheme asked for (in a temporary folder, each beside its
    sidecar so that it loads), compare each with fp32 on the held-out frames, write the chosen one
    to ``--out``; (what was done, the chosen one's held-out figures)."""
    schemes = q.ACTIVATIONS if args.activations == "auto" else (args.activations,)
    tried: dict[str, tuple[dict, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bisenet-quantize-") as tmp:
        float_path = Path(tmp) / "float.onnx"
        q.export_float_onnx(fp32, args.weights, float_path, fp32.input_size)
        for scheme in schemes:
            path = Path(tmp) / f"int8_{scheme}.onnx"
            done = _calibrate(args, float_path, path, inputs, scheme)
            _write_sidecar(args, fp32, done, {}, path)
            tried[scheme] = done, _compare(fp32, build_pipeline(weights=str(path), input_size=None), held,
                                           args.bench_runs)
        chosen = q.choose_activations({k: c for k, (_, c) in tried.items()})  # one scheme asked for: that one
        with atomic_file(args.out) as tmp_out:
            shutil.copyfile(Path(tmp) / f"int8_{chosen}.onnx", tmp_out)
    done, held_out = tried[chosen]
    if len(tried) > 1:
        done["activations_tried"] = {k: {"label_agreement": round(c["label_agreement"], 5), "int8_ms": c["int8_ms"],
                                         "int8_backend": c["int8_backend"]} for k, (_, c) in tried.items()}
    _write_sidecar(args, fp32, done, {})  # loadable right away; the figures are added below
    return done, held_out


def _calibrate(args: argparse.Namespace, float_path: Path, out: Path, inputs: list[torch.Tensor],
               scheme: str) -> dict:
    with progress_bar(total=len(inputs), desc=f"calibrating ({scheme})", unit="frame",
                      enabled=not args.no_progress) as bar:
        t0 = time.perf_counter()
        done = q.quantize_onnx(float_path, out, inputs, args.method, not args.quantize_classifier, bar, scheme)
    done["seconds"] = round(time.perf_counter() - t0, 1)
    return done


def _write_sidecar(args: argparse.Namespace, fp32, done: dict, report: dict, model: Path | None = None) -> None:
    info = fp32.info
    data = {
        "created_by": CREATED_BY, "format": "onnx", "arch": info["model"], "num_classes": info["num_classes"],
        "input_size": list(fp32.input_size), "precision": "int8", "output": "logits at 1/8 of the input",
        "dataset": fp32.preset.to_dict(), "source_weights": str(Path(args.weights).expanduser().resolve()),
        "calibration": {"data": str(args.calibration), "topic": args.topic, **done},
    }
    data.update(report)
    side = sidecar_of(model or args.out)
    write_text(side, yaml.safe_dump(data, sort_keys=False))


def _compare(fp32, int8, held: list, runs: int) -> dict:
    """Label agreement on the held-out frames and model-only speed, interleaved."""
    equal = total = 0
    for image, enc in held:
        a = fp32(image, enc, outputs=()).labels
        b = int8(image, enc, outputs=()).labels
        equal += int((a == b).sum())
        total += a.size
    x = fp32.model_input(*held[0])
    times = {"fp32": [], "int8": []}
    with torch.inference_mode():
        for runner in (fp32.runner, int8.runner):
            runner(x)  # warm-up
        for _ in range(runs):
            for key, runner in (("fp32", fp32.runner), ("int8", int8.runner)):
                t0 = time.perf_counter()
                runner(x)
                times[key].append((time.perf_counter() - t0) * 1e3)
    ms = {k: float(np.median(v)) for k, v in times.items()}
    return {"frames": len(held), "label_agreement": equal / total, "fp32_ms": round(ms["fp32"], 1),
            "int8_ms": round(ms["int8"], 1), "speedup": round(ms["fp32"] / ms["int8"], 2),
            "fp32_backend": fp32.info["backend"], "int8_backend": int8.info["backend"]}


def check_val(val: str, preset, max_pixels: int, progress: bool) -> list:
    """The samples of ``--val``, each image header and label read once (labels single-channel
    class ids of ``preset``, the image's size, images within the pixel budget): one line
    naming the problems, before anything is written."""
    from ..training.checks import check_data
    from ..training.data import SegmentationDataset, find_samples

    samples, _ = find_samples(val)
    check_data(SegmentationDataset(samples, preset), f"--val {val}", progress, max_pixels=max_pixels)
    return samples


def _miou(fp32, int8, samples: list) -> dict:
    from ..evaluation.metrics import ConfusionMatrix
    from ..training.data import read_image, read_label

    preset = fp32.preset
    mats = {k: ConfusionMatrix(preset.num_classes, preset.ignore_index) for k in ("fp32", "int8")}
    equal = total = 0
    for s in samples:
        image = read_image(s.image)
        gt = read_label(s.label, None, preset.num_classes, preset.ignore_index)
        labels = {key: pipe(image, "rgb8", outputs=()).labels for key, pipe in (("fp32", fp32), ("int8", int8))}
        for key, predicted in labels.items():
            mats[key].update(predicted, gt)
        equal += int((labels["fp32"] == labels["int8"]).sum())
        total += gt.size
    miou = {k: float(m.compute()["miou"]) for k, m in mats.items()}
    return {"images": len(samples), "miou_fp32": round(miou["fp32"], 4), "miou_int8": round(miou["int8"], 4),
            "miou_change": round(miou["int8"] - miou["fp32"], 4), "label_agreement": equal / total}


def _print(args: argparse.Namespace, fp32, int8, done: dict, report: dict) -> None:
    from ..inference.cpu import cpu_model

    h = report["held_out"]
    kept = ", ".join(done["float_nodes"]) or "none"
    print(f"wrote {args.out} (+ {sidecar_of(args.out).name}): int8 QDQ, {done['method']} calibration on "
          f"{done['frames']} frames, activations {done['activations']}, float32 kept: {kept}")
    tried = done.get("activations_tried") or {}
    if tried:
        print("activations tried on the held-out frames: " + "; ".join(
            f"{k} {t['label_agreement']:.2%} labels equal, {t['int8_ms']:.1f} ms ({t['int8_backend']})"
            for k, t in tried.items()) + f" (kept: the most accurate not over {q.SLOWER_OK}x slower)")
    print(f"speed-up (model only, {fp32.info['input_size']}, {cpu_model()}): fp32 {h['fp32_backend']} "
          f"{h['fp32_ms']:.1f} ms, int8 {h['int8_backend']} {h['int8_ms']:.1f} ms: {h['speedup']:.2f}x")
    print(f"labels equal to fp32 on {h['frames']} held-out frames: {h['label_agreement']:.2%}")
    if "val" in report:
        v = report["val"]
        print(f"mIoU on {args.val} ({v['images']} images): fp32 {v['miou_fp32']:.4f}, int8 {v['miou_int8']:.4f} "
              f"({v['miou_change']:+.4f}); labels equal to fp32 there: {v['label_agreement']:.2%}")
    for line in getattr(int8.runner, "selection", []):
        print(f"  int8 backend: {line}", file=sys.stderr)
