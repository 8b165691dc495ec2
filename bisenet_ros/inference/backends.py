"""Inference backends: how the model's forward pass is executed.

A runner is a callable ``runner(x) -> logits`` on normalised (N,3,H,W) float32 tensors on the
pipeline's device, returning float32 logits on that device, with ``name`` and ``precision``
attributes (the classes are in :mod:`bisenet_ros.inference.runners`, re-exported here).
:func:`create_runner` builds one by name:

============  ======  ===========================================================================
name          device  what runs
============  ======  ===========================================================================
torch         both    eager PyTorch (the reference); float16 autocast on CUDA for fp16
torchscript   both    BatchNorm folded, traced, frozen and ``optimize_for_inference`` (oneDNN on
                      CPU); channels-last (and float16 weights for fp16) on CUDA
onnxruntime   both    in-memory ONNX export run by ONNX Runtime with all graph optimisations
                      (CPU provider, or the CUDA provider with I/O bound to torch tensors)
tensorrt      CUDA    the ONNX export run by ONNX Runtime's TensorRT provider (fp16 when asked),
                      engines cached on disk
cudagraph     CUDA    BatchNorm folded, channels-last, float16 weights for fp16, one CUDA graph
                      captured per input shape and replayed
openvino      CPU     the in-memory ONNX export compiled by OpenVINO's CPU plugin (fp32, or bf16
                      where the CPU has AVX-512 BF16/AMX); also runs quantized int8 ONNX models
============  ======  ===========================================================================

Precisions: ``fp32``; ``fp16`` (CUDA); ``bf16`` (CPU with AVX-512 BF16 or AMX, see
:mod:`bisenet_ros.inference.cpu`; refused elsewhere with one line); ``int8`` (models made by
``bisenet-ros quantize``, see :mod:`bisenet_ros.inference.onnx_model`). ``auto`` is fp16 on CUDA and the
configured CPU precision (fp32) on the CPU.

``auto`` (the default everywhere) considers the backends of the device's list in
``resources/backends.yaml`` that are available and whose logits match eager float32 on a fixed seeded
input (relative L2 error below the configured tolerance: 1e-3 for fp32). On the CUDA device it
takes the first. On the CPU, where the fastest backend depends on the CPU (Intel or AMD, AVX-512,
AMX), it times the candidates once per machine and caches the choice
(:mod:`bisenet_ros.inference.backend_cache`, keyed by CPU model, model, input size, precision and library
versions); later starts build only the cached backend and check it.
"""
from __future__ import annotations

import importlib.util
from typing import Sequence

import torch
from torch import nn

from ..errors import BisenetError, ConfigError, one_line
from .runners import (BackendUnavailable, CudaGraphRunner, OnnxRuntimeRunner,  # noqa: F401  (re-exported)
                      OpenVinoRunner, Runner, TorchRunner, TorchScriptRunner, _export_memo, import_openvino,
                      onnx_providers)
from .settings import CONFIG_FILE, backend_config  # noqa: F401  (re-exported)

BACKENDS = ("auto", "torch", "torchscript", "onnxruntime", "openvino", "tensorrt", "cudagraph")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")

