"""`bisenet-ros bench` smoke test: runs on tiny sizes and writes JSON with the documented keys.

This checks the command, not the speed (speed is measured by running the command, see
docs/benchmarks.md).
"""
from __future__ import annotations

import json

import pytest

from bisenet_ros.cli import main

KEYS = {"model", "weights", "random_init", "device", "backend", "precision", "backend_selection", "input_size",
        "frame_size", "frames", "warmup", "model_fps", "model_latency_ms", "pipeline_fps", "pipeline_latency_ms",
        "pipeline_stages_ms", "rel_err_vs_eager", "machine", "load", "backend_cache"}


def test_bench_writes_json_with_the_keys(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--weights", str(tiny_checkpoints["bisenetv1"]), "--input-size", "64x96",
               "--frame-size", "50x70", "--device", "cpu", "--frames", "2", "--warmup", "1",
               "--compare-eager", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert KEYS <= set(data)
    assert data["random_init"] is False and data["weights"] == str(tiny_checkpoints["bisenetv1"])
    assert data["backend"] != "auto" and data["input_size"] == "64x96" and data["frame_size"] == "50x70"
    assert data["model_fps"] > 0 and data["pipeline_fps"] > 0 and data["eager_model_fps"] > 0
    assert data["model_latency_ms"]["count"] == 2
    assert {"p50", "p90", "p99"} <= set(data["pipeline_latency_ms"])
    assert 0 <= data["rel_err_vs_eager"] < 1e-3
    out_text = capsys.readouterr().out
    assert "model    :" in out_text
    # the load with the figures, and what auto has cached with how to measure again
    assert data["load"]["cpus"] >= 1 and "load_average_start" in data["load"] and "machine load:" in out_text
    assert data["backend_cache"]["entry"]["backend"] == data["backend"]
    assert "bisenet-ros bench --remeasure" in out_text


def test_bench_says_when_figures_are_untrustworthy_and_remeasures_on_request(tiny_checkpoints, tmp_path, capsys,
                                                                           monkeypatch):
    from bisenet_ros.inference import backend_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(backend_cache, "load_average", lambda: 50.0)
    args = ["bench", "--weights", str(tiny_checkpoints["bisenetv2"]), "--input-size", "64x96", "--frame-size",
            "50x70", "--device", "cpu", "--frames", "1", "--warmup", "0"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "warning: load average 50.0" in captured.err and "not trustworthy" in captured.err
    assert "provisional" in captured.out  # measured under load: cached, but not trusted blindly
    first = json.loads(backend_cache.cache_file().read_text())
    assert main(args + ["--remeasure"]) == 0
    assert "measuring the speed of" in capsys.readouterr().err
    assert json.loads(backend_cache.cache_file().read_text()).keys() == first.keys()


def test_bench_random_init_and_explicit_backend(tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = main(["bench", "--model", "bisenetv2", "--num-classes", "4", "--backend", "torch",
               "--input-size", "64x64", "--frame-size", "40x40", "--frames", "2", "--warmup", "0",
               "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["random_init"] is True and data["weights"] is None
    assert data["backend"] == "torch" and data["rel_err_vs_eager"] == 0.0
    assert "random init" in capsys.readouterr().out


def test_bench_errors(capsys):
    assert main(["bench", "--frames", "2"]) == 2  # neither weights nor model
    assert "needs --model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # argparse: the choices are listed in --help and the error
        main(["bench", "--model", "bisenetv2", "--backend", "nope", "--frames", "1",
              "--input-size", "64x64", "--frame-size", "32x32"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "invalid choice: 'nope'" in err and "onnxruntime" in err
    for command in ("bench", "node-bench"):  # a camera frame over the pixel budget: refused before rendering
        assert main([command, "--model", "bisenetv2", "--frame-size", "100000x100000"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "100000x100000 is out of range" in err, err
        assert main([command, "--model", "bisenetv2", "--frame-size", "4000x4000", "--max-pixels", "1000000"]) == 2
        assert "exceeds the budget of 1000000 pixels" in capsys.readouterr().err


@pytest.mark.ros
def test_node_bench_runs_camera_node_and_collector(tiny_checkpoints, tmp_path, ros_env, capsys):
    """Smoke test of node-bench over real ROS 2 (tiny frames, a few seconds): output and JSON keys."""
    out = tmp_path / "node.json"
    rc = main(["node-bench", "--weights", str(tiny_checkpoints["bisenetv2"]), "--input-size", "64x96",
               "--frame-size", "60x90", "--device", "cpu", "--rate", "15", "--duration", "3", "--warmup", "1",
               "--pipeline-frames", "3", "--outputs", "overlay", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert {"node_fps", "latency_ms", "drops_in_window", "node_dropped_frames", "reference", "criteria",
            "fps_ratio", "camera"} <= set(data)
    assert data["frames_out"] > 0 and data["node_fps"] > 0
    assert data["camera"]["published"] > 0 and data["latency_ms"]["count"] == data["frames_out"]
    assert data["reference"]["measured"] and data["reference"]["pipeline_fps"] > 0
    assert data["frame"] == "synthetic"  # the camera and the reference both use a rendered street scene
    cpu = data["cpu_percent"]  # where the CPUs went in the window: the node process did the work
    assert set(cpu) == {"node", "camera", "collector", "idle", "other"} and cpu["node"] > 0
    assert sum(cpu.values()) == pytest.approx(100 * data["machine"]["cpu_count"], rel=0.1)
    printed = capsys.readouterr().out
    assert "node_fps :" in printed and "bgr8 synthetic frames" in printed and "cpu      : node" in printed


def test_cpu_shares_read_process_and_idle_time_off_proc(tmp_path, monkeypatch):
    from bisenet_ros.inference import cpu

    def fake_proc(node_ticks: int, idle_ticks: int) -> None:
        (tmp_path / "7").mkdir(exist_ok=True)
        # a comm with a space and a parenthesis, as /proc writes it; utime/stime are fields 14/15
        (tmp_path / "7" / "stat").write_text(f"7 (py (x) y) S 1 7 7 0 -1 0 0 0 0 0 {node_ticks} 50 0 0 20 0 9\n")
        (tmp_path / "stat").write_text(f"cpu  100 0 100 {idle_ticks} 20 0 0 0 0 0\ncpu0 1 2 3 4 5\n")

    monkeypatch.setattr(cpu, "PROC", tmp_path)
    monkeypatch.setattr(cpu, "_ticks", lambda: 100.0)
    monkeypatch.setattr(cpu.os, "cpu_count", lambda: 2)
    fake_proc(1000, 5000)
    start = cpu.cpu_sample({"node": 7, "gone": 8})
    fake_proc(1150, 5040)
    end = cpu.CpuSample(start.t + 1.0, {"node": cpu._process_seconds(7), "gone": None}, cpu._idle_seconds(), 2)
    assert cpu.cpu_shares(start, end) is None  # a process it could not read: no made-up figure
    end = cpu.CpuSample(start.t + 1.0, {"node": cpu._process_seconds(7)}, cpu._idle_seconds(), 2)
    shares = cpu.cpu_shares(cpu.CpuSample(start.t, {"node": start.processes["node"]}, start.idle, 2), end)
    assert shares == pytest.approx({"node": 150.0, "idle": 40.0, "other": 10.0})


def test_bench_compares_precisions_and_the_postprocess(tiny_checkpoints, tmp_path, capsys, monkeypatch):
    """--compare-precision bf16 (the CPU's flags faked: no bf16 hardware needed for the command)
    and the exact postprocess vs the naive one: both reported, figures not asserted."""
    from bisenet_ros.inference import cpu

    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Fake CPU\nflags\t\t: avx512f avx512_bf16\n")
    monkeypatch.setattr(cpu, "CPUINFO", info)
    out = tmp_path / "p.json"
    rc = main(["bench", "--weights", str(tiny_checkpoints["bisenetv2"]), "--input-size", "64x96",
               "--frame-size", "50x70", "--device", "cpu", "--frames", "2", "--warmup", "1",
               "--precision", "fp32", "--compare-precision", "bf16", "--backend", "torch", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    cp, pp = data["compare_precision"], data["postprocess_vs_naive"]
    assert cp["precision"] == "bf16" and cp["backend"] == "torch" and 0.9 <= cp["labels_equal"] <= 1.0
    assert cp["speedup_vs_main"] > 0 and cp["model_speedup_vs_main"] > 0
    assert pp["labels_equal"] >= 0.9999 and pp["ratio"] > 0 and pp["frame_size"] == "50x70"
    text = capsys.readouterr().out
    assert "precision bf16 (torch), same run interleaved" in text and "exact-cheap" in text
