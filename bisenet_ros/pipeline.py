"""The one inference pipeline: camera image -> class ids, confidence, colour mask, overlay.

The node, the ``bisenet-ros`` CLI, bag evaluation and benchmarks all call
:class:`SegmentationPipeline`; there is no second copy of this logic.

Steps, as the public BiSeNet demo does them, all on the pipeline's device (uint8 is uploaded,
only what is asked for is copied back):

1. uint8 image (any supported encoding) -> RGB float, ``/255``, normalise by the dataset mean/std,
   bilinear resize (``align_corners=False``) to the model input size (fixed ``HxW``, or ``auto32``:
   sides rounded up to x32); on the CPU OpenCV resizes first (the same samples; the affine
   normalisation commutes with the interpolation);
2. forward pass (eager PyTorch or another backend, see :mod:`bisenet_ros.inference.backends`); the runner
   may return the model's logits before its final bilinear x``s`` upsampling (1/``s`` of the
   input, as :func:`build_pipeline` sets it up), which is then done together with step 3;
3. bilinear resize of the logits back to the camera resolution (unless ``output_resolution`` is
   ``model``), then argmax; class ids are never resized themselves. On the CPU the labels come
   from :func:`bisenet_ros.inference.postprocess.labels`, which computes full-resolution logits only near
   class boundaries (same labels, a fraction of the cost);
4. optional max-softmax confidence, palette colour mask and alpha-blended overlay.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .data.datasets import DatasetPreset
from .data.images import ENCODINGS, MAX_PIXELS, check_image, check_max_pixels
from .data.remap import ClassRemap, load_remap
from .errors import ConfigError
from .inference import colour, health, postprocess
from .inference.model_loading import (check_model_output, load_onnx_model, load_torch_model, logit_stride,
                                      loaded_model_preset)
from .inference.threads import pipeline_threads, stage_threads
from .options import PipelineOptions, auto32, fixed_input_size, unknown_label  # auto32: also from here

#: frames read in place from the middleware's buffer are read-only; the pipeline only reads them
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning,
                        module=r"bisenet_ros\.pipeline")

OUTPUTS = frozenset({"color", "overlay", "confidence", "health"})


@dataclass
class SegmentationResult:
    """One frame's outputs as numpy arrays (None where not requested)."""

    labels: np.ndarray  # (H, W) uint8, uint16 for more than 256 classes
    color: np.ndarray | None = None  # (H, W, 3) uint8 RGB palette image
    overlay: np.ndarray | None = None  # (H, W, 3) uint8, colour order of the input (mono -> RGB)
    confidence: np.ndarray | None = None  # (H, W) uint8, max softmax x 255
    overlay_encoding: str = "rgb8"  # rgb8, or bgr8 for bgr8/bgra8 input
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds per stage
    model_size: tuple[int, int] = (0, 0)  # (H, W) the model ran at
    health: dict[str, float] | None = None  # perception-health statistics (bisenet_ros.inference.health)


@dataclass
class _Group:
    """Frames of one model input size after their model pass (inside a :class:`PendingBatch`)."""
    idx: list[int]  # positions in the batch
    camera_hw: list[tuple[int, int]]
    encodings: list[str]
    images: list[np.ndarray]
    size: tuple[int, int]
    uploaded: list[torch.Tensor]  # (3, H, W) uint8 in input order per frame
    logits: torch.Tensor
    times: tuple[float, float, float]  # perf_counter before preprocess, before and after the model


@dataclass
class PendingBatch:
    """Frames after :meth:`SegmentationPipeline.start` (their model pass), for its ``finish``."""
    count: int
    groups: list[_Group]
    wanted: set[str]


