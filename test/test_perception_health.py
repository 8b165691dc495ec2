"""Perception health (bisenet_ros/health.py): statistics from the 1/8 logits, image checks, the
hysteresis of the symptoms and the baseline file; fed with chosen values and times."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bisenet_ros.inference import health
from bisenet_ros.errors import ConfigError
from bisenet_ros.inference.health import (DEFAULT_BASELINE, Baseline, HealthMonitor, baseline_path, baseline_yaml,
                                image_statistics, load_baseline, logit_statistics, resolve_baseline)

DEMO_WEIGHTS = Path(__file__).resolve().parent.parent / "models" / "bisenetv2_synthetic_street.pth"


def test_statistics_of_the_low_resolution_logits_equal_a_dense_softmax_at_that_resolution():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (1, 19, 32, 40)).astype(np.float32)
    got = logit_statistics(torch.from_numpy(logits), level=0.6)
    e = np.exp(logits[0].astype(np.float64) - logits[0].max(0))  # softmax per cell, in float64
    p = e / e.sum(0)
    maxp = p.max(0)
    assert got["confidence_mean"] == pytest.approx(maxp.mean(), abs=1e-6)
    assert got["low_confidence_fraction"] == pytest.approx((maxp < 0.6).mean(), abs=1e-6)
    assert got["entropy_mean"] == pytest.approx((-(p * np.log(p)).sum(0)).mean(), abs=1e-5)
    assert 0.0 < got["low_confidence_fraction"] < 1.0  # the data exercise the level


def test_the_pipeline_reports_health_from_its_own_low_resolution_logits():
    from bisenet_ros.pipeline import build_pipeline
    from bisenet_ros.data.synthetic_scenes import generate_scene

    pipe = build_pipeline(weights=str(DEMO_WEIGHTS), input_size=None, device="cpu", backend="torch")
    image, _ = generate_scene(1, (240, 320))
    res = pipe(image, "rgb8", outputs=("health",))
    with torch.inference_mode():
        low = pipe.runner(pipe.model_input(image, "rgb8"))  # the 1/8 logits (models.low_res_view)
    assert tuple(low.shape[-2:]) == (32, 40)
    expected = logit_statistics(low, pipe.health_level)
    for key, value in expected.items():
        assert res.health[key] == pytest.approx(value, abs=1e-5)
    assert "health_ms" in res.timings and res.color is None
    assert pipe(image, "rgb8", outputs=()).health is None  # computed only when asked for


@pytest.mark.parametrize("shape,dtype", [((720, 1280, 3), np.uint8), ((480, 640, 4), np.uint8),
                                         ((480, 640, 2), np.uint8), ((480, 640), np.uint8), ((480, 640), np.uint16)])
def test_brightness_is_the_channel_mean_of_the_subsample_for_every_layout(shape, dtype):
    """rgb/bgr, with alpha (its first three planes), packed YUV 4:2:2 (both bytes), mono8 and mono16 (/257)."""
    rng = np.random.default_rng(2)
    image = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    image[: shape[0] // 4] = np.iinfo(dtype).max  # some clipped rows
    step = min(shape[:2]) // 96
    sub = image[::step, ::step] / (257.0 if dtype == np.uint16 else 1.0)
    gray = sub if sub.ndim == 2 else sub[..., :3].mean(axis=2)
    s = image_statistics(image)
    assert s["brightness_mean"] == pytest.approx(gray.mean(), abs=1e-4)
    assert s["brightness_std"] == pytest.approx(gray.std(), abs=1e-4)
    assert s["saturated_fraction"] == pytest.approx((gray >= 250).mean()) and s["saturated_fraction"] > 0.2


def test_image_checks_black_saturated_uniform_and_repeats():
    rng = np.random.default_rng(1)
    scene = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    s = image_statistics(scene)
    assert 100 < s["brightness_mean"] < 155 and s["brightness_std"] > 20 and s["saturated_fraction"] < 0.1
    assert image_statistics(scene.copy())["digest"] == s["digest"]
    moved = scene.copy()
    moved[::5] = 7  # rows the row checksum reads
    assert image_statistics(moved)["digest"] != s["digest"]
    black = rng.integers(0, 6, (480, 640, 3), dtype=np.uint8)
    assert image_statistics(black)["brightness_mean"] < 5
    assert image_statistics(np.full((480, 640), 255, np.uint8))["saturated_fraction"] == 1.0
    assert image_statistics(np.full((48, 64), 30000, np.uint16))["brightness_std"] < 1e-3  # mono16


def _normal(rng, i: int) -> dict[str, float]:
    return {"confidence_mean": 0.87, "low_confidence_fraction": float(rng.uniform(0.1, 0.3)),
            "entropy_mean": 0.35, "brightness_mean": 110.0, "brightness_std": 50.0,
            "saturated_fraction": 0.01, "digest": float(i)}


def _feed(mon: HealthMonitor, t0: float, seconds: float, rate: float, make) -> list[tuple[float, object]]:
    out = []
    for k in range(int(round(seconds * rate))):
        t = t0 + k / rate
        out.append((t, mon.update(t, make(k))))
    return out


def test_frozen_5hz_camera_is_flagged_within_5_s_and_clears_with_new_frames():
    rng = np.random.default_rng(2)
    mon = HealthMonitor()  # defaults: hold 3 s
    ok = _feed(mon, 0.0, 20.0, 5.0, lambda k: _normal(rng, k))
    assert not any(v.warn for _, v in ok)
    frozen = _feed(mon, 20.0, 6.0, 5.0, lambda k: _normal(rng, 10_000))
    first = next((t, v) for t, v in frozen if v.warn)
    assert first[0] - 20.0 <= 3.0 + 0.4, first  # the hold time plus two frames, well within 5 s
    assert first[1].changed and first[1].message.startswith("camera frozen: ") and "identical frames" in first[1].message
    back = _feed(mon, 26.0, 5.0, 5.0, lambda k: _normal(rng, 20_000 + k))
    cleared = next(t for t, v in back if not v.warn)
    assert cleared - 26.0 <= 3.0 + 0.4
    assert mon.values()["frozen_warnings"] == "1" and int(mon.values()["frozen_frames"]) >= 25


def test_low_confidence_message_names_the_share_the_time_and_the_baseline():
    rng = np.random.default_rng(3)
    base = Baseline(low_confidence_max=0.35, low_confidence_typical=0.07, source="b.yaml")
    mon = HealthMonitor(base, hold_s=3.0)
    _feed(mon, 0.0, 10.0, 10.0, lambda k: _normal(rng, k))
    shifted = _feed(mon, 10.0, 5.0, 10.0, lambda k: {**_normal(rng, 500 + k), "low_confidence_fraction": 0.41})
    t, v = next((t, v) for t, v in shifted if v.warn)
    assert t - 10.0 <= 3.0 + 0.2
    assert v.message.startswith("low confidence on ") and "baseline 7%: scene may be outside the training domain" \
        in v.message and " s, " in v.message
    assert shifted[-1][1].message.startswith("low confidence on 41% of the image for 4.9 s")
    default = HealthMonitor()  # no baseline: the message says so
    _feed(default, 0.0, 5.0, 10.0, lambda k: {**_normal(rng, k), "low_confidence_fraction": 0.9})
    assert "no baseline, threshold 50%" in default.verdict(5.0).message


def test_single_bad_frames_never_warn_and_disabled_symptoms_stay_quiet():
    rng = np.random.default_rng(4)
    mon = HealthMonitor(hold_s=1.0)

    def spiky(k):
        s = _normal(rng, k)
        if k % 4 == 0:  # every fourth frame looks black and unsure: a flicker, not a state
            s.update(brightness_mean=2.0, low_confidence_fraction=0.95)
        return s
    assert not any(v.warn for _, v in _feed(mon, 0.0, 30.0, 10.0, spiky))
    quiet = HealthMonitor(hold_s=1.0, enabled={"frozen"})
    dark = _feed(quiet, 0.0, 5.0, 10.0, lambda k: {**_normal(rng, k), "brightness_mean": 1.0})
    assert not any(v.warn for _, v in dark)


def test_black_takes_the_lead_over_uniform_and_counts_its_episodes():
    rng = np.random.default_rng(5)
    mon = HealthMonitor(hold_s=1.0)
    for episode in range(2):
        t0 = episode * 10.0
        _feed(mon, t0, 3.0, 10.0, lambda k: _normal(rng, 1000 * episode + k))
        dark = _feed(mon, t0 + 3.0, 3.0, 10.0,
                     lambda k: {**_normal(rng, 1000 * episode + 100 + k), "brightness_mean": 3.0, "brightness_std": 1.0})
        assert dark[-1][1].message.startswith("image nearly black"), dark[-1][1].message
        _feed(mon, t0 + 6.0, 3.0, 10.0, lambda k: _normal(rng, 1000 * episode + 200 + k))
        assert not mon.verdict(t0 + 9.0).warn
    assert mon.values()["black_warnings"] == "2" and mon.values()["uniform_warnings"] == "0"


def test_baseline_file_round_trip_and_the_node_rule(tmp_path):
    weights = tmp_path / "net.pth"
    weights.write_bytes(b"PK\x03\x04")
    assert baseline_path(weights) == tmp_path / "net.health.yaml"
    assert resolve_baseline("", weights) is DEFAULT_BASELINE  # nothing beside the weights: defaults
    base = Baseline(confidence_level=0.7, low_confidence_max=0.33, low_confidence_typical=0.12, data="drive_bag",
                    frames=120, statistics={"low_confidence_fraction": {"mean": 0.12, "p99": 0.23}})
    baseline_path(weights).write_text(baseline_yaml(base, str(weights), "test"))
    got = resolve_baseline("", weights)
    assert (got.confidence_level, got.low_confidence_max, got.low_confidence_typical) == (0.7, 0.33, 0.12)
    assert got.source == str(baseline_path(weights)) and got.frames == 120 and "drive_bag" in got.describe()
    assert resolve_baseline("none", weights) is DEFAULT_BASELINE
    assert "no baseline" in DEFAULT_BASELINE.describe()
    bad = tmp_path / "bad.yaml"
    for text in ("just text", "bisenet_ros_health_baseline: 1\nthresholds: {low_confidence_max: -1}\n",
                 "bisenet_ros_health_baseline: 1\nthresholds: {confidence_level: 2}\n"):
        bad.write_text(text)
        with pytest.raises(ConfigError, match="health baseline"):
            load_baseline(bad)
    with pytest.raises(ConfigError, match="health baseline: cannot be read"):
        load_baseline(tmp_path / "missing.yaml")
    assert health.ONSET > 0.5 > health.CLEAR
