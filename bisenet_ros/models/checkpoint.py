"""BiSeNet checkpoints as users have them, and their optional YAML sidecar, in one place.

:class:`Checkpoint` (tensors, architecture, class count, sidecar) is read, fitted to a model and
written here: the sidecar path rule (:func:`sidecar_path`) and the key/shape fitting
(:func:`fit_state_dict`, used for loading and for fine-tuning initialisation) exist once.

Accepted: a plain ``state_dict`` (the public CoinCheung/BiSeNet release format), one wrapped in
``{'state_dict': ...}`` / ``{'model': ...}`` / ``{'model_state_dict': ...}``, keys prefixed
``module.`` (DataParallel), float16 tensors, auxiliary heads present or absent, and
``.safetensors`` files. Pickles are opened with ``weights_only=True``: no code is executed.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from ..errors import CheckpointError, file_problem, one_line, safe_text
from ..safe_yaml import load_yaml_file
from .architectures import architecture

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "weights")

#: key prefixes that identify each architecture's checkpoints
ARCH_SIGNATURES: dict[str, tuple[str, ...]] = {
    "bisenetv1": ("cp.resnet.", "sp.", "ffm."),
    "bisenetv2": ("detail.", "segment.", "bga."),
}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load the tensors of a checkpoint file on the CPU, unwrapped and without ``module.``."""
    path = Path(path).expanduser()
    problem = file_problem(path)
    if problem:
        raise CheckpointError(f"{path}: weights file {problem}")
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
            with warnings.catch_warnings():  # torch's notes on odd pickles: the refusal below says it all
                warnings.simplefilter("ignore")
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle/zip errors of many kinds
            raise CheckpointError(pickle_refusal(path, exc)) from None
    state = _unwrap(obj)
    if state is None:
        raise CheckpointError(f"{path}: no state_dict of tensors found in the file")
    return state


def pickle_refusal(path: Path, exc: BaseException) -> str:
    """The package's own line for a checkpoint ``torch.load(weights_only=True)`` refused: a pickle
    that wants Python objects (it names the first one) or a file that is no checkpoint at all."""
    wanted = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if wanted is None:
        return f"{path}: not a PyTorch checkpoint (neither a zip nor a pickle of tensors, or truncated)"
    what = f" ({safe_text(wanted.group(1), 80)})"
    return (f"{path}: refused: the checkpoint holds Python objects{what}, not only tensors; unpickling them "
            "could run code, so bisenet-ros reads tensors only (save the model's state_dict)")


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


def sidecar_path(weights: str | Path, existing: bool = True) -> Path | None:
    """``model.yaml`` (or ``model.pth.yaml``) next to ``model.pth``: the one that exists (None if
    neither), or with ``existing=False`` where a new sidecar is written (``model.yaml``)."""
    weights = Path(weights).expanduser()
    candidates = [c for c in (weights.with_suffix(".yaml"), weights.with_name(weights.name + ".yaml")) if c != weights]
    if not existing:
        return candidates[0]
    return next((c for c in candidates if c.is_file()), None)


def read_sidecar(weights: str | Path) -> dict[str, Any]:
    """The sidecar's content (architecture, classes, mean/std, input size), or ``{}``."""
    path = sidecar_path(weights)
    if path is None:
        return {}
    data = load_yaml_file(path, "checkpoint sidecar", error=CheckpointError)
    problem = sidecar_problem(data)
    if problem:
        raise CheckpointError(f"{path}: checkpoint sidecar: {problem}")
    return data


