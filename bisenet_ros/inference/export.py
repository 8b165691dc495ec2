"""ONNX export of a BiSeNet model, and its verification against eager PyTorch.

The graph takes ``input`` (N,3,H,W) normalised float and returns ``logits`` (N,C,H,W). The batch
dimension is always dynamic; H and W are fixed to the export size unless ``dynamic_size`` is set
(then any multiple of 32 works, at some cost in graph optimisation). Export uses PyTorch's
TorchScript-based exporter, which folds eval-mode BatchNorm into the convolutions.
"""
from __future__ import annotations

import copy
import io
import math
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import BisenetError, ConfigError, one_line
from ..options import model_size_problem

#: ONNX opset used unless asked otherwise (ONNX Runtime and TensorRT 8.6+ support it)
DEFAULT_OPSET = 17
MIN_OPSET = 11
#: the newest opset PyTorch's TorchScript-based exporter writes
MAX_OPSET = 20
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class ExportError(BisenetError):
    """The model could not be exported, or the exported graph does not match eager PyTorch."""


def relative_error(out: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray) -> float:
    """Relative L2 error ``||out - ref|| / ||ref||`` in float64; :class:`ExportError` if not finite."""
    a = torch.as_tensor(np.asarray(out) if not isinstance(out, torch.Tensor) else out).detach().cpu().double()
    b = torch.as_tensor(np.asarray(ref) if not isinstance(ref, torch.Tensor) else ref).detach().cpu().double()
    if a.shape != b.shape:
        raise ExportError(f"output shape {tuple(a.shape)} differs from the reference {tuple(b.shape)}")
    denom = float(b.norm())
    err = float((a - b).norm()) / denom if denom > 0 else float((a - b).norm())
    if not math.isfinite(err):  # NaN would pass every "err >= tolerance" test unnoticed
        where = "the reference" if not bool(torch.isfinite(b).all()) else "the output"
        raise ExportError(f"relative error is {err}: {where} holds NaN/inf values")
    return err


def export_onnx(
    model: nn.Module,
    out: str | Path | io.BytesIO,
    input_size: Sequence[int] = (512, 1024),
    opset: int = DEFAULT_OPSET,
    dynamic_size: bool = False,
    half: bool = False,
) -> str | Path | io.BytesIO:
    """Write ``model`` as ONNX to ``out`` (a path or an in-memory buffer) and return ``out``.

    ``half`` exports a float16 graph (float16 input and output); the model must then be on CUDA.
    """
    h, w = (int(v) for v in input_size)
    problem = model_size_problem(h, w)
    if problem:
        raise ConfigError(f"export input size {problem}")
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ConfigError(f"opset {opset} is not supported (use {MIN_OPSET}..{MAX_OPSET}; default {DEFAULT_OPSET})")
    param = next(model.parameters())
    dtype = torch.float16 if half else torch.float32
    if half and param.device.type != "cuda":
        raise ConfigError("a float16 ONNX export needs the model on a CUDA device")
    net = model.eval()
    if param.dtype != dtype:
        net = copy.deepcopy(net).to(dtype)
    x = torch.zeros(1, 3, h, w, dtype=dtype, device=param.device)
    axes = {0: "batch"}
    if dynamic_size:
        axes.update({2: "height", 3: "width"})
    if isinstance(out, (str, Path)):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
            torch.onnx.export(
                net, (x,), out if isinstance(out, io.BytesIO) else str(out),
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=int(opset),
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes}, do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises many types; report its first line
        raise ExportError(f"ONNX export failed at opset {opset}: {one_line(exc)}") from None
    return out


def onnx_session(model_bytes_or_path: bytes | str | Path, providers: Sequence | None = None,
                 intra_op_threads: int = 0):
    """An ONNX Runtime session with all graph optimisations (CPU provider unless told)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("onnxruntime is not installed (pip install onnxruntime)") from None
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(intra_op_threads)
    so.log_severity_level = 3
    # idle ORT threads must not spin: the pipeline's torch ops (and the node) share the cores
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = model_bytes_or_path if isinstance(model_bytes_or_path, bytes) else str(model_bytes_or_path)
    try:
        return ort.InferenceSession(src, so, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportError(f"ONNX Runtime cannot load the model: {one_line(exc)}") from None


def verify_onnx(
    model: nn.Module,
    onnx_model: bytes | str | Path,
    input_size: Sequence[int],
    batch_sizes: Sequence[int] = (1, 2),
    seed: int = 0,
) -> dict[int, float]:
    """Relative L2 error of ONNX Runtime (CPU) vs eager float32 ``model`` per batch size."""
    session = onnx_session(onnx_model)
    model = model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    errors = {}
    for n in batch_sizes:
        x = torch.randn(int(n), 3, *input_size, generator=gen)
        with torch.inference_mode():
            ref = model(x.to(device)).float().cpu()
        out = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        errors[int(n)] = relative_error(out, ref)
    return errors
