"""Inference backends: how the model's forward pass is executed.

A runner is a callable ``runner(x) -> logits`` on normalised (N,3,H,W) tensors on the pipeline's
device, with ``name`` and ``precision`` attributes. ``create_runner`` builds one by name.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .errors import ConfigError

BACKENDS = ("auto", "torch")
PRECISIONS = ("auto", "fp32", "fp16")


class TorchRunner:
    """Eager PyTorch; float16 autocast on CUDA when ``precision`` is fp16."""

    name = "torch"

    def __init__(self, model: nn.Module, device: torch.device, precision: str) -> None:
        self.model = model.eval()
        self.device = device
        self.precision = precision

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision == "fp16":
            with torch.autocast(device_type="cuda", dtype=torch.float16):
                return self.model(x)
        return self.model(x)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> fp16 on CUDA, fp32 on CPU; fp16 on CPU is refused."""
    text = (precision or "auto").lower()
    if text not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if text == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if text == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; use fp32 on the CPU")
    return text


def create_runner(
    model: nn.Module,
    backend: str = "auto",
    device: torch.device | str = "cpu",
    precision: str = "auto",
    input_size: Sequence[int] | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A runner for ``model`` on ``device`` with the named backend."""
    device = torch.device(device)
    name = (backend or "auto").lower()
    if name not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got '{backend}'")
    return TorchRunner(model, device, resolve_precision(precision, device))
