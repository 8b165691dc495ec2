"""Perception health: does the model's output still deserve trust? (ROS-free)

Per frame, :func:`frame_statistics` reads two cheap things:

- the model's own confidence, from the 1/8 low-resolution logits the exact postprocess already
  uses (never a dense full-resolution softmax): the mean max-softmax probability
  (``confidence_mean``), the fraction of logit cells whose max softmax is below a confidence level
  (``low_confidence_fraction``) and the mean entropy in nats (``entropy_mean``). The max softmax
  is the classic baseline for spotting inputs outside the training distribution (Hendrycks &
  Gimpel, ICLR 2017);
- the image itself, on a subsample: mean and spread of the brightness, the fraction of clipped
  bright pixels, and a checksum of every ``step``-th row (a repeated frame has the same one).

:class:`HealthMonitor` turns the per-frame values into symptoms with hysteresis: a symptom is
raised (WARN) once it was seen in at least :data:`ONSET` of the frames of the last ``hold_s``
seconds, and cleared (OK) once it was seen in at most :data:`CLEAR` of them. Thresholds come from
a :class:`Baseline` measured on in-domain data (``bisenet-ros health-baseline``, a small YAML
beside the checkpoint) or, without one, from :data:`DEFAULT_BASELINE` (documented in docs/node.md).
"""
from __future__ import annotations

import math
import zlib
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..errors import ConfigError

#: statistics taken from the logits, in report order
LOGIT_STATS = ("confidence_mean", "low_confidence_fraction", "entropy_mean")
#: statistics taken from the image
IMAGE_STATS = ("brightness_mean", "brightness_std", "saturated_fraction")
DEFAULT_LEVEL = 0.8  # a logit cell is "low confidence" below this max softmax
ONSET, CLEAR = 0.8, 0.2  # share of the hold window's frames showing a symptom to raise / clear it
SAMPLES = 96  # the image checks look at about SAMPLES x SAMPLES pixels, whatever the image size
SATURATED = 250  # brightness (0..255) counted as clipped
MAX_WINDOW = 10_000  # frames kept per monitor, whatever the rate (memory bound)
BASELINE_SUFFIX = ".health.yaml"


# -- per-frame statistics --------------------------------------------------------------------------
def logit_statistics(logits: torch.Tensor | np.ndarray, level: float = DEFAULT_LEVEL) -> dict[str, float]:
    """``confidence_mean``, ``low_confidence_fraction`` (max softmax < ``level``), ``entropy_mean``
    of (C, h, w) or (1, C, h, w) logits, every cell weighted equally. In numpy on the host: for a
    few thousand cells that is microseconds, where torch's per-op overhead (and its thread pool on
    a busy CPU) costs milliseconds."""
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().float().cpu().numpy()
    x = np.asarray(logits, np.float32)
    x = x[0] if x.ndim == 4 else x
    shifted = x - x.max(axis=0)  # <= 0, the winner at 0
    e = np.exp(shifted)
    total = e.sum(axis=0)  # >= 1
    maxp = 1.0 / total  # the max softmax: exp(0) / sum
    entropy = np.log(total) - (e * shifted).sum(axis=0) / total  # -sum p log p
    return {"confidence_mean": float(maxp.mean(dtype=np.float64)),
            "low_confidence_fraction": float((maxp < level).mean(dtype=np.float64)),
            "entropy_mean": float(entropy.mean(dtype=np.float64))}


