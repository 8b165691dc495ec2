"""Options shared by every tool that runs the pipeline, and their translation to it."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..data.images import MAX_PIXELS, MAX_PIXELS_LIMIT
from ..inference.backends import BACKENDS, PRECISIONS
from ..inference.cpu import cpu_model
from ..models.architectures import ARCHITECTURES
from ..models.weights_catalog import resolve_weights
from ..options import PipelineOptions, fixed_input_size
from ..pipeline import SegmentationPipeline, build_pipeline


def cpu_name() -> str:
    """The CPU model (named with every speed figure)."""
    return cpu_model()


def float_triple(text: str) -> list[float]:
    """``'0.3,0.4,0.3'`` -> [0.3, 0.4, 0.3] (argparse type)."""
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not three comma-separated numbers") from None
    if len(vals) != 3:
        raise argparse.ArgumentTypeError(f"'{text}' needs exactly three values (R,G,B)")
    if not all(math.isfinite(v) for v in vals):
        raise argparse.ArgumentTypeError(f"'{text}' must be finite numbers")
    return vals


def number(kind: type = float, lo: float | None = None, hi: float | None = None):
    """An argparse type for a finite int/float within [lo, hi] (either bound optional)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f">= {lo:g}" if hi is None else f"<= {hi:g}" if lo is None else f"in {lo:g}..{hi:g}"
            raise argparse.ArgumentTypeError(f"{text} is out of range (must be {bounds})")
        return value
    return parse


