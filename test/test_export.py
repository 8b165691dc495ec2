"""ONNX export: dynamic batch, verified against eager; the export-onnx command and its errors."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from bisenet_ros.cli import main
from bisenet_ros.errors import ConfigError
from bisenet_ros.inference.export import export_onnx, onnx_session, relative_error, verify_onnx
from bisenet_ros.models import load_model

REPO = Path(__file__).resolve().parents[1]


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


def test_export_onnx_takes_the_shared_model_options(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "camvid.onnx"
    rc = main(["export-onnx", "--weights", str(tiny_checkpoints["bisenetv2"]), "--out", str(out),
               "--model", "bisenetv2", "--num-classes", "5", "--dataset", "camvid", "--mean", "0.5,0.5,0.5",
               "--std", "0.25,0.25,0.25", "--input-size", "64x64", "--device", "cpu", "--precision", "fp32",
               "--backend", "auto", "--no-verify"])
    assert rc == 0, capsys.readouterr().err
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["bisenet_ros.dataset"] == "camvid" and meta["bisenet_ros.num_classes"] == "5"
    assert json.loads(meta["bisenet_ros.mean"]) == [0.5] * 3 and json.loads(meta["bisenet_ros.std"]) == [0.25] * 3
    assert json.loads(meta["bisenet_ros.class_names"])[0] == "sky" and meta["bisenet_ros.input_size"] == "64x64"
    # refused with one line: what cannot apply to an ONNX export
    for argv, needle in ([["--precision", "fp16"], "float32 graph"], [["--backend", "onnxruntime"], "does not apply"]):
        assert main(["export-onnx", "--weights", str(tiny_checkpoints["bisenetv2"]), "--out", str(out), *argv]) == 2
        assert needle in capsys.readouterr().err


def test_export_onnx_input_size_from_the_sidecar(tmp_path, capsys):
    weights = REPO / "models" / "bisenetv2_synthetic_street.pth"  # its sidecar says 256x320, 7 classes
    out = tmp_path / "demo.onnx"
    assert main(["export-onnx", "--weights", str(weights), "--out", str(out), "--no-verify"]) == 0
    graph = onnx.load(str(out))
    assert [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 256, 320]
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["bisenet_ros.dataset"] == "synthetic_street" and meta["bisenet_ros.num_classes"] == "7"


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
        (["--weights", weights, "--out", str(tmp_path / "a.onnx"), "--input-size", "0x0"], "fixed --input-size"),
        (["--weights", weights, "--out", str(tmp_path / "a.onnx"), "--input-size", "8192x8192", "--no-verify"],
         "more than a model input may have"),
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
