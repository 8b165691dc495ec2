"""``bisenet-ros health-baseline`` and ``eval-bag --shift/--shifted-bag`` (perception health) end to
end on small recordings of the demo weights; the corruptions and the AUROC on chosen values."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from bisenet_ros.data.bags import write_image_bag
from bisenet_ros.cli import main
from bisenet_ros.inference.health import load_baseline
from bisenet_ros.evaluation.health import SHIFTS, auroc, corrupt, parse_shifts
from bisenet_ros.data.synthetic_scenes import drive_sequence

DEMO = Path(__file__).resolve().parent.parent / "models" / "bisenetv2_synthetic_street.pth"
SMALL = ["--weights", str(DEMO), "--device", "cpu", "--backend", "torch", "--input-size", "128x160"]


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    path = tmp_path_factory.mktemp("health_bag") / "drive"
    write_image_bag(path, ((f.image, None) for f in drive_sequence(5, 24, (120, 160), fps=5.0)), fps=5.0,
                    label_topic=None, start_ns=10 ** 18)
    return path


def test_auroc_and_corruptions():
    assert auroc([0, 1, 2], [3, 4]) == 1.0 and auroc([3, 4], [0, 1]) == 0.0 and auroc([1, 1], [1, 1]) == 0.5
    assert auroc([], [1]) is None
    img = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    for name in SHIFTS:
        out = corrupt(img, name, "moderate", 1)
        assert out.shape == img.shape and out.dtype == img.dtype and not np.array_equal(out, img), name
    assert corrupt(img, "darken").mean() < img.mean() / 2 and corrupt(img, "cover").mean() < 10
    assert corrupt(img, "fog").std() < img.std() / 2
    assert corrupt(img.astype(np.uint16) * 257, "darken").dtype == np.uint16
    assert parse_shifts("all") == list(SHIFTS) and parse_shifts("fog,noise,fog") == ["fog", "noise"]


def test_health_baseline_writes_thresholds_beside_a_copy_of_the_weights(drive, tmp_path, capsys):
    out = tmp_path / "demo.health.yaml"
    assert main(["health-baseline", "--bag", str(drive), *SMALL, "--out", str(out), "--no-progress"]) == 0
    base = load_baseline(out)
    stats = base.statistics["low_confidence_fraction"]
    assert base.frames == 24 and f"bag {drive}" in base.data
    assert base.low_confidence_max == pytest.approx(min(0.95, stats["p99"] + 0.1), abs=1e-3)
    assert "WARN above" in capsys.readouterr().out
    assert main(["health-baseline", "--bag", str(drive), *SMALL, "--out", str(out)]) == 2  # exists: --overwrite
    assert "--overwrite" in capsys.readouterr().err
    user_file = tmp_path / "notes.yaml"
    user_file.write_text("a: 1\n")
    assert main(["health-baseline", "--bag", str(drive), *SMALL, "--out", str(user_file), "--overwrite"]) == 2
    assert user_file.read_text() == "a: 1\n"  # not a baseline: never replaced
    assert main(["health-baseline", "--images", str(tmp_path / "none"), *SMALL, "--out", str(tmp_path / "x.yaml")]) == 2


def test_eval_bag_reports_health_per_frame_and_the_separation_of_shifts(drive, tmp_path, capsys):
    out = tmp_path / "eval"
    shifted = tmp_path / "night"
    write_image_bag(shifted, ((corrupt(f.image, "darken", "strong", 0), None)
                              for f in drive_sequence(6, 12, (120, 160), fps=5.0)),
                    fps=5.0, label_topic=None, start_ns=10 ** 18)
    assert main(["eval-bag", str(drive), *SMALL, "--out", str(out), "--shift", "cover,fog", "--hold-time", "1",
                 "--shifted-bag", str(shifted), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "health: 0 false WARNs" in printed and "cover AUROC" in printed
    report = json.loads((out / "metrics.json").read_text())["health"]
    assert set(report["shifts"]) == {"cover", "fog", "shifted_bag"}
    cover = report["shifts"]["cover"]
    assert cover["auroc"]["confidence_mean"] > 0.9 and cover["detected"] and cover["delay_s"] <= 1.0 + 0.4
    assert "image nearly black" in cover["message"] and cover["recovery_s"] is not None
    rows = list(csv.DictReader(open(out / "health.csv")))
    assert len(rows) == 24 * 3 + 12 and {r["variant"] for r in rows} == {"in_domain", "cover", "fog", "shifted_bag"}
    assert "## Perception health" in (out / "report.md").read_text()
    with pytest.raises(SystemExit) as stop:
        main(["eval-bag", str(drive), *SMALL, "--out", str(tmp_path / "e2"), "--shift", "rain"])
    assert stop.value.code == 2 and "--shift takes darken" in capsys.readouterr().err
