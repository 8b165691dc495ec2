"""The pipeline's colour outputs: the palette colour mask and the overlay (the camera image with
the mask alpha-blended in), from the output class ids.

Both paths blend with the same integer rule, ``(base * (256 - a) + colour * a + 128) >> 8`` with
``a = round(alpha * 256)``, so CPU and GPU overlays are equal; pixels marked unknown (confidence
below the threshold) keep the camera image, untinted.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..data.images import ENCODINGS


def _is_bgr(encoding: str) -> bool:
    """Whether the camera's colour order is BGR (the overlay keeps the input's order)."""
    return ENCODINGS[encoding][1] == (2, 1, 0)


def _base(native: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """The camera image ((3, H, W) uint8 in input order) at ``out_hw`` (bilinear, rounded)."""
    if tuple(native.shape[-2:]) == tuple(out_hw):
        return native
    return F.interpolate(native.float().unsqueeze(0), size=out_hw, mode="bilinear",
                         align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)


def blend(base: np.ndarray, color: np.ndarray, alpha: float) -> np.ndarray:
    """``(base * (256 - a) + color * a + 128) >> 8`` with ``a = round(alpha * 256)``, for uint8
    (H, W, 3) images, exactly, in one OpenCV pass: its float32 weighted sum of the multiples of
    1/256 is exact, and the offset 1/512 makes its round-to-nearest the floor (every ``a``, base
    and colour value is checked in test_pipeline). numpy's uint16 arithmetic took 7 ms at 720p, this 1 ms."""
    a = int(round(alpha * 256))
    return cv2.addWeighted(np.ascontiguousarray(base), (256 - a) / 256, np.ascontiguousarray(color), a / 256,
                           1 / 512)


def cpu_outputs(res, palette: np.ndarray, alpha: float, unknown: torch.Tensor | None, native: torch.Tensor,
                out_hw: tuple[int, int], encoding: str, wanted: set[str]) -> None:
    """Colour mask (an OpenCV table lookup) and overlay (:func:`blend`) into ``res``: the same
    integer blend as :func:`tensor_outputs`, without int64 indices or int16 images."""
    labels = res.labels
    if labels.dtype == np.uint8 and len(palette) <= 256:  # a table lookup per channel
        lut = np.zeros((256, 1, 3), np.uint8)
        lut[:len(palette), 0] = palette
        color = cv2.LUT(cv2.merge([labels, labels, labels]), lut)
    else:
        color = palette[labels]
    if "color" in wanted:
        res.color = color
    if "overlay" not in wanted:
        return
    bgr = _is_bgr(encoding)
    base = _base(native, out_hw).permute(1, 2, 0).numpy()  # at camera resolution: the input image itself (a view)
    out = blend(base, cv2.cvtColor(color, cv2.COLOR_RGB2BGR) if bgr else color, alpha)
    if unknown is not None:  # unknown pixels: the camera image, untinted
        mask = unknown.numpy()
        out[mask] = base[mask]
    res.overlay = out
    res.overlay_encoding = "bgr8" if bgr else "rgb8"


def tensor_outputs(res, labels_t: torch.Tensor, palette: torch.Tensor, alpha: float, unknown: torch.Tensor | None,
                   native: torch.Tensor, out_hw: tuple[int, int], encoding: str, wanted: set[str]) -> None:
    """Colour mask and overlay on the pipeline's device (CUDA), copied back into ``res``."""
    color = palette[labels_t.long()]  # (H, W, 3) RGB
    if "color" in wanted:
        res.color = color.contiguous().cpu().numpy()
    if "overlay" not in wanted:
        return
    bgr = _is_bgr(encoding)
    base = _base(native, out_hw)
    color_in_order = color.flip(-1) if bgr else color
    a = int(round(alpha * 256))
    blended = (base.permute(1, 2, 0).to(torch.int16) * (256 - a) + color_in_order.to(torch.int16) * a + 128) >> 8
    if unknown is not None:  # unknown pixels: the camera image, untinted
        blended = torch.where(unknown.unsqueeze(-1), base.permute(1, 2, 0).to(torch.int16), blended)
    res.overlay = blended.to(torch.uint8).contiguous().cpu().numpy()
    res.overlay_encoding = "bgr8" if bgr else "rgb8"
