"""``bisenet-ros export-onnx``: write the model as ONNX (dynamic batch) and verify it against eager.

The file runs in ONNX Runtime (CPU, CUDA, TensorRT providers) or ``trtexec``. After writing it,
the command runs the file in ONNX Runtime for batch 1 and 2 and prints the relative L2 error of
the logits against eager PyTorch float32; above the tolerance in ``config/backends.yaml`` it fails.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..backends import backend_config
from ..errors import ConfigError
from ..export import DEFAULT_OPSET, ExportError, export_onnx, verify_onnx
from ..models import load_model
from ..pipeline import parse_input_size
from .common import sidecar_input_size

HELP = "export the model to ONNX (dynamic batch) and verify it against eager PyTorch"
EXAMPLES = """\
  bisenet-ros export-onnx --weights models/bisenetv2_synthetic_street.pth --out street.onnx
  bisenet-ros export-onnx --weights model_final_v2_city.pth --input-size 512x1024 --out city.onnx
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=["bisenetv1", "bisenetv2"], default=None,
                        help="architecture (default: from the checkpoint's sidecar or key layout)")
    parser.add_argument("--weights", required=True, help="checkpoint (.pth/.pt/.safetensors)")
    parser.add_argument("--num-classes", type=int, default=None, help="class count (default: from the checkpoint)")
    parser.add_argument("--out", required=True, type=Path, help="ONNX file to write")
    parser.add_argument("--input-size", default=None,
                        help="model input HxW, multiples of 32 (default: the checkpoint sidecar's, else 512x1024)")
    parser.add_argument("--dynamic-size", action="store_true",
                        help="also make height and width dynamic (any multiple of 32)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check")


def run(args: argparse.Namespace) -> int:
    size = parse_input_size(args.input_size or sidecar_input_size(args.weights) or "512x1024")
    if size is None:
        raise ConfigError("export-onnx needs a fixed --input-size HxW (e.g. 512x1024)")
    if args.out.suffix.lower() != ".onnx":
        raise ConfigError(f"{args.out}: the output file should end in .onnx")
    model = load_model(args.model, weights=args.weights, num_classes=args.num_classes, device="cpu")
    info = model.bisenet_info
    export_onnx(model, args.out, size, opset=args.opset, dynamic_size=args.dynamic_size)
    dims = "N x 3 x H x W" if args.dynamic_size else f"N x 3 x {size[0]} x {size[1]}"
    print(f"wrote {args.out} ({info['arch']}, {info['num_classes']} classes, input {dims}, "
          f"opset {args.opset}, {args.out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    if args.no_verify:
        return 0
    tolerance = float(backend_config()["tolerance"]["fp32"])
    errors = verify_onnx(model, args.out, size, batch_sizes=(1, 2))
    text = ", ".join(f"batch {n}: {e:.2e}" for n, e in errors.items())
    print(f"onnxruntime vs eager float32, relative L2 error: {text}")
    worst = max(errors.values())
    if worst >= tolerance:
        raise ExportError(f"{args.out}: ONNX Runtime output differs from eager (rel err {worst:.2e} >= {tolerance:g})")
    return 0
