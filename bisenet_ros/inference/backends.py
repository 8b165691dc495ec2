"""Inference backends: how the model's forward pass is executed.

A runner is a callable ``runner(x) -> logits`` on normalised (N,3,H,W) float32 tensors on the
pipeline's device, returning float32 logits on that device, with ``name`` and ``precision``
attributes. :func:`create_runner` builds one by name:

============  ======  ===========================================================================
name          device  what runs
============  ======  ===========================================================================
torch         both    eager PyTorch (the reference); float16 autocast on CUDA for fp16
torchscript   both    BatchNorm folded, traced, frozen and ``optimize_for_inference`` (oneDNN on
                      CPU); channels-last (and float16 weights for fp16) on CUDA
onnxruntime   both    in-memory ONNX export run by ONNX Runtime with all graph optimisations
                      (CPU provider, or the CUDA provider with I/O bound to torch tensors)
tensorrt      CUDA    the ONNX export run by ONNX Runtime's TensorRT provider (fp16 when asked),
                      engines cached on disk
cudagraph     CUDA    BatchNorm folded, channels-last, float16 weights for fp16, one CUDA graph
                      captured per input shape and replayed
openvino      CPU     the in-memory ONNX export compiled by OpenVINO's CPU plugin (fp32, or bf16
                      where the CPU has AVX-512 BF16/AMX); also runs quantized int8 ONNX models
============  ======  ===========================================================================

Precisions: ``fp32``; ``fp16`` (CUDA); ``bf16`` (CPU with AVX-512 BF16 or AMX, see
:mod:`bisenet_ros.inference.cpu`; refused elsewhere with one line); ``int8`` (models made by
``bisenet-ros quantize``, see :mod:`bisenet_ros.inference.onnx_model`). ``auto`` is fp16 on CUDA and the
configured CPU precision (fp32) on the CPU.

``auto`` (the default everywhere) considers the backends of the device's list in
``resources/backends.yaml`` that are available and whose logits match eager float32 on a fixed seeded
input (relative L2 error below the configured tolerance: 1e-3 for fp32). On the CUDA device it
takes the first. On the CPU, where the fastest backend depends on the CPU (Intel or AMD, AVX-512,
AMX), it times the candidates once per machine and caches the choice
(:mod:`bisenet_ros.inference.backend_cache`, keyed by CPU model, model, input size, precision and library
versions); later starts build only the cached backend and check it.
"""
from __future__ import annotations

import copy
import importlib.util
import io
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import BisenetError, ConfigError, one_line
from .settings import CONFIG_FILE, backend_config  # noqa: F401  (re-exported)

BACKENDS = ("auto", "torch", "torchscript", "onnxruntime", "openvino", "tensorrt", "cudagraph")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")

Runner = Callable[[torch.Tensor], torch.Tensor]


class BackendUnavailable(ConfigError):
    """The requested backend cannot run here (package, provider or device missing)."""




# -- shared pieces ----------------------------------------------------------------------------------
def import_openvino():
    """``import openvino`` with its usage telemetry off *before* the import: on import, OpenVINO's
    converter package starts a telemetry sender that writes ``~/intel`` and contacts an analytics
    host (with no network the process exited seconds late). Marking ``openvino_telemetry`` as
    absent makes OpenVINO take its own no-telemetry path (its ``telemetry_stub``): nothing is
    written, nothing is sent. Called only when an OpenVINO runner is built."""
    if "openvino" not in sys.modules and "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # import -> ImportError
    import openvino

    return openvino


_export_memo = threading.local()


def _onnx_bytes(model: nn.Module, size: Sequence[int], dynamic: bool, half: bool = False) -> bytes:
    """The in-memory ONNX export of ``model``; while ``auto`` builds its candidates one export
    serves both ONNX Runtime and OpenVINO (at 512x1024 an export costs several seconds)."""
    from .export import export_onnx

    key = (id(model), tuple(size), dynamic, half)
    memo = getattr(_export_memo, "graphs", None)
    if memo is not None and key in memo:
        return memo[key]
    buf = io.BytesIO()
    export_onnx(model, buf, tuple(size), opset=int(backend_config()["onnxruntime"]["opset"]),
                dynamic_size=dynamic, half=half)
    if memo is not None:
        memo[key] = buf.getvalue()
    return buf.getvalue()


