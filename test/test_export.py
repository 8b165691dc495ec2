"""ONNX export: dynamic batch, verified against eager; the export-onnx command and its errors."""
from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch

from bisenet_ros.cli import main
from bisenet_ros.errors import ConfigError
from bisenet_ros.export import export_onnx, onnx_session, relative_error, verify_onnx
from bisenet_ros.models import load_model


@pytest.mark.parametrize("arch", ["bisenetv1", "bisenetv2"])
def test_export_onnx_command_round_trip(tiny_checkpoints, tmp_path, capsys, arch):
    out = tmp_path / f"{arch}.onnx"
    rc = main(["export-onnx", "--weights", str(tiny_checkpoints[arch]), "--out", str(out),
               "--input-size", "64x96"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "batch 1:" in printed and "batch 2:" in printed
    graph = onnx.load(str(out))
    onnx.checker.check_model(graph)
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 64, 96]
    # run it ourselves at batch 1 and 2 against eager
    net = load_model(weights=tiny_checkpoints[arch])
    session = onnx_session(out)
    for n in (1, 2):
        x = torch.randn(n, 3, 64, 96)
        with torch.inference_mode():
            ref = net(x)
        got = session.run(None, {"input": x.numpy()})[0]
        assert got.shape == (n, 5, 64, 96)
        assert relative_error(got, ref) < 1e-3


def test_dynamic_size_export_runs_other_sizes(tiny_checkpoints):
    net = load_model(weights=tiny_checkpoints["bisenetv1"])
    buf = export_onnx(net, io.BytesIO(), (64, 64), dynamic_size=True)
    errors = verify_onnx(net, buf.getvalue(), (96, 128), batch_sizes=(1, 2))
    assert set(errors) == {1, 2} and max(errors.values()) < 1e-3


def test_relative_error_detects_a_difference():
    a = np.ones((1, 2, 4, 4), np.float32)
    assert relative_error(a, a) == 0.0
    assert relative_error(a * 1.01, a) == pytest.approx(0.01, rel=1e-6)


def test_export_errors_are_one_line(tiny_checkpoints, tmp_path, capsys):
    weights = str(tiny_checkpoints["bisenetv2"])
    cases = [
        (["--weights", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "a.onnx")], "missing.pth"),
        (["--weights", weights, "--out", str(tmp_path / "a.onnx"), "--opset", "99"], "opset 99"),
        (["--weights", weights, "--out", str(tmp_path / "a.onnx"), "--input-size", "100x100"], "multiples of 32"),
        (["--weights", weights, "--out", str(tmp_path / "a.onnx"), "--input-size", "auto32"], "fixed --input-size"),
        (["--weights", weights, "--out", str(tmp_path / "a.txt")], "should end in .onnx"),
    ]
    for argv, needle in cases:
        assert main(["export-onnx", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err and err.startswith("bisenet-ros export-onnx: error:")


def test_float16_export_needs_cuda():
    net = load_model("bisenetv2", num_classes=3)
    if torch.cuda.is_available():
        pytest.skip("checks the CPU refusal")
    with pytest.raises(ConfigError, match="float16 ONNX export needs"):
        export_onnx(net, io.BytesIO(), (64, 64), half=True)
