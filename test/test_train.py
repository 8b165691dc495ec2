"""``bisenet-ros train``: data layouts, losses, schedule, fine-tuning, resume, outputs that load everywhere.

Training runs are tiny (64x64 crops, batch 4, a few dozen iterations on the CPU).
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from bisenet_ros.models.checkpoint import read_sidecar, read_state_dict
from bisenet_ros.cli import main as cli_main
from bisenet_ros.errors import CheckpointError, ConfigError
from bisenet_ros.models import build_model, load_model
from bisenet_ros.pipeline import build_pipeline
from bisenet_ros.data.synthetic_scenes import CLASSES, write_dataset
from bisenet_ros.training import (
    DataError, OhemCrossEntropy, SegmentationLoss, TrainConfig, class_dependent_keys, evaluate, load_init,
    lr_at, state_path, train,
)
from bisenet_ros.training.data import SegmentationDataset, find_samples
from bisenet_ros.training.trainer import resolve_preset


def _shapes(root: Path, count: int, seed: int, size=(64, 64)) -> Path:
    """A small 3-class folder dataset: noisy background (0), bright squares (1), dark discs (2),
    plus an ignored border."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    h, w = size
    for i in range(count):
        img = np.clip(rng.normal(110, 25, (h, w, 3)), 0, 255).astype(np.uint8)
        lbl = np.zeros((h, w), np.uint8)
        for _ in range(2):
            s = int(rng.integers(12, 24))
            y, x = (int(v) for v in rng.integers(0, [h - s, w - s]))
            img[y:y + s, x:x + s] = (230, 220, 60)
            lbl[y:y + s, x:x + s] = 1
            c = (int(rng.integers(8, w - 8)), int(rng.integers(8, h - 8)))
            r = int(rng.integers(5, 11))
            cv2.circle(img, c, r, (30, 40, 160), -1)
            cv2.circle(lbl, c, r, 2, -1)
        lbl[:2] = 255
        cv2.imwrite(str(root / "images" / f"s{i:03d}.jpg"), img[:, :, ::-1])
        cv2.imwrite(str(root / "labels" / f"s{i:03d}.png"), lbl)
    return root


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a loaded 2-core machine OpenMP threads waiting for each other cost far
    more than they gain (training steps here are tiny)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def street(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("street"), count=6, seed=0, size=(96, 128))


@pytest.fixture(scope="module")
def cli_run(street, tmp_path_factory):
    """One CLI training run on generated street scenes (30 iterations)."""
    out = tmp_path_factory.mktemp("run") / "street.pth"
    argv = ["train", "--model", "bisenetv2", "--data", str(street), "--val", str(street),
            "--dataset", "synthetic_street", "--num-classes", "7", "--iters", "30", "--batch-size", "4",
            "--crop", "64x64", "--device", "cpu", "--workers", "0", "--seed", "1", "--lr", "0.02", "--threads", "1",
            "--val-every", "15", "--no-progress", "--out", str(out)]
    losses: list[float] = []
    import bisenet_ros.training.trainer as trainer_mod

    real_train = trainer_mod.train

    def spy(cfg, log=None):
        result = real_train(cfg, log)
        losses.extend(result.losses)
        spy.result = result
        return result

    import bisenet_ros.training as training_pkg
    mp = pytest.MonkeyPatch()
    mp.setattr(training_pkg, "train", spy)
    try:
        assert cli_main(argv) == 0
    finally:
        mp.undo()
    return out, losses, spy.result


def test_cli_training_loss_falls_and_outputs_are_written(cli_run, capsys):
    out, losses, result = cli_run
    assert len(losses) == 30 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-10:]) < 0.85 * np.mean(losses[:10]), losses
    assert out.is_file() and out.with_suffix(".yaml").is_file()
    assert not state_path(out).exists()  # removed once training finished
    assert [h["iteration"] for h in result.validation] == [15, 30]
    assert 0 <= result.validation[-1]["miou"] <= 1


