"""ONNX model files as weights: the int8 models ``bisenet-ros quantize`` writes and the float
models ``bisenet-ros export-onnx`` writes.

A quantized ``MODEL.onnx`` comes with its sidecar ``MODEL.onnx.yaml`` (architecture, classes,
palette and mean/std, the fixed input size, precision, logit stride). An exported one needs none:
the same facts are in the file's own metadata (``bisenet_ros.*`` metadata_props, see
:func:`sidecar_from_metadata`); a sidecar beside it, when there is one, wins. Every tool and the node load it through
:func:`bisenet_ros.pipeline.build_pipeline` with ``weights=MODEL.onnx``; options that contradict
what was fixed at export (another input size, architecture, class count or precision, a CUDA
device, a PyTorch backend) are refused with one line.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError, file_problem, one_line
from ..safe_yaml import load_yaml_file

CREATED_BY = "bisenet-ros quantize"
#: backends that run an ONNX model file, in the order auto tries them
FILE_BACKENDS = ("onnxruntime", "openvino")


def is_onnx(weights: str | Path | None) -> bool:
    return weights is not None and str(weights).lower().endswith(".onnx")


def sidecar_of(path: str | Path) -> Path:
    """``MODEL.onnx.yaml`` (never ``MODEL.yaml``: that may be the float checkpoint's own)."""
    path = Path(path)
    return path.with_name(path.name + ".yaml")


def read_onnx_sidecar(path: str | Path) -> dict[str, Any]:
    """The sidecar of an ONNX model file, checked for the keys the pipeline needs."""
    path = Path(path).expanduser()
    problem = file_problem(path)
    if problem:
        raise CheckpointError(f"{path}: weights file {problem}")
    side = sidecar_of(path)
    if not side.is_file():
        embedded = sidecar_from_metadata(path)
        if embedded is not None:
            return embedded
        raise CheckpointError(f"{path}: an ONNX model needs its sidecar {side.name} (as written by "
                              f"'bisenet-ros quantize') or the metadata 'bisenet-ros export-onnx' writes into it")
    data = load_yaml_file(side, "ONNX model sidecar", error=CheckpointError)
    missing = [k for k in ("arch", "num_classes", "input_size", "precision", "dataset") if k not in data]
    if missing:
        raise CheckpointError(f"{side}: not an ONNX model sidecar (missing {', '.join(missing) or 'a mapping'})")
    return data


_META = "bisenet_ros."


def sidecar_from_metadata(path: str | Path) -> dict[str, Any] | None:
    """The sidecar facts ``bisenet-ros export-onnx`` writes into the model's metadata_props
    (architecture, classes, mean/std, palette, input size; float32, logits at the input size),
    or None when the file carries none. ``input_size`` is None for a dynamic-size export."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise CheckpointError(f"{path}: not a readable ONNX model ({one_line(exc)})") from None
    props = {p.key[len(_META):]: p.value for p in model.metadata_props if p.key.startswith(_META)}
    if not {"model", "num_classes", "class_names", "mean", "std", "input_size"} <= set(props):
        return None
    try:
        names = [str(n) for n in json.loads(props["class_names"])]
        palette = json.loads(props["palette"]) if "palette" in props else [None] * len(names)
        size = None if props["input_size"] == "dynamic" else [int(v) for v in props["input_size"].split("x")]
        dataset = {"name": props.get("dataset", "custom"), "mean": json.loads(props["mean"]),
                   "std": json.loads(props["std"]),
                   "classes": [{"name": n, **({"color": c} if c else {})} for n, c in zip(names, palette)]}
        num_classes = int(props["num_classes"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: malformed bisenet_ros metadata ({one_line(exc)})") from None
    return {"created_by": "bisenet-ros export-onnx", "format": "onnx", "arch": props["model"],
            "num_classes": num_classes, "input_size": size, "precision": "fp32",
            "output": "logits at the input size", "dataset": dataset}


def _model_size(opts, sidecar: dict, name: str) -> tuple[int, int]:
    from ..options import AUTO32, CHECKPOINT

    if sidecar["input_size"] is not None:
        return int(sidecar["input_size"][0]), int(sidecar["input_size"][1])
    if opts.input_size in (AUTO32, CHECKPOINT):  # a dynamic-size export runs at one size per pipeline
        raise ConfigError(f"{name} was exported with a dynamic input size; give the size to run it at "
                          "(--input-size HxW, multiples of 32)")
    h, w = (int(v) for v in opts.input_size)
    if h % 32 or w % 32:
        raise ConfigError(f"{name}: input size {h}x{w} must be multiples of 32")
    return h, w


def check_options(opts, sidecar: dict, path: str | Path) -> tuple[int, int]:
    """The model input size, after refusing options that contradict the exported model."""
    from ..options import AUTO32, CHECKPOINT

    name = Path(path).name
    size = _model_size(opts, sidecar, name)
    if opts.model and opts.model != sidecar["arch"]:
        raise ConfigError(f"{name} is a {sidecar['arch']} model; --model {opts.model} does not apply")
    if opts.num_classes and int(opts.num_classes) != int(sidecar["num_classes"]):
        raise ConfigError(f"{name} has {sidecar['num_classes']} classes; --num-classes {opts.num_classes} does not apply")
    if opts.input_size == AUTO32 or (opts.input_size != CHECKPOINT and tuple(opts.input_size) != size):
        again = "export" if sidecar.get("created_by") == "bisenet-ros export-onnx" else "quantize"
        asked = "auto32" if opts.input_size == AUTO32 else f"{opts.input_size[0]}x{opts.input_size[1]}"
        raise ConfigError(f"{name} was exported at input size {size[0]}x{size[1]}; input size {asked} "
                          f"does not apply (quantize again with --input-size)")
    precision = str(sidecar["precision"])
    if opts.precision not in ("auto", precision):
        raise ConfigError(f"{name} is a {precision} model; precision {opts.precision} does not apply "
                          f"(use the float checkpoint for {opts.precision})")
    if str(opts.device).strip().lower() not in ("auto", "cpu", ""):
        raise ConfigError(f"{name} is a {precision} model for the CPU; device {opts.device} does not apply")
    if opts.backend not in ("auto",) + FILE_BACKENDS:
        raise ConfigError(f"{name}: backend {opts.backend} does not run ONNX model files "
                          f"(use auto, {' or '.join(FILE_BACKENDS)})")
    return size


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


class OnnxFileRunner:
    """An ONNX model file run by ONNX Runtime's CPU provider (spinning off, see export.py)."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, precision: str) -> None:
        from .backends import backend_config
        from .export import onnx_session

        self.precision = precision
        self.session = onnx_session(str(path), None, int(backend_config()["onnxruntime"].get("intra_op_threads", 0)))
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to(torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run([self.output_name], {self.input_name: arr})[0])


def check_input(size: tuple[int, int], sidecar: dict | None, source: str = "ONNX model") -> torch.Tensor:
    """The rendered street scene of :func:`bisenet_ros.inference.gate.scene_input`."""
    from .gate import scene_input

    return scene_input(size, sidecar, source)


def reference_deviations(runners: list, path: str | Path, size: tuple[int, int],
                         sidecar: dict | None) -> dict[str, float]:
    """Relative L2 deviation of each runner's logits from ONNX Runtime's on :func:`check_input`.
    ONNX Runtime is the reference runtime of the QDQ format its quantizer writes; another
    runtime may execute parts of the graph its own way (OpenVINO 2026.4 ran the demo model with
    asymmetric activations 0.19 off, mIoU -0.09, where ONNX Runtime was 0.013 off fp32;
    ``quantize`` now writes symmetric activations, which both run alike)."""
    from .export import relative_error

    others = [r for r in runners if r.name != "onnxruntime"]
    if not others:
        return {}
    reference = next((r for r in runners if r.name == "onnxruntime"), None)
    try:
        reference = reference or OnnxFileRunner(path, "int8")
    except Exception:  # no ONNX Runtime to compare with: nothing to say
        return {}
    x = check_input(size, sidecar, str(path))
    with torch.inference_mode():
        ref = reference(x).float()
        return {r.name: relative_error(r(x).float(), ref) for r in others}


def _refused(deviations: dict[str, float]) -> dict[str, str]:
    """The backends whose deviation from ONNX Runtime is above the configured tolerance, why."""
    from .backends import backend_config

    tolerance = float(backend_config()["tolerance"]["int8_vs_onnxruntime"])
    return {name: f"its logits differ from ONNX Runtime's by {err:.1e} >= {tolerance:g}: "
                  "it does not compute what the quantized graph means"
            for name, err in deviations.items() if err >= tolerance}


def build_file_runner(name: str, path: str | Path, precision: str):
    from .backends import BackendUnavailable, OpenVinoRunner, backend_unavailable_reason

    reason = backend_unavailable_reason(name, torch.device("cpu"))
    if reason is not None:
        raise BackendUnavailable(f"backend {name} is not available: {reason}")
    if name == "openvino":
        return OpenVinoRunner(None, torch.device("cpu"), precision, None, onnx_file=path)
    return OnnxFileRunner(path, precision)


def create_file_runner(path: str | Path, backend: str, precision: str, size: tuple[int, int],
                       sidecar: dict | None = None):
    """The runner for an ONNX model file: the named backend, or (auto) the fastest of
    :data:`FILE_BACKENDS` on this CPU that computes what ONNX Runtime computes (see
    :func:`reference_deviations`), measured once and cached like float models' auto."""
    from . import backend_cache
    from .backends import backend_config

    if backend != "auto":
        runner = build_file_runner(backend, path, precision)
        runner.selection = [f"{backend}: selected (requested)"]
        runner.warnings = [f"{name}: {note}" for name, note in
                           _refused(reference_deviations([runner], path, size, sidecar)).items()]
        return runner
    notes, built = [], []
    for name in FILE_BACKENDS:
        try:
            built.append(build_file_runner(name, path, precision))
        except Exception as exc:  # a backend that cannot load the file is skipped
            notes.append(f"{name}: failed ({one_line(exc)})")
    deviations = reference_deviations(built, path, size, sidecar)
    refused = _refused(deviations)
    notes += [f"{name}: rejected ({refused[name]})" if name in refused else
              f"{name}: ok (logits within {err:.1e} of ONNX Runtime's)" for name, err in deviations.items()]
    built = [r for r in built if r.name not in refused]
    if not built:
        raise ConfigError(f"{Path(path).name}: no backend could load it ({'; '.join(notes)})")
    key = backend_cache.cache_key_for(f"onnx {file_sha256(path)}", size, precision)
    cached = backend_cache.lookup(key)
    again = backend_cache.should_remeasure(cached) if cached else None
    chosen = next((r for r in built if cached and not again and r.name == cached["backend"]), None)
    entry = cached if chosen is not None else None
    if chosen is not None:
        notes.append(f"{chosen.name}: selected (cached choice for this CPU: {backend_cache.describe(cached)})")
    elif len(built) == 1:
        chosen = built[0]
        notes.append(f"{chosen.name}: selected (the only candidate)")
    else:
        if again:
            notes.append(f"measuring again: {again}")
        x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
        chosen, entry = backend_cache.measure_and_store(key, built, x, int(backend_config()["auto_measure"]["rounds"]))
        notes.append(f"{chosen.name}: selected (fastest on this CPU, cached: {backend_cache.describe(entry)})")
    chosen.selection = notes
    chosen.cache_key, chosen.cache_entry = key, entry
    chosen.expected_ms = ((entry or {}).get("ms") or {}).get(chosen.name)
    return chosen
