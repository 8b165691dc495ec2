"""Evaluating perception health on recordings (ROS-free): how well do the health statistics tell
in-domain frames from shifted ones, and how soon would the node warn?

- :func:`corrupt`: the ``--shift`` families generated from in-domain frames -- ``darken``
  (gamma and gain: dusk, night), ``fog`` (contrast loss towards a bright grey), ``noise``
  (Gaussian sensor noise), ``blur`` (defocus, a smeared lens), ``cover`` (a covered lens: nearly
  black with sensor noise) -- at a ``mild``, ``moderate`` or ``strong`` :data:`STRENGTHS`;
- :func:`auroc`: the separation of one statistic between in-domain and shifted frames (1.0 =
  every shifted frame scores worse than every in-domain one, 0.5 = chance);
- :func:`replay_monitor`: the node's :class:`~bisenet_ros.inference.health.HealthMonitor` run over the
  in-domain frames, then the shifted ones, then in-domain again, on the recording's own clock:
  false WARNs, detection delay, time back to OK;
- :class:`HealthProbe`: what ``eval-bag`` feeds per frame, and its report (``health`` in
  metrics.json, a section of report.md, one row per frame and variant in health.csv).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from ..errors import ConfigError
from ..inference.health import DEFAULT_BASELINE, IMAGE_STATS, LOGIT_STATS, Baseline, HealthMonitor

SHIFTS = ("darken", "fog", "noise", "blur", "cover")
#: per family: (mild, moderate, strong) parameter; see :func:`corrupt`
STRENGTHS = {"darken": (0.6, 0.35, 0.2), "fog": (0.6, 0.35, 0.2), "noise": (20.0, 40.0, 60.0),
             "blur": (0.0125, 0.025, 0.05), "cover": (0.1, 0.03, 0.0)}
LEVELS = ("mild", "moderate", "strong")
#: statistic -> +1 when a higher value means "less trustworthy", -1 when a lower one does
DIRECTION = {"confidence_mean": -1, "low_confidence_fraction": 1, "entropy_mean": 1}
DEFAULT_DT = 0.1  # seconds between frames when the recording's stamps do not say (zero, unordered)


def parse_shifts(text: str) -> list[str]:
    """``--shift``: comma-separated families, or ``all``."""
    names = SHIFTS if text.strip() == "all" else [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in SHIFTS]
    if bad or not names:
        raise ConfigError(f"--shift takes {', '.join(SHIFTS)} or all (comma-separated), got '{text}'")
    return list(dict.fromkeys(names))


def corrupt(image: np.ndarray, family: str, strength: str = "moderate", seed: int = 0) -> np.ndarray:
    """``image`` (any channel order, uint8 or uint16) as the shifted camera would see it."""
    top = 65535.0 if image.dtype == np.uint16 else 255.0
    k = STRENGTHS[family][LEVELS.index(strength)]
    x = image.astype(np.float32) / top
    rng = np.random.default_rng(seed)
    if family == "darken":  # gain and gamma: dusk to night
        x = k * np.power(x, 1.0 + 2.0 * (1.0 - k))
    elif family == "fog":  # contrast kept: k, the rest a bright grey veil
        x = k * x + (1.0 - k) * 0.78
    elif family == "noise":
        x = x + rng.normal(0.0, k / 255.0, x.shape).astype(np.float32)
    elif family == "blur":
        sigma = max(0.5, k * min(image.shape[:2]))
        x = cv2.GaussianBlur(x, (0, 0), sigma)
    elif family == "cover":  # the light left through the cover, plus sensor noise
        x = k * x + np.abs(rng.normal(0.0, 1.5 / 255.0, x.shape)).astype(np.float32)
    return np.clip(np.rint(x * top), 0, top).astype(image.dtype)


def auroc(in_domain: Sequence[float], shifted: Sequence[float]) -> float | None:
    """P(a shifted frame scores higher than an in-domain one), ties counted half (Mann-Whitney)."""
    a, b = np.asarray(in_domain, np.float64), np.asarray(shifted, np.float64)
    if not len(a) or not len(b):
        return None
    ranks = _ranks(np.concatenate([a, b]))
    return float((ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2) / (len(a) * len(b)))


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their mean rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def frame_times(stamps_ns: Sequence[int]) -> np.ndarray:
    """Seconds from the first frame, from the stamps when they increase, else at 10 Hz."""
    t = np.asarray(stamps_ns, np.float64) / 1e9
    if len(t) > 1 and np.all(np.diff(t) > 0):
        return t - t[0]
    return np.arange(len(t)) * DEFAULT_DT


@dataclass
class MonitorRun:
    """The node's monitor over in-domain, shifted, then in-domain frames again."""

    false_warnings: int = 0  # WARNs raised during the first in-domain part
    false_warning_messages: list[str] = field(default_factory=list)
    delay_s: float | None = None  # first WARN after the shift started (None: never)
    message: str = ""
    warn_share: float | None = None  # share of the shifted frames after the first WARN still under WARN
    recovery_s: float | None = None  # back to OK after in-domain frames returned (None: not WARN then)


