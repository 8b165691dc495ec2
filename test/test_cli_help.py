"""Every ``bisenet-ros`` subcommand's ``--help``: defaults shown, examples given, one meaning per option name."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from bisenet_ros import __version__
from bisenet_ros.inference.backends import BACKENDS
from bisenet_ros.cli import COMMANDS, build_parser, main
from bisenet_ros.tools.common import input_size_of

DEMO_WEIGHTS = Path(__file__).resolve().parent.parent / "models" / "bisenetv2_synthetic_street.pth"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.option_strings[0]: a for a in p._actions if a.option_strings and a.dest != "help"}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_shows_every_default_and_examples(name, capsys):
    with pytest.raises(SystemExit) as stop:
        main([name, "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and f"bisenet-ros {name} " in text.split("examples:")[1]
    p = _subparsers()[name]
    for opt, action in _options(p).items():
        assert action.help, f"{name} {opt} has no help text"
        shown = p.formatter_class(prog="x")._get_help_string(action)
        if action.default not in (None, False, [], argparse.SUPPRESS):
            assert "default" in shown.lower(), f"{name} {opt}: default {action.default!r} not shown: {shown!r}"


def test_options_mean_the_same_everywhere():
    """--warmup counts untimed frames in every command; outputs are --out; --backend lists its choices."""
    seen_warmup = []
    for name, p in _subparsers().items():
        opts = _options(p)
        if "--warmup" in opts:
            a = opts["--warmup"]
            assert a.type("3") == 3 and "untimed frames" in a.help, (name, a.help)
            with pytest.raises(argparse.ArgumentTypeError):  # a count: -1 is refused, not 0 frames
                a.type("-1")
            seen_warmup.append(name)
        for bad in ("--out-dir", "--output", "--output-dir", "-o"):
            assert bad not in opts, f"{name}: outputs are named --out ({bad} is at most an alias)"
        if "--backend" in opts:
            assert list(opts["--backend"].choices) == list(BACKENDS)
            assert opts["--precision"].help and set(opts["--precision"].choices) == {"auto", "fp32", "fp16", "bf16", "int8"}
        if "--model" in opts:
            assert not opts["--model"].required, f"{name}: --model is inferred from the checkpoint"
        if "--no-progress" in opts:
            assert opts["--no-progress"].help
    assert set(seen_warmup) == {"bench", "node-bench", "eval-bag", "replay"}


def test_segment_out_dir_stays_a_working_alias():
    p = _subparsers()["segment"]
    args = p.parse_args(["a.png", "--weights", "w.pth", "--out-dir", "o"])
    assert str(args.out) == "o"


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"bisenet-ros {__version__}"


@pytest.mark.parametrize("name", ["bench", "node-bench", "segment", "eval-bag", "replay"])
def test_input_size_defaults_to_the_checkpoint_sidecar(name):
    """The demo weights' sidecar says 256x320; only without one do the benchmarks fall back to 512x1024."""
    p = _subparsers()[name]
    extra = {"segment": ["img.png", "--out", "o"], "eval-bag": ["bag"], "replay": ["bag"]}.get(name, [])
    args = p.parse_args([*extra, "--weights", str(DEMO_WEIGHTS)])
    assert input_size_of(args) == "256x320"
    assert input_size_of(p.parse_args([*extra, "--weights", str(DEMO_WEIGHTS), "--input-size", "64x64"])) == "64x64"
    if name in ("bench", "node-bench"):
        assert input_size_of(p.parse_args(["--model", "bisenetv2"])) == "512x1024"


def test_export_onnx_takes_the_sidecar_input_size(tmp_path):
    import onnx

    out = tmp_path / "street.onnx"
    assert main(["export-onnx", "--weights", str(DEMO_WEIGHTS), "--out", str(out), "--no-verify"]) == 0
    dims = [d.dim_value or d.dim_param for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 256, 320]


def test_help_through_the_console_script():
    exe = Path(sys.executable).with_name("bisenet-ros")
    proc = subprocess.run([str(exe), "bench", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "examples:" in proc.stdout and "720x1280" in proc.stdout, proc.stderr


def test_make_bag_existing_output_names_overwrite_before_reading_input(tmp_path, capsys):
    """The 'exists already' error says how to replace it, and comes before any input is read
    (here the image folder does not even exist) or a progress bar starts."""
    (tmp_path / "bag").mkdir()
    rc = main(["make-bag", "--out", str(tmp_path / "bag"), "--images", str(tmp_path / "missing")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--overwrite" in err[0] and "exists already" in err[0], err


def test_eval_bag_prints_the_final_progress_line_once(tmp_path, monkeypatch, capsys):
    """No bar at all into a pipe or log; on a terminal the 100% line is seen once (what remains
    visible after carriage returns)."""
    import re

    import numpy as np

    from bisenet_ros import progress
    from bisenet_ros.data.bags import write_image_bag

    rng = np.random.default_rng(0)
    write_image_bag(tmp_path / "bag", [(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), None)] * 3,
                    label_topic=None, start_ns=10 ** 18)
    argv = ["eval-bag", str(tmp_path / "bag"), "--weights", str(DEMO_WEIGHTS), "--device", "cpu",
            "--backend", "torch", "--input-size", "32x32"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert "100%" not in capsys.readouterr().err  # stderr is not a terminal here
    monkeypatch.setattr(progress, "progress_wanted", lambda enabled=True: enabled)  # as on a terminal
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    visible = [seg.split("\r")[-1] for seg in err.split("\n")]
    assert len([line for line in visible if re.search(r"eval-bag: 100%", line)]) == 1, err
