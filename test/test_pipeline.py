"""The shared inference pipeline: fidelity to the reference demo, encodings, outputs, errors."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from bisenet_ros.data.datasets import load_preset
from bisenet_ros.errors import ConfigError, ImageError
from bisenet_ros.options import fixed_input_size as parse_input_size
from bisenet_ros.pipeline import SegmentationPipeline, auto32, build_pipeline


@pytest.mark.parametrize("arch", ["bisenetv1", "bisenetv2"])
def test_reference_pipeline_labels(arch, reference):
    """auto32 + reference mean/std reproduces the public demo's end-to-end labels (>= 99%)."""
    image = np.load(reference / "pipeline_image_rgb.npy")
    expected = np.load(reference / f"{arch}_pipeline_labels.npy")
    pipe = build_pipeline(arch, weights=reference / f"{arch}.pth", num_classes=19,
                          dataset="cityscapes", input_size="auto32", device="cpu", backend="torch")
    res = pipe(image, "rgb8", outputs=())
    assert res.labels.shape == expected.shape and res.labels.dtype == np.uint8
    assert res.model_size == (448, 640)
    agreement = float((res.labels == expected).mean())
    assert agreement >= 0.99, agreement


@pytest.mark.parametrize("arch", ["bisenetv1", "bisenetv2"])
def test_reference_model_logits(arch, reference):
    """The model alone: relative L2 error < 1e-3 and argmax equal on >= 99.9% of pixels."""
    from bisenet_ros.models import load_model

    net = load_model(arch, weights=reference / f"{arch}.pth", num_classes=19)
    x = torch.from_numpy(np.load(reference / f"{arch}_input.npy"))
    with torch.no_grad():
        out = net(x).numpy()
    ref = np.load(reference / f"{arch}_logits.npy").astype(np.float32)
    assert out.shape == ref.shape
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-3
    assert (out.argmax(1)[0] == np.load(reference / f"{arch}_labels.npy")).mean() >= 0.999


class _Stripes:
    """A fake model: class = horizontal band of the image, scaled by mean intensity of channel 0."""

    name, precision = "fake", "fp32"

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.seen: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        n, _, h, w = x.shape
        cls = (torch.arange(w, dtype=torch.float32) * self.num_classes / w).floor()
        logits = -(torch.arange(self.num_classes).view(1, -1, 1, 1) - cls.view(1, 1, 1, w)).abs().float()
        return logits.expand(n, -1, h, -1).contiguous() * 4


def _pipe(num_classes=5, **kw) -> tuple[SegmentationPipeline, _Stripes]:
    fake = _Stripes(num_classes)
    preset = load_preset("cityscapes").with_overrides(num_classes=num_classes)
    return SegmentationPipeline(fake, preset, **kw), fake


def _image(h=50, w=70, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_normalisation_and_auto32_resize():
    pipe, fake = _pipe()
    img = _image()
    res = pipe(img, "rgb8")
    x = fake.seen[-1]
    assert x.shape == (1, 3, 64, 96) and res.model_size == (64, 96) == auto32(50, 70)
    assert res.labels.shape == (50, 70)
    preset = pipe.preset
    # an image already at model size is not resized: check the normalisation exactly
    pipe(np.full((64, 96, 3), 200, np.uint8), "rgb8")
    x = fake.seen[-1][0, :, 0, 0]
    expected = (200 / 255 - np.array(preset.mean)) / np.array(preset.std)
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-5)