def test_each_run_writes_its_curve_csv_and_png(cli_run):
    """A CSV row per iteration (loss, moving average, lr) with the validation mIoU on its rows, and
    a PNG plot of the same, next to the checkpoint."""
    import csv

    from bisenet_ros.training import log_paths

    out, losses, result = cli_run
    csv_path, png_path = log_paths(out)
    assert csv_path.name == "street.train.csv" and png_path.name == "street.train.png"
    rows = list(csv.DictReader(csv_path.open()))
    assert [int(r["iteration"]) for r in rows] == list(range(1, 31))
    assert [float(r["loss"]) for r in rows] == pytest.approx(losses, rel=1e-5)
    val = {int(r["iteration"]): float(r["val_miou"]) for r in rows if r["val_miou"]}
    assert val == pytest.approx({h["iteration"]: h["miou"] for h in result.validation}, abs=1e-5)
    img = cv2.imread(str(png_path))
    assert img is not None and img.shape[0] > 200 and img.shape[1] > 300


def test_init_uses_fine_tuning_defaults_and_reports_the_baseline(tiny_checkpoints, tmp_path, capsys):
    """--init: architecture from the checkpoint (no --model), the fine-tuning learning rate of
    defaults.yaml, and the starting checkpoint's own validation mIoU before any step (iteration 0)."""
    import csv

    from bisenet_ros.training import log_paths, training_defaults

    ckpt = tiny_checkpoints["bisenetv1"]  # 5 classes: no head re-initialised
    data = _shapes(tmp_path / "d", 4, seed=8)
    out = tmp_path / "ft" / "m.pth"
    argv = ["train", "--init", str(ckpt), "--data", str(data), "--val", str(data), "--num-classes", "5",
            "--iters", "3", "--batch-size", "2", "--crop", "64x64", "--device", "cpu", "--workers", "0",
            "--threads", "1", "--no-progress", "--out", str(out)]
    assert cli_main(argv) == 0
    captured = capsys.readouterr()
    ft_lr = training_defaults("bisenetv1")["finetune_lr"]
    assert ft_lr < training_defaults("bisenetv1")["lr"]
    assert f"fine-tuning: base learning rate {ft_lr:g}" in captured.err
    preset = resolve_preset(TrainConfig(model="bisenetv1", data="", out="", iters=1, batch_size=2,
                                        crop=(64, 64), num_classes=5))
    val = SegmentationDataset(find_samples(str(data), "val", "auto")[0], preset)
    baseline = evaluate(load_model("bisenetv1", weights=ckpt), val, torch.device("cpu"))["miou"]
    assert f"scores val mIoU {baseline:.4f} before fine-tuning" in captured.err
    assert "before fine-tuning" in captured.out  # the summary line repeats it
    rows = list(csv.DictReader(log_paths(out)[0].open()))
    assert rows[0]["iteration"] == "0" and float(rows[0]["val_miou"]) == pytest.approx(baseline, abs=1e-5)
    assert max(float(r["lr"]) for r in rows[1:]) <= ft_lr + 1e-12
    assert read_sidecar(out)["arch"] == "bisenetv1"
    assert read_sidecar(out)["training"]["init_val_miou"] == pytest.approx(baseline, abs=1e-4)


def test_checkpoint_has_the_public_key_layout_with_aux_heads(cli_run):
    out, _, _ = cli_run
    state = torch.load(out, map_location="cpu", weights_only=True)
    ref = build_model("bisenetv2", 7, aux_heads=True).state_dict()
    assert list(state) == list(ref)
    assert all(state[k].shape == ref[k].shape for k in ref)
    assert any(k.startswith("aux5_4.") for k in state)


