"""The resume state of a training run: ``<out stem>.state.pth`` beside the checkpoint.

Model, optimizer and loss-scaler state, the iteration reached, the samples of the data stream
consumed so far (so a resume with another world size or batch size continues the same stream,
skipping and repeating nothing), the validation history and the training curve. Written
atomically (temporary file, then rename) by rank 0 alone; a distributed resume reads it on rank 0
and broadcasts it, so only rank 0 needs to reach ``--out``.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import BisenetError, one_line

CURVE_KEYS = ("iteration", "loss", "loss_avg", "lr", "val_miou")


class TrainingError(BisenetError):
    """Training cannot start or continue (bad options, diverged loss, unusable resume state)."""


def state_path(out: str | Path) -> Path:
    """The resume state written next to the checkpoint: ``model.pth`` -> ``model.state.pth``."""
    out = Path(out)
    return out.with_name(out.stem + ".state.pth")


def save_state(out: Path, model, optimizer, scaler, iteration: int, history: list[dict], arch: str,
               num_classes: int, curve_rows: list[dict] | None = None, samples: int | None = None) -> None:
    """Write the resume state atomically (``samples``: stream positions consumed, when distributed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_path(out).with_suffix(".tmp")
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
             "iteration": iteration, "arch": arch, "num_classes": num_classes,
             "rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
             "history": [{"iteration": h["iteration"], "miou": h["miou"]} for h in history],
             "curve": [[r[k] for k in CURVE_KEYS] for r in curve_rows or []]}
    if samples is not None:
        state["samples"] = int(samples)
    torch.save(state, tmp)
    tmp.replace(state_path(out))


def read_state(resume: str, out: str | Path, arch: str, num_classes: int, iters: int) -> dict:
    """The resume state named by ``--resume`` (``auto``: beside ``out``), checked against the run."""
    path = state_path(out) if resume == "auto" else Path(resume)
    if not path.is_file():
        raise TrainingError(f"{path}: no training state to resume from")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"{path}: unreadable training state ({one_line(exc)})") from None
    if state.get("arch") != arch or state.get("num_classes") != num_classes:
        raise TrainingError(f"{path}: state is a {state.get('arch')} with {state.get('num_classes')} classes, "
                            f"not a {arch} with {num_classes}")
    if int(state["iteration"]) > iters:
        raise TrainingError(f"{path}: state is at iteration {state['iteration']}, beyond --iters {iters}")
    return state


def apply_state(state: dict, model, optimizer, scaler, restore_rng: bool = True) -> tuple[int, list, list]:
    """Load ``state`` into model/optimizer/scaler; returns (iteration, history, curve rows)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    if restore_rng and "rng" in state:  # dropout masks continue as in an uninterrupted run
        torch.set_rng_state(state["rng"])
    if restore_rng and state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    curve = [dict(zip(CURVE_KEYS, row)) for row in state.get("curve", [])]
    return int(state["iteration"]), list(state.get("history", [])), curve
