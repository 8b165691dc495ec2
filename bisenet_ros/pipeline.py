"""The one inference pipeline: camera image -> class ids, confidence, colour mask, overlay.

The node, the ``bisenet-ros`` CLI, bag evaluation and benchmarks all call
:class:`SegmentationPipeline`; there is no second copy of this logic.

Steps, as the public BiSeNet demo does them, all on the pipeline's device (uint8 is uploaded,
only what is asked for is copied back):

1. uint8 image (any supported encoding) -> RGB float, ``/255``, normalise by the dataset mean/std;
2. bilinear resize (``align_corners=False``) of the normalised tensor to the model input size
   (fixed ``HxW``, or ``auto32``: each side rounded up to a multiple of 32);
3. forward pass (eager PyTorch or another backend, see :mod:`bisenet_ros.inference.backends`); the runner
   may return the model's logits before its final bilinear x``s`` upsampling (1/``s`` of the
   input, as :func:`build_pipeline` sets it up), which is then done together with step 4;
4. bilinear resize of the logits back to the camera resolution (unless ``output_resolution`` is
   ``model``), then argmax; class ids are never resized themselves. On the CPU the labels come
   from :func:`bisenet_ros.inference.postprocess.labels`, which computes full-resolution logits only near
   class boundaries (same labels, a fraction of the cost);
5. optional max-softmax confidence, palette colour mask and alpha-blended overlay.
"""
from __future__ import annotations

import time
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
from .inference import health, postprocess
from .inference.model_loading import (check_model_output, load_onnx_model, load_torch_model, logit_stride,
                                      model_preset)
from .inference.threads import pipeline_threads, torch_threads
from .options import PipelineOptions, fixed_input_size, unknown_label

OUTPUTS = frozenset({"color", "overlay", "confidence", "health"})