class SegmentationPipeline:
    """Image arrays in, :class:`SegmentationResult` out; reusable for any number of frames."""

    def __init__(self, runner: Callable[[torch.Tensor], torch.Tensor], preset: DatasetPreset,
                 input_size: str | Sequence[int] | None = None, device: str | torch.device = "cpu",
                 output_resolution: str = "camera", overlay_alpha: float = 0.5, info: dict | None = None, *,
                 remap: ClassRemap | None = None, confidence_threshold: float = 0.0,
                 max_pixels: int = MAX_PIXELS) -> None:
        self.runner = runner
        reason = check_max_pixels(max_pixels)
        if reason:
            raise ConfigError(reason)
        self.max_pixels = int(max_pixels)  # per frame, checked before any work (memory bound)
        self.source_preset = preset  # the model's classes (normalisation, ground-truth label maps)
        self.remap = remap
        self.preset = remap.preset if remap is not None else preset  # the output classes
        self.input_size = fixed_input_size(input_size)  # None = auto32
        self.device = torch.device(device)
        if output_resolution not in ("camera", "model"):
            raise ConfigError(f"output_resolution must be 'camera' or 'model', got '{output_resolution}'")
        self.output_resolution = output_resolution
        self.overlay_alpha = overlay_alpha
        self.info = dict(info or {})
        self.num_classes = self.preset.num_classes
        self.label_dtype = torch.uint8 if self.num_classes <= 256 else torch.int16
        self.unknown_label = unknown_label(self.num_classes)
        self.confidence_threshold = confidence_threshold
        self.health_level = health.DEFAULT_LEVEL  # max softmax below which a logit cell counts as unsure
        std = torch.tensor(preset.std, dtype=torch.float32)
        mean = torch.tensor(preset.mean, dtype=torch.float32)
        # x_norm = (x/255 - mean)/std = x * scale + shift, per RGB channel
        self._scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(self.device)
        self._shift = (-mean / std).view(1, 3, 1, 1).to(self.device)
        self._scale_np, self._shift_np = self._scale.cpu().view(3).numpy(), self._shift.cpu().view(3).numpy()
        # palette with a black row at the unknown label (low-confidence pixels)
        table = np.zeros((max(self.num_classes, self.unknown_label + 1), 3), np.uint8)
        table[:self.num_classes] = self.preset.palette
        self._palette = torch.from_numpy(table).to(self.device)
        self._palette_np = table
        self._lut = torch.from_numpy(remap.lut).to(self.device) if remap is not None else None
        self._sync = self.device.type == "cuda"
        self._stage_threads = pipeline_threads() if self.device.type == "cpu" else 0

    # -- public API -------------------------------------------------------------------------
    @property
    def overlay_alpha(self) -> float:
        return self._alpha

    @overlay_alpha.setter
    def overlay_alpha(self, value: float) -> None:
        if not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"overlay_alpha must be in [0, 1], got {value}")
        self._alpha = float(value)

    @property
    def confidence_threshold(self) -> float:
        """Pixels whose max softmax is below this get :attr:`unknown_label` (0 = off)."""
        return self._threshold

    @confidence_threshold.setter
    def confidence_threshold(self, value: float) -> None:
        if not 0.0 <= float(value) < 1.0:
            raise ConfigError(f"confidence_threshold must be in [0, 1), got {value}")
        if value and self.label_dtype == torch.uint8 and self.unknown_label > 255:
            raise ConfigError("confidence_threshold needs a free label value: not available with exactly 256 classes")
        self._threshold = float(value)

    def model_size_for(self, h: int, w: int) -> tuple[int, int]:
        """The (H, W) the model runs at for a camera frame of ``h`` x ``w``."""
        return self.input_size or auto32(h, w)

    def __call__(
        self, image: np.ndarray, encoding: str = "rgb8", outputs: Iterable[str] = ("color", "overlay")
    ) -> SegmentationResult:
        return self.run_batch([image], [encoding], outputs)[0]

    @torch.inference_mode()
    def run_batch(
        self,
        images: Sequence[np.ndarray],
        encodings: Sequence[str] | str = "rgb8",
        outputs: Iterable[str] = ("color", "overlay"),
    ) -> list[SegmentationResult]:
        """Segment several frames; frames sharing a model input size run as one batch."""
        return self.finish(self.start(images, encodings, outputs))

    @torch.inference_mode()
    def start(
        self,
        images: Sequence[np.ndarray],
        encodings: Sequence[str] | str = "rgb8",
        outputs: Iterable[str] = ("color", "overlay"),
    ) -> PendingBatch:
        """The first half of :meth:`run_batch`: check, preprocess and run the model. :meth:`finish`
        makes the outputs; the node runs it on another thread, overlapping the next frame's model pass."""
        wanted = set(outputs)
        unknown = wanted - OUTPUTS
        if unknown:
            raise ConfigError(f"unknown outputs {sorted(unknown)} (choose from {sorted(OUTPUTS)})")
        if isinstance(encodings, str):
            encodings = [encodings] * len(images)
        for image, enc in zip(images, encodings):
            check_image(image, enc, self.max_pixels)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(self.model_size_for(*image.shape[:2]), []).append(i)
        groups = [self._start_group(idx, [images[i] for i in idx], [encodings[i] for i in idx], size)
                  for size, idx in by_size.items()]
        return PendingBatch(len(images), groups, wanted)

    @torch.inference_mode()
    def finish(self, pending: PendingBatch) -> list[SegmentationResult]:
        """The second half of :meth:`run_batch`: labels, colour outputs and health of started frames."""
        results: list[SegmentationResult | None] = [None] * pending.count
        for group in pending.groups:
            for i, res in zip(group.idx, self._finish_group(group, pending.wanted)):
                results[i] = res
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def model_input(self, image: np.ndarray, encoding: str = "rgb8") -> torch.Tensor:
        """The normalised (1, 3, H, W) model input of one frame, exactly as :meth:`run_batch` makes it."""
        check_image(image, encoding, self.max_pixels)
        return self.preprocess(self._upload(image, encoding), encoding, self.model_size_for(*image.shape[:2]))

    # -- stages -------------------------------------------------------------------------------
    def _upload(self, image: np.ndarray, encoding: str) -> torch.Tensor:
        """The (3,H,W) uint8 image in input order (mono repeated; the overlay's base) on the device."""
        t = torch.from_numpy(np.ascontiguousarray(image)).to(self.device, non_blocking=True)
        if ENCODINGS[encoding][1] is None:  # mono
            if encoding == "mono16":
                t = (t.float() / 257.0).round().to(torch.uint8)
            return t.unsqueeze(0).expand(3, -1, -1)
        return t.permute(2, 0, 1)[:3]

    def preprocess(self, native: torch.Tensor, encoding: str, size: tuple[int, int]) -> torch.Tensor:
        """(3,H,W) uint8 in input order -> normalised RGB (1,3,h,w) float at the model input size."""
        order = list(ENCODINGS[encoding][1] or (0, 1, 2))
        if self.device.type == "cpu":
            return self._preprocess_cpu(native, order, size)
        x = native[order].float().unsqueeze(0) * self._scale + self._shift
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def _preprocess_cpu(self, native: torch.Tensor, order: list[int], size: tuple[int, int]) -> torch.Tensor:
        """:meth:`preprocess` with OpenCV: the bilinear resize (same sample positions as
        ``F.interpolate(align_corners=False)``) on the float image, then the per-channel affine
        normalisation at the smaller size, written channel by channel into the NCHW input."""
        h, w = size
        hwc = native.permute(1, 2, 0).numpy().astype(np.float32)
        if hwc.shape[:2] != (h, w):
            hwc = cv2.resize(hwc, (w, h), interpolation=cv2.INTER_LINEAR)
        out = np.empty((1, 3, h, w), np.float32)
        for k, channel in enumerate(order):  # RGB channel k is input channel `channel`
            np.multiply(hwc[..., channel], self._scale_np[k], out=out[0, k])
            out[0, k] += self._shift_np[k]
        return torch.from_numpy(out)

    def _start_group(self, idx: list[int], images: list, encodings: list[str], size: tuple[int, int]) -> _Group:
        t0 = time.perf_counter()
        with stage_threads(self._stage_threads):  # see threads.py: small stages, one thread
            uploaded = [self._upload(img, enc) for img, enc in zip(images, encodings)]
            inputs = [self.preprocess(native, enc, size) for native, enc in zip(uploaded, encodings)]
            batch = inputs[0] if len(inputs) == 1 else torch.cat(inputs)
        t1 = self._tick()
        logits = self.runner(batch)
        return _Group(idx, [img.shape[:2] for img in images], encodings, images, size, uploaded, logits,
                      (t0, t1, self._tick()))

    def _finish_group(self, group: _Group, wanted: set[str]) -> list[SegmentationResult]:
        t2 = time.perf_counter()
        logits, size = group.logits, group.size
        stride = logit_stride(tuple(logits.shape[-2:]), size)
        results = []
        with stage_threads(self._stage_threads):
            for i, (native, camera_hw, enc) in enumerate(zip(group.uploaded, group.camera_hw, group.encodings)):
                results.append(self._postprocess(logits[i:i + 1], stride, size, native, camera_hw, enc, wanted))
        t3 = self._tick()
        if "health" in wanted:  # from the low-resolution logits and a subsample of the image
            for i, (res, image) in enumerate(zip(results, group.images)):
                res.health = health.frame_statistics(logits[i], image, self.health_level)
        t4 = self._tick()
        t0, t1, t_model = group.times
        n = len(results)
        for res in results:
            res.model_size = size
            res.timings = {
                "preprocess_ms": (t1 - t0) * 1e3 / n,
                "inference_ms": (t_model - t1) * 1e3 / n,
                "postprocess_ms": (t3 - t2) * 1e3 / n,
            }
            if res.health is not None:
                res.timings["health_ms"] = (t4 - t3) * 1e3 / n
        return results

    def _postprocess(
        self,
        logits: torch.Tensor,
        stride: int,
        model_hw: tuple[int, int],
        native: torch.Tensor,
        camera_hw: tuple[int, int],
        encoding: str,
        wanted: set[str],
    ) -> SegmentationResult:
        out_hw = tuple(camera_hw) if self.output_resolution == "camera" else tuple(model_hw)
        labels_t, prob, unknown = self._labels(logits, stride, out_hw, "confidence" in wanted)
        res = SegmentationResult(labels=self._to_numpy(labels_t.to(self.label_dtype)))
        if self.label_dtype == torch.int16:
            res.labels = res.labels.view(np.uint16)
        if "confidence" in wanted:
            res.confidence = self._to_numpy((prob * 255.0).round().to(torch.uint8))
        if wanted & {"color", "overlay"} and self.device.type == "cpu":
            colour.cpu_outputs(res, self._palette_np, self._alpha, unknown, native, out_hw, encoding, wanted)
        elif wanted & {"color", "overlay"}:
            colour.tensor_outputs(res, labels_t, self._palette, self._alpha, unknown, native, out_hw, encoding,
                                  wanted)
        return res

    def _labels(self, logits: torch.Tensor, stride: int, out_hw: tuple[int, int], want_confidence: bool):
        """(1,C,h,w) logits at 1/``stride`` of the model input -> output class ids at ``out_hw``
        (remapped, low confidence -> unknown), the max softmax (when asked for or thresholded,
        else None) and the unknown mask (or None). Without a softmax to compute, the CPU takes
        the exact cheap path (:func:`bisenet_ros.inference.postprocess.labels`)."""
        need_prob = want_confidence or self._threshold > 0
        prob = unknown = None
        if self.device.type == "cpu" and not need_prob:
            fast = postprocess.labels(logits[0].float().numpy(), stride, out_hw, torch.get_num_threads())
            labels_t = torch.from_numpy(fast)  # uint8 (uint16 above 256 classes: int32 for torch)
            if fast.dtype == np.uint16:
                labels_t = torch.from_numpy(fast.astype(np.int32))
        else:
            if self.device.type == "cpu":
                full = torch.from_numpy(postprocess.dense_logits(logits[0].float().numpy(), stride, out_hw))
            else:
                full = postprocess.naive_logits(logits, stride, out_hw)[0]
            conf_t, labels_t = full.max(dim=0)
            if need_prob:
                prob = 1.0 / torch.exp(full - conf_t.unsqueeze(0)).sum(dim=0)  # max softmax = 1/sum(exp(l-max))
        if self._lut is not None:
            labels_t = self._lut[labels_t.long()]
        if self._threshold > 0:
            unknown = prob < self._threshold
            labels_t = labels_t.masked_fill(unknown, self.unknown_label)
        return labels_t, prob, unknown

    def _tick(self) -> float:
        if self._sync:  # CUDA: the stage's time, not its launch
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @staticmethod
    def _to_numpy(t: torch.Tensor) -> np.ndarray:
        return t.contiguous().cpu().numpy()


