"""Dataset presets: built-ins, custom YAML, overrides, label maps."""
from __future__ import annotations

import numpy as np
import pytest

from bisenet_ros.data.datasets import available_presets, load_preset
from bisenet_ros.errors import ConfigError


@pytest.mark.parametrize("name,n", [("cityscapes", 19), ("camvid", 11), ("cocostuff", 171), ("ade20k", 150)])
def test_builtin_presets(name, n):
    p = load_preset(name)
    assert p.num_classes == n and p.palette.shape == (n, 3) and p.palette.dtype == np.uint8
    assert len(set(p.class_names)) == n
    assert all(0 < s < 1 for s in p.std) and all(0 < m < 1 for m in p.mean)
    assert name in available_presets()


def test_cityscapes_values():
    p = load_preset("cityscapes")
    assert p.class_names[0] == "road" and tuple(p.palette[0]) == (128, 64, 128)
    assert tuple(p.palette[13]) == (0, 0, 142) and p.class_names[13] == "car"
    assert p.mean == (0.3257, 0.369, 0.3223) and p.std == (0.2112, 0.2148, 0.2115)
    lut = p.label_lut("labelIds")
    assert lut[7] == 0 and lut[26] == 13 and lut[33] == 18 and lut[0] == 255 and lut[6] == 255


def test_custom_preset_file_and_overrides(tmp_path):
    path = tmp_path / "robot.yaml"
    path.write_text(
        "name: robot\nmean: [0.5, 0.5, 0.5]\nstd: [0.2, 0.2, 0.2]\n"
        "classes:\n  - {name: floor, color: [1, 2, 3]}\n  - {name: wall}\n"
        "label_maps:\n  raw: {10: 0, 20: 1}\n"
    )
    p = load_preset(path)
    assert p.name == "robot" and p.class_names == ("floor", "wall")
    assert tuple(p.palette[0]) == (1, 2, 3)
    assert p.label_lut("raw")[20] == 1 and p.label_lut("raw")[30] == 255
    q = p.with_overrides(mean=[0.1, 0.2, 0.3], num_classes=4)
    assert q.mean == (0.1, 0.2, 0.3) and q.class_names[2:] == ("class_2", "class_3")
    assert q.palette.shape == (4, 3)
    assert p.with_overrides(num_classes=1).class_names == ("floor",)


@pytest.mark.parametrize("text,fragment", [
    ("classes: []", "non-empty"),
    ("num_classes: 3\nclasses: [a, b]", "3 but 2"),
    ("classes: [a]\nstd: [0, 1, 1]", "positive"),
    ("classes: [a]\nmean: [1, 2]", "3 values"),
    ("classes: [{name: a, color: [300, 0, 0]}]", "0..255"),
    (": : :", "cannot read"),
])
def test_bad_custom_presets(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_preset(path)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_unknown_preset_and_label_map():
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_preset("kitti-360-nope")
    with pytest.raises(ConfigError, match="no label map"):
        load_preset("camvid").label_lut("labelIds")
