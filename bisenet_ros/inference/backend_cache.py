"""The measured choice of ``--backend auto`` on the CPU, cached per machine.

Which CPU backend is fastest depends on the CPU (Intel or AMD, AVX-512, VNNI, AMX) and on the
library versions, so ``auto`` times its candidates on the machine and keeps the winner in
``$XDG_CACHE_HOME/bisenet_ros/auto_backend.json`` (default ``~/.cache/bisenet_ros``), keyed by
CPU model, model, input size, precision and library versions.

Noise must not decide: the candidates are timed **interleaved in rounds** (one call of each per
round, the order rotated), so a burst of other work slows them all alike, and each entry records
the machine's load (``os.getloadavg``) and CPU count. A measurement taken while the load average
was above ``auto_measure.busy_load_per_cpu`` per CPU, or whose winner was not clearly ahead of the
runner-up, is cached as ``provisional``: the next start on a quieter machine measures again.
``bisenet-ros bench --remeasure`` (or deleting the file) measures again on request. An entry or
file that cannot be read is ignored (one line naming the file) and measured again.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import torch

FILE_NAME = "auto_backend.json"
#: set (to anything but 0) to use provisional entries as they are: a fixed choice for a test suite
#: whose processes must agree on one backend (its own conftest sets it)
KEEP_ENV = "BISENET_ROS_KEEP_PROVISIONAL_BACKEND"
#: how the start-up announces a measurement (a log line, a /diagnostics message); see :func:`announcing`
_announcers: list[Callable[[str], None]] = []


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/bisenet_ros`` (``~/.cache/bisenet_ros`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "bisenet_ros"


def cache_file() -> Path:
    return cache_dir() / FILE_NAME


def library_versions() -> str:
    """torch, onnxruntime and openvino versions (the ones installed), read from the package
    metadata: nothing is imported (importing OpenVINO costs a second and starts its telemetry)."""
    from importlib import metadata

    parts = [f"torch {torch.__version__}"]
    for module in ("onnxruntime", "openvino"):
        try:
            parts.append(f"{module} {metadata.version(module)}")
        except metadata.PackageNotFoundError:
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


# -- the machine's load -----------------------------------------------------------------------------
def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average, None where the OS has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def busy_reason(load: float | None = None, cpus: int | None = None) -> str | None:
    """Why figures taken now are not trustworthy (load average above the configured share per
    CPU), or None on a quiet enough machine."""
    from .settings import backend_config

    load = load_average() if load is None else load
    cpus = cpus or cpu_count()
    limit = float(backend_config()["auto_measure"]["busy_load_per_cpu"])
    if load is None or load <= limit * cpus:
        return None
    return f"load average {load:.1f} on {cpus} CPUs (above {limit:g} per CPU): other work shares the cores"


# -- reading and writing ----------------------------------------------------------------------------
def _notice(message: str) -> None:
    announce(message)


def _load(report: bool = False) -> dict:
    """The cache as a dict; an unreadable file is ignored (one line naming it when ``report``)."""
    path = cache_file()
    try:
        if not path.exists():
            return {}
        if not path.is_file():
            raise OSError("not a regular file")
        text = path.read_text(encoding="utf-8")
        if len(text) > (4 << 20):
            raise ValueError("larger than 4 MB")
        data = json.loads(text)
    except (OSError, ValueError, UnicodeError) as exc:
        if report:
            _notice(f"{path}: unreadable backend cache ({type(exc).__name__}: {str(exc)[:120]}); ignored, "
                    "measuring again")
        return {}
    if not isinstance(data, dict):
        if report:
            _notice(f"{path}: backend cache is not a JSON object; ignored, measuring again")
        return {}
    return data


def entry_problem(entry) -> str | None:
    """Why a cache entry cannot be used (wrong types, a time that is not a positive number), or None."""
    if not isinstance(entry, dict):
        return "not an object"
    if not isinstance(entry.get("backend"), str):
        return "no backend name"
    ms = entry.get("ms")
    if not isinstance(ms, dict) or not ms:
        return "no measured times"
    for name, value in ms.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
            return f"time of {name} is {value!r}, not a positive number of ms"
    if entry["backend"] not in ms:
        return f"{entry['backend']} has no measured time"
    for field in ("load", "provisional"):
        value = entry.get(field)
        if value is not None and not isinstance(value, (int, float)):
            return f"{field} is {value!r}"
    return None


_flags = threading.local()  # per thread: the node's background measurement never affects another build


@contextmanager
def _flag(name: str):
    setattr(_flags, name, getattr(_flags, name, 0) + 1)
    try:
        yield
    finally:
        setattr(_flags, name, getattr(_flags, name) - 1)


def remeasuring():
    """Inside the block (this thread), cached entries are not used: every ``auto`` choice is
    measured again (and the new figures replace the old). ``bisenet-ros bench --remeasure``, the
    node's ``~/measure_backends``."""
    return _flag("remeasure")


def quick_start():
    """Inside the block (this thread), a choice that would be measured now is not: the first
    candidate that passes the accuracy gate (or a provisional cached choice) is returned with
    ``measure_later`` set, and the caller measures in the background once serving (the node)."""
    return _flag("quick")


def quick_starting() -> bool:
    return getattr(_flags, "quick", 0) > 0


def lookup(key: str) -> dict | None:
    """The usable cached entry for ``key``, or None: a missing one silently, a broken one (or a
    broken file) with one line naming the file; always None inside :func:`remeasuring`."""
    if getattr(_flags, "remeasure", 0):
        return None
    data = _load(report=True)
    if key not in data:
        return None
    problem = entry_problem(data[key])
    if problem:
        _notice(f"{cache_file()}: cached backend choice for this model ignored ({problem}); measuring again")
        return None
    return data[key]


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