# -- runners ----------------------------------------------------------------------------------------
class TorchRunner:
    """Eager PyTorch; float16 autocast on CUDA for fp16, bfloat16 autocast on the CPU for bf16."""

    name = "torch"

    def __init__(self, model: nn.Module, device: torch.device, precision: str) -> None:
        self.model = model.eval()
        self.device = device
        self.precision = precision

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision in ("fp16", "bf16"):
            dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
            with torch.autocast(device_type=self.device.type, dtype=dtype):
                return self.model(x).float()
        return self.model(x)


def _inference_copy(model: nn.Module, device: torch.device, precision: str) -> nn.Module:
    """BatchNorm folded; channels-last and float16 weights on CUDA as ``precision`` says."""
    from .fuse import fold_batchnorm

    net = fold_batchnorm(model.eval()).to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
        if precision == "fp16":
            net = net.half()
    return net


class TorchScriptRunner:
    """Folded model, traced once, frozen and optimised for inference (shape-generic)."""

    name = "torchscript"

    def __init__(self, model: nn.Module, device: torch.device, precision: str,
                 example_size: Sequence[int]) -> None:
        self.device = device
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        net = _inference_copy(model, device, precision)
        x = self._prepare(torch.zeros(1, 3, *example_size, device=device))
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TorchScript deprecation and tracer notes
            traced = torch.jit.trace(net, x, check_trace=False)
            self.module = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else x

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(self._prepare(x)).float()


class OnnxRuntimeRunner:
    """The model exported to ONNX in memory and run by ONNX Runtime.

    ``provider`` is ``cpu``, ``cuda`` or ``tensorrt``. The batch dimension is dynamic; H and W are
    fixed to ``input_size`` when given (better graph optimisation), else dynamic (auto32).
    """

    def __init__(self, model: nn.Module, device: torch.device, precision: str,
                 input_size: Sequence[int] | None, provider: str = "cpu") -> None:
        from .export import onnx_session

        cfg = backend_config()
        self.name = "tensorrt" if provider == "tensorrt" else "onnxruntime"
        self.device = device
        self.precision = precision
        providers = onnx_providers(provider, device, precision)
        # the CUDA provider runs float16 from a float16 graph; TensorRT converts a float32 one
        half_graph = precision == "fp16" and provider == "cuda"
        self.dtype = torch.float16 if half_graph else torch.float32
        size = tuple(input_size) if input_size else tuple(cfg["verify_size"])
        net = model.eval()
        if half_graph:
            net = copy.deepcopy(net).half()
        graph = _onnx_bytes(net, size, input_size is None, half_graph)
        self.session = onnx_session(graph, providers,
                                    int(cfg["onnxruntime"].get("intra_op_threads", 0)))
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        used = self.session.get_providers()[0]
        if used != wanted:  # ONNX Runtime falls back silently; refuse instead
            raise BackendUnavailable(f"backend {self.name}: ONNX Runtime could not start {wanted} (got {used})")
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.num_classes = _num_classes(model)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":
            arr = x.detach().to(torch.float32).contiguous().numpy()
            out = self.session.run([self.output_name], {self.input_name: arr})[0]
            return torch.from_numpy(out)
        return self._run_cuda(x)

    def _run_cuda(self, x: torch.Tensor) -> torch.Tensor:
        """I/O bound to torch CUDA tensors: no host round trip."""
        import numpy as np

        x = x.to(self.dtype).contiguous()
        n, _, h, w = x.shape
        out = torch.empty((n, self.num_classes, h, w), dtype=self.dtype, device=self.device)
        np_dtype = np.float16 if self.dtype == torch.float16 else np.float32
        index = self.device.index or 0
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, "cuda", index, np_dtype, tuple(x.shape), x.data_ptr())
        binding.bind_output(self.output_name, "cuda", index, np_dtype, tuple(out.shape), out.data_ptr())
        torch.cuda.synchronize(self.device)  # x was produced on torch's stream
        self.session.run_with_iobinding(binding)
        return out.float()


