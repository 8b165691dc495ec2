"""``bisenet-ros export-onnx``: write the model as ONNX (dynamic batch) and verify it against eager.

The file runs in ONNX Runtime (CPU, CUDA, TensorRT providers) or ``trtexec``. It takes the model
options every tool shares (``--model --weights --num-classes --dataset --mean --std --input-size
--device``); the graph's input is the normalised image, so the preprocessing the model expects
(mean/std on a 0-1 RGB scale, class names, input size) is written into the file's metadata
(``bisenet_ros.*`` keys, with the palette): the file is weights like any other
(``bisenet-ros segment --weights street.onnx``, the node's ``weights``), no sidecar needed. After writing it, the command runs the file in ONNX Runtime for batch 1
and 2 and prints the relative L2 error of the logits against eager PyTorch float32; above the
tolerance in ``resources/backends.yaml`` it fails.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConfigError
from ..inference.backends import backend_config
from ..inference.export import DEFAULT_OPSET, ExportError, export_onnx, verify_onnx
from ..models import load_model
from ..options import AUTO32, parse_input_size
from ..output_files import ONNX, atomic_file, check_output
from .common import add_model_arguments, pipeline_from_args

HELP = "export the model to ONNX (dynamic batch) and verify it against eager PyTorch"
EXAMPLES = """\
  bisenet-ros export-onnx --weights models/bisenetv2_synthetic_street.pth --out street.onnx
  bisenet-ros export-onnx --weights model_final_v2_city.pth --input-size 512x1024 --out city.onnx
"""
FALLBACK_SIZE = (512, 1024)  # without --input-size and without a sidecar size: Cityscapes' 512x1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    for action in parser._actions:  # the shared option, with what it means for an export
        if action.dest == "input_size":
            action.help = ("model input HxW, multiples of 32 (default: the checkpoint sidecar's, "
                           f"else {FALLBACK_SIZE[0]}x{FALLBACK_SIZE[1]}); with --dynamic-size the traced size")
        elif action.dest == "precision":
            action.help = "the graph is float32 (auto, fp32); build fp16 engines from it (trtexec --fp16)"
        elif action.dest == "backend":
            action.help = "does not apply: the PyTorch model itself is exported (auto, torch)"
    parser.add_argument("--out", required=True, type=Path, help="ONNX file to write")
    parser.add_argument("--dynamic-size", action="store_true",
                        help="also make height and width dynamic (any multiple of 32)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing ONNX file at --out")


def _check(args: argparse.Namespace) -> None:
    if args.out.suffix.lower() != ".onnx":
        raise ConfigError(f"{args.out}: the output file should end in .onnx")
    if args.precision not in ("auto", "fp32"):
        raise ConfigError("export-onnx writes a float32 graph; build an fp16 engine from it "
                          "(trtexec --fp16, or the tensorrt backend with precision fp16)")
    if args.backend not in ("auto", "torch"):
        raise ConfigError(f"--backend {args.backend} does not apply: export-onnx exports the PyTorch model")
    if args.input_size is not None and parse_input_size(args.input_size) == AUTO32:  # auto32, 0x0
        raise ConfigError("export-onnx needs a fixed --input-size HxW (e.g. 512x1024); "
                          "--dynamic-size makes height and width dynamic")


def metadata(pipeline, size: tuple[int, int], dynamic: bool) -> dict[str, str]:
    """What a runtime needs besides the graph: the preprocessing and the label set."""
    preset, info = pipeline.preset, pipeline.info
    return {
        "bisenet_ros.model": str(info.get("model")),
        "bisenet_ros.num_classes": str(preset.num_classes),
        "bisenet_ros.dataset": preset.name,
        "bisenet_ros.class_names": json.dumps(list(preset.class_names)),
        "bisenet_ros.mean": json.dumps([float(v) for v in preset.mean]),
        "bisenet_ros.std": json.dumps([float(v) for v in preset.std]),
        "bisenet_ros.palette": json.dumps([[int(c) for c in col] for col in preset.palette]),
        "bisenet_ros.input_size": "dynamic" if dynamic else f"{size[0]}x{size[1]}",
        "bisenet_ros.input": "RGB, (x / 255 - mean) / std, NCHW float32",
    }


def _write_metadata(path: Path, props: dict[str, str]) -> None:
    import onnx

    graph = onnx.load(str(path))
    for key, value in props.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(path))


def run(args: argparse.Namespace) -> int:
    _check(args)
    check_output(args.out, [args.weights], kind=ONNX, overwrite=args.overwrite)
    pipeline = pipeline_from_args(args, backend="torch", precision="fp32")  # preset, mean/std, input size
    size = pipeline.input_size or FALLBACK_SIZE  # None: no --input-size and no sidecar size
    # the model itself (logits at the input resolution), not the pipeline's runner: that one may
    # return the 1/8 logits the pipeline upsamples
    model = load_model(args.model, weights=args.weights, num_classes=args.num_classes, device=pipeline.device)
    with atomic_file(args.out) as tmp:  # a failed verification leaves no unverified file behind
        export_onnx(model, tmp, size, opset=args.opset, dynamic_size=args.dynamic_size)
        _write_metadata(tmp, metadata(pipeline, size, args.dynamic_size))
        _verify(args, model, tmp, size, pipeline.info)
    return 0


def _verify(args: argparse.Namespace, model, path: Path, size: tuple[int, int], info: dict) -> None:
    dims = "N x 3 x H x W" if args.dynamic_size else f"N x 3 x {size[0]} x {size[1]}"
    print(f"wrote {args.out} ({info['model']}, {info['num_classes']} classes, {info['dataset']}, input {dims}, "
          f"opset {args.opset}, {path.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    if args.no_verify:
        return
    tolerance = float(backend_config()["tolerance"]["fp32"])
    errors = verify_onnx(model, path, size, batch_sizes=(1, 2))
    text = ", ".join(f"batch {n}: {e:.2e}" for n, e in errors.items())
    print(f"onnxruntime vs eager float32, relative L2 error: {text}")
    worst = max(errors.values())
    if not worst < tolerance:  # NaN too
        raise ExportError(f"{args.out}: ONNX Runtime output differs from eager (rel err {worst:.2e} >= {tolerance:g})")
