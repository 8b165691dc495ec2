"""The BiSeNet training loop behind ``bisenet-ros train``.

Main loss plus auxiliary-head losses (cross-entropy or OHEM), SGD with momentum, poly learning
rate with linear warm-up, random scale/crop/flip/colour augmentation, mixed precision on CUDA,
deterministic with a seed, resumable from ``<out>.state.pth``, periodic validation mIoU with the
shared pipeline and :class:`bisenet_ros.evaluation.metrics.ConfusionMatrix` (the code ``eval-bag`` uses).

The result is a plain ``state_dict`` in the public key layout (auxiliary heads included, so the
public implementation loads it too) and a sidecar YAML next to it (``model.pth`` ->
``model.yaml``) with architecture, classes, palette, mean/std and input size.
"""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data.datasets import DatasetPreset, generate_palette, load_preset
from ..errors import ConfigError
from ..models import build_model, resolve_device
from ..models.checkpoint import Checkpoint, sidecar_path
from ..options import model_size_problem
from ..pipeline import auto32
from .checks import check_data, check_outputs
from .config import TrainConfig, TrainResult, training_defaults
from .curve import TrainingLog, log_paths
from .data import Augment, DataError, IterationSampler, SegmentationDataset, cityscapes_needs_map, find_samples
from .distributed import (DistContext, DistributedFailure, DistributedIterationSampler,
                          average, broadcast_object, check_sync_bn, describe, init_distributed,
                          is_collective_failure, launched_by_torchrun, lost_peer_message, shutdown, wrap_model)