def test_checkpoint_keys_are_those_of_the_public_implementation(cli_run, reference):
    """Same keys, in the public implementation's aux_mode='train' layout, same shapes but the class dim."""
    import json

    manifest = json.loads((reference / "manifest.json").read_text())["state_dict_shapes"]["bisenetv2"]
    out, _, _ = cli_run
    state = read_state_dict(out)
    assert set(state) == set(manifest)
    heads = class_dependent_keys("bisenetv2", 7)
    for key, shape in manifest.items():
        expected = [7, *shape[1:]] if key in heads else shape
        assert list(state[key].shape) == expected, key


def test_sidecar_describes_the_model(cli_run):
    out, _, result = cli_run
    side = read_sidecar(out)
    assert side["arch"] == "bisenetv2" and side["num_classes"] == 7
    assert side["input_size"] == [96, 128]
    assert [c["name"] for c in side["dataset"]["classes"]] == list(CLASSES)
    assert side["dataset"]["mean"] == pytest.approx([0.303, 0.324, 0.328])
    assert side["training"]["iterations"] == 30
    assert side["training"]["val_miou"] == pytest.approx(result.validation[-1]["miou"], abs=1e-4)


def test_load_model_and_pipeline_read_the_sidecar_flags_override(cli_run, street):
    out, _, _ = cli_run
    net = load_model(weights=out)  # arch and classes from the sidecar
    assert net.bisenet_info["arch"] == "bisenetv2" and net.bisenet_info["num_classes"] == 7
    pipe = build_pipeline(weights=out, device="cpu", input_size=None)
    assert pipe.preset.name == "synthetic_street" and pipe.preset.class_names == CLASSES
    assert pipe.input_size == (96, 128)  # sidecar input size when none is given
    img = cv2.imread(str(next((street / "images").iterdir())))[:, :, ::-1].copy()
    res = pipe(img, "rgb8")
    assert res.labels.shape == img.shape[:2] and res.labels.max() < 7
    over = build_pipeline(weights=out, device="cpu", dataset="cityscapes", mean=[0.5, 0.5, 0.5],
                          input_size="64x64")
    assert over.preset.name == "cityscapes" and over.preset.mean == (0.5, 0.5, 0.5)
    assert over.input_size == (64, 64) and over.num_classes == 7


