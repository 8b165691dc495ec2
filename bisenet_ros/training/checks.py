"""Checks a training run makes before its first iteration, so a long run never dies late.

* :func:`check_outputs`: ``--out`` is a ``.pth``/``.pt`` file that is no input, its sidecar
  ``<stem>.yaml`` is not the checkpoint and no user file is replaced (``--overwrite`` only
  replaces a checkpoint/sidecar/training curve), and an interrupted run's state is not silently
  discarded.
* :func:`check_data`: one pass over every sample (progress bar): image sizes from the file
  header, labels decoded and their values checked, label and image sizes equal. All problems
  are collected and reported together in one line (the first few named).
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..data.images import check_pixels, compressed_size
from ..errors import ConfigError, ImageError
from ..output_files import CHECKPOINT, SIDECAR, OutputError, check_output, kind_for
from .curve import log_paths
from .data import DataError, SegmentationDataset, read_image, read_label

CHECKPOINT_SUFFIXES = (".pth", ".pt")


def check_outputs(cfg, state_file: Path, sidecar: Path) -> None:
    """Refuse an ``--out`` that would fail after training or destroy something (see module doc)."""
    out = Path(cfg.out).expanduser()
    if out.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise ConfigError(f"--out {cfg.out}: the checkpoint file must end in .pth or .pt (e.g. out/model.pth)")
    inputs = [p for p in (cfg.data, cfg.val, cfg.init, cfg.dataset) if p and Path(p).expanduser().exists()]
    overwrite = bool(getattr(cfg, "overwrite", False))
    try:
        check_output(out, inputs, kind=CHECKPOINT, overwrite=overwrite)
        check_output(sidecar, inputs, kind=SIDECAR, overwrite=overwrite, option="--out sidecar")
        for path in log_paths(out):  # the training curve (CSV, PNG) beside the checkpoint
            check_output(path, inputs, kind=kind_for(path), overwrite=overwrite, option="--out curve")
    except OutputError as exc:
        raise ConfigError(str(exc)) from None
    resuming = cfg.resume and (cfg.resume == "auto" or Path(cfg.resume).expanduser().resolve() == state_file.resolve())
    if state_file.exists() and not resuming and not overwrite:
        raise ConfigError(f"{state_file} holds an interrupted training: pass --resume to continue it, "
                          "or --overwrite to start over")


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the header for PNG/JPEG, else by decoding."""
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
        w, h = compressed_size(head)
        return h, w
    except (OSError, ImageError):
        img = read_image(path)  # other formats, or a header beyond the first 64 KB
        return img.shape[0], img.shape[1]


def _check_budget(sample, size: tuple[int, int], max_pixels: int) -> None:
    try:
        check_pixels(size[1], size[0], max_pixels)
        label = _image_size(sample.label)
        check_pixels(label[1], label[0], max_pixels)
    except ImageError as exc:
        raise DataError(f"{sample.image.name}: {exc}") from None


def check_data(ds: SegmentationDataset, what: str, progress: bool = True, limit: int = 5,
               max_pixels: int | None = None) -> None:
    """Read every label and image header once; raise one :class:`DataError` listing the problems.
    ``max_pixels``: images and labels beyond this budget are refused from their headers, undecoded."""
    from tqdm import tqdm

    problems: list[str] = []
    preset = ds.preset
    for sample in tqdm(ds.samples, desc=f"check {what}", unit="img", disable=not progress,
                       file=sys.stderr, dynamic_ncols=True, mininterval=1.0):
        try:
            size = _image_size(sample.image)
            if max_pixels is not None:
                _check_budget(sample, size, max_pixels)
            lbl = read_label(sample.label, ds.lut, preset.num_classes, preset.ignore_index)
            if tuple(lbl.shape) != size:
                raise DataError(f"{sample.label}: label size {lbl.shape[1]}x{lbl.shape[0]} differs from "
                                f"image {sample.image.name} {size[1]}x{size[0]}")
        except DataError as exc:
            problems.append(str(exc))
    if problems:
        shown = "; ".join(problems[:limit])
        more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
        raise DataError(f"{what}: {len(problems)} of {len(ds.samples)} samples unusable: {shown}{more}")
