"""An ``export-onnx`` file is weights like any other: classes, mean/std, palette and input size come
from its own metadata, no sidecar needed (``segment --weights street.onnx``)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bisenet_ros.cli import main
from bisenet_ros.inference.onnx_model import sidecar_from_metadata, sidecar_of
from bisenet_ros.pipeline import build_pipeline

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "models" / "bisenetv2_synthetic_street.pth"  # sidecar: 256x320, synthetic_street, 7 classes


@pytest.fixture(scope="module")
def street_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "street.onnx"
    assert main(["export-onnx", "--weights", str(DEMO), "--out", str(out), "--no-verify"]) == 0
    return out


def test_exported_file_reads_as_weights_without_sidecar(street_onnx, tmp_path, capsys):
    assert not sidecar_of(street_onnx).exists()
    side = sidecar_from_metadata(street_onnx)
    assert side["arch"] == "bisenetv2" and side["num_classes"] == 7 and side["input_size"] == [256, 320]
    onnx_pipe = build_pipeline(weights=str(street_onnx), input_size=None)  # None: the model's own
    torch_pipe = build_pipeline(weights=str(DEMO), input_size=None)
    assert onnx_pipe.preset.class_names == torch_pipe.preset.class_names
    np.testing.assert_array_equal(onnx_pipe.preset.palette, torch_pipe.preset.palette)
    assert list(onnx_pipe.preset.mean) == list(torch_pipe.preset.mean)
    assert onnx_pipe.input_size == (256, 320) and onnx_pipe.info["precision"] == "fp32"
    from bisenet_ros.data.synthetic_scenes import generate_scene

    rgb = generate_scene(3)[0]
    a = onnx_pipe(rgb, "rgb8", outputs=()).labels
    b = torch_pipe(rgb, "rgb8", outputs=()).labels
    assert (a == b).mean() > 0.99  # same model, another runtime
    # the command users type
    cv2.imwrite(str(tmp_path / "street.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert main(["segment", str(tmp_path / "street.png"), "--weights", str(street_onnx),
                 "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    labels = cv2.imread(str(tmp_path / "out" / "street_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == rgb.shape[:2] and labels.max() < 7


def test_dynamic_size_export_needs_a_size(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "dyn.onnx"
    assert main(["export-onnx", "--weights", str(tiny_checkpoints["bisenetv1"]), "--out", str(out),
                 "--input-size", "64x64", "--dynamic-size", "--no-verify"]) == 0
    img = tmp_path / "i.png"
    cv2.imwrite(str(img), np.full((40, 50, 3), 90, np.uint8))
    capsys.readouterr()
    assert main(["segment", str(img), "--weights", str(out), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "dynamic input size" in err and "--input-size" in err
    assert main(["segment", str(img), "--weights", str(out), "--out", str(tmp_path / "b"),
                 "--input-size", "64x96"]) == 0


def test_onnx_without_metadata_or_sidecar_is_refused(tmp_path, capsys):
    import io

    from bisenet_ros.inference.export import export_onnx
    from bisenet_ros.models import load_model

    bare = tmp_path / "bare.onnx"
    bare.write_bytes(export_onnx(load_model("bisenetv1", num_classes=3), io.BytesIO(), (64, 64)).getvalue())
    img = tmp_path / "i.png"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    assert main(["segment", str(img), "--weights", str(bare), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "sidecar bare.onnx.yaml" in err and "export-onnx" in err
