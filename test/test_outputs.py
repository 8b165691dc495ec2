"""Outputs never destroy inputs or a user's files, and are never left half-written (issue 13):
bisenet_ros.output_files and the tools that use it."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from bisenet_ros.data import bags
from bisenet_ros.cli import main
from bisenet_ros.output_files import (BAG, CHECKPOINT, MARKER, PNG, REPORT_DIR, OutputError, atomic_file, check_output,
                                      prepare_dir)


def test_check_output_refuses_is_contains_and_inside(tmp_path):
    rec = tmp_path / "rec"
    bags.write_image_bag(rec, [(np.zeros((8, 8, 3), np.uint8), None)], start_ns=1)
    mcap = next(rec.glob("*.mcap"))
    with pytest.raises(OutputError, match="is the input"):
        check_output(rec, [rec], kind=BAG, overwrite=True)
    with pytest.raises(OutputError, match="contains the input"):
        check_output(rec, [mcap], kind=BAG, overwrite=True)
    with pytest.raises(OutputError, match="lies inside the input"):
        check_output(rec / "pred", [rec], kind=BAG)
    link = tmp_path / "link"
    link.symlink_to(rec)
    with pytest.raises(OutputError, match="is the input"):
        check_output(link, [rec], kind=BAG, overwrite=True)
    # a report directory may hold its input (written into, never replaced as a whole)
    assert check_output(tmp_path, [mcap], kind=REPORT_DIR) == tmp_path.resolve()


def test_existing_outputs_need_overwrite_and_must_be_of_the_tools_kind(tmp_path):
    mine = tmp_path / "model.pth"
    mine.write_bytes(b"PK\x03\x04 a torch zip")
    user = tmp_path / "notes.pth"
    user.write_text("not a checkpoint")
    with pytest.raises(OutputError, match="exists already"):
        check_output(mine, kind=CHECKPOINT)
    assert check_output(mine, kind=CHECKPOINT, overwrite=True) == mine.resolve()
    with pytest.raises(OutputError, match="not a PyTorch checkpoint"):
        check_output(user, kind=CHECKPOINT, overwrite=True)
    with pytest.raises(OutputError, match="is a directory"):
        check_output(tmp_path, kind=PNG, overwrite=True)


def test_atomic_file_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    with atomic_file(target) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_stale_partials_of_dead_runs_are_removed(tmp_path):
    stale = tmp_path / ".pred.partial-999999999"  # no such process
    stale.mkdir()
    check_output(tmp_path / "pred", kind=BAG)
    assert not stale.exists()


def _bag(path: Path, n: int, side: int = 64, labels: int | None = None) -> Path:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    lab = None if labels is None else np.full((side, side), labels, np.uint8)
    bags.write_image_bag(path, [(img, lab)] * n, fps=10, start_ns=1_000_000_000)
    return path


def test_sigterm_mid_eval_leaves_no_half_written_prediction_bag(tiny_checkpoints, tmp_path):
    bag = _bag(tmp_path / "rec", 400)
    pred = tmp_path / "pred"
    exe = Path(sys.executable).with_name("bisenet-ros")
    proc = subprocess.Popen([str(exe), "eval-bag", str(bag), "--pred-bag", str(pred), "--out", str(tmp_path / "r"),
                             "--weights", str(tiny_checkpoints["bisenetv2"]), "--device", "cpu", "--backend", "torch",
                             "--no-progress"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(tmp_path.glob(".pred.partial-*")) and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "eval-bag finished before it could be interrupted: " + proc.stderr.read()
    time.sleep(0.5)  # some predictions written
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "bisenet-ros eval-bag: terminated"
    assert not pred.exists() and not list(tmp_path.glob(".pred*"))  # nothing half-written left
    assert bags.list_topics(bag)["/camera/image_raw"].count == 400  # the input untouched


def test_eval_bag_refuses_ground_truth_without_a_single_known_class(tiny_checkpoints, tmp_path, capsys):
    bag = _bag(tmp_path / "rec", 2, side=32, labels=9)  # a 5-class model: 9 is out of range everywhere
    rc = main(["eval-bag", str(bag), "--label-topic", "/camera/labels", "--out", str(tmp_path / "r"),
               "--weights", str(tiny_checkpoints["bisenetv2"]), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "no ground-truth pixel on '/camera/labels' holds a class id 0..4" in err[-1], err
    assert "[9]" in err[-1]


def test_truncated_bag_error_says_how_to_repair(tmp_path, capsys):
    bag = _bag(tmp_path / "rec", 3, side=32)
    mcap = next(bag.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    rc = main(["eval-bag", str(bag), "--weights", "unused.pth"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "mcap recover" in err[0]


def test_segment_continues_past_a_bad_file_and_keeps_same_stems_apart(tiny_checkpoints, tmp_path, capsys):
    rng = np.random.default_rng(1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for path in (tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path / "x.jpg", tmp_path / "good2.png"):
        cv2.imwrite(str(path), rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes((tmp_path / "good2.png").read_bytes()[:50])
    out = tmp_path / "out"
    inputs = [tmp_path / "a" / "x.png", trunc, tmp_path / "b" / "x.png", tmp_path / "x.jpg", tmp_path / "good2.png"]
    rc = main(["segment", *map(str, inputs), "--out", str(out), "--weights", str(tiny_checkpoints["bisenetv2"]),
               "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("bisenet-ros segment: error: 1 of 5 inputs failed (first: ")
    assert "trunc.png" in err[-1]
    labels = sorted(p.name for p in out.glob("*_labels.png"))
    assert labels == ["a_x_png_labels.png", "b_x_png_labels.png", "good2_labels.png", "x_jpg_labels.png"]
    assert (out / MARKER).is_file()
    # a second run replaces its own outputs; a user's file in a folder of theirs is never replaced
    rc = main(["segment", str(tmp_path / "good2.png"), "--out", str(out), "--weights",
               str(tiny_checkpoints["bisenetv2"]), "--device", "cpu"])
    assert rc == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "good2_color.png").write_bytes(b"my drawing")
    rc = main(["segment", str(tmp_path / "good2.png"), "--out", str(mine), "--weights",
               str(tiny_checkpoints["bisenetv2"]), "--device", "cpu"])
    assert rc == 2 and "exists already" in capsys.readouterr().err
    assert (mine / "good2_color.png").read_bytes() == b"my drawing"


def test_training_saves_its_state_before_dying_on_a_data_error(tmp_path, monkeypatch, capsys):
    from bisenet_ros.training import data as data_module

    root = tmp_path / "d"
    rng = np.random.default_rng(2)
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for i in range(4):
        cv2.imwrite(str(root / "images" / f"s{i}.png"), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        cv2.imwrite(str(root / "labels" / f"s{i}.png"), rng.integers(0, 3, (32, 32), dtype=np.uint8))
    real_load = data_module.SegmentationDataset.load
    calls = {"n": 0}

    def flaky_load(self, index):  # a file that goes bad after the up-front check (disk, network share)
        calls["n"] += 1
        if calls["n"] > 6:
            raise data_module.DataError(f"{self.samples[index].label}: cannot read label image")
        return real_load(self, index)

    monkeypatch.setattr(data_module.SegmentationDataset, "load", flaky_load)
    out = tmp_path / "m.pth"
    rc = main(["train", "--model", "bisenetv2", "--data", str(root), "--num-classes", "3", "--iters", "20",
               "--batch-size", "2", "--crop", "32x32", "--device", "cpu", "--workers", "0", "--threads", "1",
               "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "data error at iteration 3" in err[-1] and "--resume" in err[-1], err
    assert (tmp_path / "m.state.pth").is_file() and not out.exists()


def test_segment_reads_16_bit_colour_png_as_the_node_does(tiny_checkpoints, tmp_path):
    """One decoder for files and compressed messages: a 16-bit colour PNG becomes 8-bit bgr8."""
    from bisenet_ros.data.images import decode_image_bytes
    from bisenet_ros.pipeline import build_pipeline

    img16 = (np.random.default_rng(3).integers(0, 256, (24, 40, 3)).astype(np.uint16) * 257)
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), img16)
    rc = main(["segment", str(path), "--out", str(tmp_path / "o"), "--weights", str(tiny_checkpoints["bisenetv2"]),
               "--device", "cpu"])
    assert rc == 0
    image, encoding = decode_image_bytes(path.read_bytes(), "x")
    assert encoding == "bgr8" and image.dtype == np.uint8
    expected = build_pipeline(weights=tiny_checkpoints["bisenetv2"], device="cpu")(image, "bgr8").labels
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "o" / "deep_labels.png"), cv2.IMREAD_UNCHANGED), expected)