def replay_monitor(times: np.ndarray, normal: list[dict], shifted: list[dict] | None, baseline: Baseline,
                   hold_s: float) -> MonitorRun:
    """Feed ``normal`` at ``times``, then ``shifted`` (its own ``times``-like clock continuing),
    then ``normal`` again; measure the WARNs."""
    mon, run = HealthMonitor(baseline, hold_s), MonitorRun()
    dt = float(np.median(np.diff(times))) if len(times) > 1 else DEFAULT_DT
    for t, s in zip(times, normal):
        v = mon.update(float(t), s)
        if v.warn and v.changed:
            run.false_warnings += 1
            run.false_warning_messages.append(v.message)
    if not shifted:
        return run
    start = float(times[-1]) + dt
    after = warned = 0
    for i, s in enumerate(shifted):
        t = start + i * dt
        v = mon.update(t, s)
        if v.warn and run.delay_s is None:
            run.delay_s, run.message = t - start, v.message
        if run.delay_s is not None:
            after, warned = after + 1, warned + v.warn
    run.warn_share = warned / after if after else None
    back = start + len(shifted) * dt
    for i, s in enumerate(normal if v.warn else ()):
        t = back + i * dt
        if not mon.update(t, s).warn:
            run.recovery_s = t - back
            break
    return run


def summary(values: Iterable[float]) -> dict[str, float]:
    v = np.asarray(list(values), np.float64)
    if not len(v):
        return {}
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            **{f"p{q}": float(np.percentile(v, q)) for q in (5, 50, 95, 99)}, "max": float(v.max())}


class HealthProbe:
    """``eval-bag``'s health part: per-frame statistics of the recording, of its ``--shift``
    variants (each frame corrupted and segmented again, untimed) and of a second recording."""

    def __init__(self, shifts: Sequence[str] = (), strength: str = "moderate",
                 baseline: Baseline = DEFAULT_BASELINE, hold_s: float = 3.0) -> None:
        if strength not in LEVELS:
            raise ConfigError(f"--shift-strength must be one of {', '.join(LEVELS)}, got '{strength}'")
        self.shifts, self.strength, self.baseline, self.hold_s = list(shifts), strength, baseline, float(hold_s)
        self.stamps: list[int] = []
        self.normal: list[dict] = []
        self.variants: dict[str, list[dict]] = {name: [] for name in self.shifts}
        self.variant_stamps: dict[str, list[int]] = {name: [] for name in self.shifts}

    def add(self, pipeline: Any, item: Any, stats: dict) -> None:
        """One in-domain frame (its statistics), and its shifted variants."""
        self.stamps.append(item.stamp_ns)
        self.normal.append(stats)
        for name in self.shifts:
            image = corrupt(item.array, name, self.strength, seed=len(self.stamps))
            self.variants[name].append(pipeline(image, item.encoding, outputs=("health",)).health)
            self.variant_stamps[name].append(item.stamp_ns)

    def add_recording(self, name: str, stamps: list[int], stats: list[dict]) -> None:
        """A second (shifted) recording's frames, e.g. ``--shifted-bag``."""
        self.variants[name], self.variant_stamps[name] = stats, stamps

    def report(self) -> dict:
        """``health`` of metrics.json: the in-domain distribution, and per variant the AUROC of
        each statistic, the monitor's detection delay and recovery; false WARNs in-domain."""
        times = frame_times(self.stamps)
        keys = (*LOGIT_STATS, *IMAGE_STATS)
        clean = replay_monitor(times, self.normal, None, self.baseline, self.hold_s)
        out: dict[str, Any] = {
            "baseline": self.baseline.describe(), "hold_s": self.hold_s, "strength": self.strength,
            "frames": len(self.normal), "duration_s": float(times[-1]) if len(times) else 0.0,
            "in_domain": {k: summary(s[k] for s in self.normal) for k in keys},
            "false_warnings": clean.false_warnings, "false_warning_messages": clean.false_warning_messages[:5],
            "shifts": {},
        }
        for name, stats in self.variants.items():
            if not stats:
                continue
            run = replay_monitor(times, self.normal, stats, self.baseline, self.hold_s)
            out["shifts"][name] = {
                "frames": len(stats),
                "auroc": {k: auroc([d * s[k] for s in self.normal], [d * s[k] for s in stats])
                          for k, d in DIRECTION.items()},
                "shifted": {k: summary(s[k] for s in stats) for k in LOGIT_STATS},
                "detected": run.delay_s is not None, "delay_s": run.delay_s, "message": run.message,
                "warn_share": run.warn_share, "recovery_s": run.recovery_s,
            }
        return out

    def rows(self) -> list[dict]:
        """health.csv: one row per frame and variant."""
        keys = (*LOGIT_STATS, *IMAGE_STATS)
        rows = [{"variant": "in_domain", "stamp_ns": st, **{k: s[k] for k in keys}}
                for st, s in zip(self.stamps, self.normal)]
        for name, stats in self.variants.items():
            rows += [{"variant": name, "stamp_ns": st, **{k: s[k] for k in keys}}
                     for st, s in zip(self.variant_stamps[name], stats)]
        return rows


