"""The exact cheap postprocess: labels equal to the naive resize-then-argmax, confidence unchanged."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bisenet_ros.inference import postprocess
from bisenet_ros.data.datasets import load_preset
from bisenet_ros.errors import ConfigError
from bisenet_ros.models import build_model, low_res_view
from bisenet_ros.pipeline import SegmentationPipeline, logit_stride


def _smooth_logits(classes: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Spatially smooth random logits: large regions with real class boundaries between them."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, classes, max(2, h // 6), max(2, w // 6), generator=gen) * 4
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]


@pytest.mark.parametrize("stride,low,out", [
    (8, (12, 16), (90, 160)),    # upscale (720p-like aspect)
    (8, (12, 16), (53, 61)),     # upscale, sizes no multiple of anything
    (8, (12, 16), (96, 128)),    # the model's own size (output_resolution = model)
    (8, (12, 16), (40, 50)),     # downscale below the model size
    (1, (20, 30), (47, 95)),     # full-resolution logits (a runner without the 1/8 output)
    (1, (20, 30), (20, 30)),     # nothing to resize
])
def test_labels_equal_the_naive_resize_then_argmax(stride, low, out):
    for seed in range(3):
        logits = _smooth_logits(7, *low, seed=seed)
        naive = postprocess.naive_labels(logits, stride, out).numpy()
        fast = postprocess.labels(logits.numpy(), stride, out)
        assert fast.dtype == np.uint8 and fast.shape == out
        assert (fast == naive).mean() >= 0.9999
        np.testing.assert_array_equal(postprocess.labels(logits.numpy(), stride, out, threads=3), fast)
        dense = postprocess.dense_logits(logits.numpy(), stride, out)
        np.testing.assert_allclose(dense, postprocess.naive_logits(logits[None], stride, out)[0].numpy(),
                                   atol=1e-4)


@pytest.mark.parametrize("classes,low,out", [(19, (16, 24), (90, 160)), (7, (9, 13), (61, 47)), (2, (8, 8), (64, 64))])
def test_noise_logits_every_cell_on_a_boundary(classes, low, out):
    """Independent noise per low-resolution pixel: class changes between most neighbours, runs of
    one column, third classes rising between two others. Still the reference labels."""
    logits = torch.from_numpy(np.random.default_rng(classes).normal(size=(classes, *low)).astype(np.float32))
    naive = postprocess.naive_labels(logits, 8, out).numpy()
    fast = postprocess.labels(logits.numpy(), 8, out)
    assert (fast == naive).mean() >= 0.9999
    np.testing.assert_array_equal(postprocess.labels(logits.numpy(), 8, out, threads=2), fast)


def test_a_class_on_top_of_neither_neighbour_wins_between_them():
    """Columns (5, 0, 4) and (0, 5, 4): class 2 is never a neighbour's argmax, yet it wins in the
    middle (2.5 < 4), so it must survive the candidate filter."""
    logits = torch.zeros(3, 4, 2)
    logits[:, :, 0] = torch.tensor([5.0, 0.0, 4.0])[:, None]
    logits[:, :, 1] = torch.tensor([0.0, 5.0, 4.0])[:, None]
    naive = postprocess.naive_labels(logits, 8, (32, 40)).numpy()
    fast = postprocess.labels(logits.numpy(), 8, (32, 40))
    assert set(np.unique(naive)) == {0, 1, 2}
    np.testing.assert_array_equal(fast, naive)


def test_many_classes_give_uint16_and_uniform_regions_skip_the_taps():
    logits = _smooth_logits(300, 6, 8)
    fast = postprocess.labels(logits.numpy(), 8, (60, 70))
    assert fast.dtype == np.uint16
    assert (fast == postprocess.naive_labels(logits, 8, (60, 70)).numpy()).mean() >= 0.9999
    flat = torch.zeros(3, 6, 8)
    flat[2] = 1.0  # one class everywhere: no boundary pixel at all
    assert (postprocess.labels(flat.numpy(), 8, (50, 64)) == 2).all()


def test_kernels_compile_without_a_writable_cache_directory(monkeypatch):
    """A read-only install with no writable home: numba finds no cache location (its locators
    all refuse) and the kernel is compiled in memory instead of failing the import."""
    from numba.core import caching

    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])

    def twice(x):
        return 2 * x

    with pytest.raises(RuntimeError, match="no locator available"):
        postprocess.njit(cache=True)(twice)
    assert postprocess._kernel()(twice)(21) == 42


def test_composite_weights_are_convex_combinations():
    rows = postprocess.axis_plan(16, 8, 90)
    assert np.allclose(rows.weight.sum(1), 1.0, atol=1e-6) and (rows.weight >= 0).all()
    assert rows.index.shape[1] <= 3  # two bilinear steps: at most 3 low-resolution taps per axis
    assert rows.cell_size.sum() == 90 and set(rows.cell_taps) <= {1, 2, 3}


@pytest.mark.parametrize("arch", ["bisenetv1", "bisenetv2"])
def test_low_res_view_is_the_model_before_its_final_upsampling(arch):
    torch.manual_seed(0)
    net = build_model(arch, 5).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        low = low_res_view(net)(x)
        full = net(x)
    assert low.shape == (1, 5, 8, 12) and logit_stride((8, 12), (64, 96)) == 8
    torch.testing.assert_close(postprocess.naive_logits(low, 8, (64, 96)), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="expected the input size or 1/s"):
        logit_stride((7, 12), (64, 96))


class _Runner:
    """Fixed logits: at 1/8 (as the pipeline's runners return them) or upsampled to the input."""

    name, precision = "fake", "fp32"

    def __init__(self, low: torch.Tensor, full: bool):
        self.low, self.full = low, full

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.low[None].expand(x.shape[0], -1, -1, -1)
        return postprocess.naive_logits(out, 8, tuple(x.shape[-2:])) if self.full else out


def test_pipeline_with_low_res_logits_gives_the_reference_labels_and_confidence():
    low = _smooth_logits(5, 8, 12, seed=4)
    preset = load_preset("cityscapes").with_overrides(num_classes=5)
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    results = {}
    for full in (False, True):
        pipe = SegmentationPipeline(_Runner(low, full), preset, input_size="64x96", device="cpu")
        results[full] = [pipe(image, "rgb8", outputs=outs) for outs in ((), ("confidence", "color"))]
    for fast, ref in zip(results[False], results[True]):
        assert (fast.labels == ref.labels).mean() >= 0.9999
    conf, ref_conf = results[False][1].confidence, results[True][1].confidence
    assert np.abs(conf.astype(int) - ref_conf.astype(int)).max() <= 1
    np.testing.assert_array_equal(results[False][1].labels, results[False][0].labels)
