"""Class remapping/merging (e.g. Cityscapes -> drivable / obstacle / other), kept as YAML data.

A remap file (``bisenet_ros/resources/remaps/<name>.yaml`` or any path) names its output classes,
their colours and which of the model's classes each one takes::

    name: cityscapes_driving
    source: cityscapes            # documentation: the label set it was written for
    classes:
    - {name: drivable, color: [128, 64, 128], from: [road]}
    - {name: obstacle, color: [220, 20, 60], from: [person, car, ...]}
    - {name: other, color: [70, 70, 70], from: rest}     # rest: every class not listed elsewhere

Every model class must end up in exactly one output class (names or ids in ``from``). The
pipeline applies the lookup table right after the argmax, so labels, colour mask, overlay, the
legend, class masks (``mask_classes``, applied after the remap, on the remapped names) and
evaluation all see the output classes. Ground truth in the model's classes is remapped with the
same table for scoring (:func:`ground_truth_lut`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import ConfigError
from ..resources import RESOURCES
from .datasets import DatasetPreset

REMAP_DIR = RESOURCES / "remaps"


def available_remaps() -> list[str]:
    return sorted(p.stem for p in REMAP_DIR.glob("*.yaml"))


@dataclass(frozen=True)
class ClassRemap:
    """The model's class ids -> output class ids (``lut``), and the output label set (``preset``)."""

    name: str
    lut: np.ndarray  # (source classes,) int64
    preset: DatasetPreset  # output classes; mean/std of the source (normalisation is the model's)


def load_remap(name_or_path: str | Path, source: DatasetPreset) -> ClassRemap:
    """A shipped remap by name, or a YAML file, resolved against the model's classes ``source``."""
    path = Path(str(name_or_path)).expanduser()
    if not path.is_file():
        path = REMAP_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown class remap '{name_or_path}' (shipped: {', '.join(available_remaps())}; "
                          "or a YAML file)")
    try:
        data = yaml.safe_load(path.read_text())
        classes = list(data["classes"])
    except (OSError, yaml.YAMLError, TypeError, KeyError) as exc:
        raise ConfigError(f"class remap {path}: expected a YAML mapping with 'classes' ({exc})") from None
    return resolve_remap(str(data.get("name") or path.stem), classes, source, str(path))


def resolve_remap(name: str, classes: list[dict[str, Any]], source: DatasetPreset, where: str) -> ClassRemap:
    """Check the output classes against the model's and build the lookup table."""
    ids = {n: i for i, n in enumerate(source.class_names)}
    lut = np.full(source.num_classes, -1, np.int64)
    rest = None
    for out_id, cls in enumerate(classes):
        if not isinstance(cls, dict) or "name" not in cls or "from" not in cls:
            raise ConfigError(f"class remap {where}: every class needs 'name' and 'from'")
        if cls["from"] == "rest":
            rest = out_id
            continue
        for item in cls["from"]:
            i = item if isinstance(item, int) else ids.get(str(item))
            if i is None or not 0 <= i < source.num_classes:
                raise ConfigError(f"class remap {where}: '{item}' is not a class of the model "
                                  f"({source.name}: {', '.join(source.class_names[:6])}, ...)")
            if lut[i] >= 0:
                raise ConfigError(f"class remap {where}: '{source.class_names[i]}' is in two output classes")
            lut[i] = out_id
    if rest is not None:
        lut[lut < 0] = rest
    if (lut < 0).any():
        missing = [source.class_names[i] for i in np.flatnonzero(lut < 0)]
        raise ConfigError(f"class remap {where}: model classes {missing[:5]} are in no output class "
                          "(list them, or give one class 'from: rest')")
    palette = np.array([cls.get("color", [0, 0, 0]) for cls in classes], np.uint8).reshape(-1, 3)
    preset = replace(source, name=name, class_names=tuple(str(c["name"]) for c in classes), palette=palette,
                     label_maps={})
    return ClassRemap(name, lut, preset)


def ground_truth_lut(remap: ClassRemap, label_lut: np.ndarray | None, ignore_index: int) -> np.ndarray:
    """Raw ground-truth value -> output class id: ``label_lut`` (raw -> model class) then the
    remap; the ignore index and values that are no model class stay as they are."""
    base = label_lut if label_lut is not None else np.arange(65536, dtype=np.int64)
    base = base.astype(np.int64)
    n = len(remap.lut)
    out = base.copy()
    known = (base >= 0) & (base < n) & (base != ignore_index)
    out[known] = remap.lut[base[known]]
    return out
