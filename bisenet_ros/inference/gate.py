"""The accuracy gate of ``--backend auto``: is a candidate's output close enough to eager fp32?

fp32 is checked on a fixed seeded noise input (relative L2 error below 1e-3). bf16 is checked on
what a camera sees -- a rendered street scene at the model input size (:func:`scene_input`, the
input the int8 check uses too) -- and reported as the logit error *and* the share of labels equal
to fp32: a candidate passes with an error below the bf16 tolerance and labels equal at least
``bf16_labels_equal``. On noise, label agreement says nothing; on a scene it is what a user sees.
"""
from __future__ import annotations

import time

import torch
from torch import nn


def scene_input(size: tuple[int, int], sidecar: dict | None, source: str = "ONNX model") -> torch.Tensor:
    """A rendered street scene (fixed seed) at the model input ``size``, normalised with the
    sidecar's mean/std. Two correct int8 executions of one graph agree on it to about 1e-2
    (relative L2); on noise, where int8 logits are far off anyway, they would not."""
    import cv2

    from ..data.datasets import sidecar_preset
    from ..data.synthetic_scenes import generate_scene

    preset = sidecar_preset(sidecar or {}, source)
    rgb = cv2.resize(generate_scene(0)[0], (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in (preset.mean, preset.std))
    return (x - mean) / std


class Gate:
    """One precision's check: its input ``x``, the eager fp32 reference on it, the thresholds."""

    def __init__(self, model: nn.Module, x: torch.Tensor, tolerance: float, min_labels: float | None,
                 scene: bool) -> None:
        self.x = x
        self.tolerance = float(tolerance)
        self.min_labels = min_labels
        self.scene = scene
        t0 = time.perf_counter()
        with torch.inference_mode():
            self.reference = model.eval()(x).float()
        self.reference_ms = (time.perf_counter() - t0) * 1e3

    def measure(self, runner) -> tuple[float, float, float]:
        """(relative L2 error, share of labels equal to fp32, ms of the call) of ``runner``."""
        from .export import relative_error

        t0 = time.perf_counter()
        with torch.inference_mode():
            out = runner(self.x).float()
        ms = (time.perf_counter() - t0) * 1e3
        equal = float((out.argmax(1) == self.reference.argmax(1)).float().mean())
        return relative_error(out, self.reference), equal, ms

    def verdict(self, err: float, equal: float) -> str | None:
        """None when the figures pass, else why not."""
        if err >= self.tolerance:
            return f"rel err {err:.1e} >= {self.tolerance:g}"
        if self.min_labels is not None and equal < self.min_labels:
            return f"{equal:.2%} labels equal < {self.min_labels:.0%}"
        return None

    def figures(self, err: float, equal: float) -> str:
        if not self.scene:
            return f"rel err {err:.1e}"
        return f"rel err {err:.1e}, {equal:.2%} labels equal on a street scene"

    def refusal(self, precision: str, failed: dict[str, tuple[float, float]]) -> str:
        """The one line that refuses a reduced precision no candidate computes well enough."""
        figures = "; ".join(f"{name}: {self.figures(*v)}" for name, v in failed.items()) or "no backend built"
        need = f"rel err < {self.tolerance:g}"
        if self.min_labels is not None:
            need += f" and >= {self.min_labels:.0%} labels equal"
        return (f"precision {precision}: no backend computes this model close enough to fp32 ({figures}; "
                f"needs {need}): use --precision fp32, or an int8 model from 'bisenet-ros quantize' (or name "
                f"a backend to run it anyway)")

    def warning(self, name: str, precision: str, err: float, equal: float) -> str | None:
        """The warning for a backend asked for by name that fails the gate (None when it passes)."""
        problem = self.verdict(err, equal)
        if problem is None:
            return None
        return (f"{name} {precision} is far from fp32 on this model ({self.figures(err, equal)}; {problem}): "
                f"its labels may differ; fp32 or an int8 model is safer")