def test_encodings_agree():
    pipe, fake = _pipe()
    rgb = _image(64, 96)
    results = {}
    inputs = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1].copy(),
        "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]),
        "bgra8": np.dstack([rgb[..., ::-1], np.zeros(rgb.shape[:2], np.uint8)]),
    }
    for enc, img in inputs.items():
        results[enc] = pipe(img, enc, outputs=("overlay",))
        torch.testing.assert_close(fake.seen[-1], fake.seen[0])
    assert results["rgb8"].overlay_encoding == "rgb8"
    assert results["bgr8"].overlay_encoding == "bgr8"
    np.testing.assert_array_equal(results["bgr8"].overlay, results["rgb8"].overlay[..., ::-1])
    mono = pipe(rgb[..., 0].copy(), "mono8", outputs=("overlay",))
    assert mono.overlay.shape == (64, 96, 3)
    x = fake.seen[-1][0]
    raw = [x[c] * pipe.preset.std[c] + pipe.preset.mean[c] for c in range(3)]  # back to 0-1 scale
    torch.testing.assert_close(raw[0], raw[1])
    torch.testing.assert_close(raw[0], raw[2])
    torch.testing.assert_close(raw[0], torch.from_numpy(rgb[..., 0] / 255.0).float())
    mono16 = pipe((rgb[..., 0].astype(np.uint16) * 257), "mono16", outputs=())
    np.testing.assert_array_equal(mono16.labels, mono.labels)


def test_overlay_blend_is_the_exact_integer_rule():
    """OpenCV's blend equals (base*(256-a) + colour*a + 128) >> 8 for every alpha step, base and colour."""
    from bisenet_ros.inference.colour import blend

    base, colour = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8), indexing="ij")
    base3, colour3 = np.stack([base, colour, base], -1), np.stack([colour, base, 255 - colour], -1)
    for a in range(257):
        expected = (base3.astype(np.uint32) * (256 - a) + colour3.astype(np.uint32) * a + 128) >> 8
        np.testing.assert_array_equal(blend(base3, colour3, a / 256), expected.astype(np.uint8), err_msg=f"a={a}")
    assert blend(base3[:, :, ::-1], colour3, 0.5).flags.c_contiguous  # strided views (bgra8, mono) too


def test_outputs_colour_overlay_confidence():
    pipe, _ = _pipe(overlay_alpha=1.0)
    img = _image(64, 96)
    res = pipe(img, "rgb8", outputs=("color", "overlay", "confidence"))
    palette = pipe.preset.palette
    np.testing.assert_array_equal(res.color, palette[res.labels])
    np.testing.assert_array_equal(res.overlay, res.color)
    pipe.overlay_alpha = 0.3
    a = round(0.3 * 256)
    half = (img.astype(np.uint16) * (256 - a) + res.color.astype(np.uint16) * a + 128) >> 8
    np.testing.assert_array_equal(pipe(img, "rgb8").overlay, half.astype(np.uint8))
    assert res.confidence.dtype == np.uint8 and res.confidence.shape == (64, 96)
    # logits differ by 4 per class step: max softmax of the band's own class
    assert 0.9 * 255 < res.confidence.mean() <= 255
    pipe.overlay_alpha = 0.0
    np.testing.assert_array_equal(pipe(img, "rgb8").overlay, img)
    only_labels = pipe(img, "rgb8", outputs=())
    assert only_labels.color is None and only_labels.overlay is None and only_labels.confidence is None
    assert set(res.timings) == {"preprocess_ms", "inference_ms", "postprocess_ms"}


def test_labels_follow_logits_not_resized_ids():
    """Labels at camera resolution come from resized logits (bands keep their x-positions)."""
    pipe, _ = _pipe(num_classes=4)
    res = pipe(_image(40, 200), "rgb8", outputs=())
    assert res.labels.shape == (40, 200)
    cols = res.labels[0]
    assert list(np.unique(cols)) == [0, 1, 2, 3]
    assert (np.diff(cols.astype(int)) >= 0).all()


def test_fixed_input_size_and_model_resolution_output():
    pipe, fake = _pipe(input_size="64x128", output_resolution="model")
    res = pipe(_image(100, 150), "rgb8", outputs=("overlay", "color"))
    assert fake.seen[-1].shape[-2:] == (64, 128)
    assert res.labels.shape == (64, 128) and res.overlay.shape == (64, 128, 3)


