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

from ..errors import ConfigError, safe_text
from ..resources import RESOURCES
from ..safe_yaml import load_yaml_file
from .datasets import DatasetPreset

REMAP_DIR = RESOURCES / "remaps"
MAX_OUTPUT_CLASSES = 65535  #: output classes of one remap (labels are 16-bit)


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
    data = load_yaml_file(path, "class remap")
    classes = data.get("classes")
    if not isinstance(classes, list):
        raise ConfigError(f"{safe_text(str(path))}: class remap: expected a mapping with 'classes', a list")
    return resolve_remap(str(data.get("name") or path.stem), classes, source, str(path))


def resolve_remap(name: str, classes: list[dict[str, Any]], source: DatasetPreset, where: str) -> ClassRemap:
    """Check the output classes against the model's and build the lookup table; anything but the
    documented form is one :class:`ConfigError` line naming ``where`` (never a TypeError)."""
    where = safe_text(where, 200)
    if not isinstance(classes, list) or not classes:
        raise ConfigError(f"class remap {where}: 'classes' must be a non-empty list")
    if len(classes) > MAX_OUTPUT_CLASSES:
        raise ConfigError(f"class remap {where}: {len(classes)} output classes, at most {MAX_OUTPUT_CLASSES}")
    lut = np.full(source.num_classes, -1, np.int64)
    rest = None
    names, palette = [], np.zeros((len(classes), 3), np.uint8)
    for out_id, cls in enumerate(classes):
        names.append(_class_name(cls, out_id, where))
        palette[out_id] = _color(cls.get("color", (0, 0, 0)), names[-1], where)
        if cls["from"] == "rest":
            if rest is not None:
                raise ConfigError(f"class remap {where}: 'from: rest' in two classes ({names[rest]}, {names[-1]})")
            rest = out_id
            continue
        for i in _source_ids(cls["from"], names[-1], source, where):
            if lut[i] >= 0:
                raise ConfigError(f"class remap {where}: '{source.class_names[i]}' is in two output classes")
            lut[i] = out_id
    if len(set(names)) != len(names):
        raise ConfigError(f"class remap {where}: output class names must differ")
    if rest is not None:
        lut[lut < 0] = rest
    if (lut < 0).any():
        missing = [source.class_names[i] for i in np.flatnonzero(lut < 0)]
        raise ConfigError(f"class remap {where}: model classes {missing[:5]} are in no output class "
                          "(list them, or give one class 'from: rest')")
    preset = replace(source, name=name, class_names=tuple(names), palette=palette, label_maps={})
    return ClassRemap(name, lut, preset)


def _class_name(cls: Any, out_id: int, where: str) -> str:
    if not isinstance(cls, dict) or "name" not in cls or "from" not in cls:
        raise ConfigError(f"class remap {where}: class {out_id}: every class needs 'name' and 'from'")
    name = cls["name"]
    if isinstance(name, bool) or not isinstance(name, (str, int)) or not str(name).strip():
        raise ConfigError(f"class remap {where}: class {out_id}: 'name' must be a non-empty text, "
                          f"got {safe_text(repr(name), 60)}")
    return str(name)


def _color(value: Any, name: str, where: str) -> tuple[int, int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)):
        raise ConfigError(f"class remap {where}: class '{safe_text(name, 60)}': 'color' must be [R, G, B] "
                          f"integers in 0..255, got {safe_text(repr(value), 60)}")
    return tuple(value)


def _source_ids(items: Any, name: str, source: DatasetPreset, where: str) -> list[int]:
    """The model class ids a ``from`` list names (class names or ids)."""
    if not isinstance(items, list) or not items:
        raise ConfigError(f"class remap {where}: class '{safe_text(name, 60)}': 'from' must be 'rest' or a "
                          f"non-empty list of model class names or ids, got {safe_text(repr(items), 60)}")
    ids = {n: i for i, n in enumerate(source.class_names)}
    out = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            i = item
        elif isinstance(item, str):
            i = ids.get(item)
        else:
            i = None
        if i is None or not 0 <= i < source.num_classes:
            raise ConfigError(f"class remap {where}: '{safe_text(str(item), 60)}' is not a class of the model "
                              f"({source.name}: {', '.join(source.class_names[:6])}, ...)")
        out.append(i)
    return out


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