def write_health_csv(path: str | Path, rows: list[dict]) -> Path:
    """The per-frame statistics as CSV, written atomically."""
    from ..output_files import atomic_file

    with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["variant", "stamp_ns", *LOGIT_STATS, *IMAGE_STATS],
                                extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return Path(path)


def health_markdown(h: dict) -> list[str]:
    """The report.md section for ``health`` (see docs/evaluation.md, "Perception health")."""
    fmt = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    ind = h["in_domain"].get("low_confidence_fraction", {})
    lines = ["## Perception health", "", f"{h['baseline']}; hold time {h['hold_s']:g} s.", "",
             f"In-domain ({h['frames']} frames, {h['duration_s']:.1f} s): low-confidence share mean "
             f"{fmt(ind.get('mean'))}, p99 {fmt(ind.get('p99'))}; confidence mean "
             f"{fmt(h['in_domain'].get('confidence_mean', {}).get('mean'))}; "
             f"false WARNs: {h['false_warnings']}.", ""]
    if h["shifts"]:
        lines += [f"| shift ({h['strength']}) | AUROC low-conf share | AUROC confidence | AUROC entropy "
                  "| delay (s) | under WARN after it | back to OK (s) | first message |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for name, s in h["shifts"].items():
            a = s["auroc"]
            lines.append(f"| {name} | {fmt(a['low_confidence_fraction'])} | {fmt(a['confidence_mean'])} | "
                         f"{fmt(a['entropy_mean'])} | {fmt(s['delay_s'], 1) if s['detected'] else 'not detected'} | "
                         f"{'-' if s['warn_share'] is None else format(s['warn_share'], '.0%')} | "
                         f"{fmt(s['recovery_s'], 1)} | {s['message'] or '-'} |")
        lines.append("")
    return lines


def recording_statistics(pipeline: Any, bag: str | Path, topic: str, max_frames: int = 0) -> tuple[list[int], list[dict]]:
    """Stamps and health statistics of every readable image on ``topic`` of ``bag``."""
    from ..data.bags import BagError, check_image_topic, list_topics, read_image_topics

    check_image_topic(list_topics(bag), topic, bag, "image")
    stamps, stats = [], []
    for item in read_image_topics(bag, [topic]):
        if item.error:
            continue
        stamps.append(item.stamp_ns)
        stats.append(pipeline(item.array, item.encoding, outputs=("health",)).health)
        if 0 < max_frames <= len(stamps):
            break
    if not stats:
        raise BagError(f"no image on '{topic}' in '{bag}' could be read")
    return stamps, stats


def summary_line(h: dict) -> str:
    """One line for the terminal."""
    parts = [f"health: {h['false_warnings']} false WARNs over {h['duration_s']:.1f} s in-domain"]
    for name, s in h["shifts"].items():
        delay = f"WARN after {s['delay_s']:.1f} s" if s["detected"] else "no WARN"
        parts.append(f"{name} AUROC {s['auroc']['low_confidence_fraction']:.3f}, {delay}")
    return "; ".join(parts)
