"""Tests for bisenet_ros.models.bisenetv1: structure, and fidelity to the public
CoinCheung/BiSeNet implementation via the reference fixtures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bisenet_ros.models.bisenetv1 import BiSeNetV1

REFERENCE_DIR = Path(
    os.environ.get(
        "BISENET_REFERENCE_DIR",
        Path(__file__).resolve().parents[2] / "shared" / "bisenet-reference",
    )
)


def test_bisenetv1_shapes_and_keys() -> None:
    torch.manual_seed(0)
    model = BiSeNetV1(num_classes=7).eval()
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 7, 64, 128)

    # Training mode (BatchNorm after global pooling needs batch > 1).
    model.train()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 64, 128))
    assert isinstance(outs, tuple) and len(outs) == 3
    assert all(o.shape == (2, 7, 64, 128) for o in outs)

    keys = set(model.state_dict())
    assert model.classifier_key in keys
    assert model.state_dict()[model.classifier_key].shape[0] == 7
    assert any(k.startswith(model.aux_head_prefixes) for k in keys)

    no_aux = BiSeNetV1(num_classes=7, aux_heads=False)
    no_aux_keys = set(no_aux.state_dict())
    assert not any(k.startswith(no_aux.aux_head_prefixes) for k in no_aux_keys)
    assert no_aux_keys == {k for k in keys if not k.startswith(model.aux_head_prefixes)}
    no_aux.train()
    with torch.no_grad():
        single = no_aux(torch.randn(2, 3, 64, 128))
    assert isinstance(single, torch.Tensor) and single.shape == (2, 7, 64, 128)

    manifest = REFERENCE_DIR / "manifest.json"
    if manifest.is_file():
        shapes = json.loads(manifest.read_text())["state_dict_shapes"]["bisenetv1"]
        assert keys == set(shapes)
        # Shapes depend on num_classes only in the classifier convs.
        ref19 = BiSeNetV1(num_classes=19).state_dict()
        assert {k: list(v.shape) for k, v in ref19.items()} == shapes


def test_bisenetv1_matches_reference() -> None:
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference fixtures not found at {REFERENCE_DIR}")

    state = torch.load(REFERENCE_DIR / "bisenetv1.pth", map_location="cpu", weights_only=True)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model = BiSeNetV1(num_classes=19, aux_heads=True)
    model.load_state_dict(state, strict=True)
    model.eval()

    x = torch.from_numpy(np.load(REFERENCE_DIR / "bisenetv1_input.npy"))
    ref = torch.from_numpy(np.load(REFERENCE_DIR / "bisenetv1_logits.npy")).float()
    labels = np.load(REFERENCE_DIR / "bisenetv1_labels.npy")

    with torch.no_grad():
        logits = model(x)

    assert logits.shape == ref.shape
    rel_err = ((logits - ref).norm() / ref.norm()).item()
    assert rel_err < 1e-3, f"relative L2 error {rel_err:.3e}"

    pred = logits.argmax(dim=1)[0].numpy()
    agreement = float((pred == labels).mean())
    assert agreement >= 0.999, f"argmax agreement {agreement:.5f}"
