"""`auto`'s measured choice: interleaved, load-aware, never trusted blindly when measured under load;
a cache that cannot be read is measured again with one line; the bf16 gate; OpenVINO imported only
when used, without telemetry. Times and loads are faked: nothing here depends on the machine's speed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bisenet_ros.inference import backend_cache, backends
from bisenet_ros.inference.backends import select_backend
from bisenet_ros.errors import ConfigError
from bisenet_ros.models import build_model

SIZE = (64, 128)
CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]


class FakeRunner:
    """Eager fp32 with a controlled error: logits scaled by (1 + scale_err), class 0 raised by bias."""

    def __init__(self, name: str, model, precision: str, scale_err: float = 0.0, bias: float = 0.0):
        self.name, self.model, self.precision = name, model, precision
        self.scale_err, self.bias = scale_err, bias

    def __call__(self, x):
        with torch.inference_mode():
            out = self.model(x) * (1.0 + self.scale_err)
            if self.bias:
                out = out.clone()
                out[:, 0] += self.bias
            return out


@pytest.fixture
def net():
    torch.manual_seed(0)
    return build_model("bisenetv2", num_classes=5).eval()


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """A private cache, a fake CPU with bf16, fake builds (no exports) and fake interleaved times."""
    from bisenet_ros.inference import cpu

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(backend_cache.KEEP_ENV, raising=False)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Fake CPU\nflags\t\t: avx512f avx512_bf16\n")
    monkeypatch.setattr(cpu, "CPUINFO", info)
    state = {"ms": {"onnxruntime": 30.0, "torchscript": 20.0, "openvino": 25.0, "torch": 90.0},
             "errors": {}, "timed": [], "load": 0.3, "built": []}

    def build(name, model, device, precision, input_size):
        state["built"].append(name)
        scale, bias = state["errors"].get(name, (0.0, 0.0))
        return FakeRunner(name, model, precision, scale, bias)

    def measure(runners, x, rounds):
        state["timed"].append([r.name for r in runners])
        return {r.name: [state["ms"][r.name]] * rounds for r in runners}

    monkeypatch.setattr(backends, "build_backend", build)
    monkeypatch.setattr(backend_cache, "measure_interleaved", measure)
    monkeypatch.setattr(backend_cache, "load_average", lambda: state["load"])
    monkeypatch.setattr(backend_cache, "cpu_count", lambda: 2)
    return state


def test_candidates_are_timed_interleaved_in_rotated_rounds():
    calls = []

    class Slow:
        def __init__(self, name):
            self.name = name

        def __call__(self, x):
            calls.append(self.name)

    runners = [Slow("a"), Slow("b"), Slow("c")]
    times = backend_cache.measure_interleaved(runners, torch.zeros(1), 3)
    assert calls == ["a", "b", "c",  # warm-up
                     "a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(v) == 3 for v in times.values())


def test_a_winner_that_loses_most_rounds_is_not_clear():
    assert backend_cache.clear_winner({"a": [10, 10, 10], "b": [20, 20, 20]}) == ("a", None)
    name, why = backend_cache.clear_winner({"a": [10, 30, 10, 30, 10], "b": [20, 20, 20, 20, 20]})
    assert name == "a" and "only 3 of 5 rounds" in why


def test_a_choice_measured_under_load_is_provisional_and_measured_again_when_quiet(isolated, net):
    order = ["onnxruntime", "torchscript"]
    isolated["load"] = 9.0  # 4.5 per CPU: other work shares the cores
    first = select_backend(net, CPU, "fp32", SIZE, order=order)
    assert first.name == "torchscript"
    entry = json.loads(backend_cache.cache_file().read_text())[first.cache_key]
    assert entry["provisional"] is True and entry["load"] == 9.0 and entry["cpus"] == 2
    assert "load average 9.0 on 2 CPUs" in entry["why"] and "provisional" in first.selection[-1]
    # still busy: the provisional choice is used (measuring now would be no better), and says so
    isolated["timed"].clear()
    again = select_backend(net, CPU, "fp32", SIZE, order=order)
    assert isolated["timed"] == [] and again.name == "torchscript" and "provisional" in again.selection[-1]
    assert again.expected_ms == 20.0
    # quiet now: measured again, not trusted blindly; the new figures replace the old
    isolated["load"] = 0.4
    isolated["ms"]["onnxruntime"] = 12.0
    quiet = select_backend(net, CPU, "fp32", SIZE, order=order)
    assert isolated["timed"] == [order] and quiet.name == "onnxruntime"
    assert any(n.startswith("measuring again: the cached choice was provisional") for n in quiet.selection)
    entry = json.loads(backend_cache.cache_file().read_text())[quiet.cache_key]
    assert entry["provisional"] is False and entry["backend"] == "onnxruntime"
    # a trusted entry is used as it is, even under load
    isolated["load"] = 9.0
    isolated["timed"].clear()
    assert select_backend(net, CPU, "fp32", SIZE, order=order).name == "onnxruntime" and isolated["timed"] == []


@pytest.mark.parametrize("content", [
    '{"KEY": {"backend": "onnxruntime", "ms": "fast"}}',
    '{"KEY": {"backend": "onnxruntime", "ms": {"onnxruntime": -1}}}',
    '{"KEY": ["onnxruntime"]}',
    "\x80\x00 not json at all",
    "[1, 2, 3]",
])
def test_an_unreadable_cache_is_measured_again_with_one_line_naming_the_file(isolated, net, capsys, content):
    order = ["onnxruntime", "torchscript"]
    key = backend_cache.cache_key(net, SIZE, "fp32")
    path = backend_cache.cache_file()
    path.parent.mkdir(parents=True)
    path.write_bytes(content.replace("KEY", key.replace('"', '\\"')).encode("latin-1"))
    runner = select_backend(net, CPU, "fp32", SIZE, order=order)
    assert runner.name == "torchscript" and isolated["timed"] == [order]
    lines = [ln for ln in capsys.readouterr().err.splitlines() if str(path) in ln and "ignored" in ln]
    assert len(lines) == 1 and "measuring again" in lines[0] and "Traceback" not in lines[0]
    assert json.loads(path.read_text())[key]["backend"] == "torchscript"  # rewritten, usable


def test_the_measurement_is_announced_with_its_expected_duration(isolated, net):
    said = []
    with backend_cache.announcing(said.append):
        select_backend(net, CPU, "fp32", SIZE, order=["onnxruntime", "torchscript"])
    assert said[0].startswith("choosing the fp32 backend for") and " s, once per CPU" in said[0]
    assert said[1].startswith("measuring the speed of onnxruntime, torchscript (5 interleaved rounds, about")
    assert str(backend_cache.cache_file()) in said[1]


def test_bf16_refused_in_one_line_when_every_candidate_is_far_from_fp32(isolated, net, monkeypatch):
    """The old gate fell back to the slowest rejected candidate (torch autocast: slower and less
    accurate than OpenVINO); now nothing rejected is ever selected by auto."""
    isolated["errors"] = {"openvino": (0.062, 0.0), "torch": (0.076, 0.0)}
    with pytest.raises(ConfigError) as err:
        select_backend(net, CPU, "bf16", SIZE)
    text = str(err.value)
    assert "\n" not in text and "openvino: rel err 6.2e-02" in text and "torch: rel err 7.6e-02" in text
    assert "use --precision fp32" in text and "int8" in text
    # labels count too: logits within the tolerance but labels changed on the street scene is refused
    monkeypatch.setitem(backends.backend_config()["tolerance"], "bf16", 1e6)
    isolated["errors"] = {"openvino": (0.0, 1e3), "torch": (0.0, 1e3)}
    with pytest.raises(ConfigError, match=r"openvino: rel err \S+, \d+\.\d\d% labels equal on a street scene; torch"):
        select_backend(net, CPU, "bf16", SIZE)


def test_bf16_auto_selects_only_a_passing_candidate(isolated, net):
    isolated["errors"] = {"openvino": (0.01, 0.0), "torch": (0.07, 0.0)}
    runner = select_backend(net, CPU, "bf16", SIZE)
    assert runner.name == "openvino" and runner.rel_err_vs_eager == pytest.approx(0.01, rel=1e-3)
    assert any(n.startswith("torch: rejected (rel err 7.0e-02, 100.00% labels equal on a street scene")
               for n in runner.selection)
    # the fast one fails, the slow one passes: the slow accurate one, never the rejected one
    backend_cache.forget()
    isolated["errors"] = {"openvino": (0.07, 0.0), "torch": (0.01, 0.0)}
    assert select_backend(net, CPU, "bf16", SIZE).name == "torch"


def test_bf16_backend_asked_by_name_runs_with_a_warning(isolated, net):
    isolated["errors"] = {"openvino": (0.08, 0.0)}
    runner = backends.create_runner(net, "openvino", "cpu", "bf16", SIZE)
    assert runner.name == "openvino" and len(runner.warnings) == 1
    assert "openvino bf16 is far from fp32" in runner.warnings[0] and "rel err 8.0e-02" in runner.warnings[0]


@pytest.mark.skipif(backends.backend_unavailable_reason("openvino", CPU) is not None, reason="needs openvino")
def test_openvino_is_imported_only_when_used_and_sends_nothing(tmp_path):
    """A fresh HOME, no network (a new network namespace where root can make one): the cache key
    and the availability check do not import OpenVINO; building a runner does, and writes nothing
    under $HOME (OpenVINO's telemetry wrote ~/intel and forked a sender) and leaves no child process."""
    home = tmp_path / "home"
    home.mkdir()
    script = textwrap.dedent("""
        import os, sys, time, torch
        from bisenet_ros.inference import backend_cache, backends
        from bisenet_ros.models import build_model
        backend_cache.library_versions()
        assert backends.backend_unavailable_reason("openvino", torch.device("cpu")) is None
        assert "openvino" not in sys.modules, "imported for the cache key or the availability check"
        net = build_model("bisenetv2", num_classes=3).eval()
        runner = backends.OpenVinoRunner(net, torch.device("cpu"), "fp32", (64, 96))
        runner(torch.zeros(1, 3, 64, 96))
        me = str(os.getpid())
        kids = [p for p in os.listdir("/proc") if p.isdigit() and
                open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1] == me]
        print("children", kids, flush=True)
    """)
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "PYTHONPATH": str(REPO)}
    env.pop("CI", None)
    cmd = [sys.executable, "-c", script]
    if os.geteuid() == 0 and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        cmd = ["unshare", "-n", *cmd]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "children []" in proc.stdout
    assert list(home.iterdir()) == [], f"written under HOME: {list(home.rglob('*'))}"