class OpenVinoRunner:
    """An ONNX model (exported in memory from ``model``, or a file) compiled by OpenVINO for the CPU.

    ``precision`` bf16 sets OpenVINO's inference precision hint to bf16; every other precision runs
    with the hint f32 (OpenVINO would otherwise pick bf16 by itself on CPUs that have it). Quantized
    (QDQ) int8 models keep their int8 layers either way.
    """

    name = "openvino"

    def __init__(self, model: nn.Module | None, device: torch.device, precision: str,
                 input_size: Sequence[int] | None, onnx_file: str | Path | None = None) -> None:
        if device.type != "cpu":
            raise BackendUnavailable("backend openvino runs on the CPU only here")
        ov = import_openvino()
        self.device = device
        self.precision = precision
        if onnx_file is None:
            size = tuple(input_size) if input_size else tuple(backend_config()["verify_size"])
            source = _onnx_bytes(model.eval(), size, input_size is None)
        else:
            source = str(onnx_file)
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  "PERFORMANCE_HINT": "LATENCY"}
        ov_cfg = backend_config().get("openvino", {})
        config["ENABLE_CPU_PINNING"] = bool(ov_cfg.get("pinning", False))
        if int(ov_cfg.get("threads", 0)):
            config["INFERENCE_NUM_THREADS"] = int(ov_cfg["threads"])
        core = ov.Core()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = core.compile_model(_read_openvino_model(core, source), "CPU", config)
        self.request = compiled.create_infer_request()

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to(torch.float32).contiguous().numpy()
        out = self.request.infer({0: arr})[0]
        return torch.from_numpy(out.copy())  # the request's output buffer is reused


def _read_openvino_model(core, source: bytes | str):
    """An ONNX model (bytes or a path) as OpenVINO's model converter would give it, without the
    converter: ``ov.convert_model`` sends usage telemetry from a forked child process and writes a
    client id under ``~/intel`` (a robot must do neither; with no network the child hung and held
    the node's exit). The runtime's reader plus the converter's own graph transformations give the
    same model: without the latter, OpenVINO ran ``quantize``'s int8 graphs 0.2 off."""
    model = core.read_model(source)
    try:
        from openvino._offline_transformations import apply_moc_transformations
    except ImportError:  # another OpenVINO layout: the int8 check in onnx_model decides
        return model
    apply_moc_transformations(model, cf=False, smart_reshape=True)
    return model


def onnx_providers(provider: str, device: torch.device, precision: str) -> list:
    """ONNX Runtime provider list for ``provider`` (cpu, cuda, tensorrt), or BackendUnavailable."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailable("onnxruntime is not installed (pip install onnxruntime, "
                                 "or onnxruntime-gpu for CUDA/TensorRT)") from None
    if device.type == "cpu":
        if provider != "cpu":
            raise BackendUnavailable(f"backend {provider} needs a CUDA device")
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    index = device.index or 0
    cuda = ("CUDAExecutionProvider", {"device_id": index})
    if "CUDAExecutionProvider" not in available:
        raise BackendUnavailable("ONNX Runtime has no CUDAExecutionProvider here (install onnxruntime-gpu)")
    if provider == "tensorrt":
        if "TensorrtExecutionProvider" not in available:
            raise BackendUnavailable("ONNX Runtime has no TensorrtExecutionProvider here "
                                     "(install onnxruntime-gpu with TensorRT)")
        cfg = backend_config()["tensorrt"]
        cache = os.path.expanduser(str(cfg["cache_dir"]))
        os.makedirs(cache, exist_ok=True)
        trt = ("TensorrtExecutionProvider", {
            "device_id": index,
            "trt_fp16_enable": precision == "fp16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
            "trt_max_workspace_size": int(float(cfg["workspace_gb"]) * (1 << 30)),
        })
        return [trt, cuda]
    return [cuda]


def _num_classes(model: nn.Module) -> int:
    """Output channels of a BiSeNet (its classifier convolution)."""
    key = getattr(model, "classifier_key", None)
    if key is not None:
        return int(model.state_dict()[key].shape[0])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return int(convs[-1].out_channels)


class CudaGraphRunner:
    """Folded channels-last model (float16 for fp16), one CUDA graph per input shape, replayed."""

    name = "cudagraph"

    def __init__(self, model: nn.Module, device: torch.device, precision: str) -> None:
        if device.type != "cuda":
            raise BackendUnavailable("backend cudagraph needs a CUDA device")
        self.device = device
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.model = _inference_copy(model, device, precision)
        self.max_graphs = int(backend_config()["cudagraph"]["max_graphs"])
        self.graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def _capture(self, shape: tuple[int, ...]):
        static_in = torch.zeros(shape, dtype=self.dtype, device=self.device).contiguous(
            memory_format=torch.channels_last)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):  # warm-up: cuDNN algorithm selection happens outside the graph
                self.model(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode():
            static_out = self.model(static_in)
        if len(self.graphs) >= self.max_graphs:
            self.graphs.pop(next(iter(self.graphs)))  # drop the oldest shape
        self.graphs[shape] = (graph, static_in, static_out)
        return self.graphs[shape]

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape)
        graph, static_in, static_out = self.graphs.get(shape) or self._capture(shape)
        static_in.copy_(x)  # casts to the graph's dtype and memory format
        graph.replay()
        # a new tensor either way: the next replay overwrites static_out
        return static_out.float() if static_out.dtype != torch.float32 else static_out.clone()


# -- selection --------------------------------------------------------------------------------------
def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> fp16 on CUDA, the configured CPU precision (fp32) on the CPU; fp16 on the CPU,
    bf16 on a CPU without AVX-512 BF16/AMX (or on CUDA) and int8 for a float model are refused."""
    from .cpu import bf16_unsupported_reason

    text = (precision or "auto").lower()
    if text not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if text == "auto":
        if device.type == "cuda":
            return "fp16"
        text = str(backend_config()["auto_precision"]["cpu"])
        return "fp32" if text == "bf16" and bf16_unsupported_reason() else text
    if text == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; use fp32 (or bf16) on the CPU")
    if text == "bf16":
        if device.type != "cpu":
            raise ConfigError("precision bf16 is for the CPU; use fp16 on a CUDA device")
        reason = bf16_unsupported_reason()
        if reason:
            raise ConfigError(reason)
    if text == "int8":
        raise ConfigError("precision int8 needs a quantized model: make one with 'bisenet-ros quantize' "
                          "and pass its .onnx file as the weights")
    return text


