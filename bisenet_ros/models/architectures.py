"""The BiSeNet architectures by name: the one list of model names (:data:`ARCHITECTURES`) that
options, parameters and checkpoints are checked against."""
from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from .bisenetv1 import BiSeNetV1
from .bisenetv2 import BiSeNetV2

ARCHITECTURES: dict[str, type[nn.Module]] = {"bisenetv1": BiSeNetV1, "bisenetv2": BiSeNetV2}


def architecture(arch: str) -> type[nn.Module]:
    """The model class of ``bisenetv1``/``bisenetv2`` (ConfigError for anything else)."""
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
    return architecture(arch)(num_classes=int(num_classes), aux_heads=aux_heads)