from .initialisation import class_dependent_keys, init_classifiers, load_init
from .losses import SegmentationLoss
from .state import TrainingError, apply_state, read_state, save_state, state_path
from .validation import baseline, evaluate, validate

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
    problem = model_size_problem(*cfg.crop)
    if problem:
        raise ConfigError(f"--crop {problem}")
    problem = cfg.input_size and model_size_problem(*cfg.input_size)
    if problem:  # checked before training, not found by the first 'segment' with the result
        raise ConfigError(f"--input-size {problem}")
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
    """Run a training as configured; returns where the checkpoint and sidecar were written.

    Under torchrun (``RANK``/``WORLD_SIZE`` set) the run joins the process group and trains with
    DistributedDataParallel (see :mod:`bisenet_ros.training.distributed`); rank 0 alone logs and writes.
    """
    from tqdm import tqdm

    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    _check(cfg)
    check_outputs(cfg, state_path(cfg.out), sidecar_path(cfg.out, existing=False))  # before any work
    arch = cfg.model.lower()
    defaults = training_defaults(arch)
    hp = {k: (getattr(cfg, k) if getattr(cfg, k, None) is not None else defaults[k])
          for k in ("lr", "momentum", "weight_decay", "scale", "aux_weight")}
    if launched_by_torchrun():
        ctx, device = init_distributed(cfg.device, cfg.dist_timeout)
    else:
        ctx, device = DistContext(), resolve_device(cfg.device)
    if not ctx.is_main:
        log = _quiet
    if cfg.init and cfg.lr is None:  # fine-tuning refines the checkpoint instead of overwriting it
        hp["lr"] = float(defaults["finetune_lr"])
        log(f"fine-tuning: base learning rate {hp['lr']:g} (the {arch} fine-tuning default; --lr to change)")
    warmup = cfg.warmup_iters if cfg.warmup_iters is not None else min(defaults["warmup_iters"], cfg.iters // 10)
    saved_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    try:
        return _train(cfg, log, arch, defaults, hp, warmup, device, ctx)
    except DistributedFailure as exc:
        raise TrainingError(str(exc)) from None
    finally:
        torch.set_num_threads(saved_threads)
        shutdown(ctx)


def _quiet(msg: str) -> None:  # ranks other than 0 log nothing (errors still end the process in one line)
    pass


class _Run:
    """The objects of one training run, built in :meth:`setup` (model, optimizer, data, schedule)."""

    def __init__(self, cfg: TrainConfig, log, arch: str, defaults: dict, hp: dict, warmup: int,
                 device: torch.device, ctx: DistContext) -> None:
        self.cfg, self.log, self.arch, self.defaults, self.hp, self.warmup = cfg, log, arch, defaults, hp, warmup
        self.device, self.ctx = device, ctx
        self.out = Path(cfg.out)
        self.use_amp = bool(cfg.amp and device.type == "cuda")
        self.start, self.history, self.samples = 0, [], 0
        self.losses: list[float] = []
        self.it = 0  # the iteration in progress
        self.saved: tuple[Path, int] | None = None  # the last resume state written (rank 0)

    def setup(self) -> None:
        cfg, ctx, arch = self.cfg, self.ctx, self.arch
        _seed_everything(cfg.seed + ctx.rank, self.device)  # rank 0 as a single process; DDP copies its weights
        self.preset = resolve_preset(cfg)
        self.train_ds, self.val_ds = _datasets(cfg, self.preset, self.defaults, self.hp, self.log,
                                               progress=cfg.progress and ctx.is_main)
        model = build_model(arch, self.preset.num_classes, aux_heads=True)
        init_classifiers(model, arch)
        if cfg.init:
            load_init(model, arch, cfg.init, self.log)
        model.to(self.device).train()
        self.sync_bn = check_sync_bn(cfg.sync_bn, self.device, ctx.world_size) if ctx.active else False
        self.net = wrap_model(model, ctx, self.device, self.sync_bn) if ctx.active else model
        self.model = self.net.module if ctx.active else model  # what is saved and validated
        self.optimizer = torch.optim.SGD(_param_groups(self.model, self.hp["weight_decay"]), lr=self.hp["lr"],
                                         momentum=self.hp["momentum"])
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.criterion = SegmentationLoss(self.preset.ignore_index, cfg.ohem, float(self.defaults["ohem_thresh"]),
                                          self.hp["aux_weight"])
        if ctx.active:
            self.log(describe(ctx, self.device, cfg.batch_size, self.sync_bn))
        self.curve = TrainingLog(f"{arch} on {cfg.data}" + (f", fine-tuned from {Path(cfg.init).name}" if cfg.init else ""))
        self._start()

    def _start(self) -> None:
        """Resume state (rank 0 reads, every rank gets it) or the ``--init`` baseline."""
        cfg, ctx = self.cfg, self.ctx
        global_batch = cfg.batch_size * ctx.world_size
        if cfg.resume:
            state = read_state(cfg.resume, cfg.out, self.arch, self.preset.num_classes, cfg.iters) \
                if ctx.is_main else None
            state = broadcast_object(state, ctx, self.device)
            self.start, self.history, self.curve.rows = apply_state(state, self.model, self.optimizer, self.scaler,
                                                                    restore_rng=ctx.is_main)
            self.samples = int(state.get("samples", self.start * global_batch))
            self.log(f"resume: continuing at iteration {self.start} of {cfg.iters}"
                     + (f" (sample {self.samples} of the data stream)" if ctx.active else ""))
        elif cfg.init and self.val_ds is not None:
            self.history.append(baseline(self.model, self.val_ds, self.device, cfg.init, self.log, ctx, self.arch))
            self.curve.add_validation(0, self.history[-1]["miou"])

    def loader(self) -> DataLoader:
        cfg, ctx = self.cfg, self.ctx
        if ctx.active:
            sampler = DistributedIterationSampler(len(self.train_ds), cfg.seed, self.samples, ctx.rank,
                                                  ctx.world_size, cfg.batch_size)
        else:
            sampler = IterationSampler(len(self.train_ds), cfg.seed, self.start * cfg.batch_size)
        return DataLoader(
            self.train_ds, batch_size=cfg.batch_size, sampler=sampler,
            num_workers=max(0, cfg.workers), pin_memory=self.device.type == "cuda", drop_last=True,
            worker_init_fn=_worker_init if cfg.workers > 0 else None, persistent_workers=False,
            generator=torch.Generator().manual_seed(cfg.seed),  # not the global RNG (dropout), for exact resume
        )

    def save_state(self, done: int) -> None:
        if self.ctx.is_main:
            save_state(self.out, self.model, self.optimizer, self.scaler, done, self.history, self.arch,
                       self.preset.num_classes, self.curve.rows,
                       samples=self.samples + (done - self.start) * self.cfg.batch_size * self.ctx.world_size
                       if self.ctx.active else None)
            self.saved = (state_path(self.out), done)


def _train(cfg: TrainConfig, log: Callable[[str], None], arch: str, defaults: dict, hp: dict, warmup: int,
           device: torch.device, ctx: DistContext) -> TrainResult:
    run = _Run(cfg, log, arch, defaults, hp, warmup, device, ctx)
    run.setup()
    t0 = time.perf_counter()
    try:
        _loop(run, t0)
    except Exception as exc:
        if ctx.active and is_collective_failure(exc):
            saved = f"{run.saved[0]} (iteration {run.saved[1]})" if run.saved else None
            raise TrainingError(lost_peer_message(ctx, exc, run.it, cfg.dist_timeout, saved)) from None
        raise
    if not ctx.is_main:
        return TrainResult(run.out, sidecar_path(run.out, existing=False), cfg.iters, run.losses, run.history,
                           time.perf_counter() - t0, ctx.rank, ctx.world_size)
    ckpt, side = save_checkpoint(run.model, run.out, arch, run.preset, _input_size(cfg, run.train_ds), cfg,
                                 run.history)
    state_path(run.out).unlink(missing_ok=True)  # finished: the resume state is no longer needed
    csv_path, png_path = run.curve.write(run.out)
    log(f"saved {ckpt} (+ {side.name}); training curve {png_path.name} (+ {csv_path.name})")
    return TrainResult(ckpt, side, cfg.iters, run.losses, run.history, time.perf_counter() - t0,
                       ctx.rank, ctx.world_size)


def _loop(run: _Run, t0: float) -> None:
    """The iterations from ``run.start`` to ``--iters``: step, log, validate, save."""
    from ..progress import progress_bar

    cfg, ctx, out = run.cfg, run.ctx, run.out
    batches = iter(run.loader())
    ema = None
    bar = progress_bar(total=cfg.iters, initial=run.start, enabled=cfg.progress and ctx.is_main,
                       desc=f"train {run.arch}", unit="it", mininterval=1.0)
    for it in range(run.start, cfg.iters):
        run.it = it
        lr = lr_at(it, cfg.iters, run.hp["lr"], run.warmup, float(run.defaults["warmup_ratio"]),
                   float(run.defaults["poly_power"]))
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        try:
            batch = next(batches)
        except Exception as exc:  # a file changed or vanished since the check: keep what was trained
            raise _data_failure(exc, it, run) from None
        value, main = _step(run.net, run.criterion, run.optimizer, run.scaler, batch, run.device, run.use_amp, it,
                            ctx)
        run.losses.append(value)
        ema = value if ema is None else 0.9 * ema + 0.1 * value
        bar.set_postfix(loss=f"{ema:.3f}", lr=f"{lr:.2e}", refresh=False)
        bar.update(1)
        done = it + 1
        run.curve.add_iteration(done, value, ema, lr)
        if cfg.log_every and done % cfg.log_every == 0:
            run.log(f"iter {done}/{cfg.iters}: loss {ema:.4f} (main {float(main.detach()):.4f}) lr {lr:.2e} "
                    f"{time.perf_counter() - t0:.0f}s")
        if run.val_ds is not None and ((cfg.val_every and done % cfg.val_every == 0) or done == cfg.iters):
            run.history.append(validate(run.model, run.val_ds, run.device, run.use_amp, done, run.log, ctx,
                                        run.arch))
            run.curve.add_validation(done, run.history[-1]["miou"])
            if ctx.is_main:
                run.curve.write(out)
        if cfg.save_every and done % cfg.save_every == 0 and done < cfg.iters:
            run.save_state(done)
    bar.close()


def _datasets(cfg: TrainConfig, preset, defaults: dict, hp: dict, log: Callable[[str], None], progress: bool = True):
    """(training set with augmentation, validation set or None), both checked up front: labels,
    sizes and readability fail now, not at iteration N."""
    jitter = float(defaults["colour_jitter"])
    augment = Augment(tuple(cfg.crop), tuple(hp["scale"]), True, jitter, jitter, jitter)
    train_ds = _open(cfg.data, cfg.split, cfg, preset, augment, log)
    train_ds.seed = cfg.seed
    val_ds = _open(cfg.val, cfg.val_split, cfg, preset, None, log) if cfg.val else None
    check_data(train_ds, "training data", progress)
    if val_ds is not None:
        check_data(val_ds, "validation data", progress)
    return train_ds, val_ds


def _data_failure(exc: Exception, it: int, run: _Run) -> TrainingError:
    """Save the resume state (when anything was trained; rank 0) and describe a data error in one line.

    Errors from loader workers carry the worker's traceback in their message: only its last line
    (the original error) is kept.
    """
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    reason = lines[-1] if lines else type(exc).__name__
    for prefix in ("bisenet_ros.training.data.DataError: ", "DataError: "):
        reason = reason.removeprefix(prefix)
    saved = ""
    if it > run.start and run.ctx.is_main:
        run.save_state(it)
        saved = f"; {it} iterations saved to {state_path(run.out)}: fix the data, then run again with --resume"
    where = f"rank {run.ctx.rank}: " if run.ctx.active else ""
    return TrainingError(f"{where}data error at iteration {it}: {reason}{saved}")


def _step(model: nn.Module, criterion: SegmentationLoss, optimizer, scaler, batch, device: torch.device,
          use_amp: bool, it: int, ctx: DistContext | None = None) -> tuple[float, torch.Tensor]:
    """One optimisation step on ``batch``; returns the loss (the mean over ranks when distributed,
    checked on every rank alike) and the main head's loss."""
    images, labels = (t.to(device, non_blocking=True) for t in batch)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        outputs = model(images)
    loss, main = criterion(outputs, labels)
    shown = average(loss.detach(), ctx) if ctx is not None else loss.detach()
    if not torch.isfinite(shown):
        raise TrainingError(f"loss became {shown.item()} at iteration {it}; lower --lr or check the labels")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(shown), main


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


__all__ = ["TrainConfig", "TrainingLog", "log_paths", "TrainResult", "TrainingError", "class_dependent_keys", "evaluate",
           "load_init", "lr_at", "save_checkpoint", "state_path", "train", "training_defaults"]