#: the backends that compute each reduced precision (fp32 runs everywhere)
PRECISION_BACKENDS = {"fp16": ("torch", "torchscript", "onnxruntime", "tensorrt", "cudagraph"),
                      "bf16": ("torch", "openvino")}


def backend_unavailable_reason(name: str, device: torch.device, precision: str = "fp32") -> str | None:
    """Why backend ``name`` cannot run on ``device`` at ``precision`` (cheap checks only), or None."""
    if name in BACKENDS and name != "auto" and name not in PRECISION_BACKENDS.get(precision, BACKENDS):
        return f"has no {precision} here (use {' or '.join(PRECISION_BACKENDS[precision])})"
    if name == "torch":
        return None
    if name == "openvino":
        if device.type != "cpu":
            return "runs on the CPU only"
        if importlib.util.find_spec("openvino") is None:  # not imported: see import_openvino
            return "openvino is not installed (pip install openvino)"
        return None
    if name == "torchscript":
        return None if hasattr(torch, "jit") else "this PyTorch has no TorchScript"
    if name == "cudagraph":
        return None if device.type == "cuda" else "needs a CUDA device"
    if name in ("onnxruntime", "tensorrt"):
        if name == "tensorrt" and device.type != "cuda":
            return "needs a CUDA device"
        try:
            onnx_providers("cpu" if device.type == "cpu" else ("tensorrt" if name == "tensorrt" else "cuda"),
                           device, "fp32")
        except BackendUnavailable as exc:
            return str(exc)
        try:
            import onnx  # noqa: F401  (torch.onnx.export needs it)
        except ImportError:
            return "the onnx package is not installed (pip install onnx)"
        return None
    raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got '{name}'")


def build_backend(name: str, model: nn.Module, device: torch.device, precision: str,
                  input_size: Sequence[int] | None) -> Runner:
    """Build the named backend (not ``auto``); BackendUnavailable if it cannot run here."""
    reason = backend_unavailable_reason(name, device, precision)
    if reason is not None:
        raise BackendUnavailable(f"backend {name} is not available on {device}: {reason}")
    if name == "torch":
        return TorchRunner(model, device, precision)
    if name == "openvino":
        return OpenVinoRunner(model, device, precision, input_size)
    if name == "torchscript":
        size = tuple(input_size) if input_size else tuple(backend_config()["verify_size"])
        return TorchScriptRunner(model, device, precision, size)
    if name == "cudagraph":
        return CudaGraphRunner(model, device, precision)
    provider = "cpu" if device.type == "cpu" else ("tensorrt" if name == "tensorrt" else "cuda")
    return OnnxRuntimeRunner(model, device, precision, input_size, provider)


def calibration_input(device: torch.device, input_size: Sequence[int] | None, seed: int = 0) -> torch.Tensor:
    """The fixed seeded (1,3,H,W) input every backend is checked on."""
    size = tuple(input_size) if input_size else tuple(backend_config()["verify_size"])
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, *size, generator=gen).to(device)