def image_statistics(image: np.ndarray) -> dict[str, float]:
    """Brightness mean/std (0..255) and clipped fraction on a subsample, plus ``digest``: a
    checksum of every ``step``-th row (equal for a repeated frame). Any supported encoding."""
    h, w = image.shape[:2]
    step = max(1, min(h, w) // SAMPLES)
    rows = image[::step]
    digest = zlib.crc32(np.ascontiguousarray(rows).data) & 0xFFFFFFFF
    sub = rows[:, ::step]
    if sub.dtype == np.uint16:  # mono16
        sub = sub / 257.0
    if sub.ndim == 2:
        gray = sub.astype(np.float32)
    elif sub.shape[2] >= 3:  # colour: the mean of the first three planes, summed plane by plane (8x
        gray = (sub[..., 0].astype(np.float32) + sub[..., 1] + sub[..., 2]) / 3.0  # mean(axis=2)'s speed)
    else:  # packed YUV 4:2:2 (two bytes per pixel)
        gray = sub.mean(axis=2)
    return {"brightness_mean": float(gray.mean()), "brightness_std": float(gray.std()),
            "saturated_fraction": float((gray >= SATURATED).mean()), "digest": float(digest)}


def frame_statistics(logits: torch.Tensor, image: np.ndarray, level: float = DEFAULT_LEVEL) -> dict[str, float]:
    """Every per-frame health statistic of one frame (its low-resolution logits and its image)."""
    return {**logit_statistics(logits, level), **image_statistics(image)}


# -- thresholds ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Baseline:
    """Thresholds and where they came from. ``source`` is None for the documented defaults."""

    confidence_level: float = DEFAULT_LEVEL
    low_confidence_max: float = 0.5  # low_confidence_fraction above this: outside the domain
    low_confidence_typical: float | None = None  # in-domain mean, for the message
    dark_level: float = 15.0  # brightness_mean below this: nearly black
    bright_level: float = 0.9  # saturated_fraction above this: saturated
    uniform_std: float = 3.0  # brightness_std below this: nearly uniform
    source: str | None = None
    data: str = ""
    frames: int = 0
    statistics: dict[str, dict[str, float]] = field(default_factory=dict)

    def describe(self) -> str:
        if self.source is None:
            return (f"no baseline: default thresholds (low confidence below {self.confidence_level:g} "
                    f"on more than {self.low_confidence_max:.0%} of the image)")
        return (f"baseline {self.source} ({self.frames} frames of {self.data}): low confidence below "
                f"{self.confidence_level:g} on more than {self.low_confidence_max:.0%} of the image")


DEFAULT_BASELINE = Baseline()
THRESHOLD_KEYS = ("confidence_level", "low_confidence_max", "low_confidence_typical", "dark_level",
                  "bright_level", "uniform_std")


def baseline_path(weights: str | Path) -> Path:
    """``model.pth`` -> ``model.health.yaml`` beside it."""
    p = Path(weights)
    return p.with_name(p.name[:-len(p.suffix)] + BASELINE_SUFFIX if p.suffix else p.name + BASELINE_SUFFIX)


def baseline_yaml(baseline: Baseline, weights: str, tool: str) -> str:
    """The baseline file's text (read back by :func:`load_baseline`)."""
    thresholds = {k: getattr(baseline, k) for k in THRESHOLD_KEYS}
    doc = {"bisenet_ros_health_baseline": 1, "weights": weights, "created_by": tool, "data": baseline.data,
           "frames": baseline.frames, "thresholds": thresholds, "statistics": baseline.statistics}
    return ("# perception-health baseline (bisenet-ros health-baseline); docs/node.md explains each value\n"
            + yaml.safe_dump(doc, sort_keys=False))


def load_baseline(path: str | Path) -> Baseline:
    """Read a baseline YAML; :class:`ConfigError` with one line when it is not one."""
    from ..safe_yaml import load_yaml_file

    p = Path(path).expanduser()
    doc = load_yaml_file(p, "health baseline", error=ConfigError)  # one line: missing, too large, bad YAML
    if not isinstance(doc, dict) or "bisenet_ros_health_baseline" not in doc or \
            not isinstance(doc.get("thresholds"), dict):
        raise ConfigError(f"health baseline {path}: not a baseline written by bisenet-ros health-baseline")
    values = {}
    for key in THRESHOLD_KEYS:
        value = doc["thresholds"].get(key, getattr(DEFAULT_BASELINE, key))
        if value is None and key == "low_confidence_typical":
            values[key] = None
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"health baseline {path}: thresholds.{key} must be a number >= 0, got {value!r}")
        values[key] = float(value)
    if not 0 < values["confidence_level"] <= 1 or not 0 < values["low_confidence_max"] <= 1:
        raise ConfigError(f"health baseline {path}: confidence_level and low_confidence_max must be in (0, 1]")
    stats = doc.get("statistics") if isinstance(doc.get("statistics"), dict) else {}
    return Baseline(**values, source=str(p), data=str(doc.get("data", "")), frames=int(doc.get("frames") or 0),
                    statistics=stats)


