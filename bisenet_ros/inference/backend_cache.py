"""The measured choice of ``--backend auto`` on the CPU, cached per machine.

Which CPU backend is fastest depends on the CPU (Intel or AMD, AVX-512, VNNI, AMX) and on the
library versions, so ``auto`` times its candidates once -- each after one warm-up call, the
median of a few calls on the start-up check's input -- and keeps the winner in
``$XDG_CACHE_HOME/bisenet_ros/auto_backend.json`` (default ``~/.cache/bisenet_ros``), keyed by
CPU model, model, input size, precision and library versions. Later starts (the node's included)
build only the cached backend and check it against eager PyTorch. Delete the file to measure again.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import torch

FILE_NAME = "auto_backend.json"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/bisenet_ros`` (``~/.cache/bisenet_ros`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "bisenet_ros"


def library_versions() -> str:
    """torch, onnxruntime and openvino versions (the ones installed)."""
    parts = [f"torch {torch.__version__}"]
    for module in ("onnxruntime", "openvino"):
        try:
            parts.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            pass
    return ", ".join(parts)


def model_key(model: torch.nn.Module) -> str:
    """What decides the speed: architecture, classes, which output (1/8 or full logits)."""
    inner = getattr(model, "net", model)
    info = getattr(model, "bisenet_info", None) or {}
    classes = info.get("num_classes") or getattr(inner, "num_classes", "?")
    output = "1/8 logits" if inner is not model else "full logits"
    return f"{type(inner).__name__} {classes} classes, {output}"


def cache_key(model: torch.nn.Module, input_size: Sequence[int] | None, precision: str) -> str:
    return cache_key_for(model_key(model), input_size, precision)


def cache_key_for(model_description: str, input_size: Sequence[int] | None, precision: str) -> str:
    """``CPU model | model | input size | precision | library versions``."""
    from .cpu import cpu_model

    size = f"{input_size[0]}x{input_size[1]}" if input_size else "auto32"
    return " | ".join((cpu_model(), model_description, size, precision, library_versions()))


def _load() -> dict:
    try:
        data = json.loads((cache_dir() / FILE_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def lookup(key: str) -> dict | None:
    """The cached entry ``{"backend", "ms", "measured"}`` for ``key``, or None."""
    entry = _load().get(key)
    return entry if isinstance(entry, dict) and isinstance(entry.get("backend"), str) else None


def store(key: str, entry: dict) -> None:
    """Add ``entry`` under ``key`` (atomic replace; a cache that cannot be written is skipped)."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        data = _load()
        data[key] = entry
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".auto_backend.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, folder / FILE_NAME)
    except OSError:
        pass


def time_runner(runner, x: torch.Tensor, runs: int) -> float:
    """Median milliseconds of ``runs`` calls after one warm-up call."""
    with torch.inference_mode():
        runner(x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            runner(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure_and_store(key: str, runners: list, x: torch.Tensor, runs: int):
    """Time ``runners`` on ``x`` (median of ``runs``), cache the fastest's name; return (fastest
    runner, entry)."""
    ms = {r.name: time_runner(r, x, runs) for r in runners}
    best = min(runners, key=lambda r: ms[r.name])
    entry = {"backend": best.name, "ms": {k: round(v, 2) for k, v in ms.items()},
             "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    store(key, entry)
    return best, entry


def describe(entry: dict) -> str:
    """``openvino 130 ms, onnxruntime 246 ms (measured 2026-11-30 08:00 UTC)``."""
    ms = entry.get("ms") or {}
    times = ", ".join(f"{k} {v:.0f} ms" for k, v in sorted(ms.items(), key=lambda kv: kv[1]))
    return f"{times} (measured {entry.get('measured', '?')})"