def check_runner(runner: Runner, model: nn.Module, x: torch.Tensor,
                 reference: torch.Tensor | None = None) -> float:
    """Relative L2 error of ``runner(x)`` against eager float32 ``model(x)``."""
    from .export import relative_error

    if reference is None:
        with torch.inference_mode():
            reference = model.eval()(x).float()
    with torch.inference_mode():
        out = runner(x)
    return relative_error(out.float(), reference)


def tolerance_for(precision: str, device: torch.device) -> float:
    """The relative L2 error a backend must stay under at ``precision`` on ``device``: the
    config's, except fp32 on a CUDA device whose float32 convolutions run in TF32 (PyTorch's
    default on Ampere and newer), where eager float32 is itself only about 1e-3 accurate."""
    tolerances = backend_config()["tolerance"]
    if precision == "fp32" and device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return float(tolerances["fp32_tf32"])
    return float(tolerances[precision])


def select_backend(model: nn.Module, device: torch.device, precision: str,
                   input_size: Sequence[int] | None, order: Sequence[str] | None = None,
                   sidecar: dict | None = None) -> Runner:
    """``auto``: among the backends of ``order`` (default: the config's for the device and
    precision) that build and pass the accuracy gate (:mod:`bisenet_ros.inference.gate`), the
    first (CUDA) or the fastest as measured interleaved on this CPU and cached
    (:mod:`bisenet_ros.inference.backend_cache`). A reduced precision that no candidate passes is
    refused in one line; eager fp32 is the fp32 last resort.

    The runner gets ``rel_err_vs_eager``, ``selection`` (one line per backend tried) and on the
    CPU ``cache_key``/``cache_entry``/``expected_ms`` (what the node compares its model time with).
    """
    from . import backend_cache

    cfg = backend_config()
    order = list(order or auto_order(device, precision))
    gate = _gate(model, device, precision, input_size, sidecar)
    measure = device.type == "cpu" and bool(cfg["auto_measure"]["cpu"])
    key = backend_cache.cache_key(model, input_size, precision) if measure else None
    cached = backend_cache.lookup(key) if measure else None
    notes: list[str] = []
    if cached and cached["backend"] in order:  # the choice measured before on this machine
        again = backend_cache.should_remeasure(cached)
        runner = None if again else _checked(cached["backend"], model, device, precision, input_size, gate, notes)
        if runner is not None:
            return _selected(runner, notes, f"cached choice for this CPU: {backend_cache.describe(cached)}",
                             key, cached)
        notes.append(f"measuring again: {again}" if again else
                     "cached choice no longer builds or matches: measuring again")
    timed = [n for n in order if not (n == "torch" and precision == "fp32")] or order
    if measure and len(timed) > 1:
        rounds = int(cfg["auto_measure"]["rounds"])
        backend_cache.announce(
            f"choosing the {precision} backend for {backend_cache.model_key(model)} at {_size_text(input_size)}: "
            f"building and checking {', '.join(timed)} (about {gate.reference_ms / 1e3 * len(timed) * (rounds + 3.5):.0f}"
            f" s, once per CPU; cached in {backend_cache.cache_file()})")
    built, failed = _build_candidates(order, model, device, precision, input_size, gate, notes, measure)
    if built and not measure:
        return _selected(built[0], notes, "first in the configured order")
    if len(built) == 1:
        return _selected(built[0], notes, "the only candidate", key)
    if built:
        runner, entry = backend_cache.measure_and_store(
            key, built, gate.x, int(cfg["auto_measure"]["rounds"]), {r.name: r.check_ms for r in built})
        return _selected(runner, notes, f"fastest on this CPU, cached: {backend_cache.describe(entry)}", key, entry)
    if precision != "fp32":  # never a rejected candidate: refuse, naming what was measured
        raise ConfigError(gate.refusal(precision, failed))
    runner = TorchRunner(model, device, precision)  # the reference itself, if the order omitted it
    runner.rel_err_vs_eager = check_runner(runner, model, gate.x, gate.reference)
    return _selected(runner, notes, "fallback")


