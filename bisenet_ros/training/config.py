"""What a training run is given (:class:`TrainConfig`) and what it returns (:class:`TrainResult`);
``None`` in a config means the default of ``resources/training.yaml`` (:func:`training_defaults`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..resources import RESOURCES
from ..safe_yaml import load_yaml_file
from .distributed import DEFAULT_TIMEOUT_S

DEFAULTS_FILE = RESOURCES / "training.yaml"


def training_defaults(arch: str) -> dict:
    """The ``common`` defaults merged with the architecture's own (``resources/training.yaml``)."""
    data = load_yaml_file(DEFAULTS_FILE, "training defaults")
    return {**data["common"], **data.get(arch, {})}


@dataclass
class TrainConfig:
    """Everything a training run needs; ``None`` means the default of ``resources/training.yaml``."""

    model: str
    data: str
    out: str
    iters: int
    batch_size: int
    crop: tuple[int, int]
    num_classes: int | None = None
    val: str | None = None
    dataset: str | None = None  # preset name or YAML: class names, palette, mean/std, label maps
    label_map: str | None = None  # name of a preset label map applied to the raw labels
    split: str = "train"  # Cityscapes split of --data
    val_split: str = "val"  # Cityscapes split of --val
    cityscapes_labels: str = "auto"
    device: str = "auto"
    init: str | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    warmup_iters: int | None = None
    scale: tuple[float, float] | None = None
    ohem: bool = False
    aux_weight: float | None = None
    amp: bool = True  # only on CUDA
    seed: int = 0
    resume: str | None = None  # state file, or "auto" for <out>.state.pth
    val_every: int = 0  # 0: validate only at the end (when --val is given)
    save_every: int = 0  # 0: write the resume state only at the end
    workers: int = 2
    threads: int | None = None
    save_dtype: str = "float32"
    input_size: tuple[int, int] | None = None  # sidecar input size; default: data size rounded to x32
    log_every: int = 0
    progress: bool = True
    overwrite: bool = False  # replace an existing checkpoint/sidecar at out (only those)
    sync_bn: bool | None = None  # under torchrun: None = on for CUDA with several processes, off on the CPU
    dist_timeout: float = DEFAULT_TIMEOUT_S  # seconds a collective waits for a lost rank before failing


@dataclass
class TrainResult:
    checkpoint: Path
    sidecar: Path
    iterations: int
    losses: list[float] = field(default_factory=list)  # per iteration (this run only)
    validation: list[dict] = field(default_factory=list)  # {"iteration", "miou", "iou"}
    seconds: float = 0.0
    rank: int = 0  # under torchrun: this process's rank (only rank 0 wrote anything)
    world_size: int = 1
