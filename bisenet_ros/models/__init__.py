"""BiSeNet architectures and the one public way to get a ready model: :func:`load_model`.

>>> from bisenet_ros.models import load_model
>>> net = load_model("bisenetv2", weights="model_final_v2_city.pth", num_classes=19, device="cpu")
>>> logits = net(x)   # x: normalised (N,3,H,W) float, H and W multiples of 32 -> (N,19,H,W)
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..checkpoint import detect_architecture, read_sidecar, read_state_dict
from ..errors import CheckpointError, ConfigError
from .bisenetv1 import BiSeNetV1
from .bisenetv2 import BiSeNetV2

ARCHITECTURES: dict[str, type[nn.Module]] = {"bisenetv1": BiSeNetV1, "bisenetv2": BiSeNetV2}

__all__ = ["ARCHITECTURES", "BiSeNetV1", "BiSeNetV2", "LowResLogits", "build_model", "load_model",
           "fit_state_dict", "low_res_view", "resolve_device"]


def _arch_class(arch: str) -> type[nn.Module]:
    try:
        return ARCHITECTURES[arch.lower()]
    except KeyError:
        raise ConfigError(
            f"unknown model '{arch}' (choose from {', '.join(ARCHITECTURES)})"
        ) from None


def build_model(arch: str, num_classes: int = 19, aux_heads: bool = False) -> nn.Module:
    """A freshly initialised model; ``aux_heads`` adds the training-only heads."""
    if int(num_classes) < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    return _arch_class(arch)(num_classes=int(num_classes), aux_heads=aux_heads)


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


def checkpoint_num_classes(arch: str, state: Mapping[str, torch.Tensor]) -> int | None:
    key = _arch_class(arch).classifier_key
    tensor = state.get(key)
    return int(tensor.shape[0]) if tensor is not None else None


def fit_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str, arch: str
) -> dict[str, torch.Tensor]:
    """Check ``state`` against ``model`` and return it ready for ``load_state_dict(strict=True)``.

    Auxiliary-head tensors are dropped when the model has none, and dtypes follow the model.
    Every mismatch becomes a one-line :class:`CheckpointError` naming ``source``.
    """
    found = detect_architecture(state)
    if found is not None and found != arch:
        raise CheckpointError(
            f"{source}: this is a {found} checkpoint but the model is configured as {arch}"
        )
    expected = model.state_dict()
    aux = tuple(getattr(model, "aux_head_prefixes", ()))
    cleaned = {k: v for k, v in state.items() if k in expected or not (aux and k.startswith(aux))}
    missing = [k for k in expected if k not in cleaned and not k.startswith(aux)]
    missing_aux = [k for k in expected if k not in cleaned and k.startswith(aux)]
    unexpected = [k for k in cleaned if k not in expected]
    if found is None or missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        detail = "; ".join(parts) or "key layout not recognised"
        raise CheckpointError(f"{source}: not a {arch} checkpoint: {detail}")
    classifier = model.classifier_key
    n_model, n_ckpt = expected[classifier].shape[0], cleaned[classifier].shape[0]
    if n_model != n_ckpt:
        raise CheckpointError(
            f"{source}: checkpoint has {n_ckpt} classes but {n_model} are configured"
        )
    for key, value in cleaned.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(
                f"{source}: tensor '{key}' has shape {tuple(value.shape)}, "
                f"the {arch} model expects {tuple(expected[key].shape)}"
            )
    if missing_aux:  # the model wants aux heads the file lacks: keep their fresh init
        cleaned.update({k: expected[k] for k in missing_aux})
    return {k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in cleaned.items()}


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
    state = None
    sidecar: dict = {}
    if weights is not None:
        sidecar = read_sidecar(weights)
        state = read_state_dict(weights)
        arch = arch or sidecar.get("arch") or detect_architecture(state)
        if arch is None:
            raise CheckpointError(f"{weights}: not a BiSeNet checkpoint (key layout not recognised)")
        _arch_class(arch)
        if num_classes is None:
            num_classes = sidecar.get("num_classes") or checkpoint_num_classes(arch, state)
    if arch is None:
        raise ConfigError("load_model needs an architecture (bisenetv1 or bisenetv2) or weights")
    model = build_model(arch, num_classes or 19, aux_heads=aux_heads)
    if state is not None:
        model.load_state_dict(fit_state_dict(model, state, str(weights), arch.lower()), strict=True)
    model.eval()
    model.bisenet_info = {  # what was loaded, for diagnostics and reports
        "arch": arch.lower(),
        "num_classes": int(num_classes or 19),
        "weights": str(weights) if weights is not None else None,
        "sidecar": sidecar,
    }
    return model.to(resolve_device(device))


class LowResLogits(nn.Module):
    """A view of a loaded BiSeNet that returns its main logits *before* the final bilinear
    upsampling, at 1/``logit_stride`` of the input (the pipeline resizes them once, exactly, to
    the output size: :mod:`bisenet_ros.postprocess`). Shares the wrapped model's parameters."""

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
