"""The runners of :mod:`bisenet_ros.inference.backends`: one class per way of executing the
model's forward pass (eager, TorchScript, ONNX Runtime, OpenVINO, CUDA graphs), plus the pieces
they share (one in-memory ONNX export for ONNX Runtime and OpenVINO while ``auto`` builds its
candidates; OpenVINO imported only when used, with its telemetry off). Selection lives in
``backends.py``, which re-exports these names.
"""
from __future__ import annotations

import copy
import io
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .settings import backend_config

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
        out = self.request.infer({0: arr}, share_inputs=True)[0]  # reads ``arr`` in place (a 6 MB copy less)
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