def _watched_runner(isolated, net, load):
    isolated["load"] = load
    return select_backend(net, CPU, "fp32", SIZE, order=["onnxruntime", "torchscript"])  # torchscript, 20 ms


def test_the_node_notices_a_model_far_from_the_cached_figure_on_a_quiet_machine(isolated, net):
    from bisenet_ros.inference.latency_watch import LatencyWatch

    runner = _watched_runner(isolated, net, 0.2)
    watch = LatencyWatch(runner, window=10)
    assert [watch.add(25.0) for _ in range(10)] == [None] * 10  # within 2x: nothing to say
    said = [watch.add(70.0) for _ in range(10)]
    assert said[:9] == [None] * 9 and "3.5x the 20 ms 'auto' measured for torchscript" in said[9]
    assert "marked to be measured again" in said[9] and "bisenet-ros bench --remeasure" in said[9]
    assert [watch.add(70.0) for _ in range(20)] == [None] * 20  # said once
    entry = json.loads(backend_cache.cache_file().read_text())[runner.cache_key]
    assert entry["provisional"] is True and backend_cache.should_remeasure(entry)


def test_under_load_the_gap_is_explained_and_the_choice_kept(isolated, net):
    from bisenet_ros.inference.latency_watch import LatencyWatch

    runner = _watched_runner(isolated, net, 0.2)
    isolated["load"] = 8.0
    watch = LatencyWatch(runner, window=5)
    said = [watch.add(200.0) for _ in range(5)][-1]
    assert "load average now 8.0 on 2 CPUs" in said and "the cached choice is kept" in said
    assert json.loads(backend_cache.cache_file().read_text())[runner.cache_key]["provisional"] is False


