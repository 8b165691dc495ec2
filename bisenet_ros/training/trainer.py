"""The BiSeNet training loop behind ``bisenet-ros train``.

Main loss plus auxiliary-head losses (cross-entropy or OHEM), SGD with momentum, poly learning
rate with linear warm-up, random scale/crop/flip/colour augmentation, mixed precision on CUDA,
deterministic with a seed, resumable from ``<out>.state.pth``, periodic validation mIoU with the
shared pipeline and :class:`bisenet_ros.metrics.ConfusionMatrix` (the code ``eval-bag`` uses).

The result is a plain ``state_dict`` in the public key layout (auxiliary heads included, so the
public implementation loads it too) and a sidecar YAML next to it (``model.pth`` ->
``model.yaml``) with architecture, classes, palette, mean/std and input size.
"""
from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..checkpoint import Checkpoint, sidecar_path
from ..datasets import DatasetPreset, generate_palette, load_preset
from ..errors import BisenetError, ConfigError, one_line
from ..metrics import ConfusionMatrix
from ..models import build_model, resolve_device
from ..pipeline import SegmentationPipeline, auto32
from ..safe_yaml import load_yaml_file
from .checks import check_data, check_outputs
from .curve import TrainingLog, log_paths
from .data import Augment, DataError, IterationSampler, SegmentationDataset, cityscapes_needs_map, find_samples
from .losses import SegmentationLoss

DEFAULTS_FILE = Path(__file__).resolve().parent / "defaults.yaml"


class TrainingError(BisenetError):
    """Training cannot start or continue (bad options, diverged loss, unusable resume state)."""


def training_defaults(arch: str) -> dict:
    """The ``common`` defaults merged with the architecture's own (``defaults.yaml``)."""
    data = load_yaml_file(DEFAULTS_FILE, "training defaults")
    return {**data["common"], **data.get(arch, {})}


@dataclass
class TrainConfig:
    """Everything a training run needs; ``None`` means the default of ``defaults.yaml``."""

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


@dataclass
class TrainResult:
    checkpoint: Path
    sidecar: Path
    iterations: int
    losses: list[float] = field(default_factory=list)  # per iteration (this run only)
    validation: list[dict] = field(default_factory=list)  # {"iteration", "miou", "iou"}
    seconds: float = 0.0


def state_path(out: str | Path) -> Path:
    """The resume state written next to the checkpoint: ``model.pth`` -> ``model.state.pth``."""
    out = Path(out)
    return out.with_name(out.stem + ".state.pth")


def class_dependent_keys(arch: str, num_classes: int) -> set[str]:
    """``state_dict`` keys whose shape depends on the class count (every head's classifier and
    anything else that would not fit another class count)."""
    a = build_model(arch, num_classes, aux_heads=True).state_dict()
    b = build_model(arch, num_classes + 1, aux_heads=True).state_dict()
    return {k for k in a if a[k].shape != b[k].shape}


@torch.no_grad()
def init_classifiers(model: nn.Module, arch: str) -> None:
    """Small-normal (std 0.01) weights and zero bias for the class-dependent tensors of every
    head, so training starts from near-uniform predictions instead of the large logits of the
    fan-out Kaiming initialisation (much faster early convergence)."""
    keys = class_dependent_keys(arch, model.num_classes)
    params = dict(model.named_parameters())
    for key in keys:
        if key in params:
            if key.endswith("weight"):
                params[key].normal_(0.0, 0.01)
            else:
                params[key].zero_()


def load_init(model: nn.Module, arch: str, path: str | Path, log: Callable[[str], None]) -> None:
    """Initialise ``model`` from a published/previous checkpoint for fine-tuning.

    Heads whose class count differs are re-initialised (with a message); auxiliary heads missing
    from the file keep their fresh initialisation. Anything else that does not fit is an error.
    """
    ckpt = Checkpoint.read(path, arch=arch)
    fit = ckpt.fit(model, role=f"training a {arch}", reinit=frozenset(class_dependent_keys(arch, model.num_classes)))
    model.load_state_dict(fit.tensors, strict=True)
    if fit.reinitialised:
        rows = ckpt.state.get(model.classifier_key)
        ckpt_classes = int(rows.shape[0]) if rows is not None else "?"
        log(f"init: {path} has {ckpt_classes} classes, training {model.num_classes}: re-initialised "
            f"{len(fit.reinitialised)} class-dependent head tensors ({', '.join(fit.reinitialised[:4])}"
            f"{', ...' if len(fit.reinitialised) > 4 else ''})")
    missing_aux = sorted({k.split('.')[0] for k in fit.fresh_aux})
    if missing_aux:
        log(f"init: {path} has no auxiliary heads {', '.join(missing_aux)}: freshly initialised")
    log(f"init: loaded {len(fit.tensors) - len(fit.reinitialised) - len(fit.fresh_aux)} tensors from {path}")


