"""What the CPU at hand can do: model name and the instruction-set flags that decide bf16.

Read from ``/proc/cpuinfo`` (Linux); :data:`CPUINFO` is a module attribute so tests can point it
at a fake file.
"""
from __future__ import annotations

import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

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
