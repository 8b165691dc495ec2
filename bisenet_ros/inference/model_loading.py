"""A model made ready for :class:`bisenet_ros.pipeline.SegmentationPipeline`: a PyTorch checkpoint
or an int8 ONNX model loaded into a runner of the chosen backend (:func:`load_torch_model`,
:func:`load_onnx_model`), then checked once on the calibration input before it serves a frame
(:func:`check_model_output`: the logits' shape, class count and stride).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..data.datasets import DatasetPreset, load_preset, sidecar_preset
from ..errors import BisenetError, CheckpointError, ConfigError, one_line
from ..options import CHECKPOINT, PipelineOptions, fixed_input_size


def logit_stride(logits_hw: tuple[int, int], model_hw: tuple[int, int]) -> int:
    """1 for logits at the model input size, ``s`` for logits at exactly 1/``s`` of it."""
    if tuple(logits_hw) == tuple(model_hw):
        return 1
    s = model_hw[0] // max(1, logits_hw[0])
    if s < 1 or (logits_hw[0] * s, logits_hw[1] * s) != tuple(model_hw):
        raise ConfigError(f"the model returned {logits_hw[0]}x{logits_hw[1]} logits for a "
                          f"{model_hw[0]}x{model_hw[1]} input (expected the input size or 1/s of it)")
    return s


def load_torch_model(opts: PipelineOptions, dev: torch.device):
    """(model info, runner, fixed input size or None) for a PyTorch checkpoint."""
    from .backends import create_runner
    from ..models.checkpoint import Checkpoint
    from ..models import load_model, low_res_view, model_from_checkpoint

    if opts.weights:
        ckpt = Checkpoint.read(opts.weights, opts.model, opts.num_classes)
        net, sidecar = model_from_checkpoint(ckpt, dev), ckpt.sidecar
    else:
        net, sidecar = load_model(opts.model, num_classes=opts.num_classes, device=dev), {}
    # the checkpoint's own input size, else auto32
    size = fixed_input_size(sidecar.get("input_size") if opts.input_size == CHECKPOINT else opts.input_size)
    # the runner returns the 1/8 logits; the pipeline upsamples them once, exactly (postprocess.py)
    runner = create_runner(low_res_view(net), backend=opts.backend, device=dev, precision=opts.precision,
                           input_size=size, sidecar=sidecar)
    return {**net.bisenet_info, "sidecar": sidecar}, runner, size


def load_onnx_model(opts: PipelineOptions):
    """(model info, runner, input size) for an ONNX model file and its sidecar."""
    from .onnx_model import check_options, create_file_runner, read_onnx_sidecar

    sidecar = read_onnx_sidecar(opts.weights)
    size = check_options(opts, sidecar, opts.weights)
    runner = create_file_runner(opts.weights, opts.backend, str(sidecar["precision"]), size, sidecar)
    meta = {"arch": sidecar["arch"], "num_classes": int(sidecar["num_classes"]), "weights": str(opts.weights),
            "sidecar": sidecar}
    return meta, runner, size


def loaded_model_preset(opts: PipelineOptions, meta: dict) -> DatasetPreset:
    """The model's classes, palette and normalisation: ``opts.dataset`` (a preset or its name), else
    the checkpoint's sidecar, with the explicit mean/std and the model's class count applied."""
    dataset = opts.dataset
    if isinstance(dataset, DatasetPreset):
        preset = dataset
    elif dataset:
        preset = load_preset(dataset)
    else:
        preset = sidecar_preset(meta.get("sidecar") or {}, str(opts.weights))
    return preset.with_overrides(mean=opts.mean, std=opts.std, num_classes=meta["num_classes"])


def check_model_output(runner: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                       size: tuple[int, int] | None, num_classes: int, source: str) -> str | None:
    """Run the model once on the random calibration input (at load and at every reload, before
    it serves a frame). Refuse, with one :class:`CheckpointError` line naming ``source``, an
    output the pipeline cannot read as this model's classes: not ``(1, C, h, w)``, ``C`` not the
    class count (an ONNX file beside another model's sidecar: labels past the palette), ``h x w``
    neither the input size nor 1/s of it. Returns a warning when the model predicts one class
    for every pixel (typical of zeroed, mis-scaled or wrongly normalised weights), else None."""
    from .backends import calibration_input

    x = calibration_input(device, size)
    try:
        with torch.inference_mode():
            out = runner(x)
    except BisenetError:
        raise
    except Exception as exc:  # a runtime refusing the graph (wrong input rank, bad op) at run time
        raise CheckpointError(f"{source}: the model fails on a {tuple(x.shape)} input ({one_line(exc)})") from None
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if shape is None or len(shape) != 4 or shape[0] != x.shape[0]:
        raise CheckpointError(f"{source}: the model returns {f'shape {shape}' if shape else type(out).__name__} "
                              f"for a {tuple(x.shape)} input; expected ({x.shape[0]}, classes, H, W) logits")
    if shape[1] != num_classes:
        raise CheckpointError(f"{source}: the model returns {shape[1]} channels but {num_classes} classes are "
                              "configured (sidecar, --num-classes): its labels would name the wrong classes")
    try:
        logit_stride(shape[-2:], tuple(x.shape[-2:]))
    except ConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    return constant_output_warning(out)


def constant_output_warning(logits: torch.Tensor) -> str | None:
    """A warning when ``logits`` (of the calibration input) give one class for every pixel."""
    with torch.inference_mode():
        labels = logits.float().argmax(dim=1)
    if int(labels.min()) != int(labels.max()):
        return None
    return (f"the model predicts class {int(labels.min())} for every pixel of a random calibration input: "
            "check the weights and the mean/std")