def resolve_preset(cfg: TrainConfig) -> DatasetPreset:
    """The label set being trained: ``--dataset`` (resized to ``--num-classes``) or generic names."""
    if cfg.dataset:
        preset = load_preset(cfg.dataset)
        return preset.with_overrides(num_classes=cfg.num_classes) if cfg.num_classes else preset
    if not cfg.num_classes:
        raise ConfigError("--num-classes is required unless --dataset names a preset")
    n = int(cfg.num_classes)
    return DatasetPreset(
        name="custom", class_names=tuple(f"class_{i}" for i in range(n)), palette=generate_palette(n),
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    )


def _open(path: str, split: str, cfg: TrainConfig, preset: DatasetPreset, augment: Augment | None,
          log: Callable[[str], None]) -> SegmentationDataset:
    samples, layout = find_samples(path, split, cfg.cityscapes_labels)
    map_name = cfg.label_map
    if layout == "cityscapes" and map_name is None and cityscapes_needs_map(samples):
        map_name = "labelIds"
        if "labelIds" not in preset.label_maps:
            raise DataError(f"{path}: Cityscapes labelIds need a preset with a 'labelIds' label map "
                            f"(e.g. --dataset cityscapes), or trainIds label files")
    lut = preset.label_lut(map_name)
    log(f"data: {path} ({layout}{', ' + split if layout == 'cityscapes' else ''}): {len(samples)} images"
        f"{', labels mapped by ' + map_name if map_name else ''}")
    return SegmentationDataset(samples, preset, lut, augment, seed=0)


def _check(cfg: TrainConfig) -> None:
    if cfg.iters < 1:
        raise ConfigError(f"--iters must be >= 1, got {cfg.iters}")
    if cfg.batch_size < 2:
        raise ConfigError("--batch-size must be >= 2 (BatchNorm after global pooling needs 2 samples)")
    h, w = cfg.crop
    if h < 32 or w < 32 or h % 32 or w % 32:
        raise ConfigError(f"--crop {h}x{w} must be multiples of 32 (e.g. 512x1024)")
    if cfg.save_dtype not in ("float32", "float16"):
        raise ConfigError(f"save dtype must be float32 or float16, got '{cfg.save_dtype}'")


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # BN weights/biases and conv biases
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(it: int, iters: int, base: float, warmup: int, warmup_ratio: float, power: float) -> float:
    """Linear warm-up from ``base * warmup_ratio`` to ``base``, then poly decay to 0."""
    if it < warmup:
        return base * (warmup_ratio + (1 - warmup_ratio) * it / warmup)
    return base * (1 - (it - warmup) / max(1, iters - warmup)) ** power


@torch.no_grad()
def evaluate(model: nn.Module, dataset: SegmentationDataset, device: torch.device,
             precision: str = "fp32") -> dict:
    """mIoU of ``model`` on ``dataset`` through the shared pipeline (auto32 input size) and
    :class:`ConfusionMatrix`, as ``eval-bag`` computes it. Leaves the model in eval mode."""
    from ..backends import create_runner

    runner = create_runner(model, backend="torch", device=device, precision=precision)
    pipe = SegmentationPipeline(runner, dataset.preset, None, device)
    cm = ConfusionMatrix(dataset.preset.num_classes, dataset.preset.ignore_index)
    for i in range(len(dataset)):
        img, gt = dataset.load(i)
        cm.update(pipe(img, "rgb8", outputs=()).labels, gt)
    return cm.compute(list(dataset.preset.class_names))


def _seed_everything(seed: int, device: torch.device) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)
    cv2_threads(0)