# -- selection --------------------------------------------------------------------------------------
def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> fp16 on CUDA, the configured CPU precision (fp32) on the CPU; fp16 on the CPU,
    bf16 on a CPU without AVX-512 BF16/AMX (or on CUDA) and int8 for a float model are refused."""
    from .cpu import bf16_unsupported_reason

    text = (precision or "auto").lower()
    if text not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if text == "auto":
        if device.type == "cuda":
            return "fp16"
        text = str(backend_config()["auto_precision"]["cpu"])
        return "fp32" if text == "bf16" and bf16_unsupported_reason() else text
    if text == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; use fp32 (or bf16) on the CPU")
    if text == "bf16":
        if device.type != "cpu":
            raise ConfigError("precision bf16 is for the CPU; use fp16 on a CUDA device")
        reason = bf16_unsupported_reason()
        if reason:
            raise ConfigError(reason)
    if text == "int8":
        raise ConfigError("precision int8 needs a quantized model: make one with 'bisenet-ros quantize' "
                          "and pass its .onnx file as the weights")
    return text


#: the backends that compute each reduced precision (fp32 runs everywhere)
PRECISION_BACKENDS = {"fp16": ("torch", "torchscript", "onnxruntime", "tensorrt", "cudagraph"),
                      "bf16": ("torch", "openvino")}


def backend_unavailable_reason(name: str, device: torch.device, precision: str = "fp32") -> str | None:
    """Why backend ``name`` cannot run on ``device`` at ``precision`` (cheap checks only), or None."""
    if name in BACKENDS and name != "auto" and name not in PRECISION_BACKENDS.get(precision, BACKENDS):
        return f"has no {precision} here (use {' or '.join(PRECISION_BACKENDS[precision])})"
    if name == "torch":
        return None
    if name == "openvino":
        if device.type != "cpu":
            return "runs on the CPU only"
        if importlib.util.find_spec("openvino") is None:  # not imported: see import_openvino
            return "openvino is not installed (pip install openvino)"
        return None
    if name == "torchscript":
        return None if hasattr(torch, "jit") else "this PyTorch has no TorchScript"
    if name == "cudagraph":
        return None if device.type == "cuda" else "needs a CUDA device"
    if name in ("onnxruntime", "tensorrt"):
        if name == "tensorrt" and device.type != "cuda":
            return "needs a CUDA device"
        try:
            onnx_providers("cpu" if device.type == "cpu" else ("tensorrt" if name == "tensorrt" else "cuda"),
                           device, "fp32")
        except BackendUnavailable as exc:
            return str(exc)
        try:
            import onnx  # noqa: F401  (torch.onnx.export needs it)
        except ImportError:
            return "the onnx package is not installed (pip install onnx)"
        return None
    raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got '{name}'")


def build_backend(name: str, model: nn.Module, device: torch.device, precision: str,
                  input_size: Sequence[int] | None) -> Runner:
    """Build the named backend (not ``auto``); BackendUnavailable if it cannot run here."""
    reason = backend_unavailable_reason(name, device, precision)
    if reason is not None:
        raise BackendUnavailable(f"backend {name} is not available on {device}: {reason}")
    if name == "torch":
        return TorchRunner(model, device, precision)
    if name == "openvino":
        return OpenVinoRunner(model, device, precision, input_size)
    if name == "torchscript":
        size = tuple(input_size) if input_size else tuple(backend_config()["verify_size"])
        return TorchScriptRunner(model, device, precision, size)
    if name == "cudagraph":
        return CudaGraphRunner(model, device, precision)
    provider = "cpu" if device.type == "cpu" else ("tensorrt" if name == "tensorrt" else "cuda")
    return OnnxRuntimeRunner(model, device, precision, input_size, provider)


def calibration_input(device: torch.device, input_size: Sequence[int] | None, seed: int = 0) -> torch.Tensor:
    """The fixed seeded (1,3,H,W) input every backend is checked on."""
    size = tuple(input_size) if input_size else tuple(backend_config()["verify_size"])
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, *size, generator=gen).to(device)


def check_runner(runner: Runner, model: nn.Module, x: torch.Tensor,
                 reference: torch.Tensor | None = None) -> float:
    """Relative L2 error of ``runner(x)`` against eager float32 ``model(x)``."""
    from .export import relative_error

    if reference is None:
        with torch.inference_mode():
            reference = model.eval()(x).float()
    with torch.inference_mode():
        out = runner(x)
    return relative_error(out.float(), reference)


def tolerance_for(precision: str, device: torch.device) -> float:
    """The relative L2 error a backend must stay under at ``precision`` on ``device``: the
    config's, except fp32 on a CUDA device whose float32 convolutions run in TF32 (PyTorch's
    default on Ampere and newer), where eager float32 is itself only about 1e-3 accurate."""
    tolerances = backend_config()["tolerance"]
    if precision == "fp32" and device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return float(tolerances["fp32_tf32"])
    return float(tolerances[precision])


def select_backend(model: nn.Module, device: torch.device, precision: str,
                   input_size: Sequence[int] | None, order: Sequence[str] | None = None,
                   sidecar: dict | None = None) -> Runner:
    """``auto``: among the backends of ``order`` (default: the config's for the device and
    precision) that build and pass the accuracy gate (:mod:`bisenet_ros.inference.gate`), the
    first (CUDA) or the fastest as measured interleaved on this CPU and cached
    (:mod:`bisenet_ros.inference.backend_cache`). A reduced precision that no candidate passes is
    refused in one line; eager fp32 is the fp32 last resort.

    The runner gets ``rel_err_vs_eager``, ``selection`` (one line per backend tried) and on the
    CPU ``cache_key``/``cache_entry``/``expected_ms`` (what the node compares its model time with).
    """
    from . import backend_cache

    cfg = backend_config()
    order = list(order or auto_order(device, precision))
    gate = _gate(model, device, precision, input_size, sidecar)
    measure = device.type == "cpu" and bool(cfg["auto_measure"]["cpu"])
    key = backend_cache.cache_key(model, input_size, precision) if measure else None
    cached = backend_cache.lookup(key) if measure else None
    notes: list[str] = []
    quick = _quick_choice(cached, order, model, device, precision, input_size, gate, notes) \
        if measure and backend_cache.quick_starting() else None
    if quick is not None:
        runner, runner.measure_later, entry = quick
        return _selected(runner, notes, runner.measure_later, key, entry)
    if cached and cached["backend"] in order:  # the choice measured before on this machine
        again = backend_cache.should_remeasure(cached)
        runner = None if again else _checked(cached["backend"], model, device, precision, input_size, gate, notes)
        if runner is not None:
            return _selected(runner, notes, f"cached choice for this CPU: {backend_cache.describe(cached)}",
                             key, cached)
        notes.append(f"measuring again: {again}" if again else
                     "cached choice no longer builds or matches: measuring again")
    timed = [n for n in order if not (n == "torch" and precision == "fp32")] or order
    if measure and len(timed) > 1:
        rounds = int(cfg["auto_measure"]["rounds"])
        backend_cache.announce(
            f"choosing the {precision} backend for {backend_cache.model_key(model)} at {_size_text(input_size)}: "
            f"building and checking {', '.join(timed)} (about {gate.reference_ms / 1e3 * len(timed) * (rounds + 3.5):.0f}"
            f" s, once per CPU; cached in {backend_cache.cache_file()})")
    built, failed = _build_candidates(order, model, device, precision, input_size, gate, notes, measure)
    if built and not measure:
        return _selected(built[0], notes, "first in the configured order")
    if len(built) == 1:
        return _selected(built[0], notes, "the only candidate", key)
    if built:
        runner, entry = backend_cache.measure_and_store(
            key, built, gate.x, int(cfg["auto_measure"]["rounds"]), {r.name: r.check_ms for r in built})
        return _selected(runner, notes, f"fastest on this CPU, cached: {backend_cache.describe(entry)}", key, entry)
    if precision != "fp32":  # never a rejected candidate: refuse, naming what was measured
        raise ConfigError(gate.refusal(precision, failed))
    runner = TorchRunner(model, device, precision)  # the reference itself, if the order omitted it
    runner.rel_err_vs_eager = check_runner(runner, model, gate.x, gate.reference)
    return _selected(runner, notes, "fallback")


def _quick_choice(cached, order, model, device, precision, input_size, gate, notes) -> tuple | None:
    """Under :func:`~bisenet_ros.inference.backend_cache.quick_start`, when this start would measure:
    (runner, why, cached entry or None): a provisional cached choice, else the first candidate that
    passes the gate (the node measures in the background once serving, and says why). None when
    the cached choice can be used as it is, or nothing passes (then the normal path decides)."""
    from . import backend_cache

    again = backend_cache.should_remeasure(cached) if cached and cached["backend"] in order else None
    if cached and cached["backend"] in order and not again:
        return None
    if again:
        runner = _checked(cached["backend"], model, device, precision, input_size, gate, notes)
        why = f"cached choice for this CPU, {again}: serving it, measuring in the background"
    else:
        built, _ = _build_candidates(order, model, device, precision, input_size, gate, notes, False)
        runner = built[0] if built else None
        why = ("no measured choice for this model on this CPU yet: the first candidate that passes the "
               "check serves, the candidates are measured in the background")
    return (runner, why, cached if again else None) if runner is not None else None


def _gate(model: nn.Module, device: torch.device, precision: str, input_size: Sequence[int] | None,
          sidecar: dict | None):
    """The accuracy gate of ``precision``: noise for fp32/fp16, a street scene and labels for bf16."""
    from .gate import Gate, scene_input

    if precision != "bf16":
        return Gate(model, calibration_input(device, input_size), tolerance_for(precision, device), None, False)
    size = tuple(input_size) if input_size else tuple(backend_config()["verify_size"])
    x = scene_input(size, sidecar or {}, "checkpoint").to(device)
    return Gate(model, x, tolerance_for(precision, device), float(backend_config()["bf16_labels_equal"]), True)


def _build_candidates(order, model, device, precision, input_size, gate, notes, measure):
    """(runners that pass the gate, {name: (err, labels equal)} of those that failed it)."""
    built, failed = [], {}
    _export_memo.graphs = {}  # one ONNX export serves ONNX Runtime and OpenVINO
    try:
        for name in order:
            if name == "torch" and precision == "fp32" and built:  # the reference: last resort, not timed
                notes.append("torch: not built (eager fp32 is the reference, the last resort)")
                continue
            runner = _checked(name, model, device, precision, input_size, gate, notes, failed)
            if runner is not None:
                built.append(runner)
                if not measure:
                    break
    finally:
        _export_memo.graphs = None
    return built, failed


def _size_text(input_size: Sequence[int] | None) -> str:
    return f"{input_size[0]}x{input_size[1]}" if input_size else "auto32"


def auto_order(device: torch.device, precision: str) -> list[str]:
    """The configured candidates of ``auto`` for ``device`` (and ``cpu_bf16`` for bf16)."""
    table = backend_config()["auto_order"]
    return list(table.get(f"{device.type}_{precision}") or table[device.type])


def _selected(runner: Runner, notes: list[str], why: str, key: str | None = None,
              entry: dict | None = None) -> Runner:
    notes.append(f"{runner.name}: selected ({why})")
    runner.selection = notes
    runner.cache_key, runner.cache_entry = key, entry
    runner.expected_ms = ((entry or {}).get("ms") or {}).get(runner.name)
    return runner


def _checked(name: str, model: nn.Module, device: torch.device, precision: str,
             input_size: Sequence[int] | None, gate, notes: list[str], failed: dict | None = None) -> Runner | None:
    """Build backend ``name`` and run the gate on it; None (with a note) if it fails."""
    reason = backend_unavailable_reason(name, device, precision)
    if reason is not None:
        notes.append(f"{name}: unavailable ({reason})")
        return None
    try:
        runner = build_backend(name, model, device, precision, input_size)
        err, equal, ms = gate.measure(runner)
    except Exception as exc:  # a backend that fails to build is skipped, never fatal
        notes.append(f"{name}: failed ({one_line(exc)})")
        return None
    problem = gate.verdict(err, equal)
    if problem is None or (name == "torch" and precision == "fp32"):  # eager fp32 is the reference
        notes.append(f"{name}: ok ({gate.figures(err, equal)}, tolerance {gate.tolerance:g})")
        runner.rel_err_vs_eager, runner.check_ms = err, ms
        return runner
    notes.append(f"{name}: rejected ({gate.figures(err, equal)}: {problem})")
    if failed is not None:
        failed[name] = (err, equal)
    return None


def create_runner(
    model: nn.Module,
    backend: str = "auto",
    device: torch.device | str = "cpu",
    precision: str = "auto",
    input_size: Sequence[int] | None = None,
    sidecar: dict | None = None,
) -> Runner:
    """A runner for ``model`` on ``device`` with the named backend (``auto``: see :func:`select_backend`).
    A backend named at bf16 runs the bf16 gate and warns (``runner.warnings``) when it fails it.
    ``sidecar``: the checkpoint's (the mean/std of the gate's street scene)."""
    device = torch.device(device)
    name = (backend or "auto").strip().lower()
    if name not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got '{backend}'")
    precision = resolve_precision(precision, device)
    if name == "auto":
        return select_backend(model, device, precision, input_size, sidecar=sidecar)
    try:
        runner = build_backend(name, model, device, precision, input_size)
    except BisenetError:
        raise
    except Exception as exc:
        raise BackendUnavailable(f"backend {name} failed to build on {device}: {one_line(exc)}") from None
    if precision == "bf16":
        gate = _gate(model, device, precision, input_size, sidecar)
        err, equal, _ = gate.measure(runner)
        runner.rel_err_vs_eager = err
        warning = gate.warning(name, precision, err, equal)
        runner.warnings = list(getattr(runner, "warnings", ())) + ([warning] if warning else [])
    return runner
