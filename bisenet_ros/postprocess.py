"""Exact, cheap labels from low-resolution logits.

The reference pipeline upsamples the model's 1/8 logits x8 bilinearly (inside the model), resizes
them bilinearly to the camera size (``align_corners=False``) and takes the argmax. Both resizes
are linear and separable, so each output pixel's logits are a convex combination (non-negative
weights summing to one) of at most 3x3 low-resolution logit vectors: ``out = A_h L A_w^T`` with
1-D weight matrices ``A = A_camera @ A_model`` built here by resizing an identity matrix with
PyTorch's own ``interpolate`` (same coordinate rules as the reference).

A convex combination of vectors that all have their maximum at class ``c`` has its maximum at
``c`` (ties aside). So wherever every low-resolution pixel in an output pixel's support has the
same argmax, the label is that argmax, with no full-resolution logits at all. Output pixels
share supports in blocks ("cells", about ``out/low`` pixels a side), so the test runs on cells;
only pixels of cells that straddle a class boundary get their logits computed (rows first, then
the 3 column taps of just those pixels). :func:`dense_logits` computes every pixel the same way,
for the confidence output.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

import torch
import torch.nn.functional as F


def interp_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) float64 weights of PyTorch's linear resize, ``align_corners=False``."""
    if n_in == n_out:
        return torch.eye(n_in, dtype=torch.float64)
    eye = torch.eye(n_in, dtype=torch.float64).unsqueeze(0)  # (1, C=n_in, L=n_in)
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].T.contiguous()


@dataclass(frozen=True)
class AxisPlan:
    """One axis: per output index its K support indices and weights, and the cells (numpy)."""

    index: np.ndarray  # (n_out, K) intp low-resolution indices (padded by repeats)
    weight: np.ndarray  # (n_out, K) float32 weights (0 on padding)
    cell_of: np.ndarray  # (n_out,) intp cell of each output index
    cell_support: np.ndarray  # (n_cells, K) intp support of each cell
    cell_start: np.ndarray  # (n_cells,) first output index of each cell
    cell_size: np.ndarray  # (n_cells,) output indices in each cell
    cell_taps: np.ndarray  # (n_cells,) non-zero weights of each cell (1..K)


def axis_plan(n_low: int, stride: int, n_out: int) -> AxisPlan:
    """Composite weights low -> low*stride (the model's upsampling) -> n_out (the resize)."""
    a = interp_matrix(n_low, n_out)
    if stride > 1:
        a = interp_matrix(n_low * stride, n_out) @ interp_matrix(n_low, n_low * stride)
    a = a.numpy()
    nz = a > 0
    count = nz.sum(1)
    offs = np.arange(int(count.max()))[None, :]
    index = nz.argmax(1)[:, None] + np.minimum(offs, count[:, None] - 1)  # supports are contiguous
    weight = np.where(offs < count[:, None], np.take_along_axis(a, index, 1), 0.0)
    change = np.ones(n_out, bool)
    change[1:] = (index[1:] != index[:-1]).any(1)
    start = np.flatnonzero(change)
    index, weight = np.asfortranarray(index, np.intp), np.asfortranarray(weight, np.float32)
    return AxisPlan(index, weight, np.cumsum(change) - 1,
                    index[change].astype(np.intp), start, np.diff(np.append(start, n_out)),
                    count[change])


@lru_cache(maxsize=16)
def plan(low_hw: tuple[int, int], stride: int, out_hw: tuple[int, int]) -> tuple[AxisPlan, AxisPlan]:
    """The (rows, cols) plans for low-resolution logits of ``low_hw`` to an output of ``out_hw``."""
    return axis_plan(low_hw[0], stride, out_hw[0]), axis_plan(low_hw[1], stride, out_hw[1])


def _argmax0(values: np.ndarray) -> np.ndarray:
    """argmax over the first axis (first maximum wins, as torch/numpy), one class at a time."""
    best = values[0].copy()
    arg = np.zeros(best.shape, np.uint8 if len(values) <= 256 else np.uint16)
    for c in range(1, len(values)):
        better = values[c] > best
        np.copyto(best, values[c], where=better)
        arg[better] = c
    return arg