def test_batch_equals_single_and_groups_sizes():
    pipe, fake = _pipe()
    a, b, c = _image(64, 96, 1), _image(64, 96, 2), _image(30, 40, 3)
    batch = pipe.run_batch([a, b, c], "rgb8", outputs=("overlay",))
    assert [x.shape[0] for x in fake.seen] == [2, 1]  # a+b together, c alone
    for img, res in zip((a, b, c), batch):
        single = pipe(img, "rgb8", outputs=("overlay",))
        np.testing.assert_array_equal(single.labels, res.labels)
        np.testing.assert_array_equal(single.overlay, res.overlay)


def test_many_classes_give_uint16_labels():
    pipe, _ = _pipe(num_classes=300)
    res = pipe(_image(32, 64), "rgb8", outputs=("color",))
    assert res.labels.dtype == np.uint16 and res.labels.max() > 255


@pytest.mark.parametrize("image,encoding,fragment", [
    (np.zeros((10, 10, 3), np.float32), "rgb8", "uint8"),
    (np.zeros((10, 10, 3), np.uint8), "32FC1", "unsupported encoding"),
    (np.zeros((10, 10), np.uint8), "rgb8", "shape"),
    (np.zeros((0, 10, 3), np.uint8), "rgb8", "out of range"),
    (np.zeros((10, 10, 3), np.uint8), "mono8", "shape"),
])
def test_bad_images_are_refused_in_one_line(image, encoding, fragment):
    pipe, _ = _pipe()
    with pytest.raises(ImageError) as info:
        pipe(image, encoding)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_input_size_parsing():
    assert parse_input_size("auto32") is None
    assert parse_input_size("512x1024") == (512, 1024)
    assert parse_input_size((0, 0)) is None
    for bad in ("512", "500x1000", "axb", "0x64"):
        with pytest.raises(ConfigError):
            parse_input_size(bad)


def test_build_pipeline_options(tiny_checkpoints):
    pipe = build_pipeline(weights=tiny_checkpoints["bisenetv2"], dataset="camvid",
                          mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], input_size="64x96", device="cpu")
    assert pipe.num_classes == 5 and pipe.preset.class_names[0] == "sky"
    assert pipe.preset.mean == (0.5, 0.5, 0.5)
    assert pipe.info["model"] == "bisenetv2" and pipe.info["input_size"] == "64x96"
    res = pipe(_image(48, 80), "rgb8")
    assert res.labels.max() < 5 and res.labels.shape == (48, 80)
    with pytest.raises(ConfigError):
        build_pipeline(weights=tiny_checkpoints["bisenetv2"], precision="fp16", device="cpu")
    with pytest.raises(ConfigError):
        build_pipeline(weights=tiny_checkpoints["bisenetv2"], dataset="no_such_dataset")


def test_sidecar_input_size_is_the_default_and_flags_override(tiny_checkpoints, tmp_path):
    import shutil

    weights = tmp_path / "model.pth"
    shutil.copy(tiny_checkpoints["bisenetv1"], weights)
    (tmp_path / "model.yaml").write_text("arch: bisenetv1\nnum_classes: 5\ninput_size: [64, 96]\n")
    assert build_pipeline(weights=weights, input_size=None, device="cpu", backend="torch").info["input_size"] == "64x96"
    assert build_pipeline(weights=weights, input_size="auto32", device="cpu", backend="torch").info["input_size"] == "auto32"
    assert build_pipeline(weights=tiny_checkpoints["bisenetv1"], input_size=None, device="cpu",
                          backend="torch").info["input_size"] == "auto32"


def test_a_read_only_camera_frame_raises_no_warning():
    """The node hands the pipeline frames read in place from the middleware's (read-only) buffer:
    no PyTorch "not writable" warning in its log for them. In a fresh interpreter, as the node
    (pytest resets the warning filters around each test)."""
    code = textwrap.dedent("""
        from types import SimpleNamespace
        import numpy as np, torch
        from bisenet_ros.pipeline import SegmentationPipeline
        frame = np.frombuffer(bytes(48 * 64 * 3), np.uint8).reshape(48, 64, 3)
        SegmentationPipeline._upload(SimpleNamespace(device=torch.device("cpu")), frame, "rgb8")
        print("uploaded")
    """)
    proc = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "uploaded", proc.stderr
    assert "not writable" not in proc.stderr, proc.stderr
