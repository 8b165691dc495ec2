"""`bisenet-ros quantize`: int8 ONNX from unlabelled frames, loadable as weights, safe with files.

Small models and images only; the speed-up is printed, never asserted (see docs/benchmarks.md).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from bisenet_ros.inference import quantization as q
from bisenet_ros.cli import main
from bisenet_ros.errors import ConfigError
from bisenet_ros.pipeline import build_pipeline
from bisenet_ros.data.synthetic_scenes import generate_scene, write_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Unlabelled calibration images and a labelled validation folder (synthetic streets, 64x96)."""
    root = tmp_path_factory.mktemp("quant")
    images = root / "unlabelled"
    images.mkdir()
    for i in range(6):
        img, _ = generate_scene(100 + i, (64, 96))
        cv2.imwrite(str(images / f"f{i}.png"), img[..., ::-1])
    val = write_dataset(root / "val", 3, seed=200, size=(64, 96))
    return images, val


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A randomly initialised 7-class BiSeNetV2 (the synthetic scenes' classes)."""
    import torch

    from bisenet_ros.models import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("q_ckpt") / "v2_7cls.pth"
    torch.save(build_model("bisenetv2", 7).state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def quantized(weights, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("q_out") / "tiny_int8.onnx"
    images, val = data
    argv = ["quantize", "--weights", weights, "--calibration", str(images),
            "--out", str(out), "--input-size", "64x96", "--val", str(val), "--bench-runs", "1"]
    return out, argv


def data_val(quantized):
    """The --val folder of the quantize command line."""
    from pathlib import Path

    argv = quantized[1]
    return Path(argv[argv.index("--val") + 1])


def test_quantize_writes_a_loadable_int8_model_with_its_figures(quantized, weights, capsys):
    out, argv = quantized
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "speed-up (model only, 64x96" in printed.out and "labels equal to fp32 on 1 held-out" in printed.out
    assert "mIoU on" in printed.out and "calibrating" not in printed.err  # no bar off a terminal
    side = yaml.safe_load((out.parent / "tiny_int8.onnx.yaml").read_text())
    assert side["created_by"] == "bisenet-ros quantize" and side["precision"] == "int8"
    assert side["arch"] == "bisenetv2" and side["num_classes"] == 7 and side["input_size"] == [64, 96]
    assert side["calibration"]["frames"] == 5 and side["calibration"]["float_nodes"]  # classifier kept float
    assert 0.0 <= side["held_out"]["label_agreement"] <= 1.0 and "miou_int8" in side["val"]
    # --activations auto: both schemes tried on the held-out frames, the kept one is the rule's choice
    tried = side["calibration"]["activations_tried"]
    assert set(tried) == {"symmetric", "asymmetric"} and "activations tried on the held-out frames" in printed.out
    kept = q.choose_activations(tried)
    assert side["calibration"]["activations"] == f"uint8 per tensor ({kept})"
    assert side["held_out"]["label_agreement"] == pytest.approx(tried[kept]["label_agreement"], abs=1e-5)
    share = _share_at_128(out)  # --out holds the kept model
    assert share > 0.9 if kept == "symmetric" else share < 0.5
    pipe = build_pipeline(weights=str(out), input_size=None)
    assert pipe.info["precision"] == "int8" and pipe.info["backend"] in ("onnxruntime", "openvino")
    assert pipe.info["input_size"] == "64x96" and pipe.preset.num_classes == 7
    # the labels-equal figure on --val is the two pipelines' agreement on those images, pixel by pixel
    fp32 = build_pipeline(weights=weights, input_size="64x96", device="cpu", precision="fp32")
    pairs = [(fp32(img, "rgb8", outputs=()).labels, pipe(img, "rgb8", outputs=()).labels)
             for img in (cv2.imread(str(f))[..., ::-1] for f in sorted((data_val(quantized) / "images").iterdir()))]
    assert side["val"]["label_agreement"] == pytest.approx(
        sum(int((a == b).sum()) for a, b in pairs) / sum(a.size for a, _ in pairs))
    assert f"labels equal to fp32 there: {side['val']['label_agreement']:.2%}" in printed.out
    res = pipe(np.zeros((50, 70, 3), np.uint8), "bgr8", outputs=("color", "confidence"))
    assert res.labels.shape == (50, 70) and res.confidence.shape == (50, 70)


def test_int8_model_loads_in_the_cli_and_the_node_options(quantized, tmp_path, capsys):
    from bisenet_ros.options import PipelineOptions

    out, argv = quantized
    if not out.exists():
        assert main(argv) == 0
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.full((40, 60, 3), 90, np.uint8))
    assert main(["segment", str(img), "--out-dir", str(tmp_path / "seg"), "--weights", str(out)]) == 0
    assert (tmp_path / "seg" / "a_labels.png").is_file()
    params = {"weights": str(out), "input_width": 0, "input_height": 0, "precision": "auto", "backend": "auto"}
    assert build_pipeline(PipelineOptions.from_parameters(params)).info["precision"] == "int8"
    # options that contradict what was fixed at export: one line each
    for extra, fragment in ((["--input-size", "128x128"], "exported at input size 64x96"),
                            (["--precision", "fp32"], "is a int8 model; precision fp32"),
                            (["--backend", "torch"], "does not run ONNX model files"),
                            (["--model", "bisenetv1"], "is a bisenetv2 model")):
        capsys.readouterr()
        assert main(["segment", str(img), "--out-dir", str(tmp_path / "x"), "--weights", str(out), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert fragment in err and len(err.splitlines()) == 1
    with pytest.raises(ConfigError, match="device cuda does not apply"):
        build_pipeline(weights=str(out), input_size=None, device="cuda")


def test_int8_runtimes_agree_on_the_quantized_demo_model(data, tmp_path):
    """The trained demo weights, quantized: OpenVINO and ONNX Runtime compute the same logits
    (asymmetric activations made OpenVINO 0.2 off, and auto picked it for being faster)."""
    from bisenet_ros.inference.onnx_model import build_file_runner, read_onnx_sidecar, reference_deviations

    images, _ = data
    out = tmp_path / "demo_int8.onnx"
    assert main(["quantize", "--weights", "models/bisenetv2_synthetic_street.pth", "--calibration", str(images),
                 "--out", str(out), "--input-size", "64x96", "--bench-runs", "1", "--no-progress",
                 "--activations", "symmetric"]) == 0
    runners = [build_file_runner(name, out, "int8") for name in ("onnxruntime", "openvino")]
    deviation = reference_deviations(runners, out, (64, 96), read_onnx_sidecar(out))["openvino"]
    assert deviation < 0.05


def test_auto_rejects_a_runtime_that_computes_another_function(quantized, monkeypatch):
    """A backend whose logits leave ONNX Runtime's is never chosen by auto, however fast; asked
    for by name it runs, with a warning."""
    from bisenet_ros.inference import onnx_model

    out, argv = quantized
    if not out.exists():
        assert main(argv) == 0
    real = onnx_model.build_file_runner

    def skewed(name, path, precision):
        runner = real(name, path, precision)
        if name == "openvino":
            inner = runner.__call__
            runner = type("Skewed", (), {"name": "openvino", "precision": precision,
                                         "__call__": lambda self, x: inner(x) * 1.5})()
        return runner

    monkeypatch.setattr(onnx_model, "build_file_runner", skewed)
    pipe = build_pipeline(weights=str(out), input_size=None)
    assert pipe.info["backend"] == "onnxruntime"
    assert any(line.startswith("openvino: rejected (its logits differ") for line in pipe.runner.selection)
    pipe = build_pipeline(weights=str(out), input_size=None, backend="openvino")
    assert pipe.info["backend"] == "openvino" and "differ from ONNX Runtime" in pipe.info["warnings"][0]


def test_quantize_never_overwrites_inputs_or_files_it_did_not_create(weights, data, tmp_path, capsys):
    images, _ = data
    user = tmp_path / "mine.onnx"
    user.write_bytes(b"user data")
    base = ["quantize", "--weights", weights, "--calibration", str(images), "--input-size", "64x96",
            "--bench-runs", "1"]
    for out, extra, fragment in ((user, [], "exists already (pass --overwrite"),
                                 (user, ["--overwrite"], "not a int8 ONNX model written by bisenet-ros quantize"),
                                 (images / "inside.onnx", ["--overwrite"], "lies inside the input"),
                                 (tmp_path / "model.pth", [], "name it *.onnx")):
        capsys.readouterr()
        assert main(base + ["--out", str(out), *extra]) == 2
        assert fragment in capsys.readouterr().err
    assert user.read_bytes() == b"user data" and not (images / "inside.onnx").exists()
    side_only = tmp_path / "other.onnx"
    (tmp_path / "other.onnx.yaml").write_text("mine: true\n")  # a user's file at the sidecar's name
    assert main(base + ["--out", str(side_only), "--overwrite"]) == 2 and not side_only.exists()
    ours = tmp_path / "ours.onnx"
    assert main(base + ["--out", str(ours)]) == 0
    assert main(base + ["--out", str(ours)]) == 2  # like every tool: replacing needs --overwrite
    assert main(base + ["--out", str(ours), "--overwrite"]) == 0  # its own earlier output may be replaced


def test_calibration_sources_video_bag_and_errors(tmp_path):
    from bisenet_ros.data.bags import write_image_bag

    frames = [generate_scene(300 + i, (64, 96)) for i in range(4)]
    video = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (96, 64))
    for img, _ in frames:
        writer.write(np.ascontiguousarray(img[..., ::-1]))
    writer.release()
    got = q.read_frames(video, limit=3)
    assert len(got) == 3 and got[0][0].shape == (64, 96, 3) and got[0][1] == "bgr8"
    bag = tmp_path / "bag"
    write_image_bag(bag, [(img, lbl) for img, lbl in frames])
    got = q.read_frames(bag, topic="/camera/image_raw")
    assert len(got) == 4 and got[0][1] == "rgb8"
    with pytest.raises(q.QuantizeError, match="--topic"):
        q.read_frames(bag)
    with pytest.raises(q.QuantizeError, match="not found"):
        q.read_frames(tmp_path / "nothing")
    assert q.split_held_out(10) == ([0, 1, 2, 3, 5, 6, 7, 8], [4, 9])


def _share_at_128(path) -> float:
    """The share of the model's activations (QuantizeLinear nodes, uint8) with zero point 128: all
    but degenerate ones (a tensor that calibrated to exactly zero gets 0) when symmetric."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"}
    points = []
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2:
            zp = inits.get(node.input[2], consts.get(node.input[2]))
            if zp is not None and zp.dtype == np.uint8:
                points += [int(v) for v in np.ravel(zp)]
    assert points, path
    return sum(p == 128 for p in points) / len(points)


def test_activation_schemes_and_the_choice_between_them(weights, data, tmp_path):
    """--activations symmetric puts the activations' zero points at 128, asymmetric moves them
    (a ReLU's output uses all 256 levels); auto keeps the more accurate unless it is much slower."""
    images, _ = data
    points = {}
    for scheme in ("symmetric", "asymmetric"):
        out = tmp_path / f"{scheme}.onnx"
        assert main(["quantize", "--weights", weights, "--calibration", str(images), "--out", str(out),
                     "--input-size", "64x96", "--bench-runs", "1", "--no-progress", "--activations", scheme]) == 0
        side = yaml.safe_load((tmp_path / f"{scheme}.onnx.yaml").read_text())
        assert side["calibration"]["activations"] == f"uint8 per tensor ({scheme})"
        assert "activations_tried" not in side["calibration"]  # one scheme asked for: one quantized
        points[scheme] = _share_at_128(out)
    assert points["symmetric"] > 0.9 and points["asymmetric"] < 0.5, points
    fast, accurate = {"label_agreement": 0.987, "int8_ms": 23.1}, {"label_agreement": 0.993, "int8_ms": 19.4}
    assert q.choose_activations({"symmetric": fast, "asymmetric": accurate}) == "asymmetric"  # V1 here
    slow = {"label_agreement": 0.9935, "int8_ms": 94.1}  # V2: OpenVINO refused, ONNX Runtime 3x slower
    assert q.choose_activations({"symmetric": {"label_agreement": 0.990, "int8_ms": 31.2}, "asymmetric": slow}) \
        == "symmetric"
    assert q.choose_activations({"symmetric": {"label_agreement": 0.99, "int8_ms": 20.0},
                                 "asymmetric": {"label_agreement": 0.99, "int8_ms": 24.0}}) == "symmetric"  # tie
    assert q.choose_activations({"symmetric": {"label_agreement": 0.98, "int8_ms": 24.9},
                                 "asymmetric": {"label_agreement": 0.99, "int8_ms": 20.0}}) == "asymmetric"
    with pytest.raises(ConfigError, match="activations must be one of symmetric, asymmetric"):
        q.quantize_onnx(tmp_path / "none.onnx", tmp_path / "x.onnx", [], activations="signed")