def resolve_baseline(setting: str, weights: str | Path | None) -> Baseline:
    """The node's rule: an explicit file, else ``<weights>.health.yaml`` when there is one, else
    :data:`DEFAULT_BASELINE`. ``setting`` 'none' forces the defaults."""
    if setting == "none":
        return DEFAULT_BASELINE
    if setting:
        return load_baseline(setting)
    beside = baseline_path(weights) if weights else None
    return load_baseline(beside) if beside is not None and beside.is_file() else DEFAULT_BASELINE


# -- symptoms with hysteresis ----------------------------------------------------------------------
#: symptom -> diagnostics key, in priority order (the first active one leads the message)
SYMPTOMS = ("frozen", "black", "saturated", "uniform", "low_confidence")


@dataclass
class Symptom:
    """One symptom's state: active or not, since when, and how often it was raised."""

    name: str
    active: bool = False
    since: float = 0.0  # time of the first symptomatic frame of the current episode
    raised: int = 0  # OK -> WARN transitions
    frames: int = 0  # frames that showed it


@dataclass
class Verdict:
    """The monitor's answer: WARN or OK, the message, whether it just changed, and values."""

    warn: bool
    message: str
    changed: bool
    values: dict[str, str]


class HealthMonitor:
    """Symptoms of one camera, fed once per processed frame (times in seconds, any clock)."""

    def __init__(self, baseline: Baseline = DEFAULT_BASELINE, hold_s: float = 3.0, frozen_frames: int = 3,
                 enabled: frozenset[str] | set[str] = frozenset(SYMPTOMS)) -> None:
        self.baseline, self.hold_s, self.frozen_frames = baseline, float(hold_s), int(frozen_frames)
        self.enabled = frozenset(enabled)
        self.symptoms = {name: Symptom(name) for name in SYMPTOMS}
        self._window: deque[tuple[float, frozenset[str], float]] = deque(maxlen=MAX_WINDOW)
        self._counts = {name: 0 for name in SYMPTOMS}  # frames of the window showing each symptom
        self._fraction_sum = 0.0  # low_confidence_fraction summed over the window
        self._first = None  # time of the first frame
        self._digest = None
        self.identical = 0  # consecutive frames equal to their predecessor
        self.frames = 0
        self._last: dict[str, float] = {}
        self._warn = False

    def configure(self, baseline: Baseline | None = None, hold_s: float | None = None,
                  frozen_frames: int | None = None, enabled: set[str] | None = None) -> None:
        """New settings; the symptoms' history is kept."""
        self.baseline = baseline if baseline is not None else self.baseline
        self.hold_s = float(hold_s) if hold_s is not None else self.hold_s
        self.frozen_frames = int(frozen_frames) if frozen_frames is not None else self.frozen_frames
        self.enabled = frozenset(enabled) if enabled is not None else self.enabled

    def observe(self, stats: dict[str, float]) -> frozenset[str]:
        """The symptoms one frame shows (before any hysteresis)."""
        b, seen = self.baseline, set()
        digest = stats.get("digest")
        self.identical = self.identical + 1 if digest is not None and digest == self._digest else 0
        self._digest = digest
        if self.identical >= 1:
            seen.add("frozen")
        if stats["brightness_mean"] < b.dark_level:
            seen.add("black")
        elif stats["saturated_fraction"] > b.bright_level:
            seen.add("saturated")
        elif stats["brightness_std"] < b.uniform_std:
            seen.add("uniform")
        if stats["low_confidence_fraction"] > b.low_confidence_max:
            seen.add("low_confidence")
        return frozenset(seen & self.enabled)

    def update(self, now: float, stats: dict[str, float]) -> Verdict:
        """Add one frame's statistics at time ``now``; the verdict after it."""
        seen = self.observe(stats)
        self.frames += 1
        self._last = stats
        if self._first is None:
            self._first = now
        self._push(now, seen, stats["low_confidence_fraction"])
        full = now - self._first >= self.hold_s * ONSET  # no verdict on less than the hold window
        n = len(self._window)
        for name, sym in self.symptoms.items():
            if name in seen:
                sym.frames += 1
            share = self._counts[name] / n
            if not sym.active and full and share >= ONSET and self._onset_ok(name):
                sym.active, sym.raised = True, sym.raised + 1
                sym.since = next(t for t, s, _ in self._window if name in s)
            elif sym.active and (share <= CLEAR or name not in self.enabled):
                sym.active = False
        verdict = self.verdict(now)
        verdict.changed, self._warn = verdict.warn != self._warn, verdict.warn
        return verdict

    def _push(self, now: float, seen: frozenset[str], fraction: float) -> None:
        """Append a frame to the hold window, drop the ones older than ``hold_s`` (running counts)."""
        if len(self._window) == self._window.maxlen:
            self._drop()
        self._window.append((now, seen, fraction))
        for name in seen:
            self._counts[name] += 1
        self._fraction_sum += fraction
        while len(self._window) > 1 and self._window[0][0] <= now - self.hold_s:
            self._drop()

    def _drop(self) -> None:
        _, seen, fraction = self._window.popleft()
        for name in seen:
            self._counts[name] -= 1
        self._fraction_sum -= fraction

    def _onset_ok(self, name: str) -> bool:
        return name != "frozen" or self.identical + 1 >= self.frozen_frames

    def verdict(self, now: float) -> Verdict:
        """WARN with the active symptoms' messages (most telling first), else OK; ``changed`` is
        set by :meth:`update` only (asking for the verdict changes nothing)."""
        active = [s for s in self.symptoms.values() if s.active]
        return Verdict(bool(active), "; ".join(self.message(s.name, now) for s in active), False, self.values())

    def message(self, name: str, now: float) -> str:
        b = self.baseline
        if name == "frozen":
            return f"camera frozen: {self.identical + 1} identical frames"
        if name == "black":
            return f"image nearly black (mean brightness {self._last.get('brightness_mean', 0):.0f} of 255)"
        if name == "saturated":
            return f"image saturated ({self._last.get('saturated_fraction', 0):.0%} of it clipped white)"
        if name == "uniform":
            return "image nearly uniform (lens covered or out of focus?)"
        share = self._fraction_sum / len(self._window) if self._window else 0.0
        typical = (f"baseline {b.low_confidence_typical:.0%}" if b.low_confidence_typical is not None
                   else f"no baseline, threshold {b.low_confidence_max:.0%}")
        return (f"low confidence on {share:.0%} of the image for {now - self.symptoms[name].since:.1f} s, "
                f"{typical}: scene may be outside the training domain")

    def values(self) -> dict[str, str]:
        """Counts and the latest frame's statistics, for /diagnostics."""
        out = {"health_frames": str(self.frames), "identical_frames": str(self.identical)}
        for name, sym in self.symptoms.items():
            out[f"{name}_warnings"] = str(sym.raised)
            out[f"{name}_frames"] = str(sym.frames)
        for key in (*LOGIT_STATS, *IMAGE_STATS):
            if key in self._last:
                out[key] = f"{self._last[key]:.4f}"
        return out


def with_overrides(baseline: Baseline, **overrides: Any) -> Baseline:
    """``baseline`` with the given thresholds replaced (None or 0 values keep the baseline's)."""
    return replace(baseline, **{k: v for k, v in overrides.items() if v})
