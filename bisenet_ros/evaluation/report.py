"""Evaluation reports: ``metrics.json``, a Markdown summary and PNG plots (matplotlib, Agg).

Used by ``bisenet-ros eval-bag`` and ``bisenet-ros replay``; both hand over one report dict
(see docs/evaluation.md for its keys) plus the raw material of the plots.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..output_files import REPORT_DIR, atomic_file, check_in_dir, check_output, prepare_dir, write_text

METRICS_JSON = "metrics.json"
REPORT_MD = "report.md"
CONFUSION_PNG = "confusion_matrix.png"
IOU_PNG = "per_class_iou.png"
LATENCY_PNG = "latency_histogram.png"
STAGES_PNG = "latency_stages.png"
HEALTH_CSV = "health.csv"  # eval-bag: perception-health statistics per frame (bisenet_ros.evaluation.health)
#: latency keys that are sums of the others (drawn as the total, not as a stage)
TOTAL_KEYS = ("total_ms", "end_to_end_ms")


def is_total(key: str) -> bool:
    """A measured total (``total_ms``, ``end_to_end_ms``, the node's ``node_total_ms``): it holds
    the stages, so it is never stacked on top of them."""
    return key in TOTAL_KEYS or key.endswith("total_ms")


def stage_keys(samples: Mapping[str, Sequence[float]]) -> list[str]:
    """The disjoint stages of ``samples`` (every key with data that is not a total), in order."""
    return [k for k, v in samples.items() if len(v) and not is_total(k)]
#: every file :func:`write_report` may write
REPORT_FILES = (METRICS_JSON, REPORT_MD, CONFUSION_PNG, IOU_PNG, LATENCY_PNG, STAGES_PNG, HEALTH_CSV)


def check_report_dir(out_dir: str | Path, inputs=(), overwrite: bool = False, option: str = "--out") -> None:
    """Before the long work: ``out_dir`` is no input, and its report files are ours to replace."""
    check_output(out_dir, inputs, kind=REPORT_DIR, overwrite=overwrite, option=option)
    check_in_dir(out_dir, REPORT_FILES, overwrite=overwrite)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def write_report(
    out_dir: str | Path,
    report: Mapping,
    *,
    confusion: np.ndarray | None = None,
    latency_samples: Mapping[str, Sequence[float]] | None = None,
    title: str = "Segmentation evaluation",
    tool: str = "report",
) -> dict[str, Path]:
    """Write metrics.json, report.md and whichever plots have data; returns name -> path."""
    out = prepare_dir(out_dir, tool)
    paths: dict[str, Path] = {}
    names = list(report.get("class_names") or [])
    what = subject(report)
    if confusion is not None and np.asarray(confusion).sum() > 0:
        paths["confusion_matrix"] = plot_confusion(confusion, names, out / CONFUSION_PNG, what)
    iou = report.get("per_class_iou")
    if isinstance(iou, Mapping) and any(v is not None for v in iou.values()):
        paths["per_class_iou"] = plot_per_class_iou(iou, out / IOU_PNG, miou=report.get("miou"), subtitle=what)
    if latency_samples and any(len(v) for v in latency_samples.values()):
        if stage_keys(latency_samples):
            paths["latency_stages"] = plot_latency_stages(latency_samples, out / STAGES_PNG, what)
        paths["latency_histogram"] = plot_latency_histogram(latency_samples, out / LATENCY_PNG, what)
    paths["metrics"] = write_json(out / METRICS_JSON, report)
    paths["report"] = out / REPORT_MD
    write_text(paths["report"], markdown_report(report, {k: v.name for k, v in paths.items()
                                                        if k not in ("metrics", "report")}, title))
    return paths


def write_json(path: Path, data: Mapping) -> Path:
    """JSON with NaN/inf written as null (strict JSON readers choke on NaN)."""
    write_text(path, json.dumps(_clean(data), indent=2) + "\n")
    return path


def _clean(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, np.generic):
        return _clean(x.item())
    if isinstance(x, Path):
        return str(x)
    return x


def subject(report: Mapping) -> str:
    """What was measured, for plot titles: model (checkpoint), backend and device, on which bag."""
    model = report.get("model") or {}
    weights = Path(str(model.get("weights"))).name if model.get("weights") else None
    first = str(model.get("model") or "model") + (f" ({weights})" if weights else "")
    if report.get("bag"):
        first += f" on bag {Path(str(report['bag'])).name}"
        frames = report.get("frames", report.get("frames_published"))
        if frames is not None:
            first += f" ({frames} frames)"
    run = ", ".join(f"{k} {model[k]}" for k in ("backend", "device", "input_size") if model.get(k))
    if report.get("cpu"):
        run += f" ({report['cpu']})" if run else str(report["cpu"])
    return first + (f"\n{run.replace('input_size', 'input')}" if run else "")


# -- Markdown -------------------------------------------------------------------------------------
def _fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown_report(report: Mapping, plots: Mapping[str, str], title: str = "Segmentation evaluation") -> str:
    """The Markdown summary: what ran on what, accuracy, speed, warnings, plots."""
    lines = [f"# {title}", ""]
    model = report.get("model") or {}
    rows = [
        ("bag", report.get("bag")),
        ("image topic", report.get("image_topic")),
        ("label topic", report.get("label_topic") or "- (no ground truth)"),
        ("model", " ".join(f"{k}={v}" for k, v in model.items() if k != "weights") if model else None),
        ("weights", model.get("weights") if model else None),
        ("CPU", report.get("cpu")),
    ]
    for key in ("frames", "frames_published", "frames_received", "dropped", "labelled_frames"):
        if key in report:
            rows.append((key.replace("_", " "), report[key]))
    for key, label in (("miou", "mIoU"), ("pixel_accuracy", "pixel accuracy"),
                       ("mean_class_accuracy", "mean class accuracy"), ("fwiou", "frequency-weighted IoU"),
                       ("fps", "fps")):
        if key in report:
            rows.append((label, _fmt(report[key], 2 if key == "fps" else 4)))
    lines += ["| | |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in rows if v is not None] + [""]
    if report.get("fps_definition"):
        lines += [f"fps: {report['fps_definition']}", ""]

    warnings = report.get("warnings") or {}
    if warnings:
        lines += ["## Warnings", ""]
        msgs = report.get("warning_messages") or {}
        for kind, count in warnings.items():
            lines.append(f"- **{kind}**: {count}" + (f" (e.g. {msgs[kind]})" if kind in msgs else ""))
        lines.append("")

    iou = report.get("per_class_iou")
    if isinstance(iou, Mapping) and iou:
        acc = report.get("per_class_accuracy") or {}
        gt = report.get("gt_pixels") or []
        lines += ["## Per-class accuracy", "", "| class | IoU | accuracy | GT pixels |", "|---|---:|---:|---:|"]
        for i, (name, v) in enumerate(iou.items()):
            a = acc.get(name) if isinstance(acc, Mapping) else None
            lines.append(f"| {name} | {_fmt(v)} | {_fmt(a)} | {gt[i] if i < len(gt) else '-'} |")
        lines += ["", "Classes without ground truth or prediction pixels have no IoU (-) and are left "
                      "out of the mIoU.", ""]

    lat = report.get("latency_ms") or {}
    if lat:
        cols = ["count", "mean", "p50", "p90", "p95", "p99", "max"]
        lines += ["## Latency (ms)", "", "| stage | " + " | ".join(cols) + " |",
                  "|---|" + "---:|" * len(cols)]
        for stage, stats in lat.items():
            lines.append(f"| {stage} | " + " | ".join(_fmt(stats.get(c), 2) for c in cols) + " |")
        lines.append("")

    if report.get("health"):
        from .health import health_markdown
        lines += health_markdown(report["health"])

    if plots:
        lines += ["## Plots", ""]
        for key, name in plots.items():
            lines += [f"![{key.replace('_', ' ')}]({name})", ""]
    return "\n".join(lines).rstrip() + "\n"


# -- plots ----------------------------------------------------------------------------------------
def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], path: Path, subtitle: str = "") -> Path:
    """Row-normalised confusion matrix (each GT class sums to 1); cell values for <= 25 classes."""
    plt = _pyplot()
    cm = np.asarray(matrix, dtype=np.float64)
    n = cm.shape[0]
    names = list(class_names) if len(class_names) == n else [str(i) for i in range(n)]
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    size = min(4 + 0.45 * n, 40)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of ground-truth pixels")
    ax.set_xticks(range(n), names, rotation=90, fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title("Confusion matrix (rows normalised)" + (f"\n{subtitle}" if subtitle else ""), fontsize=9)
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if norm[i, j] >= 0.005:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_per_class_iou(per_class_iou: Mapping[str, float | None], path: Path, miou: float | None = None,
                       subtitle: str = "") -> Path:
    """Horizontal bars of per-class IoU; classes without data are marked ``n/a``."""
    plt = _pyplot()
    names = list(per_class_iou)
    vals = [per_class_iou[k] for k in names]
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.3 * len(names) + 1.5)))
    y = np.arange(len(names))
    ax.barh(y, [v or 0.0 for v in vals], color=["tab:blue" if v is not None else "lightgray" for v in vals])
    for yi, v in zip(y, vals):
        ax.text((v or 0.0) + 0.01, yi, "n/a" if v is None else f"{v:.2f}", va="center", fontsize=7)
    if miou is not None:
        ax.axvline(miou, color="tab:red", linestyle="--", label=f"mIoU {miou:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("IoU")
    ax.set_title("Per-class IoU" + (f"\n{subtitle}" if subtitle else ""), fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_latency_histogram(samples: Mapping[str, Sequence[float]], path: Path, subtitle: str = "") -> Path:
    """One histogram panel per stage with p50/p95 marked."""
    plt = _pyplot()
    stages = [(k, np.asarray(v, dtype=np.float64)) for k, v in samples.items() if len(v)]
    fig, axes = plt.subplots(len(stages), 1, figsize=(7, 2.2 * len(stages) + 0.8), squeeze=False)
    if subtitle:
        fig.suptitle(f"Latency per stage\n{subtitle}", fontsize=10)
    for ax, (stage, v) in zip(axes[:, 0], stages):
        ax.hist(v, bins=min(50, max(5, v.size // 2)), color="tab:blue", alpha=0.8)
        for q, style in ((50, "-"), (95, "--")):
            x = float(np.percentile(v, q))
            ax.axvline(x, color="tab:red", linestyle=style, label=f"p{q} {x:.3g} ms")
        ax.set_title(stage, fontsize=9)
        ax.set_ylabel("frames")
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("milliseconds")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_latency_stages(samples: Mapping[str, Sequence[float]], path: Path, subtitle: str = "") -> Path:
    """Which stage costs what: one bar per statistic (mean, median), stacked from the stages'
    values; the measured total (``total_ms``/``end_to_end_ms``) is marked beside it (it also holds
    what no stage covers, e.g. transport and queueing for the live node)."""
    plt = _pyplot()
    stages = [(k, np.asarray(samples[k], dtype=np.float64)) for k in stage_keys(samples)]
    totals = [(k, np.asarray(v, dtype=np.float64)) for k, v in samples.items() if len(v) and is_total(k)]
    stats = (("mean", np.mean), ("median", np.median))  # percentiles above the median do not add up
    fig, ax = plt.subplots(figsize=(8, 3.4))
    colours = plt.get_cmap("tab10").colors
    for row, (label, fn) in enumerate(stats):
        left = 0.0
        for i, (stage, v) in enumerate(stages):
            width = float(fn(v))
            ax.barh(row, width, left=left, color=colours[i % 10], edgecolor="white",
                    label=stage.removesuffix("_ms") if row == 0 else None)
            if width > 0:
                ax.text(left + width / 2, row, f"{width:.3g}", ha="center", va="center", fontsize=7, color="white")
            left += width
        for j, (name, v) in enumerate(totals):
            t = float(fn(v))
            ax.plot([t, t], [row - 0.4, row + 0.4], color="black", linestyle="--" if j else "-", linewidth=1.5,
                    label=(f"measured {name.removesuffix('_ms')}".replace("_", " ") if row == 0 else None))
    ax.set_yticks(range(len(stats)), [s[0] for s in stats])
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds per frame (disjoint stages stacked: each one's mean or median; "
                  "measured totals as lines)", fontsize=8)
    ax.set_title("Where the time goes" + (f"\n{subtitle}" if subtitle else ""), fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=len(stages) + len(totals))
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _save(fig, path: Path) -> None:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100)
