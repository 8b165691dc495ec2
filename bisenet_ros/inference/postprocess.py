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
share supports in runs ("cells", about ``out/low`` pixels long), so the test runs on cells;
only pixels of cells that straddle a class boundary get their logits computed, and only for the
classes that can win there. That part is a small compiled kernel (numba, cached on disk after
the first call): per-pixel work does not vectorize in numpy. :func:`dense_logits` computes every
pixel with the same weights, for the confidence output.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

import torch
import torch.nn.functional as F
from numba import njit

from ..errors import one_line, safe_text

_log = logging.getLogger(__name__)


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
    inside_first: np.ndarray  # (n_low,) first output index whose support starts at or after s
    inside_last: np.ndarray  # (n_low,) last output index whose support ends at or before s


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
    if count.max() > 3:  # two linear resizes of 2 taps each reach at most 3 low-resolution taps
        raise ValueError(f"resize {n_low} x{stride} -> {n_out} needs {count.max()} taps (at most 3)")
    index, weight = np.ascontiguousarray(index, np.intp), np.ascontiguousarray(weight, np.float32)
    low = np.arange(n_low)
    return AxisPlan(index, weight, np.cumsum(change) - 1,
                    index[change].astype(np.intp), start, np.diff(np.append(start, n_out)),
                    count[change], np.searchsorted(index[:, 0], low, "left"),
                    np.searchsorted(index[:, -1], low, "right") - 1)


@lru_cache(maxsize=16)
def plan(low_hw: tuple[int, int], stride: int, out_hw: tuple[int, int]) -> tuple[AxisPlan, AxisPlan]:
    """The (rows, cols) plans for low-resolution logits of ``low_hw`` to an output of ``out_hw``."""
    return axis_plan(low_hw[0], stride, out_hw[0]), axis_plan(low_hw[1], stride, out_hw[1])