def test_the_node_part_logs_and_publishes_what_start_up_does(isolated, net):
    pytest.importorskip("diagnostic_msgs")
    from bisenet_ros.ros.backend_watch import BackendWatch

    class Clock:
        def now(self):
            from builtin_interfaces.msg import Time

            class Now:
                def to_msg(self):
                    return Time()
            return Now()

    class Node:
        logged: list = []

        def get_logger(self):
            node = self

            class Log:
                def info(self, m):
                    node.logged.append(("info", m))

                def warning(self, m):
                    node.logged.append(("warn", m))
            return Log()

        def get_fully_qualified_name(self):
            return "/segmentation"

        def get_clock(self):
            return Clock()

    published = []
    part = BackendWatch(Node(), type("Pub", (), {"publish": lambda self, m: published.append(m)})())
    with backend_cache.announcing(part.announce):
        runner = select_backend(net, CPU, "fp32", SIZE, order=["onnxruntime", "torchscript"])
    assert [lvl for lvl, _ in Node.logged] == ["info", "info"] and "measuring the speed" in Node.logged[1][1]
    assert len(published) == 2 and published[1].status[0].message.startswith("measuring the speed of")
    pipeline = type("P", (), {"runner": runner})()
    result = type("R", (), {"timings": {"inference_ms": 500.0}})()
    for _ in range(30):
        part.frame(pipeline, [result])
    assert Node.logged[-1][0] == "warn" and "25.0x the 20 ms" in Node.logged[-1][1] and part.note


