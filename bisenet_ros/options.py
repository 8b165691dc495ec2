"""The one options object of the pipeline: what the node, the CLI, evaluation and benchmarks set.

:class:`PipelineOptions` is built at a boundary -- command-line arguments (:meth:`from_args`),
node parameters (:meth:`from_parameters`) or Python keywords (:meth:`of`) -- where every string is
parsed once, and it translates back to node parameters (:meth:`to_parameters`) for tools that start
a node (the launch files pass node parameters of the same names). :func:`bisenet_ros.pipeline.build_pipeline` takes it.

``input_size`` has one meaning everywhere below the boundary:

- ``"checkpoint"``: the checkpoint sidecar's input size, else auto32 (CLI default; node 0x0);
- ``"auto32"``: each camera side rounded up to a multiple of 32;
- ``(H, W)``: a fixed model input size (multiples of 32).

A new pipeline option is one field here (with its parsing in :meth:`of` when it needs any), its
command-line flag in ``tools/common.py:add_model_arguments`` and its node parameter in
``ros/parameters.py:PARAMETERS`` (listed in ``NODE_NAMES`` below when the names differ in form).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Sequence, Union

from .data.datasets import triple
from .data.images import MAX_PIXELS, MAX_SIDE
from .errors import ConfigError

CHECKPOINT = "checkpoint"
AUTO32 = "auto32"
InputSize = Union[str, tuple[int, int]]  # CHECKPOINT, AUTO32 or (H, W)

#: node parameter values that mean "not set" (the node cannot declare None)
_UNSET_PARAMETER = {"weights": "", "model": "auto", "num_classes": 0, "dataset": "", "mean": [], "std": [],
                    "class_remap": ""}

#: the label of pixels below ``confidence_threshold`` ("unknown"), when the classes leave it free
UNKNOWN_LABEL = 255


def unknown_label(num_classes: int) -> int:
    """255 for up to 255 classes (mono8 labels), else 65535 (mono16)."""
    return UNKNOWN_LABEL if num_classes <= UNKNOWN_LABEL else 65535


def parse_input_size(value: str | Sequence[int] | None) -> InputSize:
    """``None`` -> CHECKPOINT; ``'auto32'``/``'auto'``/``''``/(0, 0) -> AUTO32; ``'512x1024'``/(512, 1024) -> (H, W)."""
    if value is None or value == CHECKPOINT:
        return CHECKPOINT
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "auto", AUTO32):
            return AUTO32
        try:
            h, w = (int(p) for p in text.replace(",", "x").split("x"))
        except ValueError:
            raise ConfigError(f"input size '{value}' must be auto32 or HxW, e.g. 512x1024") from None
    else:
        h, w = (int(v) for v in value)
    if h == 0 and w == 0:
        return AUTO32
    problem = model_size_problem(h, w)
    if problem:
        raise ConfigError(f"input size {problem}")
    return (h, w)


def model_size_problem(h: int, w: int) -> str | None:
    """Why ``h x w`` cannot be a model input (or training crop), or None: both sides multiples of
    32 from 32, at most :data:`MAX_PIXELS` pixels (checked before anything is allocated: the
    activations of a 16384x16384 input alone would need hundreds of GB)."""
    if h < 32 or w < 32 or h % 32 or w % 32:
        return f"{h}x{w} must be multiples of 32, at least 32x32 (e.g. 512x1024)"
    if h * w > MAX_PIXELS or max(h, w) > MAX_SIDE:
        return f"{h}x{w} is {h * w} pixels, more than a model input may have (at most {MAX_PIXELS}, e.g. 2048x4096)"
    return None


def auto32(h: int, w: int) -> tuple[int, int]:
    """Each side rounded up to a multiple of 32."""
    return ((h + 31) // 32 * 32, (w + 31) // 32 * 32)


def fixed_input_size(value: str | Sequence[int] | None) -> tuple[int, int] | None:
    """The fixed (H, W) of an input size, None for auto32 (and for CHECKPOINT, unresolved)."""
    size = parse_input_size(value)
    return None if isinstance(size, str) else size


@dataclass(frozen=True)
class PipelineOptions:
    """What :func:`~bisenet_ros.pipeline.build_pipeline` needs; None = from the checkpoint/preset."""

    model: str | None = None  # bisenetv1 | bisenetv2; None = sidecar or key layout
    weights: str | None = None
    num_classes: int | None = None  # None = from the checkpoint
    dataset: Any = None  # preset name/YAML path (or a DatasetPreset from Python); None = sidecar, else cityscapes
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    input_size: InputSize = CHECKPOINT
    device: str = "auto"
    precision: str = "auto"
    backend: str = "auto"
    output_resolution: str = "camera"
    overlay_alpha: float = 0.5
    max_pixels: int = MAX_PIXELS  # per frame, checked from the header before decoding
    confidence_threshold: float = 0.0  # max softmax below this -> unknown_label; 0 = off
    class_remap: str | None = None  # remap name (resources/remaps/) or YAML file; None = the model's classes

    # -- constructors (the boundaries) -----------------------------------------------------------
    @classmethod
    def of(cls, **values: Any) -> PipelineOptions:
        """From Python values in any accepted spelling (e.g. ``input_size='512x1024'``, lists)."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown pipeline options {sorted(unknown)}")
        if "input_size" in values:
            values["input_size"] = parse_input_size(values["input_size"])
        for name in ("mean", "std"):
            if name in values:  # unset (None or empty) or three values
                values[name] = triple(values[name], name) if values[name] is not None and len(values[name]) else None
        if values.get("weights") is not None:  # a public checkpoint's name -> the cached file
            from .models.weights_catalog import resolve_weights

            values["weights"] = resolve_weights(str(values["weights"]))
        return cls(**values)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: Any) -> PipelineOptions:
        """From the options of ``tools.common.add_model_arguments`` (``--input-size`` unset = checkpoint)."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        return cls.of(**{**values, **overrides})

    @classmethod
    def from_parameters(cls, params: dict[str, Any]) -> PipelineOptions:
        """From ``segmentation_node`` parameter values (``ros/parameters.py``); unknown names are ignored."""
        values = {}
        for f in fields(cls):
            if f.name in params and params[f.name] != _UNSET_PARAMETER.get(f.name, object()):
                values[f.name] = params[f.name]
        h, w = params.get("input_height", 0), params.get("input_width", 0)
        values["input_size"] = CHECKPOINT if h == 0 and w == 0 else (h, w)
        return cls.of(**values)

    # -- translations -------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> PipelineOptions:
        """A copy with ``changes`` (parsed like :meth:`of`)."""
        return replace(self, **vars(PipelineOptions.of(**{**self._fields(), **changes})))

    def to_parameters(self, defaults: bool = False) -> dict[str, Any]:
        """``segmentation_node`` parameters; unset options are left out unless ``defaults``.

        ``weights`` becomes an absolute path (the node may run elsewhere). An input size of
        ``auto32`` has no node spelling other than 0x0, which the node reads as "checkpoint".
        """
        params: dict[str, Any] = {}
        for name, value in self._fields().items():
            if name in ("input_size", "output_resolution", "overlay_alpha", "confidence_threshold", "max_pixels"):
                continue
            if value is None:
                if defaults and name in _UNSET_PARAMETER:
                    params[name] = _UNSET_PARAMETER[name]
                continue
            if name == "dataset" and not isinstance(value, str):
                value = value.name
            params[name] = list(value) if isinstance(value, tuple) else value
        if self.weights:
            params["weights"] = str(Path(self.weights).expanduser().resolve())
        if isinstance(self.input_size, tuple):
            params["input_height"], params["input_width"] = self.input_size
        elif defaults:
            params["input_height"] = params["input_width"] = 0
        if defaults or self.output_resolution != "camera":
            params["output_resolution"] = self.output_resolution
        if defaults or self.overlay_alpha != 0.5:
            params["overlay_alpha"] = self.overlay_alpha
        if defaults or self.max_pixels != MAX_PIXELS:
            params["max_pixels"] = self.max_pixels
        if defaults or self.confidence_threshold:
            params["confidence_threshold"] = self.confidence_threshold
        return params

    @property
    def input_size_text(self) -> str:
        """``'auto32'``, ``'checkpoint'`` or ``'HxW'``."""
        return self.input_size if isinstance(self.input_size, str) else f"{self.input_size[0]}x{self.input_size[1]}"

    def _fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
