"""Segmentation losses: cross-entropy or OHEM cross-entropy, over the main and auxiliary heads."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class OhemCrossEntropy(nn.Module):
    """Online hard example mining (as in the public BiSeNet training): average the per-pixel
    cross-entropy over pixels whose loss exceeds ``-log(thresh)``, but over at least the
    ``1/min_fraction`` hardest labelled pixels."""

    def __init__(self, ignore_index: int = 255, thresh: float = 0.7, min_fraction: int = 16) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.loss_thresh = -math.log(thresh)
        self.min_fraction = min_fraction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index, reduction="none").view(-1)
        labelled = int((target != self.ignore_index).sum())
        if labelled == 0:
            return loss.sum() * 0.0  # nothing labelled: zero, but keep the graph
        n_min = max(1, labelled // self.min_fraction)
        hard = loss[loss > self.loss_thresh]
        if hard.numel() < n_min:
            hard, _ = loss.topk(n_min)  # ignored pixels have loss 0: never among the top n_min
        return hard.mean()


class CrossEntropy(nn.Module):
    """Plain cross-entropy over labelled pixels (zero when nothing is labelled)."""

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not (target != self.ignore_index).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index)


class SegmentationLoss(nn.Module):
    """``main_loss + aux_weight * sum(aux_losses)``; returns (total, main) for logging."""

    def __init__(self, ignore_index: int = 255, ohem: bool = False, ohem_thresh: float = 0.7,
                 aux_weight: float = 1.0) -> None:
        super().__init__()
        self.criterion = OhemCrossEntropy(ignore_index, ohem_thresh) if ohem else CrossEntropy(ignore_index)
        self.aux_weight = aux_weight

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor],
                target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        main = self.criterion(outputs[0], target)
        total = main
        for aux in outputs[1:]:
            total = total + self.aux_weight * self.criterion(aux, target)
        return total, main