def cv2_threads(n: int) -> None:
    import cv2

    cv2.setNumThreads(n)


def train(cfg: TrainConfig, log: Callable[[str], None] | None = None) -> TrainResult:
    """Run a training as configured; returns where the checkpoint and sidecar were written."""
    from tqdm import tqdm

    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    _check(cfg)
    check_outputs(cfg, state_path(cfg.out), sidecar_path(cfg.out, existing=False))  # before any work
    arch = cfg.model.lower()
    defaults = training_defaults(arch)
    hp = {k: (getattr(cfg, k) if getattr(cfg, k, None) is not None else defaults[k])
          for k in ("lr", "momentum", "weight_decay", "scale", "aux_weight")}
    if cfg.init and cfg.lr is None:  # fine-tuning refines the checkpoint instead of overwriting it
        hp["lr"] = float(defaults["finetune_lr"])
        log(f"fine-tuning: base learning rate {hp['lr']:g} (the {arch} fine-tuning default; --lr to change)")
    warmup = cfg.warmup_iters if cfg.warmup_iters is not None else min(defaults["warmup_iters"], cfg.iters // 10)
    device = resolve_device(cfg.device)
    saved_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    try:
        return _train(cfg, log, arch, defaults, hp, warmup, device)
    finally:
        torch.set_num_threads(saved_threads)


def _train(cfg: TrainConfig, log: Callable[[str], None], arch: str, defaults: dict, hp: dict, warmup: int,
           device: torch.device) -> TrainResult:
    from ..progress import progress_bar

    _seed_everything(cfg.seed, device)
    use_amp = bool(cfg.amp and device.type == "cuda")

    preset = resolve_preset(cfg)
    train_ds, val_ds = _datasets(cfg, preset, defaults, hp, log)
    model = build_model(arch, preset.num_classes, aux_heads=True)
    init_classifiers(model, arch)
    if cfg.init:
        load_init(model, arch, cfg.init, log)
    model.to(device).train()
    optimizer = torch.optim.SGD(_param_groups(model, hp["weight_decay"]), lr=hp["lr"], momentum=hp["momentum"])
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    criterion = SegmentationLoss(preset.ignore_index, cfg.ohem, float(defaults["ohem_thresh"]), hp["aux_weight"])

    start, history = 0, []
    out = Path(cfg.out)
    curve = TrainingLog(f"{arch} on {cfg.data}" + (f", fine-tuned from {Path(cfg.init).name}" if cfg.init else ""))
    if cfg.resume:
        start, history, curve.rows = _resume(cfg, model, optimizer, scaler, arch, preset.num_classes)
        log(f"resume: continuing at iteration {start} of {cfg.iters}")
    elif cfg.init and val_ds is not None:
        history.append(_baseline(model, val_ds, device, cfg.init, log))
        curve.add_validation(0, history[-1]["miou"])

    loader = DataLoader(
        train_ds, batch_size=cfg.batch_size, sampler=IterationSampler(len(train_ds), cfg.seed, start * cfg.batch_size),
        num_workers=max(0, cfg.workers), pin_memory=device.type == "cuda", drop_last=True,
        worker_init_fn=_worker_init if cfg.workers > 0 else None, persistent_workers=False,
        generator=torch.Generator().manual_seed(cfg.seed),  # not the global RNG (dropout), for exact resume
    )
    batches = iter(loader)
    losses: list[float] = []
    ema = None
    t0 = time.perf_counter()
    bar = progress_bar(total=cfg.iters, initial=start, enabled=cfg.progress, desc=f"train {arch}", unit="it",
                       mininterval=1.0)
    for it in range(start, cfg.iters):
        lr = lr_at(it, cfg.iters, hp["lr"], warmup, float(defaults["warmup_ratio"]), float(defaults["poly_power"]))
        for group in optimizer.param_groups:
            group["lr"] = lr
        try:
            batch = next(batches)
        except Exception as exc:  # a file changed or vanished since the check: keep what was trained
            raise _data_failure(exc, it, start, out, model, optimizer, scaler, history, arch,
                                preset.num_classes) from None
        value, main = _step(model, criterion, optimizer, scaler, batch, device, use_amp, it)
        losses.append(value)
        ema = value if ema is None else 0.9 * ema + 0.1 * value
        bar.set_postfix(loss=f"{ema:.3f}", lr=f"{lr:.2e}", refresh=False)
        bar.update(1)
        done = it + 1
        curve.add_iteration(done, value, ema, lr)
        if cfg.log_every and done % cfg.log_every == 0:
            log(f"iter {done}/{cfg.iters}: loss {ema:.4f} (main {float(main.detach()):.4f}) lr {lr:.2e} "
                f"{time.perf_counter() - t0:.0f}s")
        if val_ds is not None and ((cfg.val_every and done % cfg.val_every == 0) or done == cfg.iters):
            history.append(_validate(model, val_ds, device, use_amp, done, log))
            curve.add_validation(done, history[-1]["miou"])
            curve.write(out)
        if cfg.save_every and done % cfg.save_every == 0 and done < cfg.iters:
            _save_state(out, model, optimizer, scaler, done, history, arch, preset.num_classes, curve.rows)
    bar.close()
    ckpt, side = save_checkpoint(model, out, arch, preset, _input_size(cfg, train_ds), cfg, history)
    state_path(out).unlink(missing_ok=True)  # finished: the resume state is no longer needed
    csv_path, png_path = curve.write(out)
    log(f"saved {ckpt} (+ {side.name}); training curve {png_path.name} (+ {csv_path.name})")
    return TrainResult(ckpt, side, cfg.iters, losses, history, time.perf_counter() - t0)


def _datasets(cfg: TrainConfig, preset, defaults: dict, hp: dict, log: Callable[[str], None]):
    """(training set with augmentation, validation set or None), both checked up front: labels,
    sizes and readability fail now, not at iteration N."""
    jitter = float(defaults["colour_jitter"])
    augment = Augment(tuple(cfg.crop), tuple(hp["scale"]), True, jitter, jitter, jitter)
    train_ds = _open(cfg.data, cfg.split, cfg, preset, augment, log)
    train_ds.seed = cfg.seed
    val_ds = _open(cfg.val, cfg.val_split, cfg, preset, None, log) if cfg.val else None
    check_data(train_ds, "training data", cfg.progress)
    if val_ds is not None:
        check_data(val_ds, "validation data", cfg.progress)
    return train_ds, val_ds


def _validate(model, val_ds, device: torch.device, use_amp: bool, done: int, log: Callable[[str], None]) -> dict:
    """mIoU on the validation set after ``done`` iterations (logged); the model back in training mode."""
    metrics = evaluate(model, val_ds, device, "fp16" if use_amp else "fp32")
    model.train()
    log(f"iter {done}: val mIoU {metrics['miou'] or 0.0:.4f} " + _per_class(metrics))
    return {"iteration": done, "miou": metrics["miou"], "iou": metrics["per_class_iou"]}


def _data_failure(exc: Exception, it: int, start: int, out: Path, model, optimizer, scaler, history: list[dict],
                  arch: str, num_classes: int) -> TrainingError:
    """Save the resume state (when anything was trained) and describe a data error in one line.

    Errors from loader workers carry the worker's traceback in their message: only its last line
    (the original error) is kept.
    """
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    reason = lines[-1] if lines else type(exc).__name__
    for prefix in ("bisenet_ros.training.data.DataError: ", "DataError: "):
        reason = reason.removeprefix(prefix)
    if it > start:
        _save_state(out, model, optimizer, scaler, it, history, arch, num_classes)
        saved = f"; {it} iterations saved to {state_path(out)}: fix the data, then run again with --resume"
    else:
        saved = ""
    return TrainingError(f"data error at iteration {it}: {reason}{saved}")


def _step(model: nn.Module, criterion: SegmentationLoss, optimizer, scaler, batch, device: torch.device,
          use_amp: bool, it: int) -> tuple[float, torch.Tensor]:
    """One optimisation step on ``batch``; returns the loss and the main head's loss."""
    images, labels = (t.to(device, non_blocking=True) for t in batch)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        outputs = model(images)
    loss, main = criterion(outputs, labels)
    if not torch.isfinite(loss):
        raise TrainingError(f"loss became {loss.item()} at iteration {it}; lower --lr or check the labels")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach()), main