def _row_pass(logits: np.ndarray, index: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(C, h, w) -> (C, len(index), w): logits interpolated along rows only."""
    out = np.take(logits, index[:, 0], axis=1) * weight[None, :, 0, None]
    for k in range(1, index.shape[1]):
        out += np.take(logits, index[:, k], axis=1) * weight[None, :, k, None]
    return out


def labels(logits: np.ndarray, stride: int, out_hw: tuple[int, int], threads: int = 1) -> np.ndarray:
    """argmax over classes of the resized logits for (C, h, w) float ``logits``: (H, W) uint8
    (uint16 for more than 256 classes), equal to :func:`naive_labels` up to float ties.

    Rows are interpolated for every output row (cheap: ``H x w``); along columns, each output
    pixel mixes the row-interpolated vectors of its column cell's support, and where those all
    have the same argmax the label is known. Only the remaining pixels get their taps computed.
    ``threads`` > 1 splits the output rows into bands run in parallel (numpy releases the GIL).
    """
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    rows, cols = plan(tuple(logits.shape[-2:]), int(stride), tuple(out_hw))
    out = np.empty(out_hw, np.uint8 if len(logits) <= 256 else np.uint16)
    bands = np.array_split(np.arange(out_hw[0]), max(1, min(int(threads), out_hw[0] // 64 or 1)))
    if len(bands) == 1:
        _labels_band(logits, rows, cols, out)
    else:
        list(_pool(len(bands)).map(
            lambda b: _labels_band(logits, rows, cols, out[b[0]:b[-1] + 1], b[0]), bands))
    return out


@lru_cache(maxsize=4)
def _pool(workers: int):
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(workers, thread_name_prefix="bisenet-postprocess")


def _labels_band(logits: np.ndarray, rows: AxisPlan, cols: AxisPlan, out: np.ndarray, y0: int = 0) -> None:
    """Fill ``out`` (output rows ``y0 .. y0 + len(out)``) with labels."""
    mid = _row_pass(logits, rows.index[y0:y0 + len(out)], rows.weight[y0:y0 + len(out)])
    per_cell = _argmax0(mid)[:, cols.cell_support]  # (rows, column cells, K)
    lo = per_cell.min(2)
    out[:] = np.repeat(lo, cols.cell_size, axis=1)
    mixed_y, mixed_cell = np.nonzero(lo != per_cell.max(2))
    two = cols.cell_taps[mixed_cell] == 2
    if two.any():  # most mixed cells: the wide ones between two low-resolution columns
        rest = _two_classes(out, mid, cols, mixed_y[two], mixed_cell[two])
        _boundary(out, mid, cols, mixed_y[two][rest], mixed_cell[two][rest], 2)
    three = ~two
    if three.any():
        _boundary(out, mid, cols, mixed_y[three], mixed_cell[three], int(cols.cell_taps.max()))


def _two_classes(out: np.ndarray, mid: np.ndarray, cols: AxisPlan, ys: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Two-tap pairs: logits ``A + t (B - A)`` along the pair (t = the right tap's weight). When
    the left winner ``a`` and the right winner ``b`` are the only classes ever on top for t in
    [0, 1] -- no class is above them where their lines cross, at ``t*`` -- each pixel's label is
    ``a`` before ``t*`` and ``b`` after it. Writes those pairs; returns the mask of the others."""
    a_vec = mid[:, ys, cols.cell_support[cells, 0]]  # (C, P)
    d_vec = mid[:, ys, cols.cell_support[cells, 1]] - a_vec
    pairs = np.arange(len(cells))
    a, b = a_vec.argmax(0), (a_vec + d_vec).argmax(0)
    slope = d_vec[b, pairs] - d_vec[a, pairs]  # > 0: b overtakes a
    with np.errstate(divide="ignore", invalid="ignore"):
        t_star = (a_vec[a, pairs] - a_vec[b, pairs]) / slope
    top = a_vec[a, pairs] + t_star * d_vec[a, pairs]
    others = (a_vec + t_star * d_vec).max(0)
    ok = (slope > 0) & (others <= top + 1e-6 * np.abs(top))
    py, px, pair = _pair_pixels(cols, ys[ok], cells[ok])
    after = cols.weight[px, 1] > t_star[ok][pair]
    out.reshape(-1)[py * out.shape[1] + px] = np.where(after, b[ok][pair], a[ok][pair])
    return ~ok


def _pair_pixels(cols: AxisPlan, ys: np.ndarray, cells: np.ndarray):
    """The pixels of (row, column cell) pairs: (rows, columns, pair index of each pixel)."""
    size = cols.cell_size[cells]
    n = int(size.sum())
    first = np.repeat(cols.cell_start[cells] - (np.cumsum(size) - size), size)
    pair = np.repeat(np.arange(len(cells)), size)
    return ys[pair], first + np.arange(n), pair


def _boundary(out: np.ndarray, mid: np.ndarray, cols: AxisPlan, ys: np.ndarray, cells: np.ndarray,
              taps: int) -> None:
    """Labels of the pixels of the (row ``ys``, column cell ``cells``) pairs, from their taps."""
    ys, xs, _ = _pair_pixels(cols, ys, cells)
    c, _, w = mid.shape
    flat_mid = mid.reshape(c, -1)
    base = ys * w
    index, weight = cols.index.T, cols.weight.T
    vals = np.take(flat_mid, base + index[0].take(xs), axis=1) * weight[0].take(xs)
    for k in range(1, taps):
        vals += np.take(flat_mid, base + index[k].take(xs), axis=1) * weight[k].take(xs)
    out.reshape(-1)[ys * out.shape[1] + xs] = _argmax0(vals)


def dense_logits(logits: np.ndarray, stride: int, out_hw: tuple[int, int]) -> np.ndarray:
    """Every output pixel's logits, (C, h, w) -> (C, H, W), with the same composite weights."""
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    rows, cols = plan(tuple(logits.shape[-2:]), int(stride), tuple(out_hw))
    mid = _row_pass(logits, rows.index, rows.weight)  # (C, H, w)
    out = np.take(mid, cols.index[:, 0], axis=2) * cols.weight[:, 0]
    for k in range(1, cols.index.shape[1]):
        out += np.take(mid, cols.index[:, k], axis=2) * cols.weight[:, k]
    return out


def naive_logits(logits: torch.Tensor, stride: int, out_hw: tuple[int, int]) -> torch.Tensor:
    """The reference for (N, C, h, w) logits: the model's own x``stride`` upsampling, then a
    bilinear resize to ``out_hw`` (the full-resolution logits the naive pipeline computes)."""
    x = logits.float()
    if stride > 1:
        x = F.interpolate(x, scale_factor=stride, mode="bilinear", align_corners=False)
    if tuple(x.shape[-2:]) != tuple(out_hw):
        x = F.interpolate(x, size=tuple(out_hw), mode="bilinear", align_corners=False)
    return x


def naive_labels(logits: torch.Tensor, stride: int, out_hw: tuple[int, int]) -> torch.Tensor:
    """argmax of :func:`naive_logits` for (C, h, w) logits: (H, W) int64."""
    return naive_logits(logits.unsqueeze(0), stride, out_hw)[0].argmax(0)
