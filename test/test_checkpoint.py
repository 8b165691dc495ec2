"""Checkpoint loading: the formats users have, and one-line errors for everything else."""
from __future__ import annotations

import pytest
import torch

from bisenet_ros.models.checkpoint import detect_architecture, read_state_dict
from bisenet_ros.errors import CheckpointError
from bisenet_ros.models import ARCHITECTURES, load_model


def _logits(net, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        return net(x)


@pytest.mark.parametrize("arch", ["bisenetv1", "bisenetv2"])
def test_plain_and_wrapped_formats_give_identical_models(arch, tiny_checkpoints, tmp_path):
    state = torch.load(tiny_checkpoints[arch], weights_only=True)
    ref = _logits(load_model(arch, weights=tiny_checkpoints[arch], num_classes=5))
    variants = {
        "wrapped_state_dict.pth": {"state_dict": state, "epoch": 3},
        "wrapped_model.pth": {"model": state},
        "module_prefix.pth": {f"module.{k}": v for k, v in state.items()},
        "fp16.pth": {k: v.half() if v.is_floating_point() else v for k, v in state.items()},
        "no_aux.pth": {k: v for k, v in state.items() if not k.startswith(ARCHITECTURES[arch].aux_head_prefixes)},
    }
    for name, obj in variants.items():
        path = tmp_path / name
        torch.save(obj, path)
        out = _logits(load_model(arch, weights=path, num_classes=5))
        tol = 2e-2 if "fp16" in name else 1e-6
        rel = ((out - ref).norm() / ref.norm()).item()
        assert rel < tol, (name, rel)


def test_safetensors(tiny_checkpoints, tmp_path):
    from safetensors.torch import save_file

    state = torch.load(tiny_checkpoints["bisenetv2"], weights_only=True)
    path = tmp_path / "v2.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    ref = _logits(load_model("bisenetv2", weights=tiny_checkpoints["bisenetv2"]))
    assert torch.allclose(_logits(load_model("bisenetv2", weights=path)), ref)


def test_arch_and_classes_are_inferred_from_the_checkpoint(tiny_checkpoints):
    net = load_model(weights=tiny_checkpoints["bisenetv1"])
    assert net.bisenet_info["arch"] == "bisenetv1"
    assert net.bisenet_info["num_classes"] == 5
    assert not net.training
    state = read_state_dict(tiny_checkpoints["bisenetv2"])
    assert detect_architecture(state) == "bisenetv2"


def _error(**kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        load_model(**kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    msg = _error(arch="bisenetv2", weights=tmp_path / "nope.pth")
    assert "nope.pth" in msg and "not found" in msg


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("this is not a checkpoint")
    msg = _error(arch="bisenetv2", weights=path)
    assert "notes.pth" in msg and "not a PyTorch checkpoint" in msg


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": _Evil()}, path)
    msg = _error(arch="bisenetv2", weights=path)
    assert "evil.pth" in msg


class _Evil:
    def __reduce__(self):
        return (print, ("code executed",))


def test_other_architecture_is_named(tiny_checkpoints):
    msg = _error(arch="bisenetv2", weights=tiny_checkpoints["bisenetv1"], num_classes=5)
    assert "bisenetv1 checkpoint" in msg and "bisenetv2" in msg


def test_class_count_mismatch_names_both_numbers(tiny_checkpoints):
    msg = _error(arch="bisenetv2", weights=tiny_checkpoints["bisenetv2"], num_classes=19)
    assert "5 classes" in msg and "19" in msg


def test_wrong_architecture_lists_missing_and_unexpected_keys(tiny_checkpoints, tmp_path):
    state = torch.load(tiny_checkpoints["bisenetv2"], weights_only=True)
    state = {k.replace("bga.", "fusion."): v for k, v in state.items()}
    path = tmp_path / "renamed.pth"
    torch.save(state, path)
    msg = _error(arch="bisenetv2", weights=path, num_classes=5)
    assert "missing keys" in msg and "unexpected keys" in msg and "bga." in msg and "fusion." in msg


def test_shape_mismatch(tiny_checkpoints, tmp_path):
    state = torch.load(tiny_checkpoints["bisenetv2"], weights_only=True)
    key = "detail.S1.0.conv.weight"
    state[key] = torch.zeros(8, 3, 3, 3)
    path = tmp_path / "bad_shape.pth"
    torch.save(state, path)
    msg = _error(arch="bisenetv2", weights=path, num_classes=5)
    assert key in msg and "shape" in msg


def test_empty_dict(tmp_path):
    path = tmp_path / "empty.pth"
    torch.save({"epoch": 1}, path)
    assert "no state_dict" in _error(arch="bisenetv1", weights=path)


def test_checkpoint_reads_writes_and_fits_in_one_place(tiny_checkpoints, tmp_path):
    from bisenet_ros.models.checkpoint import Checkpoint, sidecar_path
    from bisenet_ros.models import build_model

    ckpt = Checkpoint.read(tiny_checkpoints["bisenetv2"])
    assert (ckpt.arch, ckpt.num_classes, ckpt.sidecar, ckpt.found) == ("bisenetv2", 5, {}, "bisenetv2")
    path, side = Checkpoint(ckpt.state, "bisenetv2", 5, {"input_size": [64, 96]}).write(tmp_path / "m.pth",
                                                                                          torch.float16)
    assert side == sidecar_path(path) == sidecar_path(path, existing=False) == tmp_path / "m.yaml"
    again = Checkpoint.read(path)
    assert again.sidecar == {"arch": "bisenetv2", "num_classes": 5, "input_size": [64, 96]}
    assert all(v.dtype == torch.float16 for v in again.state.values() if v.is_floating_point())
    fit = again.fit(build_model("bisenetv2", 5))  # no aux heads in the model: the file's are dropped
    assert fit.tensors and not fit.reinitialised and not any(k.startswith("aux") for k in fit.tensors)
    assert all(v.dtype == torch.float32 for v in fit.tensors.values() if v.is_floating_point())
    net = load_model(weights=path)
    assert net.bisenet_info == {"arch": "bisenetv2", "num_classes": 5, "weights": str(path)}  # no sidecar on it