def _baseline(model: nn.Module, val_ds: SegmentationDataset, device: torch.device, init: str,
              log: Callable[[str], None]) -> dict:
    """The ``--init`` checkpoint's own validation mIoU, before any fine-tuning (iteration 0)."""
    metrics = evaluate(model, val_ds, device)
    model.train()
    log(f"baseline: {init} scores val mIoU {metrics['miou'] or 0.0:.4f} before fine-tuning "
        + _per_class(metrics))
    return {"iteration": 0, "miou": metrics["miou"], "iou": metrics["per_class_iou"]}


def _per_class(metrics: dict) -> str:
    iou = metrics.get("per_class_iou") or {}
    if isinstance(iou, dict):
        return "(" + ", ".join(f"{k} {v:.3f}" for k, v in iou.items() if v is not None) + ")"
    return ""


def _input_size(cfg: TrainConfig, ds: SegmentationDataset) -> tuple[int, int]:
    """Sidecar input size: explicit, else the first training image's size rounded up to x32."""
    if cfg.input_size:
        return tuple(cfg.input_size)
    img = ds.load(0)[0]
    return auto32(*img.shape[:2])


def save_checkpoint(model: nn.Module, out: Path, arch: str, preset: DatasetPreset,
                    input_size: tuple[int, int], cfg: TrainConfig | None = None,
                    history: list[dict] | None = None) -> tuple[Path, Path]:
    """Write the plain ``state_dict`` (public key layout, aux heads included) and its sidecar."""
    dtype = torch.float16 if cfg is not None and cfg.save_dtype == "float16" else None
    meta: dict = {"input_size": [int(input_size[0]), int(input_size[1])], "dataset": preset.to_dict()}
    if cfg is not None:
        meta["training"] = {
            "data": str(cfg.data), "val": cfg.val, "iterations": cfg.iters, "batch_size": cfg.batch_size,
            "crop": list(cfg.crop), "seed": cfg.seed, "ohem": cfg.ohem, "init": cfg.init,
            "val_miou": round(float(history[-1]["miou"]), 4) if history and history[-1]["miou"] is not None else None,
        }
        base = [h for h in history or [] if h["iteration"] == 0 and h["miou"] is not None]
        if cfg.init and base:
            meta["training"]["init_val_miou"] = round(float(base[0]["miou"]), 4)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return Checkpoint(state, arch, preset.num_classes, meta).write(out, dtype)