def _gate(model: nn.Module, device: torch.device, precision: str, input_size: Sequence[int] | None,
          sidecar: dict | None):
    """The accuracy gate of ``precision``: noise for fp32/fp16, a street scene and labels for bf16."""
    from .gate import Gate, scene_input

    if precision != "bf16":
        return Gate(model, calibration_input(device, input_size), tolerance_for(precision, device), None, False)
    size = tuple(input_size) if input_size else tuple(backend_config()["verify_size"])
    x = scene_input(size, sidecar or {}, "checkpoint").to(device)
    return Gate(model, x, tolerance_for(precision, device), float(backend_config()["bf16_labels_equal"]), True)


def _build_candidates(order, model, device, precision, input_size, gate, notes, measure):
    """(runners that pass the gate, {name: (err, labels equal)} of those that failed it)."""
    built, failed = [], {}
    _export_memo.graphs = {}  # one ONNX export serves ONNX Runtime and OpenVINO
    try:
        for name in order:
            if name == "torch" and precision == "fp32" and built:  # the reference: last resort, not timed
                notes.append("torch: not built (eager fp32 is the reference, the last resort)")
                continue
            runner = _checked(name, model, device, precision, input_size, gate, notes, failed)
            if runner is not None:
                built.append(runner)
                if not measure:
                    break
    finally:
        _export_memo.graphs = None
    return built, failed


def _size_text(input_size: Sequence[int] | None) -> str:
    return f"{input_size[0]}x{input_size[1]}" if input_size else "auto32"


def auto_order(device: torch.device, precision: str) -> list[str]:
    """The configured candidates of ``auto`` for ``device`` (and ``cpu_bf16`` for bf16)."""
    table = backend_config()["auto_order"]
    return list(table.get(f"{device.type}_{precision}") or table[device.type])


def _selected(runner: Runner, notes: list[str], why: str, key: str | None = None,
              entry: dict | None = None) -> Runner:
    notes.append(f"{runner.name}: selected ({why})")
    runner.selection = notes
    runner.cache_key, runner.cache_entry = key, entry
    runner.expected_ms = ((entry or {}).get("ms") or {}).get(runner.name)
    return runner


def _checked(name: str, model: nn.Module, device: torch.device, precision: str,
             input_size: Sequence[int] | None, gate, notes: list[str], failed: dict | None = None) -> Runner | None:
    """Build backend ``name`` and run the gate on it; None (with a note) if it fails."""
    reason = backend_unavailable_reason(name, device, precision)
    if reason is not None:
        notes.append(f"{name}: unavailable ({reason})")
        return None
    try:
        runner = build_backend(name, model, device, precision, input_size)
        err, equal, ms = gate.measure(runner)
    except Exception as exc:  # a backend that fails to build is skipped, never fatal
        notes.append(f"{name}: failed ({one_line(exc)})")
        return None
    problem = gate.verdict(err, equal)
    if problem is None or (name == "torch" and precision == "fp32"):  # eager fp32 is the reference
        notes.append(f"{name}: ok ({gate.figures(err, equal)}, tolerance {gate.tolerance:g})")
        runner.rel_err_vs_eager, runner.check_ms = err, ms
        return runner
    notes.append(f"{name}: rejected ({gate.figures(err, equal)}: {problem})")
    if failed is not None:
        failed[name] = (err, equal)
    return None


def create_runner(
    model: nn.Module,
    backend: str = "auto",
    device: torch.device | str = "cpu",
    precision: str = "auto",
    input_size: Sequence[int] | None = None,
    sidecar: dict | None = None,
) -> Runner:
    """A runner for ``model`` on ``device`` with the named backend (``auto``: see :func:`select_backend`).
    A backend named at bf16 runs the bf16 gate and warns (``runner.warnings``) when it fails it.
    ``sidecar``: the checkpoint's (the mean/std of the gate's street scene)."""
    device = torch.device(device)
    name = (backend or "auto").strip().lower()
    if name not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got '{backend}'")
    precision = resolve_precision(precision, device)
    if name == "auto":
        return select_backend(model, device, precision, input_size, sidecar=sidecar)
    try:
        runner = build_backend(name, model, device, precision, input_size)
    except BisenetError:
        raise
    except Exception as exc:
        raise BackendUnavailable(f"backend {name} failed to build on {device}: {one_line(exc)}") from None
    if precision == "bf16":
        gate = _gate(model, device, precision, input_size, sidecar)
        err, equal, _ = gate.measure(runner)
        runner.rel_err_vs_eager = err
        warning = gate.warning(name, precision, err, equal)
        runner.warnings = list(getattr(runner, "warnings", ())) + ([warning] if warning else [])
    return runner
