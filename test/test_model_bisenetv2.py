"""Tests for bisenet_ros.models.bisenetv2: shapes, state_dict layout, and fidelity to the public
CoinCheung/BiSeNet implementation (reference fixtures in shared/bisenet-reference)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bisenet_ros.models.bisenetv2 import BiSeNetV2

REFERENCE_DIR = Path(
    os.environ.get(
        "BISENET_REFERENCE_DIR",
        Path(__file__).resolve().parents[2] / "shared" / "bisenet-reference",
    )
)


def test_shapes_and_keys() -> None:
    torch.manual_seed(0)
    model = BiSeNetV2(num_classes=7, aux_heads=True)

    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 128))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 7, 64, 128)

    # Training mode needs batch >= 2: the context embedding block batch-normalises pooled 1x1
    # features (same as the reference implementation).
    model.train()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 64, 128))
    assert isinstance(outs, tuple) and len(outs) == 5
    for o in outs:
        assert o.shape == (2, 7, 64, 128)

    sd = model.state_dict()
    assert sd[BiSeNetV2.classifier_key].shape[0] == 7
    assert any(k.startswith(BiSeNetV2.aux_head_prefixes) for k in sd)

    plain = BiSeNetV2(num_classes=7, aux_heads=False)
    plain_keys = set(plain.state_dict())
    assert not any(k.startswith(BiSeNetV2.aux_head_prefixes) for k in plain_keys)
    assert plain_keys == {k for k in sd if not k.startswith(BiSeNetV2.aux_head_prefixes)}
    plain.train()
    with torch.no_grad():
        out = plain(torch.randn(2, 3, 64, 128))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7, 64, 128)

    manifest = REFERENCE_DIR / "manifest.json"
    if manifest.is_file():
        ref_shapes = json.loads(manifest.read_text())["state_dict_shapes"]["bisenetv2"]
        ours = BiSeNetV2(num_classes=int(ref_shapes[BiSeNetV2.classifier_key][0])).state_dict()
        assert set(ours) == set(ref_shapes)
        for key, shape in ref_shapes.items():
            assert list(ours[key].shape) == list(shape), key


def test_fidelity_to_reference() -> None:
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference fixtures not found at {REFERENCE_DIR}")
    state = torch.load(REFERENCE_DIR / "bisenetv2.pth", map_location="cpu", weights_only=True)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    num_classes = state[BiSeNetV2.classifier_key].shape[0]

    model = BiSeNetV2(num_classes=num_classes, aux_heads=True)
    model.load_state_dict(state, strict=True)
    model.eval()

    x = torch.from_numpy(np.load(REFERENCE_DIR / "bisenetv2_input.npy")).float()
    ref = torch.from_numpy(np.load(REFERENCE_DIR / "bisenetv2_logits.npy")).float()
    ref_labels = np.load(REFERENCE_DIR / "bisenetv2_labels.npy")
    with torch.no_grad():
        logits = model(x)

    assert logits.shape == ref.shape
    rel_err = (torch.linalg.vector_norm(logits - ref) / torch.linalg.vector_norm(ref)).item()
    assert rel_err < 1e-3, f"relative L2 error {rel_err:.3e}"
    labels = logits.argmax(dim=1)[0].numpy()
    agreement = float((labels == ref_labels.astype(np.int64)).mean())
    assert agreement >= 0.999, f"argmax agreement {agreement:.5f}"