def build_pipeline(options: PipelineOptions | str | None = None, /, **keywords) -> SegmentationPipeline:
    """Load the model and wire the pipeline from :class:`~bisenet_ros.options.PipelineOptions`.

    ``build_pipeline(options)`` or ``build_pipeline(options, overlay_alpha=0.3)`` (changes), or the
    keyword form of the Python API: ``build_pipeline("bisenetv2", weights=..., input_size="512x1024")``
    where the keyword default of ``input_size`` is ``"auto32"`` (``None``: the checkpoint's).

    Precedence for architecture, classes, palette, mean/std and input size: explicit option,
    then the checkpoint's sidecar YAML, then the dataset preset (default Cityscapes).
    """
    if isinstance(options, PipelineOptions):
        opts = options.replace(**keywords) if keywords else options
    else:
        if options is not None:
            keywords["model"] = options
        keywords.setdefault("input_size", "auto32")
        opts = PipelineOptions.of(**keywords)
    return _load_pipeline(opts)


def _load_pipeline(opts: PipelineOptions) -> SegmentationPipeline:
    from .models import resolve_device
    from .inference.onnx_model import is_onnx

    if is_onnx(opts.weights):  # an int8 model from `bisenet-ros quantize`, with its sidecar
        meta, runner, size = load_onnx_model(opts)
        dev = torch.device("cpu")
    else:
        dev = resolve_device(opts.device)
        meta, runner, size = load_torch_model(opts, dev)
    preset = loaded_model_preset(opts, meta)
    warning = check_model_output(runner, dev, size, meta["num_classes"], str(opts.weights or meta["arch"]))
    if dev.type == "cpu":
        postprocess.warm_up()
    info = {
        "model": meta["arch"],
        "weights": meta["weights"],
        "num_classes": meta["num_classes"],
        "dataset": preset.name,
        "device": str(dev),
        "backend": getattr(runner, "name", opts.backend),
        "precision": getattr(runner, "precision", opts.precision),
        "input_size": "auto32" if size is None else f"{size[0]}x{size[1]}",
        "warnings": ([warning] if warning else []) + list(getattr(runner, "warnings", ())),
    }
    sidecar = meta.get("sidecar") or {}
    if sidecar.get("source_weights"):
        info["source_weights"] = sidecar["source_weights"]
    remap = load_remap(opts.class_remap, preset) if opts.class_remap else None
    if remap is not None:
        info["class_remap"] = remap.name
    return SegmentationPipeline(runner, preset, size, dev, opts.output_resolution, opts.overlay_alpha, info,
                                remap=remap, confidence_threshold=opts.confidence_threshold,
                                max_pixels=opts.max_pixels)