def auto32(h: int, w: int) -> tuple[int, int]:
    """Each side rounded up to a multiple of 32."""
    return ((h + 31) // 32 * 32, (w + 31) // 32 * 32)


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


class SegmentationPipeline:
    """Image arrays in, :class:`SegmentationResult` out; reusable for any number of frames."""

    def __init__(
        self,
        runner: Callable[[torch.Tensor], torch.Tensor],
        preset: DatasetPreset,
        input_size: str | Sequence[int] | None = None,
        device: str | torch.device = "cpu",
        output_resolution: str = "camera",
        overlay_alpha: float = 0.5,
        info: dict | None = None,
        *,
        remap: ClassRemap | None = None,
        confidence_threshold: float = 0.0,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
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
        wanted = set(outputs)
        unknown = wanted - OUTPUTS
        if unknown:
            raise ConfigError(f"unknown outputs {sorted(unknown)} (choose from {sorted(OUTPUTS)})")
        if isinstance(encodings, str):
            encodings = [encodings] * len(images)
        for image, enc in zip(images, encodings):
            check_image(image, enc, self.max_pixels)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(self.model_size_for(*image.shape[:2]), []).append(i)
        results: list[SegmentationResult | None] = [None] * len(images)
        for size, idx in groups.items():
            group = self._run_group([images[i] for i in idx], [encodings[i] for i in idx], size, wanted)
            for i, res in zip(idx, group):
                results[i] = res
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def model_input(self, image: np.ndarray, encoding: str = "rgb8") -> torch.Tensor:
        """The normalised (1, 3, H, W) model input of one frame, exactly as :meth:`run_batch` makes it."""
        check_image(image, encoding, self.max_pixels)
        rgb, _ = self._upload(image, encoding)
        return self.preprocess(rgb, self.model_size_for(*image.shape[:2]))

    # -- stages -------------------------------------------------------------------------------
    def _upload(self, image: np.ndarray, encoding: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(3,H,W) float RGB in 0..255 and the (C,H,W) uint8 image in input order for overlays."""
        t = torch.from_numpy(np.ascontiguousarray(image)).to(self.device, non_blocking=True)
        _, order = ENCODINGS[encoding]
        if order is None:  # mono
            if encoding == "mono16":
                t = (t.float() / 257.0).round().to(torch.uint8)
            chw = t.unsqueeze(0).expand(3, -1, -1)
            return chw.float(), chw
        chw = t.permute(2, 0, 1)
        rgb = chw[list(order)] if order != (0, 1, 2) else chw[:3]
        return rgb.float(), chw[:3]

    def preprocess(self, rgb: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(3,H,W) float 0..255 RGB -> normalised (1,3,h,w) at the model input size."""
        x = rgb.unsqueeze(0) * self._scale + self._shift
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def _run_group(
        self, images: list[np.ndarray], encodings: list[str], size: tuple[int, int], wanted: set[str]
    ) -> list[SegmentationResult]:
        t0 = time.perf_counter()
        with torch_threads(self._stage_threads):  # see threads.py: small stages, one thread
            uploaded = [self._upload(img, enc) for img, enc in zip(images, encodings)]
            batch = torch.cat([self.preprocess(rgb, size) for rgb, _ in uploaded])
        t1 = self._tick()
        logits = self.runner(batch)
        t2 = self._tick()
        results = []
        stride = logit_stride(tuple(logits.shape[-2:]), size)
        with torch_threads(self._stage_threads):
            for i, ((rgb, native), image, enc) in enumerate(zip(uploaded, images, encodings)):
                results.append(self._postprocess(logits[i:i + 1], stride, size, rgb, native, image.shape[:2],
                                                 enc, wanted))
        t3 = self._tick()
        if "health" in wanted:  # from the low-resolution logits and a subsample of the image
            for i, (res, image) in enumerate(zip(results, images)):
                res.health = health.frame_statistics(logits[i], image, self.health_level)
        t4 = self._tick()
        n = len(images)
        for res in results:
            res.model_size = size
            res.timings = {
                "preprocess_ms": (t1 - t0) * 1e3 / n,
                "inference_ms": (t2 - t1) * 1e3 / n,
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
        rgb: torch.Tensor,
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
            self._colour_outputs_cpu(res, unknown, rgb, native, out_hw, encoding, wanted)
        elif wanted & {"color", "overlay"}:
            color = self._palette[labels_t.long()]  # (H, W, 3) RGB
            if "color" in wanted:
                res.color = self._to_numpy(color)
            if "overlay" in wanted:
                base = native
                if tuple(base.shape[-2:]) != out_hw:
                    base = F.interpolate(rgb.unsqueeze(0), size=out_hw, mode="bilinear",
                                         align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
                    if ENCODINGS[encoding][1] == (2, 1, 0):
                        base = base.flip(0)
                _, order = ENCODINGS[encoding]
                color_in_order = color.flip(-1) if order == (2, 1, 0) else color
                a = int(round(self._alpha * 256))
                blended = (base.permute(1, 2, 0).to(torch.int16) * (256 - a)
                           + color_in_order.to(torch.int16) * a + 128) >> 8
                if unknown is not None:  # unknown pixels: the camera image, untinted
                    blended = torch.where(unknown.unsqueeze(-1), base.permute(1, 2, 0).to(torch.int16), blended)
                res.overlay = self._to_numpy(blended.to(torch.uint8))
                res.overlay_encoding = "bgr8" if order == (2, 1, 0) else "rgb8"
        return res

    def _colour_outputs_cpu(self, res: SegmentationResult, unknown, rgb: torch.Tensor, native: torch.Tensor,
                            out_hw: tuple[int, int], encoding: str, wanted: set[str]) -> None:
        """Colour mask (an OpenCV table lookup) and overlay with numpy: the same integer blend as
        the tensor path, without int64 indices or int16 images."""
        labels = res.labels
        if labels.dtype == np.uint8 and len(self._palette_np) <= 256:  # a table lookup per channel
            lut = np.zeros((256, 1, 3), np.uint8)
            lut[:len(self._palette_np), 0] = self._palette_np
            color = cv2.LUT(cv2.merge([labels, labels, labels]), lut)
        else:
            color = self._palette_np[labels]
        if "color" in wanted:
            res.color = color
        if "overlay" not in wanted:
            return
        _, order = ENCODINGS[encoding]
        if tuple(native.shape[-2:]) != out_hw:
            base_t = F.interpolate(rgb.unsqueeze(0), size=out_hw, mode="bilinear",
                                   align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
            base = base_t.permute(1, 2, 0).numpy()[..., ::-1] if order == (2, 1, 0) else base_t.permute(1, 2, 0).numpy()
        else:
            base = native.permute(1, 2, 0).numpy()  # the input image itself (a view)
        a = int(round(self._alpha * 256))
        blended = base.astype(np.uint16) * (256 - a)
        blended += (color[..., ::-1] if order == (2, 1, 0) else color).astype(np.uint16) * a
        blended += 128
        blended >>= 8
        out = blended.astype(np.uint8)
        if unknown is not None:  # unknown pixels: the camera image, untinted
            mask = unknown.numpy()
            out[mask] = base[mask]
        res.overlay = out
        res.overlay_encoding = "bgr8" if order == (2, 1, 0) else "rgb8"

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
        if self._sync:
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
    preset = model_preset(opts, meta)
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
    if (meta.get("sidecar") or {}).get("source_weights"):
        info["source_weights"] = meta["sidecar"]["source_weights"]
    remap = load_remap(opts.class_remap, preset) if opts.class_remap else None
    if remap is not None:
        info["class_remap"] = remap.name
    return SegmentationPipeline(runner, preset, size, dev, opts.output_resolution, opts.overlay_alpha, info,
                                remap=remap, confidence_threshold=opts.confidence_threshold,
                                max_pixels=opts.max_pixels)