@pytest.mark.ros
def test_the_node_measures_again_on_request_while_serving(ros_env, tiny_checkpoints, tmp_path, client):
    """A first start serves at once with the first candidate that passes the check and measures
    auto's candidates in the background (then serves the winner); ``~/measure_backends`` measures
    again on request (the cache entry replaced) while the running pipeline keeps serving; refused
    in one line when the backend is not auto."""
    from diagnostic_msgs.srv import SelfTest
    from node_client import start_node

    env = {**ros_env, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    cache = tmp_path / "cache" / "bisenet_ros" / "auto_backend.json"
    node = start_node(env, ["-p", f"weights:={tiny_checkpoints['bisenetv2']}"], tmp_path / "node.log")
    try:
        assert client.wait_until(lambda: "serving bisenetv2" in node.log, 120), node.log
        # served before measuring (the announcement follows the "serving" line)
        assert client.wait_until(lambda: "the candidates are measured in the background" in node.log, 30), node.log
        assert client.wait_until(lambda: "now serving" in node.log, 120), node.log  # the measured winner
        before = json.loads(cache.read_text())
        response = client.call(SelfTest, "/segmentation/measure_backends", SelfTest.Request(), timeout=120)
        assert response.passed == b"\x01", (response, node.log)
        status = response.status[0]
        chosen = {kv.key: kv.value for kv in status.values}
        assert chosen["backend"] in ("onnxruntime", "openvino", "torchscript") and "selected" in status.message
        after = json.loads(cache.read_text())
        assert after.keys() == before.keys() and after != before  # the same model's entry, measured anew
        assert client.wait_until(lambda: node.log.count("now serving") == 2, 30), node.log
        assert "measuring the inference backends again" in node.log
        assert client.set_parameters("/segmentation", backend="torch").successful
        assert client.wait_until(lambda: node.log.count("now serving") == 3, 60), node.log
        refused = client.call(SelfTest, "/segmentation/measure_backends", SelfTest.Request())
        assert refused.passed == b"\x00" and "only 'auto' measures" in refused.status[0].message
    finally:
        rc = node.stop()
    assert rc == 0 and "Traceback" not in node.log, node.log