def sidecar_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the known keys of a sidecar (types and ranges), or None."""
    arch = data.get("arch")
    if arch is not None and (not isinstance(arch, str) or arch.lower() not in ARCH_SIGNATURES):
        return f"'arch' must be one of {', '.join(ARCH_SIGNATURES)}, got {arch!r:.60}"
    n = data.get("num_classes")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 65535):
        return f"'num_classes' must be an integer in 1..65535, got {n!r:.60}"
    size = data.get("input_size")
    if size is not None and not isinstance(size, str) and not (
            isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                              for v in size)):
        return f"'input_size' must be 'HxW', 'auto32' or [H, W], got {size!r:.60}"
    dataset = data.get("dataset")
    if dataset is not None and not isinstance(dataset, (str, dict)):
        return f"'dataset' must be a preset name or a preset mapping, got {dataset!r:.60}"
    return None


def check_tensor_values(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                        source: str) -> None:
    """Refuse weights that would make every prediction garbage: a non-floating tensor where the
    model has a floating one (int/bool weights), or any NaN/inf value."""
    for key, value in state.items():
        want = expected.get(key)
        if want is None or not want.is_floating_point():
            continue
        if not value.is_floating_point():
            raise CheckpointError(f"{source}: tensor '{key}' is {str(value.dtype).replace('torch.', '')}, "
                                  "weights must be floating point")
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            raise CheckpointError(f"{source}: tensor '{key}' holds {int((~finite).sum())} non-finite values "
                                  "(NaN/inf); the checkpoint is corrupt or diverged")


@dataclass
class Fit:
    """A state dict fitted to a model: ``tensors`` load with ``strict=True``."""

    tensors: dict[str, torch.Tensor]
    reinitialised: list[str] = field(default_factory=list)  # class-dependent heads left freshly initialised
    fresh_aux: list[str] = field(default_factory=list)  # auxiliary-head tensors the file lacks


def fit_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str, arch: str, *,
                   found: str | None = None, role: str | None = None, reinit: frozenset[str] = frozenset()) -> Fit:
    """Check ``state`` against ``model``; every mismatch is a one-line :class:`CheckpointError` naming ``source``.

    Auxiliary-head tensors are dropped when the model has none and keep their fresh initialisation
    when the file has none; dtypes follow the model. ``reinit``: keys (class-dependent heads, for
    fine-tuning to another class count) whose shape may differ; they keep the model's own
    initialisation. ``found``: the architecture the key layout shows, when already detected.
    ``role``: how a wrong architecture is described (default "the model is configured as ARCH").
    """
    found = detect_architecture(state) if found is None else found
    if found is not None and found != arch:
        raise CheckpointError(f"{source}: this is a {found} checkpoint but {role or f'the model is configured as {arch}'}")
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
        raise CheckpointError(f"{source}: not a {arch} checkpoint: {'; '.join(parts) or 'key layout not recognised'}")
    reinitialised = sorted(k for k in cleaned if k in reinit and cleaned[k].shape != expected[k].shape)
    classifier = model.classifier_key
    n_model, n_ckpt = expected[classifier].shape[0], cleaned[classifier].shape[0]
    if n_model != n_ckpt and classifier not in reinitialised:
        raise CheckpointError(f"{source}: checkpoint has {n_ckpt} classes but {n_model} are configured")
    for key, value in cleaned.items():
        if value.shape != expected[key].shape and key not in reinitialised:
            raise CheckpointError(f"{source}: tensor '{key}' has shape {tuple(value.shape)}, "
                                  f"the {arch} model expects {tuple(expected[key].shape)}")
    check_tensor_values({k: v for k, v in cleaned.items() if k not in reinitialised}, expected, source)
    tensors = {k: v.to(expected[k].dtype) if v.is_floating_point() else v
               for k, v in cleaned.items() if k not in reinitialised}
    tensors.update({k: expected[k] for k in (*missing_aux, *reinitialised)})  # their fresh initialisation
    return Fit(tensors, reinitialised, missing_aux)


@dataclass
class Checkpoint:
    """A checkpoint's tensors with what they are: architecture, class count, sidecar (``{}`` if none)."""

    state: dict[str, torch.Tensor]
    arch: str
    num_classes: int
    sidecar: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    found: str | None = None  # the architecture the key layout shows

    @classmethod
    def read(cls, path: str | Path, arch: str | None = None, num_classes: int | None = None) -> Checkpoint:
        """Tensors and sidecar of ``path``; ``arch``/``num_classes`` default to the sidecar's, then
        to what the tensors show (key layout, classifier rows)."""
        sidecar = read_sidecar(path)
        state = read_state_dict(path)
        found = detect_architecture(state)
        arch = (arch or sidecar.get("arch") or found or "").lower()
        if not arch:
            raise CheckpointError(f"{path}: not a BiSeNet checkpoint (key layout not recognised)")
        classifier_key = architecture(arch).classifier_key  # ConfigError for an unknown arch
        if num_classes is None:
            rows = state.get(classifier_key)
            num_classes = sidecar.get("num_classes") or (int(rows.shape[0]) if rows is not None else None) or 19
        return cls(state, arch, int(num_classes), sidecar, Path(path), found)

    def fit(self, model: torch.nn.Module, **options: Any) -> Fit:
        """:func:`fit_state_dict` of these tensors for ``model``."""
        return fit_state_dict(model, self.state, str(self.path), self.arch, found=self.found, **options)

    def write(self, path: str | Path, dtype: torch.dtype | None = None) -> tuple[Path, Path]:
        """The plain ``state_dict`` (floating tensors as ``dtype`` when given) and the sidecar beside it."""
        from ..output_files import atomic_file, write_text

        path = Path(path)
        with atomic_file(path) as tmp:  # an interrupted save leaves the old file, never half a new one
            torch.save({k: v.to(dtype) if dtype is not None and v.is_floating_point() else v
                        for k, v in self.state.items()}, tmp)
        side = sidecar_path(path, existing=False)
        write_text(side, yaml.safe_dump({"arch": self.arch, "num_classes": self.num_classes, **self.sidecar},
                                        sort_keys=False))
        return path, side

