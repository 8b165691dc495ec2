"""BiSeNet architectures and the one public way to get a ready model: :func:`load_model`.

>>> from bisenet_ros.models import load_model
>>> net = load_model("bisenetv2", weights="model_final_v2_city.pth", num_classes=19, device="cpu")
>>> logits = net(x)   # x: normalised (N,3,H,W) float, H and W multiples of 32 -> (N,19,H,W)
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from .architectures import ARCHITECTURES, architecture, build_model
from .bisenetv1 import BiSeNetV1
from .bisenetv2 import BiSeNetV2
from .checkpoint import Checkpoint, fit_state_dict

__all__ = ["ARCHITECTURES", "BiSeNetV1", "BiSeNetV2", "LowResLogits", "architecture", "build_model", "load_model",
           "model_from_checkpoint", "fit_state_dict", "low_res_view", "resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> first CUDA device when present, else CPU; validates ``cuda:N``."""
    text = str(device).strip().lower()
    if text in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise ConfigError(f"invalid device '{device}' (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{device}' requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device '{device}' requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif dev.type != "cpu":
        raise ConfigError(f"unsupported device '{device}' (use auto, cpu, cuda or cuda:N)")
    return dev


def load_model(
    arch: str | None = None,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    aux_heads: bool = False,
) -> nn.Module:
    """An eval-mode BiSeNet on ``device``, with ``weights`` loaded when given.

    ``arch`` and ``num_classes`` default to the checkpoint's sidecar (``model.yaml`` next to
    ``model.pth``), then to what the checkpoint itself shows. ``model(x)`` returns logits at the
    input resolution. Errors are :class:`CheckpointError`/:class:`ConfigError` with one line.
    """
    if weights is not None:
        return model_from_checkpoint(Checkpoint.read(weights, arch, num_classes), device, aux_heads)
    if arch is None:
        raise ConfigError("load_model needs an architecture (bisenetv1 or bisenetv2) or weights")
    model = build_model(arch, num_classes or 19, aux_heads=aux_heads).eval()
    model.bisenet_info = {"arch": arch.lower(), "num_classes": int(num_classes or 19), "weights": None}
    return model.to(resolve_device(device))


def model_from_checkpoint(ckpt: Checkpoint, device: str | torch.device = "cpu", aux_heads: bool = False) -> nn.Module:
    """An eval-mode model of ``ckpt``'s architecture and class count with its tensors, on ``device``."""
    model = build_model(ckpt.arch, ckpt.num_classes, aux_heads=aux_heads)
    model.load_state_dict(ckpt.fit(model).tensors, strict=True)
    model.eval()
    model.bisenet_info = {"arch": ckpt.arch, "num_classes": ckpt.num_classes, "weights": str(ckpt.path)}  # for reports
    return model.to(resolve_device(device))


class LowResLogits(nn.Module):
    """A view of a loaded BiSeNet that returns its main logits *before* the final bilinear
    upsampling, at 1/``logit_stride`` of the input (the pipeline resizes them once, exactly, to
    the output size: :mod:`bisenet_ros.inference.postprocess`). Shares the wrapped model's parameters."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.logit_stride = int(net.logit_stride)
        self.classifier_key = "net." + net.classifier_key
        self.bisenet_info = getattr(net, "bisenet_info", {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.logits_low(x)


def low_res_view(net: nn.Module) -> nn.Module:
    """``net`` as a :class:`LowResLogits` (unchanged when it already is one)."""
    return net if isinstance(net, LowResLogits) else LowResLogits(net)