def test_segment_cli_reads_the_sidecar(cli_run, street, tmp_path, capsys):
    out, _, _ = cli_run
    img = next((street / "images").iterdir())
    assert cli_main(["segment", str(img), "--weights", str(out), "--device", "cpu",
                     "--out-dir", str(tmp_path)]) == 0
    assert "7 classes, synthetic_street" in capsys.readouterr().err
    labels = cv2.imread(str(tmp_path / f"{img.stem}_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (96, 128) and labels.max() < 7


def test_eval_bag_cli_reads_the_sidecar(cli_run, street, tmp_path):
    from bisenet_ros.data.bags import write_image_bag
    from bisenet_ros.data.synthetic_scenes import generate_scene

    out, _, _ = cli_run
    bag = tmp_path / "bag"
    write_image_bag(bag, [generate_scene(s, (96, 128)) for s in range(2)], fps=10, storage="mcap")
    rep = tmp_path / "eval"
    assert cli_main(["eval-bag", str(bag), "--weights", str(out), "--device", "cpu",
                     "--label-topic", "/camera/labels", "--out", str(rep)]) == 0
    import json

    metrics = json.loads((rep / "metrics.json").read_text())
    text = json.dumps(metrics)
    assert "sidewalk" in text and "person" in text  # class names from the sidecar, not Cityscapes


def test_learns_an_unseen_folder_dataset(tmp_path):
    """Held-out mIoU well above chance after 80 CPU iterations (chance is about 0.2; at 40 the
    result sat right at 0.6 and depended on thread scheduling)."""
    data = _shapes(tmp_path / "train", 16, seed=1)
    val = _shapes(tmp_path / "val", 6, seed=2)
    cfg = TrainConfig(model="bisenetv2", data=str(data), val=str(val), out=str(tmp_path / "m.pth"),
                      iters=80, batch_size=4, crop=(64, 64), num_classes=3, device="cpu", workers=0,
                      seed=0, lr=0.02, scale=(0.9, 1.1), progress=False)
    result = train(cfg, log=lambda m: None)
    assert result.validation[-1]["miou"] > 0.6, result.validation
    side = yaml.safe_load((tmp_path / "m.yaml").read_text())
    assert [c["name"] for c in side["dataset"]["classes"]] == ["class_0", "class_1", "class_2"]


def _tiny_cfg(data: Path, out: Path, **kw) -> TrainConfig:
    args = dict(model="bisenetv2", data=str(data), out=str(out), iters=6, batch_size=2, crop=(64, 64),
                num_classes=3, device="cpu", workers=0, seed=3, progress=False)
    args.update(kw)
    return TrainConfig(**args)


def test_same_seed_repeats_and_resume_continues_exactly(tmp_path):
    torch.set_num_threads(torch.get_num_threads())
    data = _shapes(tmp_path / "d", 5, seed=4)
    full = train(_tiny_cfg(data, tmp_path / "a" / "m.pth"), log=lambda m: None)
    again = train(_tiny_cfg(data, tmp_path / "b" / "m.pth"), log=lambda m: None)
    assert full.losses == again.losses

    class Stop(Exception):
        pass

    def stop_after_3(msg: str) -> None:
        if msg.startswith("iter 4/"):
            raise Stop

    cfg = _tiny_cfg(data, tmp_path / "c" / "m.pth", save_every=3, log_every=1)
    with pytest.raises(Stop):
        train(cfg, log=stop_after_3)
    assert state_path(cfg.out).is_file() and not Path(cfg.out).exists()
    cfg.resume = "auto"
    logs: list[str] = []
    resumed = train(cfg, log=logs.append)
    assert any("continuing at iteration 3" in m for m in logs)
    assert resumed.losses == full.losses[3:]
    a, c = read_state_dict(tmp_path / "a" / "m.pth"), read_state_dict(cfg.out)
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_init_fine_tunes_from_another_class_count(tiny_checkpoints, tmp_path):
    """A 5-class checkpoint initialises a 3-class model: backbone copied, heads re-initialised."""
    src = read_state_dict(tiny_checkpoints["bisenetv2"])
    model = build_model("bisenetv2", 3, aux_heads=True)
    logs: list[str] = []
    load_init(model, "bisenetv2", tiny_checkpoints["bisenetv2"], logs.append)
    assert any("5 classes, training 3: re-initialised 10 class-dependent head tensors" in m for m in logs), logs
    own = model.state_dict()
    heads = class_dependent_keys("bisenetv2", 3)
    assert all(torch.equal(own[k], src[k]) for k in own if k not in heads)
    # and through a full (short) training run, for V1 too
    data = _shapes(tmp_path / "d", 4, seed=5)
    for arch in ("bisenetv1", "bisenetv2"):
        logs.clear()
        res = train(_tiny_cfg(data, tmp_path / arch / "m.pth", model=arch, iters=2,
                              init=str(tiny_checkpoints[arch])), log=logs.append)
        assert any("re-initialised" in m for m in logs)
        assert load_model(weights=res.checkpoint).bisenet_info["num_classes"] == 3


@pytest.mark.parametrize("arch", ["bisenetv1", "bisenetv2"])
def test_init_from_a_checkpoint_of_the_public_implementation(reference, arch):
    """The public implementation's own 19-class file (float16, aux heads) initialises 7 classes."""
    model = build_model(arch, 7, aux_heads=True)
    logs: list[str] = []
    load_init(model, arch, reference / f"{arch}.pth", logs.append)
    n_heads = len(class_dependent_keys(arch, 7))
    assert any(f"has 19 classes, training 7: re-initialised {n_heads} class-dependent" in m for m in logs), logs
    src = read_state_dict(reference / f"{arch}.pth")
    own = model.state_dict()
    key = next(k for k in own if k.endswith("bn.running_var"))
    assert torch.equal(own[key], src[key].float())


def test_class_dependent_keys_are_exactly_the_classifiers():
    v2 = class_dependent_keys("bisenetv2", 7)
    assert v2 == {f"{h}.conv_out.1.{p}" for h in ("head", "aux2", "aux3", "aux4", "aux5_4") for p in ("weight", "bias")}
    v1 = class_dependent_keys("bisenetv1", 7)
    assert v1 == {f"{h}.conv_out.{p}" for h in ("conv_out", "conv_out16", "conv_out32") for p in ("weight", "bias")}


def test_init_refuses_the_wrong_architecture(tiny_checkpoints):
    with pytest.raises(CheckpointError, match="bisenetv1 checkpoint but training a bisenetv2"):
        load_init(build_model("bisenetv2", 3, aux_heads=True), "bisenetv2", tiny_checkpoints["bisenetv1"], print)


def test_ohem_and_loss_sum():
    logits = torch.tensor([[[[4.0, 0.0, 0.0, 0.0]], [[0.0, 4.0, 0.0, 0.0]]]])  # (1, 2 classes, 1, 4)
    target = torch.tensor([[[0, 0, 1, 255]]])
    per_pixel = torch.nn.functional.cross_entropy(logits, target, ignore_index=255, reduction="none")[0, 0, :3]
    # pixel 0 is easy (p = 0.98 > 0.7), pixels 1 and 2 are hard
    assert OhemCrossEntropy(255, 0.7)(logits, target).item() == pytest.approx(per_pixel[1:].mean().item())
    # at least n_min = labelled // min_fraction pixels are kept
    assert OhemCrossEntropy(255, 0.01, min_fraction=1)(logits, target).item() == pytest.approx(per_pixel.mean().item())
    total, main = SegmentationLoss(255, aux_weight=0.5)((logits, logits), target)
    assert total.item() == pytest.approx(1.5 * main.item())
    empty = torch.full((1, 1, 4), 255)
    assert OhemCrossEntropy()(logits, empty).item() == 0.0


def test_poly_schedule_with_warmup():
    assert lr_at(0, 100, 0.1, 10, 0.1, 0.9) == pytest.approx(0.01)
    assert lr_at(10, 100, 0.1, 10, 0.1, 0.9) == pytest.approx(0.1)
    assert lr_at(55, 100, 0.1, 10, 0.1, 0.9) == pytest.approx(0.1 * 0.5 ** 0.9)
    assert lr_at(99, 100, 0.1, 0, 0.1, 0.9) < 0.002


def test_cityscapes_layout_with_label_ids(tmp_path):
    root = tmp_path / "cs"
    for split in ("train", "val"):
        (root / "leftImg8bit" / split / "aachen").mkdir(parents=True)
        (root / "gtFine" / split / "aachen").mkdir(parents=True)
        for i in range(2):
            base = f"aachen_{i:06d}_000019"
            cv2.imwrite(str(root / "leftImg8bit" / split / "aachen" / f"{base}_leftImg8bit.png"),
                        np.full((64, 128, 3), 90, np.uint8))
            raw = np.full((64, 128), 7, np.uint8)  # road
            raw[40:, :30] = 26  # car
            raw[:5] = 0  # unlabeled -> ignore
            cv2.imwrite(str(root / "gtFine" / split / "aachen" / f"{base}_gtFine_labelIds.png"), raw)
    samples, layout = find_samples(root, "val")
    assert layout == "cityscapes" and len(samples) == 2
    from bisenet_ros.data.datasets import load_preset

    preset = load_preset("cityscapes")
    ds = SegmentationDataset(samples, preset, preset.label_lut("labelIds"))
    _, lbl = ds.load(0)
    assert set(np.unique(lbl).tolist()) == {0, 13, 255}
    logs: list[str] = []
    res = train(_tiny_cfg(root, tmp_path / "cs.pth", iters=2, num_classes=None, dataset="cityscapes",
                          val=str(root)), log=logs.append)
    assert any("labels mapped by labelIds" in m for m in logs)
    assert read_sidecar(res.checkpoint)["num_classes"] == 19
    # trainIds files, when present, are preferred and used as they are
    gt = root / "gtFine" / "val" / "aachen"
    for i in range(2):
        cv2.imwrite(str(gt / f"aachen_{i:06d}_000019_gtFine_labelTrainIds.png"), np.full((64, 128), 13, np.uint8))
    samples, _ = find_samples(root, "val")
    assert all(s.label.name.endswith("_labelTrainIds.png") for s in samples)
    assert find_samples(root, "val", "labelIds")[0][0].label.name.endswith("_labelIds.png")


def test_evaluate_uses_the_shared_metric(tmp_path):
    data = _shapes(tmp_path / "d", 2, seed=6)
    samples, _ = find_samples(data)
    from bisenet_ros.training.trainer import resolve_preset

    preset = resolve_preset(TrainConfig(model="bisenetv2", data="", out="", iters=1, batch_size=2,
                                        crop=(64, 64), num_classes=3))
    ds = SegmentationDataset(samples, preset)
    metrics = evaluate(build_model("bisenetv2", 3), ds, torch.device("cpu"))
    assert set(metrics) >= {"miou", "per_class_iou", "pixel_accuracy"}
    assert metrics["frames"] == 2


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "1"], "--batch-size must be >= 2"),
    (["--crop", "60x64"], "multiples of 32"),
    (["--crop", "100000x100000"], "--crop 100000x100000 is 10000000000 pixels, more than a model input may have"),
    (["--input-size", "100032x100032"], "--input-size 100032x100032 is"),
    (["--data", "/nonexistent/x"], "dataset folder not found"),
    (["--init", "/nonexistent/x.pth"], "weights file not found"),
    (["--model", None], "give --model bisenetv1 or bisenetv2 (or --init CHECKPOINT"),
])
def test_bad_options_are_one_line_errors(argv, message, tmp_path, capsys):
    data = _shapes(tmp_path / "d", 2, seed=7)
    base = {"--model": "bisenetv2", "--data": str(data), "--num-classes": "3", "--iters": "2",
            "--batch-size": "2", "--crop": "64x64", "--device": "cpu", "--out": str(tmp_path / "m.pth")}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
        if value is None:
            del base[flag]
    flat = ["train", "--no-progress", "--workers", "0"] + [x for kv in base.items() for x in kv]
    assert cli_main(flat) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bisenet-ros train: error: ") and message in err[-1], err


def test_bad_labels_are_reported_with_the_file(tmp_path):
    data = _shapes(tmp_path / "d", 2, seed=8)
    bad = data / "labels" / "s001.png"
    cv2.imwrite(str(bad), np.full((64, 64), 9, np.uint8))
    ds = SegmentationDataset(find_samples(data)[0], _preset3())
    with pytest.raises(DataError, match=r"s001.png: label values \[9\]"):
        ds.load(1)
    (data / "labels" / "s000.png").unlink()
    with pytest.raises(DataError, match="1 of 2 images have no label PNG"):
        find_samples(data)
    with pytest.raises(ConfigError, match="--num-classes is required"):
        from bisenet_ros.training.trainer import resolve_preset

        resolve_preset(TrainConfig(model="bisenetv2", data="", out="", iters=1, batch_size=2, crop=(64, 64)))


def _preset3():
    from bisenet_ros.training.trainer import resolve_preset

    return resolve_preset(TrainConfig(model="bisenetv2", data="", out="", iters=1, batch_size=2,
                                      crop=(64, 64), num_classes=3))
