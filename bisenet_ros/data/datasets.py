"""Dataset presets: class names, palette, normalisation and label maps, kept as data.

Built-in presets live in ``bisenet_ros/resources/presets/<name>.yaml`` (Cityscapes, CamVid, COCO-Stuff,
ADE20k). A custom preset is a YAML file of the same form::

    name: my_robot
    num_classes: 3
    mean: [0.485, 0.456, 0.406]      # RGB, 0-1 scale
    std: [0.229, 0.224, 0.225]
    ignore_index: 255
    classes:
      - {name: floor, color: [128, 64, 128]}
      - {name: obstacle, color: [220, 20, 60]}
      - {name: person, color: [0, 0, 142]}
    label_maps:                       # optional: raw label value -> class id
      raw: {1: 0, 2: 1, 7: 2}
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import ConfigError, one_line
from ..resources import RESOURCES
from ..safe_yaml import load_yaml_file

PRESET_DIR = RESOURCES / "presets"


@dataclass(frozen=True)
class DatasetPreset:
    """What the pipeline needs to know about a label set."""

    name: str
    class_names: tuple[str, ...]
    palette: np.ndarray  # (num_classes, 3) uint8, RGB
    mean: tuple[float, float, float]  # RGB, 0-1 scale
    std: tuple[float, float, float]
    ignore_index: int = 255
    input_size: tuple[int, int] | None = None  # suggested (H, W) for this dataset
    label_maps: Mapping[str, Mapping[int, int]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def with_overrides(
        self,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_classes: int | None = None,
    ) -> "DatasetPreset":
        """Return a copy with mean/std replaced and, if needed, the class list resized.

        A class count other than the preset's keeps the first names and colours and adds
        ``class_<i>`` names with generated colours, so a custom model still gets a legend.
        """
        preset = self
        if mean is not None:
            preset = replace(preset, mean=triple(mean, "mean"))
        if std is not None:
            std3 = triple(std, "std")
            if min(std3) <= 0:
                raise ConfigError(f"std must be positive, got {list(std3)}")
            preset = replace(preset, std=std3)
        if num_classes is not None and num_classes != preset.num_classes:
            if num_classes < 1:
                raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
            names = list(preset.class_names[:num_classes])
            names += [f"class_{i}" for i in range(len(names), num_classes)]
            palette = np.concatenate(
                [preset.palette[:num_classes], generate_palette(num_classes)[len(preset.palette):]]
            )[:num_classes]
            preset = replace(preset, class_names=tuple(names), palette=palette.astype(np.uint8))
        return preset

    def label_lut(self, map_name: str | None) -> np.ndarray | None:
        """A lookup table raw value -> class id (``ignore_index`` elsewhere), or None for no map."""
        if not map_name:
            return None
        if map_name not in self.label_maps:
            known = ", ".join(sorted(self.label_maps)) or "none"
            raise ConfigError(
                f"preset '{self.name}' has no label map '{map_name}' (known: {known})"
            )
        return build_label_lut(self.label_maps[map_name], self.ignore_index)

    def to_dict(self) -> dict:
        """Plain-data form (YAML/JSON), e.g. for checkpoint sidecars and the ROS legend."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "mean": list(self.mean),
            "std": list(self.std),
            "ignore_index": self.ignore_index,
            "classes": [
                {"name": n, "color": [int(c) for c in col]}
                for n, col in zip(self.class_names, self.palette)
            ],
        }


def triple(values: Sequence[float], what: str) -> tuple[float, float, float]:
    """Three finite numbers (mean or std, RGB on a 0-1 scale), else :class:`ConfigError`."""
    try:
        vals = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"{what} needs 3 numbers (R,G,B on a 0-1 scale), got {values!r:.80}") from None
    if len(vals) != 3:
        raise ConfigError(f"{what} needs 3 values (R,G,B on a 0-1 scale), got {len(vals)}")
    if not all(math.isfinite(v) for v in vals):
        raise ConfigError(f"{what} must be finite numbers, got {vals}")
    return (vals[0], vals[1], vals[2])


