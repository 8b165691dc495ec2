"""``--backend auto``: which backend runs the model, and the accuracy gate of reduced precisions.

Candidates (the device's list in ``config/backends.yaml``) are built and checked against eager
float32. fp32 is checked on a fixed seeded noise input (relative L2 error below 1e-3). bf16 is
checked on what a camera sees, a rendered street scene at the model input size, and reported as
both the logit error and the share of labels equal to fp32; a candidate passes with an error below
the bf16 tolerance *and* labels equal at least ``bf16_labels_equal``. When no bf16 candidate
passes, ``auto`` refuses bf16 in one line that names the measured errors (use fp32 or int8); a
backend asked for by name runs with a warning. On the CPU the passing candidates are timed
interleaved and the fastest is cached (:mod:`bisenet_ros.backend_cache`).
"""
from __future__ import annotations

import time
from typing import Sequence

import torch
from torch import nn

from . import backend_cache, backends
from .errors import ConfigError, one_line


class Gate:
    """The accuracy check of one precision: its input, the fp32 reference and the thresholds."""

    def __init__(self, model: nn.Module, device: torch.device, precision: str,
                 input_size: Sequence[int] | None, sidecar: dict | None = None) -> None:
        cfg = backends.backend_config()
        self.model = model
        self.precision = precision
        self.tolerance = backends.tolerance_for(precision, device)
        self.min_labels = float(cfg.get("bf16_labels_equal", 0.99)) if precision == "bf16" else None
        self.scene = precision == "bf16"
        if self.scene:  # what a camera sees: labels-equal means something here, on noise it does not
            from .onnx_model import check_input

            size = tuple(input_size) if input_size else tuple(cfg["verify_size"])
            self.x = check_input(size, sidecar or {}, "checkpoint").to(device)
        else:
            self.x = backends.calibration_input(device, input_size)
        t0 = time.perf_counter()
        with torch.inference_mode():
            self.reference = model.eval()(self.x).float()
        self.reference_ms = (time.perf_counter() - t0) * 1e3

    def measure(self, runner) -> tuple[float, float, float]:
        """(relative L2 error, share of labels equal to fp32, ms of the call) of ``runner``."""
        from .export import relative_error

        t0 = time.perf_counter()
        with torch.inference_mode():
            out = runner(self.x).float()
        ms = (time.perf_counter() - t0) * 1e3
        equal = float((out.argmax(1) == self.reference.argmax(1)).float().mean())
        return relative_error(out, self.reference), equal, ms

    def verdict(self, err: float, equal: float) -> str | None:
        """None when the figures pass, else why not."""
        if err >= self.tolerance:
            return f"rel err {err:.1e} >= {self.tolerance:g}"
        if self.min_labels is not None and equal < self.min_labels:
            return f"{equal:.2%} labels equal < {self.min_labels:.0%}"
        return None

    def figures(self, err: float, equal: float) -> str:
        where = " on a street scene" if self.scene else ""
        labels = f", {equal:.2%} labels equal" if self.scene else ""
        return f"rel err {err:.1e}{labels}{where}"


def select_backend(model: nn.Module, device: torch.device, precision: str,
                   input_size: Sequence[int] | None, order: Sequence[str] | None = None,
                   sidecar: dict | None = None):
    """``auto``: among the backends of ``order`` (default: the config's for the device and
    precision) that build and pass the gate, the first (CUDA) or the fastest as measured on this
    CPU and cached. The runner gets ``rel_err_vs_eager``, ``selection`` (one line per backend
    tried), and on the CPU ``expected_ms`` / ``cache_key`` (what the node compares its model
    latency with)."""
    cfg = backends.backend_config()
    order = list(order or backends.auto_order(device, precision))
    gate = Gate(model, device, precision, input_size, sidecar)
    measure = device.type == "cpu" and bool(cfg["auto_measure"]["cpu"])
    key = backend_cache.cache_key(model, input_size, precision) if measure else None
    cached = backend_cache.lookup(key) if measure else None
    notes: list[str] = []
    if cached and cached["backend"] in order:  # the choice measured before on this machine
        again = backend_cache.should_remeasure(cached)
        runner = None if again else _checked(cached["backend"], model, device, precision, input_size, gate, notes)
        if runner is not None:
            return _selected(runner, notes, f"cached choice for this CPU: {backend_cache.describe(cached)}",
                             key, cached)
        notes.append(f"measuring again: {again}" if again else "cached choice no longer builds or matches: "
                     "measuring again")
    timed = [n for n in order if not (n == "torch" and precision == "fp32")] or order
    if measure and len(timed) > 1:
        backend_cache.announce(
            f"choosing the {precision} backend for {backend_cache.model_key(model)} at "
            f"{_size_text(input_size)}: building and checking {', '.join(timed)} (about "
            f"{_build_estimate_s(gate, timed):.0f} s, once per CPU; cached in {backend_cache.cache_file()})")
    built, single_ms, failed = _build_candidates(order, model, device, precision, input_size, gate, notes, measure)
    if built and not measure:
        return _selected(built[0], notes, "first in the configured order")
    if len(built) == 1:
        return _selected(built[0], notes, "the only candidate", key, None)
    if built:
        runner, entry = backend_cache.measure_and_store(key, built, gate.x, single_ms)
        return _selected(runner, notes, f"fastest on this CPU, cached: {backend_cache.describe(entry)}", key, entry)
    if precision != "fp32":
        raise ConfigError(_refusal(precision, failed, gate))
    runner = backends.TorchRunner(model, device, precision)  # the reference itself, if the order omitted it
    runner.rel_err_vs_eager = backends.check_runner(runner, model, gate.x, gate.reference)
    return _selected(runner, notes, "fallback")


