"""Options shared by every tool that runs the pipeline, and their translation to it."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..images import MAX_PIXELS, MAX_PIXELS_LIMIT
from ..pipeline import SegmentationPipeline, build_pipeline, parse_input_size


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


def add_model_arguments(parser: argparse.ArgumentParser, weights_required: bool = True) -> None:
    """--model --weights --num-classes --dataset --mean --std --input-size --device --precision --backend."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", choices=["bisenetv1", "bisenetv2"], default=None,
                   help="architecture (default: from the checkpoint's sidecar or key layout)")
    g.add_argument("--weights", required=weights_required,
                   help="checkpoint (.pth/.pt/.safetensors), e.g. the public model_final_v2_city.pth")
    g.add_argument("--num-classes", type=number(int, 1, 65535), default=None,
                   help="class count (default: from the checkpoint)")
    g.add_argument("--dataset", default=None,
                   help="preset name (cityscapes, camvid, cocostuff, ade20k) or preset YAML "
                        "(default: the checkpoint's sidecar, else cityscapes)")
    g.add_argument("--mean", type=float_triple, default=None, help="override mean, R,G,B on a 0-1 scale")
    g.add_argument("--std", type=float_triple, default=None, help="override std, R,G,B on a 0-1 scale")
    g.add_argument("--input-size", default=None,
                   help="model input HxW (e.g. 512x1024) or auto32 (sides rounded up to x32); "
                        "default: the checkpoint sidecar's, else auto32")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16"])
    g.add_argument("--backend", default="auto", help="inference backend (auto, torch, ...)")
    g.add_argument("--max-pixels", type=number(int, 1, MAX_PIXELS_LIMIT), default=MAX_PIXELS,
                   help=f"refuse images with more pixels than this, before decoding (default {MAX_PIXELS}"
                        f" = 4096x4096, at most {MAX_PIXELS_LIMIT})")


def pipeline_from_args(args: argparse.Namespace, **overrides) -> SegmentationPipeline:
    """Build the shared pipeline from the options of :func:`add_model_arguments`."""
    kwargs = dict(
        model=args.model, weights=args.weights, num_classes=args.num_classes, dataset=args.dataset,
        mean=args.mean, std=args.std, input_size=args.input_size, device=args.device,
        precision=args.precision, backend=args.backend, max_pixels=args.max_pixels,
    )
    kwargs.update(overrides)
    pipeline = build_pipeline(**kwargs)
    for warning in pipeline.info.get("warnings", ()):
        print(f"warning: {warning}", file=sys.stderr)
    return pipeline


def node_parameters(args: argparse.Namespace) -> dict:
    """The options of :func:`add_model_arguments` as ``segmentation_node`` parameters."""
    params: dict = {"weights": str(Path(args.weights).expanduser().resolve())}
    if args.model:
        params["model"] = args.model
    if args.num_classes:
        params["num_classes"] = args.num_classes
    if args.dataset:
        params["dataset"] = args.dataset
    if args.mean:
        params["mean"] = [float(v) for v in args.mean]
    if args.std:
        params["std"] = [float(v) for v in args.std]
    size = parse_input_size(args.input_size)
    if size:
        params["input_height"], params["input_width"] = size
    for key in ("device", "precision", "backend"):
        params[key] = getattr(args, key)
    if args.max_pixels != MAX_PIXELS:
        params["max_pixels"] = args.max_pixels
    return params