def generate_palette(n: int) -> np.ndarray:
    """Deterministic, well-separated RGB colours for ``n`` classes (golden-ratio hue walk)."""
    cols = []
    for i in range(n):
        h = (i * 0.618033988749895 + 0.05) % 1.0
        s = 0.55 + 0.45 * ((i * 7) % 5) / 4
        v = 0.6 + 0.4 * ((i * 3) % 4) / 3
        r, g, b = colorsys.hsv_to_rgb(h, s, v)
        cols.append((round(r * 255), round(g * 255), round(b * 255)))
    return np.asarray(cols, dtype=np.uint8).reshape(n, 3)


def build_label_lut(mapping: Mapping[int, int], ignore_index: int = 255) -> np.ndarray:
    """Lookup table over uint16 values: ``lut[raw] = class id``, unmapped values -> ignore."""
    lut = np.full(65536, ignore_index, dtype=np.int64)
    for raw, cls in mapping.items():
        lut[int(raw)] = int(cls)
    return lut


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_from_dict(data: Mapping, source: str) -> DatasetPreset:
    """Validate a preset mapping (from YAML or a checkpoint sidecar)."""
    try:
        return _preset_from_dict(data, source)
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:  # a value of the wrong type
        raise ConfigError(f"{source}: malformed preset ({one_line(exc, 200)})") from None


def _preset_from_dict(data: Mapping, source: str) -> DatasetPreset:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a dataset preset must be a mapping")
    classes = data.get("classes")
    if not isinstance(classes, list) or not classes:
        raise ConfigError(f"{source}: 'classes' must be a non-empty list of {{name, color}}")
    names, colors = [], []
    for i, entry in enumerate(classes):
        if isinstance(entry, str):
            names.append(entry)
            colors.append(None)
            continue
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise ConfigError(f"{source}: classes[{i}] needs a 'name'")
        names.append(str(entry["name"]))
        col = entry.get("color")
        if col is not None and (len(col) != 3 or not all(0 <= int(c) <= 255 for c in col)):
            raise ConfigError(f"{source}: classes[{i}].color must be 3 values in 0..255")
        colors.append(col)
    generated = generate_palette(len(names))
    palette = np.asarray(
        [c if c is not None else generated[i] for i, c in enumerate(colors)], dtype=np.uint8
    )
    declared = data.get("num_classes")
    if declared is not None and int(declared) != len(names):
        raise ConfigError(
            f"{source}: num_classes is {declared} but {len(names)} classes are listed"
        )
    std = triple(data.get("std", (0.229, 0.224, 0.225)), f"{source}: std")
    if min(std) <= 0:
        raise ConfigError(f"{source}: std must be positive")
    size = data.get("input_size")
    maps = {
        str(k): {int(a): int(b) for a, b in (v or {}).items()}
        for k, v in (data.get("label_maps") or {}).items()
    }
    for name, mapping in maps.items():
        if any(not 0 <= a <= 65535 or not 0 <= b <= 65535 for a, b in mapping.items()):
            raise ConfigError(f"{source}: label map '{name}' needs values in 0..65535")
    return DatasetPreset(
        name=str(data.get("name", Path(source).stem)),
        class_names=tuple(names),
        palette=palette,
        mean=triple(data.get("mean", (0.485, 0.456, 0.406)), f"{source}: mean"),
        std=std,
        ignore_index=int(data.get("ignore_index", 255)),
        input_size=(int(size[0]), int(size[1])) if size else None,
        label_maps=maps,
    )


def load_preset(name_or_path: str | Path) -> DatasetPreset:
    """A built-in preset by name (``cityscapes``...) or a custom preset YAML file."""
    text = str(name_or_path)
    builtin = PRESET_DIR / f"{text.lower()}.yaml"
    path = builtin if builtin.is_file() else Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"unknown dataset '{text}': not a preset ({', '.join(available_presets())}) "
            "and no such YAML file"
        )
    data = load_yaml_file(path, "dataset preset", expect=None)  # preset_from_dict checks the type
    return preset_from_dict(data, str(path))


def sidecar_preset(sidecar: Mapping, source: str) -> DatasetPreset:
    """The label set a checkpoint or ONNX sidecar names: its ``dataset`` mapping (classes,
    palette, mean/std), a preset name, else Cityscapes."""
    dataset = sidecar.get("dataset")
    if isinstance(dataset, Mapping):
        return preset_from_dict(dataset, f"{source} sidecar")
    return load_preset(dataset or "cityscapes")
