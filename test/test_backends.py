"""Backends: every backend's logits match eager float32; BatchNorm folding; `auto` selection."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from bisenet_ros.inference import backends
from bisenet_ros.inference.backends import (BACKENDS, BackendUnavailable, backend_config, backend_unavailable_reason,
                                            check_runner, create_runner, select_backend, tolerance_for)
from bisenet_ros.errors import ConfigError
from bisenet_ros.inference.export import relative_error
from bisenet_ros.inference.fuse import fold_batchnorm
from bisenet_ros.models import build_model
from bisenet_ros.pipeline import build_pipeline

ARCHS = ("bisenetv1", "bisenetv2")
SIZE = (64, 128)
CUDA = torch.cuda.is_available()


def _model(arch: str) -> torch.nn.Module:
    """A 5-class model with non-trivial BatchNorm statistics (so folding is really exercised)."""
    torch.manual_seed(0)
    net = build_model(arch, num_classes=5).eval()
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
    return net


@pytest.fixture(scope="module", params=ARCHS)
def model_and_ref(request):
    net = _model(request.param)
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        ref = net(x)
    return request.param, net, x, ref


def test_fold_batchnorm_removes_conv_bn_pairs_and_keeps_output(model_and_ref):
    arch, net, x, ref = model_and_ref
    folded = fold_batchnorm(net)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    left = sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert folded.folded_batchnorms >= n_bn - 1
    assert left == n_bn - folded.folded_batchnorms
    with torch.inference_mode():
        assert relative_error(folded(x), ref) < 1e-5
    # the original is untouched
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == n_bn


def test_fold_batchnorm_refuses_training_mode():
    with pytest.raises(ValueError):
        fold_batchnorm(build_model("bisenetv2", 3).train())


@pytest.mark.parametrize("backend", ["torch", "torchscript", "onnxruntime", "openvino"])
def test_cpu_backend_matches_eager(model_and_ref, backend):
    arch, net, x, ref = model_and_ref
    runner = create_runner(net, backend, "cpu", "fp32", SIZE)
    assert runner.name == backend and runner.precision == "fp32"
    with torch.inference_mode():
        out = runner(x)  # batch 2 although built at batch 1
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert relative_error(out, ref) < 1e-3


@pytest.mark.parametrize("backend", ["torchscript", "onnxruntime"])
def test_backend_without_fixed_size_accepts_other_sizes(backend):
    net = _model("bisenetv1")  # V1 resizes by the input's own shape: the hard case
    runner = create_runner(net, backend, "cpu", "fp32", None)
    x = torch.randn(1, 3, 96, 64)
    with torch.inference_mode():
        assert relative_error(runner(x), net(x)) < 1e-3


def _fake_cpu(monkeypatch, tmp_path, model_name: str, flags: str) -> None:
    from bisenet_ros.inference import cpu

    info = tmp_path / f"cpuinfo-{abs(hash(model_name))}"
    info.write_text(f"processor\t: 0\nmodel name\t: {model_name}\nflags\t\t: {flags}\n")
    monkeypatch.setattr(cpu, "CPUINFO", info)


def test_auto_measures_once_per_cpu_and_caches_the_fastest(monkeypatch, tmp_path):
    """The fastest matching candidate wins (times faked: no timing in tests), the choice is cached
    under XDG_CACHE_HOME keyed by the CPU model, and a second start only builds the cached one."""
    from bisenet_ros.inference import backend_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    fake_ms = {"onnxruntime": 30.0, "openvino": 10.0, "torchscript": 20.0}
    timed: list[str] = []

    def fake_measure(runners, x, rounds):
        timed.extend(r.name for r in runners)
        return {r.name: [fake_ms[r.name]] * rounds for r in runners}

    monkeypatch.setattr(backend_cache, "measure_interleaved", fake_measure)
    monkeypatch.setattr(backend_cache, "load_average", lambda: 0.5)
    _fake_cpu(monkeypatch, tmp_path, "Fake CPU A", "avx2 avx512f")
    net = _model("bisenetv2")
    runner = create_runner(net, "auto", "cpu", "auto", SIZE)
    assert runner.name == "openvino" and sorted(timed) == ["onnxruntime", "openvino", "torchscript"]
    assert runner.rel_err_vs_eager < float(backend_config()["tolerance"]["fp32"])
    assert runner.selection[-1].startswith("openvino: selected (fastest on this CPU")
    cache = backend_cache.cache_dir() / backend_cache.FILE_NAME
    assert cache == tmp_path / "cache" / "bisenet_ros" / "auto_backend.json" and cache.is_file()
    timed.clear()
    built: list[str] = []
    real_build = backends.build_backend
    monkeypatch.setattr(backends, "build_backend", lambda name, *a: built.append(name) or real_build(name, *a))
    again = create_runner(net, "auto", "cpu", "auto", SIZE)
    assert again.name == "openvino" and built == ["openvino"] and timed == []
    assert "cached choice" in again.selection[-1]
    # another CPU (or model, size, precision, library versions) is another key: measured again
    _fake_cpu(monkeypatch, tmp_path, "Fake CPU B", "avx2")
    fake_ms["openvino"] = 40.0
    other = create_runner(net, "auto", "cpu", "auto", SIZE)
    assert other.name == "torchscript" and timed


def test_bf16_is_refused_in_one_line_without_avx512_bf16_or_amx(monkeypatch, tmp_path):
    from bisenet_ros.inference.backends import resolve_precision

    cpu = torch.device("cpu")
    _fake_cpu(monkeypatch, tmp_path, "Old CPU", "sse4_2 avx2 fma avx512f avx512_vnni")
    with pytest.raises(ConfigError, match=r"precision bf16 needs a CPU with AVX-512 BF16 or AMX .*Old CPU"):
        create_runner(_model("bisenetv2"), "auto", "cpu", "bf16", SIZE)
    assert resolve_precision("auto", cpu) == "fp32"
    for flags in ("avx512f avx512_bf16", "amx_tile amx_bf16"):
        _fake_cpu(monkeypatch, tmp_path, "New CPU", flags)
        assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) == "fp32"  # auto stays fp32 on the CPU (config)
    with pytest.raises(ConfigError, match="bf16 is for the CPU"):
        resolve_precision("bf16", torch.device("cuda"))
    with pytest.raises(ConfigError, match="quantize"):
        resolve_precision("int8", cpu)


@pytest.mark.skipif(backends.backend_unavailable_reason("openvino", torch.device("cpu")) is not None
                    or importlib.import_module("bisenet_ros.inference.cpu").bf16_unsupported_reason() is not None,
                    reason="needs openvino and a CPU with AVX-512 BF16/AMX")
@pytest.mark.parametrize("backend", ["openvino", "torch"])
def test_bf16_backends_stay_close_to_fp32(model_and_ref, backend):
    arch, net, x, ref = model_and_ref
    runner = create_runner(net, backend, "cpu", "bf16", SIZE)
    assert runner.precision == "bf16"
    with torch.inference_mode():
        assert relative_error(runner(x), ref) < float(backend_config()["tolerance"]["bf16"])
    with pytest.raises(BackendUnavailable, match="has no bf16"):
        create_runner(net, "onnxruntime", "cpu", "bf16", SIZE)


def test_auto_skips_unavailable_and_mismatching_backends(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no choice cached by an earlier test
    net = _model("bisenetv2")
    real_build = backends.build_backend

    def build(name, model, device, precision, input_size):
        runner = real_build(name, model, device, precision, input_size)
        if name == "torchscript":  # a backend that is fast but wrong must never be chosen
            return lambda x: runner(x) * 1.01
        return runner

    monkeypatch.setattr(backends, "build_backend", build)
    cpu = torch.device("cpu")
    runner = select_backend(net, cpu, "fp32", SIZE, order=["cudagraph", "tensorrt", "torchscript", "onnxruntime"])
    assert runner.name == "onnxruntime"
    notes = runner.selection
    assert notes[0].startswith("cudagraph: unavailable") and notes[1].startswith("tensorrt: unavailable")
    assert notes[2].startswith("torchscript: rejected")
    # nothing in the list matches: eager PyTorch, the reference, is the fallback
    fallback = select_backend(net, cpu, "fp32", SIZE, order=["torchscript"])
    assert fallback.name == "torch" and fallback.rel_err_vs_eager == 0.0


def test_auto_skips_a_backend_that_fails_to_build(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no choice cached by an earlier test
    net = _model("bisenetv1")
    real_build = backends.build_backend

    def build(name, *args):
        if name == "onnxruntime":
            raise RuntimeError("simulated exporter failure\nsecond line")
        return real_build(name, *args)

    monkeypatch.setattr(backends, "build_backend", build)
    runner = select_backend(net, torch.device("cpu"), "fp32", SIZE, order=["onnxruntime", "torchscript"])
    assert runner.name == "torchscript"
    assert runner.selection[0] == "onnxruntime: failed (simulated exporter failure)"


def test_bad_choices_give_one_line_errors():
    net = _model("bisenetv2")
    with pytest.raises(ConfigError, match="backend must be one of"):
        create_runner(net, "tensorflow", "cpu")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        create_runner(net, "torch", "cpu", "fp16")
    if not CUDA:
        for name in ("cudagraph", "tensorrt"):
            with pytest.raises(BackendUnavailable, match=f"backend {name} is not available on cpu: needs a CUDA"):
                create_runner(net, name, "cpu")
    assert set(BACKENDS) >= {"auto", "torch", "onnxruntime", "tensorrt", "cudagraph", "torchscript"}


def test_config_orders_name_known_backends_only():
    cfg = backend_config()
    for device, order in cfg["auto_order"].items():
        assert device in ("cpu", "cuda", "cpu_bf16")
        assert set(order) <= set(BACKENDS) - {"auto"}
        assert order[-1] == "torch"
    assert float(cfg["tolerance"]["fp32"]) == pytest.approx(1e-3)


def test_pipeline_auto_and_torch_label_an_image_the_same(tiny_checkpoints):
    image = np.random.default_rng(0).integers(0, 256, (70, 150, 3), dtype=np.uint8)
    labels = {}
    for backend in ("auto", "torch"):
        pipe = build_pipeline(weights=tiny_checkpoints["bisenetv2"], input_size="64x128", device="cpu",
                              backend=backend)
        labels[backend] = pipe(image, "bgr8", outputs=()).labels
        assert pipe.info["backend"] != "auto"
    assert np.mean(labels["auto"] == labels["torch"]) >= 0.999


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend,precision", [
    ("torch", "fp16"), ("torchscript", "fp32"), ("torchscript", "fp16"), ("cudagraph", "fp32"),
    ("cudagraph", "fp16"), ("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("tensorrt", "fp16"),
])
def test_cuda_backend_matches_eager(model_and_ref, backend, precision):
    arch, net, x, _ = model_and_ref
    dev = torch.device("cuda")
    if backend_unavailable_reason(backend, dev):
        pytest.skip(backend_unavailable_reason(backend, dev))
    gpu_net = _model(arch).to(dev)
    xc = x.to(dev)
    runner = create_runner(gpu_net, backend, dev, precision, SIZE)
    tol = tolerance_for(precision, dev)
    for _ in range(2):  # the second call replays a captured graph
        assert check_runner(runner, gpu_net, xc) < tol


def test_fp32_tolerance_on_cuda_allows_for_tf32(monkeypatch):
    """Eager float32 on a TF32 GPU is itself ~1e-3 accurate (H200: V1 folded vs eager 1.8e-3):
    fp32 there is checked with the TF32 tolerance, on the CPU (and with TF32 off) with the strict one."""
    cfg = backend_config()["tolerance"]
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert tolerance_for("fp32", torch.device("cuda")) == float(cfg["fp32_tf32"]) > float(cfg["fp32"])
    assert tolerance_for("fp32", torch.device("cpu")) == float(cfg["fp32"])
    assert tolerance_for("fp16", torch.device("cuda")) == float(cfg["fp16"])
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert tolerance_for("fp32", torch.device("cuda")) == float(cfg["fp32"])


def test_cuda_provider_lists_without_a_gpu(monkeypatch, tmp_path):
    """The ONNX Runtime provider choice for CUDA/TensorRT, checked with a simulated provider set."""
    import onnxruntime

    monkeypatch.setenv("HOME", str(tmp_path))
    cuda1 = torch.device("cuda", 1)
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    trt, cuda = backends.onnx_providers("tensorrt", cuda1, "fp16")
    assert trt[0] == "TensorrtExecutionProvider" and trt[1]["device_id"] == 1 and trt[1]["trt_fp16_enable"]
    assert trt[1]["trt_engine_cache_enable"] and str(tmp_path) in trt[1]["trt_engine_cache_path"]
    assert cuda == ("CUDAExecutionProvider", {"device_id": 1})
    assert backends.onnx_providers("tensorrt", cuda1, "fp32")[0][1]["trt_fp16_enable"] is False
    assert backends.onnx_providers("cuda", cuda1, "fp16") == [cuda]
    assert backends.onnx_providers("cpu", torch.device("cpu"), "fp32") == ["CPUExecutionProvider"]
    assert backend_unavailable_reason("tensorrt", cuda1) is None
    assert backend_unavailable_reason("cudagraph", cuda1) is None
    # a CPU-only onnxruntime: both GPU backends are unavailable, with the reason
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert "CUDAExecutionProvider" in backend_unavailable_reason("onnxruntime", cuda1)
    assert "CUDAExecutionProvider" in backend_unavailable_reason("tensorrt", cuda1)
    with pytest.raises(BackendUnavailable):
        backends.onnx_providers("cuda", cuda1, "fp32")
