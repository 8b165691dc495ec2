"""A model's weights before training: near-uniform classifiers (:func:`init_classifiers`) and
fine-tuning from a published or earlier checkpoint (:func:`load_init`), where the heads whose
shape depends on the class count (:func:`class_dependent_keys`) may start afresh.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..models import build_model
from ..models.checkpoint import Checkpoint


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
    for key in sorted(keys):  # a set: its order changes with every process (hash seed), the draws must not
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