def hw_type(min_side: int = 1):
    """An argparse type for ``HxW`` (or ``H,W``) sizes with both sides at least ``min_side``."""
    def parse(text: str) -> tuple[int, int]:
        try:
            h, w = (int(v) for v in text.lower().replace(",", "x").split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not HxW, e.g. 480x640") from None
        if h < min_side or w < min_side:
            raise argparse.ArgumentTypeError(f"size {text} is too small (at least {min_side}x{min_side})")
        return h, w
    return parse


def add_model_arguments(parser: argparse.ArgumentParser, weights_required: bool = True,
                        input_size_fallback: str = "auto32") -> None:
    """--model --weights --num-classes --dataset --mean --std --input-size --device --precision --backend.

    ``--input-size`` defaults to the checkpoint sidecar's everywhere; ``input_size_fallback`` is
    what a checkpoint without one (or no checkpoint) runs at (see :func:`input_size_of`)."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", choices=list(ARCHITECTURES), default=None,
                   help="architecture (default: from the checkpoint's sidecar or key layout)")
    g.add_argument("--weights", required=weights_required,
                   help="checkpoint (.pth/.pt/.safetensors), e.g. the public model_final_v2_city.pth, "
                        "an .onnx made by 'bisenet-ros export-onnx' or 'quantize', or a public checkpoint's "
                        "name (bisenetv2-cityscapes; 'bisenet-ros weights list')")
    g.add_argument("--num-classes", type=number(int, 1, 65535), default=None,
                   help="class count (default: from the checkpoint)")
    g.add_argument("--dataset", default=None,
                   help="preset name (cityscapes, camvid, cocostuff, ade20k) or preset YAML "
                        "(default: the checkpoint's sidecar, else cityscapes)")
    g.add_argument("--mean", type=float_triple, default=None, help="override mean, R,G,B on a 0-1 scale")
    g.add_argument("--std", type=float_triple, default=None, help="override std, R,G,B on a 0-1 scale")
    g.add_argument("--input-size", default=None,
                   help="model input HxW (e.g. 512x1024) or auto32 (sides rounded up to x32); "
                        f"default: the checkpoint sidecar's, else {input_size_fallback}")
    parser.set_defaults(input_size_fallback=input_size_fallback)
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto = CUDA when available)")
    g.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                   help="number format of the forward pass (default: auto = fp16 on CUDA, fp32 on the CPU); "
                        "fp16 needs CUDA, bf16 a CPU with AVX-512 BF16 or AMX, int8 a model made by "
                        "'bisenet-ros quantize'")
    g.add_argument("--backend", default="auto", choices=list(BACKENDS),
                   help="how the forward pass runs (default: auto = the fastest available backend that "
                        "matches eager PyTorch, see resources/backends.yaml)")
    g.add_argument("--max-pixels", type=number(int, 1, MAX_PIXELS_LIMIT), default=MAX_PIXELS,
                   help=f"refuse images with more pixels (width x height) than this, checked before decoding "
                        f"(default {MAX_PIXELS} = 4096x2048, at most {MAX_PIXELS_LIMIT} = 8192x8192)")
    g = parser.add_argument_group("outputs")
    g.add_argument("--class-remap", default=None, metavar="REMAP",
                   help="merge/rename the model's classes for every output: a shipped remap "
                        "(cityscapes_driving, synthetic_street_driving) or a YAML file (default: none)")
    g.add_argument("--confidence-threshold", type=number(float, 0, 1), default=0.0, metavar="P",
                   help="pixels whose max softmax is below P get the unknown label 255 (65535 above 255 "
                        "classes): black in the colour mask, untinted in the overlay (default: 0 = off)")


def pipeline_from_args(args: argparse.Namespace, **overrides) -> SegmentationPipeline:
    """Build the shared pipeline from the options of :func:`add_model_arguments` (plus ``overrides``)."""
    pipeline = build_pipeline(options_from_args(args, **overrides))
    for warning in pipeline.info.get("warnings", ()):
        print(f"warning: {warning}", file=sys.stderr)
    return pipeline


def options_from_args(args: argparse.Namespace, **overrides) -> PipelineOptions:
    """:class:`PipelineOptions` of :func:`add_model_arguments`, ``--input-size`` resolved by
    :func:`input_size_of` (the checkpoint sidecar's, else the command's fallback)."""
    return PipelineOptions.from_args(args, **{"input_size": input_size_of(args), **overrides})


def input_size_of(args: argparse.Namespace) -> str:
    """``--input-size``, else the checkpoint sidecar's, else the command's fallback (auto32, or a
    fixed size for the benchmarks), as ``'HxW'`` or ``'auto32'``."""
    if args.input_size:
        return args.input_size
    side = sidecar_input_size(resolve_weights(args.weights))
    if side:
        return f"{side[0]}x{side[1]}"
    return getattr(args, "input_size_fallback", "auto32")


def sidecar_input_size(weights) -> tuple[int, int] | None:
    """The ``input_size`` of a checkpoint's sidecar YAML, or None (no weights, no sidecar)."""
    if not weights:
        return None
    size = (weights_sidecar(weights) or {}).get("input_size")
    return fixed_input_size(size) if size else None


def weights_sidecar(weights) -> dict:
    """What the weights say about themselves: a checkpoint's sidecar YAML, an ONNX model's sidecar
    or (``export-onnx``) its embedded metadata; ``{}`` when there is none."""
    from ..models.checkpoint import read_sidecar
    from ..inference.onnx_model import is_onnx, read_onnx_sidecar

    if is_onnx(weights):
        return read_onnx_sidecar(weights)
    return read_sidecar(weights)


def model_preset(args: argparse.Namespace):
    """The model's label set without loading it: ``--dataset``, else the checkpoint sidecar's, else
    Cityscapes (what the pipeline would use; for tools that start a node instead)."""
    from ..data.datasets import load_preset, sidecar_preset

    if args.dataset:
        return load_preset(args.dataset)
    weights = resolve_weights(args.weights)
    return sidecar_preset(weights_sidecar(weights) if weights else {}, str(weights))


def random_init_weights(args: argparse.Namespace, folder, command: str) -> str:
    """A randomly initialised checkpoint of ``--model`` (seed 0, ``--num-classes`` or 19) in
    ``folder``, for the speed-only runs of ``bench``/``node-bench`` without ``--weights``: the
    pipeline and any eager reference then load the same tensors."""
    import torch

    from ..errors import ConfigError
    from ..models import build_model

    if args.model is None:
        raise ConfigError(f"{command} without --weights needs --model (bisenetv1 or bisenetv2)")
    torch.manual_seed(0)
    path = Path(folder) / f"{args.model}_random.pth"
    torch.save(build_model(args.model, args.num_classes or 19).state_dict(), path)
    return str(path)