def _row_pass(logits: np.ndarray, index: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(C, h, w) -> (C, len(index), w): logits interpolated along rows only."""
    out = np.take(logits, index[:, 0], axis=1) * weight[None, :, 0, None]
    for k in range(1, index.shape[1]):
        out += np.take(logits, index[:, k], axis=1) * weight[None, :, k, None]
    return out


def _kernel(inline: bool = False):
    """numba's ``njit`` for the kernels below: no GIL, compiled once and cached on disk where a
    cache directory is writable (numba's rules: beside this file, else ``NUMBA_CACHE_DIR`` or
    ``~/.cache/numba``), compiled at each start where none is (a read-only robot image)."""
    def wrap(fn):
        options = {"nogil": True, "inline": "always" if inline else "never"}
        try:
            return _guard_cache(njit(cache=True, **options)(fn))
        except RuntimeError:  # numba: "cannot cache function ...: no locator available"
            return njit(**options)(fn)
    return wrap


def _guard_cache(dispatcher):
    """A cache file numba cannot read (garbage, truncated, another writer's) is ignored: one
    warning naming the file, the index emptied, the kernel compiled again and re-cached. A cache
    that cannot be written is ignored too (the kernel stays compiled in memory)."""
    cache = getattr(dispatcher, "_cache", None)
    files = getattr(cache, "_cache_file", None)
    if files is None:  # numba's NullCache, or another numba layout: nothing to guard
        return dispatcher
    load, save = cache.load_overload, cache.save_overload

    def guarded_load(sig, target_context):
        try:
            return load(sig, target_context)
        except Exception as exc:  # noqa: BLE001 - pickle, EOF, numba's own errors: any unreadable file
            _log.warning("numba cache %s is unreadable (%s): ignored, the postprocess kernel is compiled "
                         "again", _unreadable_file(files), safe_text(one_line(exc, 120)))
            try:
                cache.flush()  # an empty index: the rebuilt kernel replaces the files
            except Exception:  # noqa: BLE001 - a read-only cache: the save below is skipped too
                pass
            return None

    def guarded_save(sig, data):
        try:
            save(sig, data)
        except Exception as exc:  # noqa: BLE001
            _log.warning("numba cache %s cannot be written (%s): the kernel is compiled at each start",
                         files._index_path, safe_text(one_line(exc, 120)))

    cache.load_overload, cache.save_overload = guarded_load, guarded_save
    return dispatcher


def _unreadable_file(files) -> str:
    """The index (``.nbi``) when it cannot be read, else its data files (``.nbc``)."""
    try:
        files._load_index()
    except Exception:  # noqa: BLE001
        return files._index_path
    return os.path.join(files._cache_path, files._data_name_pattern.replace("{number:d}", "*"))


def warm_up() -> None:
    """Load (or compile, the first time on a machine: a few seconds) the labels kernel now,
    at start-up, instead of on the first frame."""
    labels(np.zeros((2, 2, 2), np.float32), 8, (16, 16))


def labels(logits: np.ndarray, stride: int, out_hw: tuple[int, int], threads: int = 1) -> np.ndarray:
    """argmax over classes of the resized logits for (C, h, w) float ``logits``: (H, W) uint8
    (uint16 for more than 256 classes), equal to :func:`naive_labels` up to float ties.

    Per output row, each low-resolution column gets the winner of its row-interpolated vector:
    read off the low-resolution argmax where the row's support rows agree, computed elsewhere.
    Runs of columns with one winner fill the output pixels whose support lies inside the run;
    the pixels between runs (column cells straddling a change) get logits, and only for the
    classes that can win there (:func:`_mixed_cell`). ``threads`` > 1 splits the output rows
    into bands run in parallel (the compiled kernel releases the GIL).
    """
    logits = np.asarray(logits, dtype=np.float32)
    rows, cols = plan(tuple(logits.shape[-2:]), int(stride), tuple(out_hw))
    low_t = np.ascontiguousarray(logits.transpose(1, 2, 0))  # (h, w, C): class vectors contiguous
    low_winner = logits.argmax(0)
    out = np.empty(out_hw, np.uint8 if len(logits) <= 256 else np.uint16)
    bands = np.array_split(np.arange(out_hw[0]), max(1, min(int(threads), out_hw[0] // 64 or 1)))
    band = lambda b: _labels_rows(low_t, low_winner, rows.index, rows.weight, cols,  # noqa: E731
                                  out[b[0]:b[-1] + 1], int(b[0]))
    if len(bands) == 1:
        band(bands[0])
    else:
        list(_pool(len(bands)).map(band, bands))
    return out


@lru_cache(maxsize=4)
def _pool(workers: int):
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(workers, thread_name_prefix="bisenet-postprocess")


def _labels_rows(low_t, low_winner, row_index, row_weight, cols: AxisPlan, out, y0) -> None:
    """Output rows ``y0 .. y0 + len(out)`` (one band) through the compiled kernel."""
    _labels_kernel(low_t, low_winner, row_index, row_weight, cols.weight, cols.cell_of,
                   cols.cell_start, cols.cell_size, cols.cell_support, cols.cell_taps,
                   cols.inside_first, cols.inside_last, out, y0)


@_kernel()
def _labels_kernel(low_t, low_winner, row_index, row_weight, col_weight, cell_of, cell_start,
                   cell_size, cell_support, cell_taps, inside_first, inside_last, out, y0):  # pragma: no cover
    """Fill ``out`` (output rows ``y0 .. y0 + len(out)``) one output row at a time: the winner
    of every low-resolution column, then the runs of equal winners and the cells between them.
    (No array views in the loops: each would cost a reference count.)"""
    w, n_classes = low_t.shape[1], low_t.shape[2]
    mid = np.empty((w, n_classes), np.float32)  # row-interpolated class vectors, where computed
    ready = np.zeros(w, np.bool_)
    winner = np.empty(w, np.int64)
    candidates = np.empty(n_classes, np.int64)
    for yy in range(out.shape[0]):
        y = y0 + yy
        _column_winners(low_t, low_winner, row_index, row_weight, y, mid, ready, winner)
        done, run = 0, 0  # output pixels written; first column of the current run
        for s in range(1, w + 1):
            if s < w and winner[s] == winner[run]:
                continue
            first, last = inside_first[run], inside_last[s - 1]  # pixels inside the run
            if first > done:  # the cells before them straddle the previous change
                _mixed_cells(low_t, row_index, row_weight, y, mid, ready, winner, col_weight,
                             cell_start, cell_size, cell_support, cell_taps, cell_of[done],
                             cell_of[first - 1] + 1, candidates, out, yy)
                done = first
            if last >= first:
                out[yy, first:last + 1] = winner[run]
                done = last + 1
            run = s


@_kernel()
def _mixed_cells(low_t, row_index, row_weight, y, mid, ready, winner, col_weight, cell_start,
                 cell_size, cell_support, cell_taps, j0, j1, candidates, out, yy):  # pragma: no cover
    """Column cells ``j0 .. j1 - 1`` of output row ``y``: their support columns' vectors (where
    not computed yet), then :func:`_mixed_cell` for each."""
    for j in range(j0, j1):
        taps = cell_taps[j]
        for k in range(taps):
            if not ready[cell_support[j, k]]:
                _interpolate_column(low_t, row_index, row_weight, y, cell_support[j, k], mid)
                ready[cell_support[j, k]] = True
        _mixed_cell(mid, winner, cell_support, j, taps, col_weight, cell_start[j], cell_size[j],
                    candidates, out, yy)


@_kernel(inline=True)
def _column_winners(low_t, low_winner, row_index, row_weight, y, mid, ready, winner):  # pragma: no cover
    """``winner[x]``: argmax of the row-interpolated vector of column ``x``. Where every support
    row has the same low-resolution argmax, that is it (a convex combination keeps the maximum);
    elsewhere the vector is computed into ``mid`` and marked ``ready``."""
    for x in range(low_t.shape[1]):
        first = low_winner[row_index[y, 0], x]
        agree = True
        for k in range(1, row_index.shape[1]):
            agree = agree and low_winner[row_index[y, k], x] == first
        ready[x] = not agree
        if agree:
            winner[x] = first
            continue
        _interpolate_column(low_t, row_index, row_weight, y, x, mid)
        best, arg = mid[x, 0], 0
        for c in range(1, low_t.shape[2]):
            if mid[x, c] > best:
                best, arg = mid[x, c], c
        winner[x] = arg


@_kernel(inline=True)
def _interpolate_column(low_t, row_index, row_weight, y, x, mid):  # pragma: no cover - compiled
    """mid[x] = sum_k row_weight[y, k] * low_t[row_index[y, k], x] (padding taps weigh 0)."""
    for c in range(low_t.shape[2]):
        mid[x, c] = row_weight[y, 0] * low_t[row_index[y, 0], x, c]
    for k in range(1, row_index.shape[1]):
        if row_weight[y, k] != 0:
            for c in range(low_t.shape[2]):
                mid[x, c] += row_weight[y, k] * low_t[row_index[y, k], x, c]


@_kernel(inline=True)
def _mixed_cell(mid, winner, cell_support, j, taps, col_weight, start, size, candidates, out, yy):  # pragma: no cover
    """Labels of one output row's pixels in column cell ``j``, whose support columns disagree.

    Each pixel's logits are a convex combination of the support vectors ``mid[s_k]``, so class
    ``c`` is at most ``max_k mid[s_k, c]`` anywhere in the cell, and a support winner ``a`` is at
    least ``min_k mid[s_k, a]`` everywhere. Classes whose ceiling is below the best such floor can
    never win: only the others (usually two or three) get their logits computed, in class order
    with a strict ``>`` so the first maximum wins, as torch's argmax does."""
    s0 = cell_support[j, 0]
    s1 = cell_support[j, 1]
    s2 = cell_support[j, 2] if taps == 3 else s1
    a0, a1, a2 = winner[s0], winner[s1], winner[s2]
    floor = max(min(mid[s0, a0], mid[s1, a0], mid[s2, a0]), min(mid[s0, a1], mid[s1, a1], mid[s2, a1]),
                min(mid[s0, a2], mid[s1, a2], mid[s2, a2]))
    n = 0
    for c in range(mid.shape[1]):
        if max(mid[s0, c], mid[s1, c], mid[s2, c]) >= floor:
            candidates[n] = c
            n += 1
    for x in range(start, start + size):
        w0, w1 = col_weight[x, 0], col_weight[x, 1]
        w2 = col_weight[x, 2] if taps == 3 else np.float32(0)
        best, arg = -np.inf, a0  # a0 only if every value is NaN
        for i in range(n):
            c = candidates[i]
            value = mid[s0, c] * w0 + mid[s1, c] * w1
            if taps == 3:
                value += mid[s2, c] * w2
            if value > best:
                best, arg = value, c
        out[yy, x] = arg


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
