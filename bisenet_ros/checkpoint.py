"""Reading BiSeNet checkpoints as users have them, and their optional YAML sidecar.

Accepted: a plain ``state_dict`` (the public CoinCheung/BiSeNet release format), one wrapped in
``{'state_dict': ...}`` / ``{'model': ...}`` / ``{'model_state_dict': ...}``, keys prefixed
``module.`` (DataParallel), float16 tensors, auxiliary heads present or absent, and
``.safetensors`` files. Pickles are opened with ``weights_only=True``: no code is executed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from .errors import CheckpointError, one_line

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "weights")

#: key prefixes that identify each architecture's checkpoints
ARCH_SIGNATURES: dict[str, tuple[str, ...]] = {
    "bisenetv1": ("cp.resnet.", "sp.", "ffm."),
    "bisenetv2": ("detail.", "segment.", "bga."),
}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load the tensors of a checkpoint file on the CPU, unwrapped and without ``module.``."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: weights file not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:  # pragma: no cover - safetensors is a dependency
            raise CheckpointError(f"{path}: reading .safetensors needs the safetensors package") from None
        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a safetensors file ({one_line(exc)})") from None
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle/zip errors of many kinds
            raise CheckpointError(
                f"{path}: not a PyTorch checkpoint or holds non-tensor objects ({one_line(exc)})"
            ) from None
    state = _unwrap(obj)
    if state is None:
        raise CheckpointError(f"{path}: no state_dict of tensors found in the file")
    return state


def _unwrap(obj: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                found = _unwrap(inner)
                if found is not None:
                    return found
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) >= len(obj) // 2:
            return {_strip_prefix(k): v for k, v in tensors.items()}
    return None


def _strip_prefix(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def detect_architecture(state: Mapping[str, torch.Tensor]) -> str | None:
    """``bisenetv1``/``bisenetv2`` from the key layout, or None if neither matches."""
    scores = {
        arch: sum(any(k.startswith(p) for k in state) for p in prefixes)
        for arch, prefixes in ARCH_SIGNATURES.items()
    }
    best = max(scores, key=scores.get)
    return best if scores[best] >= 2 else None


def sidecar_path(weights: str | Path) -> Path | None:
    """``model.yaml`` (or ``model.pth.yaml``) next to ``model.pth``, when present."""
    weights = Path(weights).expanduser()
    for cand in (weights.with_suffix(".yaml"), weights.with_name(weights.name + ".yaml")):
        if cand != weights and cand.is_file():
            return cand
    return None


def read_sidecar(weights: str | Path) -> dict[str, Any]:
    """The sidecar's content (architecture, classes, mean/std, input size), or ``{}``."""
    path = sidecar_path(weights)
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint sidecar ({one_line(exc)})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: checkpoint sidecar must be a YAML mapping")
    return data
