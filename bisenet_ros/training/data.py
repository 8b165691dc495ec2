"""Training data: folder datasets (``images/`` + ``labels/``) and the Cityscapes layout.

* **Folder**: ``DIR/images/<stem>.{png,jpg,jpeg,bmp}`` and ``DIR/labels/<stem>.png``; labels are
  single-channel PNGs of class ids, ``255`` (the preset's ignore index) = not labelled.
* **Cityscapes**: ``DIR/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
  ``DIR/gtFine/<split>/<city>/*_gtFine_labelTrainIds.png`` (used when present) or
  ``*_gtFine_labelIds.png`` mapped to train ids by the preset's ``labelIds`` label map.

Any dataset can also remap raw label values with a named ``label_maps`` entry of the preset.
Training samples are augmented (random scale, crop, horizontal flip, colour jitter) with a
random generator derived from ``(seed, sample key)``, so the data stream does not depend on the
number of loader workers and a resumed run sees the same samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..data.datasets import DatasetPreset
from ..data.images import read_image_file
from ..errors import BisenetError, ImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class DataError(BisenetError):
    """A training/validation dataset is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path


def find_samples(root: str | Path, split: str = "train", cityscapes_labels: str = "auto") -> tuple[list[Sample], str]:
    """The (image, label) pairs under ``root`` and the layout found (``folder``/``cityscapes``)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return _folder_samples(root), "folder"
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return _cityscapes_samples(root, split, cityscapes_labels), "cityscapes"
    raise DataError(f"{root}: expected images/ + labels/ or Cityscapes leftImg8bit/ + gtFine/ folders")


def _folder_samples(root: Path) -> list[Sample]:
    images = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{root / 'images'}: no images ({', '.join(IMAGE_SUFFIXES)})")
    samples, missing = [], []
    for img in images:
        lbl = root / "labels" / f"{img.stem}.png"
        (samples if lbl.is_file() else missing).append(Sample(img, lbl))
    if missing:
        raise DataError(f"{root / 'labels'}: {len(missing)} of {len(images)} images have no label PNG "
                        f"with the same stem (e.g. {missing[0].label.name})")
    return samples


def _cityscapes_samples(root: Path, split: str, labels: str) -> list[Sample]:
    img_dir = root / "leftImg8bit" / split
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: Cityscapes split '{split}' not found")
    images = sorted(img_dir.glob("*/*_leftImg8bit.png"))
    if not images:
        raise DataError(f"{img_dir}: no *_leftImg8bit.png images")
    if labels not in ("auto", "trainIds", "labelIds"):
        raise DataError(f"cityscapes labels must be auto, trainIds or labelIds, got '{labels}'")
    samples = []
    for img in images:
        base = img.name[: -len("_leftImg8bit.png")]
        gt = root / "gtFine" / split / img.parent.name
        cands = {"trainIds": gt / f"{base}_gtFine_labelTrainIds.png", "labelIds": gt / f"{base}_gtFine_labelIds.png"}
        order = [labels] if labels != "auto" else ["trainIds", "labelIds"]
        found = next((cands[k] for k in order if cands[k].is_file()), None)
        if found is None:
            raise DataError(f"{gt}: no gtFine {'/'.join(order)} label for {img.name}")
        samples.append(Sample(img, found))
    return samples


def cityscapes_needs_map(samples: Sequence[Sample]) -> bool:
    """True when the Cityscapes labels are raw labelIds (they need the preset's labelIds map)."""
    return any(s.label.name.endswith("_gtFine_labelIds.png") for s in samples)


def _read(path: Path, flags: int) -> np.ndarray | None:
    """The file's pixels (its header's size checked before decoding), None if unreadable."""
    try:
        return read_image_file(path, flags)
    except ImageError as exc:
        raise DataError(str(exc)) from None


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3)."""
    img = _read(path, cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"{path}: cannot read image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label(path: Path, lut: np.ndarray | None, num_classes: int, ignore_index: int) -> np.ndarray:
    """Class ids (H, W) int64, raw values mapped through ``lut`` and checked."""
    lbl = _read(path, cv2.IMREAD_UNCHANGED)
    if lbl is None:
        raise DataError(f"{path}: cannot read label image")
    if lbl.ndim != 2:
        raise DataError(f"{path}: labels must be single-channel PNGs of class ids, got {lbl.shape[2]} channels")
    lbl = lut[lbl] if lut is not None else lbl.astype(np.int64)
    bad = (lbl >= num_classes) & (lbl != ignore_index)
    if bad.any():
        raise DataError(f"{path}: label values {sorted(np.unique(lbl[bad]).tolist())[:8]} are neither "
                        f"class ids 0..{num_classes - 1} nor the ignore index {ignore_index}")
    return lbl


@dataclass(frozen=True)
class Augment:
    """Random scale / crop / flip / colour jitter, as the public BiSeNet training uses."""

    crop: tuple[int, int]  # (H, W)
    scale: tuple[float, float] = (0.75, 1.5)
    flip: bool = True
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4

    def __call__(self, img: np.ndarray, lbl: np.ndarray, rng: np.random.Generator,
                 ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
        s = rng.uniform(*self.scale)
        h, w = lbl.shape
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        lbl = cv2.resize(lbl.astype(np.uint8 if lbl.max(initial=0) < 256 else np.uint16), (nw, nh),
                         interpolation=cv2.INTER_NEAREST).astype(np.int64)
        ch, cw = self.crop
        ph, pw = max(ch - nh, 0), max(cw - nw, 0)
        if ph or pw:  # pad with ignore (label) and grey (image)
            img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(124, 116, 104))
            lbl = np.pad(lbl, ((0, ph), (0, pw)), constant_values=ignore_index)
        y = int(rng.integers(0, img.shape[0] - ch + 1))
        x = int(rng.integers(0, img.shape[1] - cw + 1))
        img, lbl = img[y:y + ch, x:x + cw], lbl[y:y + ch, x:x + cw]
        if self.flip and rng.random() < 0.5:
            img, lbl = img[:, ::-1], lbl[:, ::-1]
        return self._colour(img, rng), np.ascontiguousarray(lbl)

    def _colour(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = img.astype(np.float32)
        if self.brightness:
            out *= rng.uniform(1 - self.brightness, 1 + self.brightness)
        if self.contrast:
            mean = out.mean()
            out = (out - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + mean
        if self.saturation:
            grey = out.mean(axis=2, keepdims=True)
            out = (out - grey) * rng.uniform(1 - self.saturation, 1 + self.saturation) + grey
        return np.clip(out, 0, 255).astype(np.uint8)


class SegmentationDataset(Dataset):
    """Pairs of (normalised image tensor, label tensor) for training, or raw arrays for eval.

    ``dataset[(index, key)]`` augments with a generator seeded from ``(seed, key)`` (training);
    ``dataset[index]`` returns the unaugmented RGB uint8 image and int64 labels (validation).
    """

    def __init__(self, samples: Sequence[Sample], preset: DatasetPreset, lut: np.ndarray | None = None,
                 augment: Augment | None = None, seed: int = 0) -> None:
        if not samples:
            raise DataError("dataset is empty")
        self.samples = list(samples)
        self.preset = preset
        self.lut = lut
        self.augment = augment
        self.seed = int(seed)
        self.mean = np.asarray(preset.mean, np.float32) * 255.0
        self.std = np.asarray(preset.std, np.float32) * 255.0

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.samples[index]
        img = read_image(s.image)
        lbl = read_label(s.label, self.lut, self.preset.num_classes, self.preset.ignore_index)
        if img.shape[:2] != lbl.shape:
            raise DataError(f"{s.label}: label size {lbl.shape[1]}x{lbl.shape[0]} differs from image "
                            f"{s.image.name} {img.shape[1]}x{img.shape[0]}")
        return img, lbl

    def __getitem__(self, item):
        if not isinstance(item, tuple):
            return self.load(int(item))
        index, key = item
        img, lbl = self.load(int(index))
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, int(key)])
            img, lbl = self.augment(img, lbl, rng, self.preset.ignore_index)
        x = (img.astype(np.float32) - self.mean) / self.std
        return torch.from_numpy(x.transpose(2, 0, 1).copy()), torch.from_numpy(lbl.astype(np.int64))


class IterationSampler(Sampler):
    """An endless, seeded stream of ``(index, key)``: epoch-wise shuffles, ``key`` = stream
    position. ``start`` skips the first positions (resuming at iteration ``k`` with batch ``b``
    starts at ``k * b``)."""

    def __init__(self, size: int, seed: int, start: int = 0) -> None:
        self.size, self.seed, self.start = int(size), int(seed), int(start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        pos = self.start
        epoch = pos // self.size
        while True:
            perm = np.random.default_rng([self.seed, 7919, epoch]).permutation(self.size)
            for i in range(pos - epoch * self.size, self.size):
                yield int(perm[i]), pos
                pos += 1
            epoch += 1

    def __len__(self) -> int:  # endless; DataLoader only needs a number
        return 2 ** 62
