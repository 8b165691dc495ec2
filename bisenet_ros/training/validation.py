"""Validation mIoU during training, through the shared pipeline and :class:`ConfusionMatrix`.

Single process: the model itself, every image. Distributed: each rank scores its share of the
images on a plain copy of the model carrying rank 0's weights and BatchNorm statistics, and the
confusion matrices are summed over ranks -- the figure one process gets from the saved checkpoint.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..evaluation.metrics import ConfusionMatrix
from ..pipeline import SegmentationPipeline
from .distributed import DistContext, sum_confusion, sync_buffers


@torch.no_grad()
def evaluate(model: nn.Module, dataset, device: torch.device, precision: str = "fp32",
             ctx: DistContext | None = None) -> dict:
    """mIoU of ``model`` on ``dataset`` through the shared pipeline (auto32 input size) and
    :class:`ConfusionMatrix`, as ``eval-bag`` computes it. Leaves the model in eval mode.
    With a distributed ``ctx``, this rank scores images ``rank, rank + world, ...`` and the
    matrices are summed over ranks (every rank gets the total)."""
    from ..inference.backends import create_runner

    runner = create_runner(model, backend="torch", device=device, precision=precision)
    pipe = SegmentationPipeline(runner, dataset.preset, None, device)
    cm = ConfusionMatrix(dataset.preset.num_classes, dataset.preset.ignore_index)
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None and ctx.active else (0, 1)
    for i in range(rank, len(dataset), world):
        img, gt = dataset.load(i)
        cm.update(pipe(img, "rgb8", outputs=()).labels, gt)
    if ctx is not None:
        sum_confusion(cm, ctx, device)
    return cm.compute(list(dataset.preset.class_names))


def plain_copy(module: nn.Module, arch: str, device: torch.device) -> nn.Module:
    """The model as a single process would load the checkpoint: plain BatchNorm, no DDP."""
    from ..models import build_model

    copy = build_model(arch, module.num_classes, aux_heads=True)
    copy.load_state_dict({k: v.detach() for k, v in module.state_dict().items()})
    return copy.to(device)


def validate(module: nn.Module, val_ds, device: torch.device, use_amp: bool, done: int,
             log: Callable[[str], None], ctx: DistContext, arch: str) -> dict:
    """mIoU on the validation set after ``done`` iterations (logged); the model back in training mode."""
    precision = "fp16" if use_amp else "fp32"
    if ctx.active:
        sync_buffers(module, ctx)
        metrics = evaluate(plain_copy(module, arch, device), val_ds, device, precision, ctx)
    else:
        metrics = evaluate(module, val_ds, device, precision)
    module.train()
    log(f"iter {done}: val mIoU {metrics['miou'] or 0.0:.4f} " + per_class(metrics))
    return {"iteration": done, "miou": metrics["miou"], "iou": metrics["per_class_iou"]}


def baseline(module: nn.Module, val_ds, device: torch.device, init: str, log: Callable[[str], None],
             ctx: DistContext, arch: str) -> dict:
    """The ``--init`` checkpoint's own validation mIoU, before any fine-tuning (iteration 0)."""
    target = plain_copy(module, arch, device) if ctx.active else module
    metrics = evaluate(target, val_ds, device, ctx=ctx if ctx.active else None)
    module.train()
    log(f"baseline: {init} scores val mIoU {metrics['miou'] or 0.0:.4f} before fine-tuning " + per_class(metrics))
    return {"iteration": 0, "miou": metrics["miou"], "iou": metrics["per_class_iou"]}


def per_class(metrics: dict) -> str:
    iou = metrics.get("per_class_iou") or {}
    if isinstance(iou, dict):
        return "(" + ", ".join(f"{k} {v:.3f}" for k, v in iou.items() if v is not None) + ")"
    return ""