def _build_candidates(order, model, device, precision, input_size, gate, notes, measure):
    """(runners that pass, ms of each one's check call, {name: (err, equal)} of those that failed)."""
    built, single_ms, failed = [], {}, {}
    backends._export_memo.graphs = {}  # one ONNX export for ONNX Runtime and OpenVINO
    try:
        for name in order:
            if name == "torch" and precision == "fp32" and built:  # the reference: last resort, not timed
                notes.append("torch: not built (eager fp32 is the reference, the last resort)")
                continue
            runner = _checked(name, model, device, precision, input_size, gate, notes, failed)
            if runner is None:
                continue
            built.append(runner)
            single_ms[name] = runner.check_ms
            if not measure:
                break
    finally:
        backends._export_memo.graphs = None
    return built, single_ms, failed


def _refusal(precision: str, failed: dict, gate: Gate) -> str:
    """The one line that refuses a reduced precision no candidate computes well enough."""
    figures = "; ".join(f"{name}: {gate.figures(*v)}" for name, v in failed.items()) or "no backend built"
    need = f"rel err < {gate.tolerance:g}" + (f" and >= {gate.min_labels:.0%} labels equal" if gate.min_labels else "")
    return (f"precision {precision}: no backend computes this model close enough to fp32 ({figures}; needs "
            f"{need}): use --precision fp32, or an int8 model from 'bisenet-ros quantize' (or name a backend "
            f"to run it anyway)")


def check_named(runner, model: nn.Module, device: torch.device, precision: str,
                input_size: Sequence[int] | None, sidecar: dict | None = None):
    """A backend asked for by name at a reduced precision: run the gate, warn when it fails."""
    gate = Gate(model, device, precision, input_size, sidecar)
    err, equal, _ = gate.measure(runner)
    runner.rel_err_vs_eager = err
    problem = gate.verdict(err, equal)
    runner.warnings = list(getattr(runner, "warnings", ()))
    if problem:
        runner.warnings.append(f"{runner.name} {precision} is far from fp32 on this model ({gate.figures(err, equal)}; "
                               f"{problem}): its labels may differ; fp32 or an int8 model is safer")
    return runner


def _size_text(input_size) -> str:
    return f"{input_size[0]}x{input_size[1]}" if input_size else "auto32"


def _build_estimate_s(gate: Gate, order: Sequence[str]) -> float:
    """Rough duration of building and checking ``order``: about 2.5 eager forwards each (an ONNX
    export or a trace, a compile, one checked call) plus the interleaved measurement."""
    rounds = int(backends.backend_config()["auto_measure"]["rounds"])
    return gate.reference_ms / 1e3 * len(order) * (2.5 + rounds + 1)


def _selected(runner, notes: list[str], why: str, key: str | None = None, entry: dict | None = None):
    notes.append(f"{runner.name}: selected ({why})")
    runner.selection = notes
    runner.cache_key = key
    runner.cache_entry = entry
    ms = (entry or {}).get("ms") or {}
    runner.expected_ms = ms.get(runner.name)
    return runner


def _checked(name: str, model: nn.Module, device: torch.device, precision: str,
             input_size: Sequence[int] | None, gate: Gate, notes: list[str], failed: dict | None = None):
    """Build backend ``name`` and run the gate on it; None (with a note) if it fails."""
    reason = backends.backend_unavailable_reason(name, device, precision)
    if reason is not None:
        notes.append(f"{name}: unavailable ({reason})")
        return None
    try:
        runner = backends.build_backend(name, model, device, precision, input_size)
        err, equal, ms = gate.measure(runner)
    except Exception as exc:  # a backend that fails to build is skipped, never fatal
        notes.append(f"{name}: failed ({one_line(exc)})")
        return None
    problem = gate.verdict(err, equal)
    if problem is None or (name == "torch" and precision == "fp32"):  # eager fp32 is the reference
        notes.append(f"{name}: ok ({gate.figures(err, equal)}, tolerance {gate.tolerance:g})")
        runner.rel_err_vs_eager = err
        runner.check_ms = ms
        return runner
    notes.append(f"{name}: rejected ({gate.figures(err, equal)}: {problem})")
    if failed is not None:
        failed[name] = (err, equal)
    return None
