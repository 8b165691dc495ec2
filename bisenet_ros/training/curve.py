"""The training log of one run: a CSV of every iteration and a PNG of its curves.

For ``--out runs/x/model.pth`` the trainer writes ``runs/x/model.train.csv`` (columns
``iteration, loss, loss_avg, lr, val_miou``; ``val_miou`` only on validation rows, iteration 0 is
the ``--init`` checkpoint's own mIoU before fine-tuning) and ``runs/x/model.train.png`` (loss and
its moving average over iterations, validation mIoU on a second axis). Both are rewritten at every
validation and at the end, so a long run can be watched while it trains.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from ..output_files import atomic_file

COLUMNS = ("iteration", "loss", "loss_avg", "lr", "val_miou")


def log_paths(out: str | Path) -> tuple[Path, Path]:
    """``model.pth`` -> (``model.train.csv``, ``model.train.png``)."""
    out = Path(out)
    return out.with_name(out.stem + ".train.csv"), out.with_name(out.stem + ".train.png")


@dataclass
class TrainingLog:
    """Rows of (iteration, loss, loss_avg, lr, val_miou); None where a value does not apply."""

    title: str = "training"
    rows: list[dict] = field(default_factory=list)

    def add_iteration(self, iteration: int, loss: float, loss_avg: float, lr: float) -> None:
        self.rows.append({"iteration": iteration, "loss": loss, "loss_avg": loss_avg, "lr": lr, "val_miou": None})

    def add_validation(self, iteration: int, miou: float | None) -> None:
        for row in reversed(self.rows):
            if row["iteration"] == iteration:
                row["val_miou"] = miou
                return
        self.rows.append({"iteration": iteration, "loss": None, "loss_avg": None, "lr": None, "val_miou": miou})

    def write(self, out: str | Path) -> tuple[Path, Path]:
        """Write the CSV and the PNG next to ``out``; returns their paths."""
        csv_path, png_path = log_paths(out)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(csv_path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: "" if row[k] is None else (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])
                                 for k in COLUMNS})
        with atomic_file(png_path) as tmp:
            self.plot(tmp)
        return csv_path, png_path

    def plot(self, path: Path) -> Path:
        from ..evaluation.report import _pyplot

        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(8, 4.5))
        it = [r["iteration"] for r in self.rows if r["loss"] is not None]
        if it:
            ax.plot(it, [r["loss"] for r in self.rows if r["loss"] is not None], color="tab:blue", alpha=0.3,
                    linewidth=0.8, label="loss (per iteration)")
            ax.plot(it, [r["loss_avg"] for r in self.rows if r["loss"] is not None], color="tab:blue",
                    linewidth=1.8, label="loss (moving average)")
        ax.set_xlabel("iteration")
        ax.set_ylabel("training loss (main + auxiliary heads)", color="tab:blue")
        handles, labels = ax.get_legend_handles_labels()
        val = [(r["iteration"], r["val_miou"]) for r in self.rows if r["val_miou"] is not None]
        if val:
            ax2 = ax.twinx()
            ax2.plot([v[0] for v in val], [v[1] for v in val], "o-", color="tab:red", label="validation mIoU")
            for x, y in val:
                ax2.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center",
                             fontsize=8, color="tab:red")
            ax2.set_ylabel("validation mIoU", color="tab:red")
            ax2.set_ylim(0, 1.05)
            h2, l2 = ax2.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        if handles:
            ax.legend(handles, labels, loc="center right", fontsize=8)
        ax.set_title(self.title, fontsize=10)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
