"""What the CPU at hand can do: model name and the instruction-set flags that decide bf16; and
where its time went (:func:`cpu_sample`, :func:`cpu_shares`: CPU time of given processes and of
the idle machine between two samples, for benchmarks that share the CPUs with their load).

Read from ``/proc`` (Linux); :data:`CPUINFO` and :data:`PROC` are module attributes so tests can
point them at fake files.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

CPUINFO = Path("/proc/cpuinfo")
PROC = Path("/proc")

#: flags that give native bfloat16 arithmetic (AVX-512 BF16 dot products, or AMX tiles)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _field(name: str) -> str | None:
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def cpu_model() -> str:
    """The CPU model name, e.g. ``AMD EPYC 9R14`` (``unknown`` when it cannot be read)."""
    return _field("model name") or platform.processor() or "unknown"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty when unknown)."""
    return frozenset((_field("flags") or "").split())


def bf16_unsupported_reason() -> str | None:
    """None where the CPU computes bfloat16 natively, else a one-line reason."""
    flags = cpu_flags()
    if any(f in flags for f in BF16_FLAGS):
        return None
    return (f"precision bf16 needs a CPU with AVX-512 BF16 or AMX ({' or '.join(BF16_FLAGS)} in "
            f"{CPUINFO}); this CPU ({cpu_model()}) has neither: use fp32")


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds used so far by named processes and spent idle by the machine, at ``t``."""

    t: float  # time.monotonic()
    processes: dict[str, float | None]  # name -> user + system seconds (None: gone or unreadable)
    idle: float | None  # idle + iowait seconds over all CPUs
    cpus: int


def _ticks() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100.0


def _process_seconds(pid: int) -> float | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state is field 3
    try:
        return (int(fields[11]) + int(fields[12])) / _ticks()  # utime, stime (fields 14, 15)
    except (IndexError, ValueError):
        return None


def _idle_seconds() -> float | None:
    try:
        first = (PROC / "stat").read_text().splitlines()[0].split()
        return (int(first[4]) + int(first[5])) / _ticks() if first[0] == "cpu" else None  # idle, iowait
    except (OSError, IndexError, ValueError):
        return None


def cpu_sample(pids: Mapping[str, int]) -> CpuSample:
    """The CPU time of each named process (its threads included) and the machine's idle time now."""
    return CpuSample(time.monotonic(), {name: _process_seconds(pid) for name, pid in pids.items()},
                     _idle_seconds(), os.cpu_count() or 1)


def cpu_shares(start: CpuSample, end: CpuSample) -> dict[str, float] | None:
    """Percent of one CPU between two samples: each named process, ``idle``, and ``other`` (the
    rest of the machine: other processes, the kernel); they add up to ``100 x cpus``. None when
    ``/proc`` could not be read (not Linux)."""
    wall = end.t - start.t
    if wall <= 0 or start.idle is None or end.idle is None:
        return None
    shares = {}
    for name, before in start.processes.items():
        after = end.processes.get(name)
        if before is None or after is None:
            return None
        shares[name] = 100.0 * (after - before) / wall
    shares["idle"] = 100.0 * (end.idle - start.idle) / wall
    shares["other"] = max(0.0, 100.0 * start.cpus - sum(shares.values()))
    return shares