def forget(key: str | None = None) -> bool:
    """Remove ``key``'s entry (every entry when None); True when something was removed."""
    data = _load()
    if key is None:
        try:
            cache_file().unlink()
            return bool(data)
        except OSError:
            return False
    if key not in data:
        return False
    del data[key]
    path = cache_file()
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".auto_backend.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        return False
    return True


def mark_provisional(key: str, why: str) -> bool:
    """Mark ``key``'s entry provisional (measured again at the next quiet start); True if marked."""
    data = _load()
    if entry_problem(data.get(key)) is not None:
        return False
    data[key] = {**data[key], "provisional": True, "why": why}
    store(key, data[key])
    return True


def should_remeasure(entry: dict) -> str | None:
    """Why a (readable) cached entry is measured again now, or None to use it: a provisional
    entry is re-measured once the machine is quiet."""
    if not entry.get("provisional") or os.environ.get(KEEP_ENV, "") not in ("", "0"):
        return None
    if busy_reason() is not None:
        return None  # still busy: measuring now would be no better; use it and say so
    return (f"the cached choice was provisional ({entry.get('why') or 'measured under load'}) and the "
            "machine is quiet now")


# -- measuring --------------------------------------------------------------------------------------
def measure_interleaved(runners: list, x: torch.Tensor, rounds: int) -> dict[str, list[float]]:
    """Milliseconds per call of each runner: one warm-up call each, then ``rounds`` rounds of one
    call of each, the order rotated every round (a burst of other work hits all candidates)."""
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    with torch.inference_mode():
        for runner in runners:
            runner(x)
        for i in range(rounds):
            k = i % len(runners)
            for runner in runners[k:] + runners[:k]:
                t0 = time.perf_counter()
                runner(x)
                times[runner.name].append((time.perf_counter() - t0) * 1e3)
    return times


def time_runner(runner, x: torch.Tensor, runs: int) -> float:
    """Median milliseconds of ``runs`` calls after one warm-up call."""
    return statistics.median(measure_interleaved([runner], x, runs)[runner.name])


def clear_winner(times: dict[str, list[float]]) -> tuple[str, str | None]:
    """(fastest by median, why the result is not clear-cut or None): the winner must beat the
    runner-up in most rounds."""
    medians = {k: statistics.median(v) for k, v in times.items()}
    ranked = sorted(medians, key=medians.get)
    best = ranked[0]
    if len(ranked) == 1:
        return best, None
    second = ranked[1]
    wins = sum(a < b for a, b in zip(times[best], times[second]))
    rounds = len(times[best])
    if wins * 3 < rounds * 2:  # fewer than 2 rounds in 3
        return best, f"{best} beat {second} in only {wins} of {rounds} rounds"
    return best, None


def estimate_seconds(single_call_ms: dict[str, float], rounds: int) -> float:
    """Expected duration of :func:`measure_interleaved` from one call of each candidate."""
    return sum(single_call_ms.values()) * (rounds + 1) / 1e3


def measure_and_store(key: str, runners: list, x: torch.Tensor, rounds: int,
                      single_call_ms: dict[str, float] | None = None):
    """Time ``runners`` interleaved in ``rounds`` rounds, cache the fastest's name with the load;
    return (runner, entry). ``single_call_ms``: one call of each, for the announced duration."""
    load_before = load_average()
    if single_call_ms:
        announce(f"measuring the speed of {', '.join(r.name for r in runners)} ({rounds} interleaved rounds, "
                 f"about {estimate_seconds(single_call_ms, rounds):.0f} s; once per CPU, cached in {cache_file()})")
    times = measure_interleaved(runners, x, rounds)
    load_after = load_average()
    load = max(v for v in (load_before, load_after, 0.0) if v is not None)
    name, unclear = clear_winner(times)
    busy = busy_reason(load)
    why = "; ".join(w for w in (busy, unclear) if w) or None
    entry = {"backend": name, "ms": {k: round(statistics.median(v), 2) for k, v in times.items()},
             "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
             "load": round(load, 2), "cpus": cpu_count(), "rounds": rounds, "provisional": why is not None}
    if why:
        entry["why"] = why
    store(key, entry)
    return next(r for r in runners if r.name == name), entry


def describe(entry: dict) -> str:
    """``openvino 130 ms, onnxruntime 246 ms (measured 2026-11-30 08:00 UTC, load 1.2 on 2 CPUs)``."""
    ms = entry.get("ms") or {}
    times = ", ".join(f"{k} {v:.0f} ms" for k, v in sorted(ms.items(), key=lambda kv: kv[1]))
    load = entry.get("load")
    where = f", load {load:.1f} on {entry.get('cpus', '?')} CPUs" if isinstance(load, (int, float)) else ""
    text = f"{times} (measured {entry.get('measured', '?')}{where})"
    if entry.get("provisional"):
        text += f"; provisional: {entry.get('why') or 'measured under load'}, measured again at a quiet start"
    return text


# -- start-up announcements -------------------------------------------------------------------------
def announce(message: str) -> None:
    """Say what the start-up is doing now (e.g. measuring for ~10 s): to the innermost announcer
    (the node logs it and publishes it on /diagnostics), else one line on stderr."""
    if _announcers:
        _announcers[-1](message)
    else:
        print(f"bisenet_ros: {message}", file=sys.stderr, flush=True)


@contextmanager
def announcing(callback: Callable[[str], None]):
    """Route :func:`announce` to ``callback`` while building a pipeline."""
    _announcers.append(callback)
    try:
        yield
    finally:
        _announcers.remove(callback)