def _save_state(out: Path, model, optimizer, scaler, iteration: int, history: list[dict], arch: str,
                num_classes: int, curve_rows: list[dict] | None = None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_path(out).with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "iteration": iteration, "arch": arch, "num_classes": num_classes,
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "history": [{"iteration": h["iteration"], "miou": h["miou"]} for h in history],
                "curve": [[r[k] for k in ("iteration", "loss", "loss_avg", "lr", "val_miou")]
                          for r in curve_rows or []]}, tmp)
    tmp.replace(state_path(out))


def _resume(cfg: TrainConfig, model, optimizer, scaler, arch: str, num_classes: int) -> tuple[int, list, list]:
    path = state_path(cfg.out) if cfg.resume == "auto" else Path(cfg.resume)
    if not path.is_file():
        raise TrainingError(f"{path}: no training state to resume from")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"{path}: unreadable training state ({one_line(exc)})") from None
    if state.get("arch") != arch or state.get("num_classes") != num_classes:
        raise TrainingError(f"{path}: state is a {state.get('arch')} with {state.get('num_classes')} classes, "
                            f"not a {arch} with {num_classes}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    if "rng" in state:  # dropout masks continue as in an uninterrupted run
        torch.set_rng_state(state["rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    it = int(state["iteration"])
    if it > cfg.iters:
        raise TrainingError(f"{path}: state is at iteration {it}, beyond --iters {cfg.iters}")
    curve = [dict(zip(("iteration", "loss", "loss_avg", "lr", "val_miou"), row)) for row in state.get("curve", [])]
    return it, list(state.get("history", [])), curve


__all__ = ["TrainConfig", "TrainingLog", "log_paths", "TrainResult", "TrainingError", "class_dependent_keys", "evaluate", "load_init",
           "lr_at", "save_checkpoint", "state_path", "train", "training_defaults"]
