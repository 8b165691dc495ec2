"""``eval-bag`` over a fleet of bags: serial, ``--jobs`` worker processes and a real Ray cluster.

The Ray cluster (a head and a second node, Ray's own ``ray.cluster_utils.Cluster``: real GCS,
raylets and worker processes, 1 CPU and 100 MB of object store each) is started once per session.
Six small bags, one of them corrupt: the fleet confusion matrix equals the serial one exactly, the
corrupt bag is named with its error (exit 2, the others kept), and a worker SIGKILLed in the middle
of a bag has that bag redone by another worker, counted once.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from bisenet_ros import cli
from bisenet_ros.data.bags import write_image_bag
from bisenet_ros.evaluation.fleet import RAY_HINT, find_bags

REPO = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000_000_000_000
CORRUPT = "b3"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Path:
    """bags/b0..b5 (mcap and sqlite3; 3..14 frames, 48x64, 5 classes); b3 cut in half."""
    root = tmp_path_factory.mktemp("fleet") / "bags"
    rng = np.random.default_rng(7)
    for b in range(6):
        frames = []
        for _ in range(3 + 2 * b if b != 5 else 14):
            img = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (7, 7), 3)
            gt = rng.integers(0, 5, (48, 64), dtype=np.uint8)
            gt[:4] = 255
            frames.append((img, gt))
        write_image_bag(root / f"b{b}", frames, storage="sqlite3" if b == 1 else "mcap", start_ns=T0)
    bad = next((root / CORRUPT).glob("*.mcap"))
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    return root


def eval_args(bags: Path, weights: Path, out: Path, *extra: str) -> list[str]:
    return ["eval-bag", str(bags), "--label-topic", "/camera/labels", "--weights", str(weights), "--backend", "torch",
            "--device", "cpu", "--no-progress", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def serial(fleet, tiny_checkpoints, tmp_path_factory, capsys_module=None):
    out = tmp_path_factory.mktemp("serial") / "out"
    rc = cli.main(eval_args(fleet, tiny_checkpoints["bisenetv2"], out))
    assert rc == 2  # the corrupt bag
    return json.loads((out / "metrics.json").read_text())


def check_fleet(metrics: dict, serial: dict, fleet: Path) -> None:
    assert metrics["confusion_matrix"] == serial["confusion_matrix"]  # exactly, summed once per bag
    assert metrics["miou"] == serial["miou"] and metrics["frames"] == serial["frames"] == 3 + 5 + 7 + 11 + 14
    assert [b["bag"] for b in metrics["bags"]] == [str(fleet / f"b{i}") for i in range(6)]  # input order
    assert [b["miou"] for b in metrics["bags"]] == [b["miou"] for b in serial["bags"]]
    bad = metrics["bags"][3]
    assert bad["miou"] is None and "cannot read bag" in bad["error"] and metrics["failed_bags"] == 1


def test_serial_fleet_report(serial, fleet):
    per_bag = [b for b in serial["bags"] if b["miou"] is not None]
    assert len(per_bag) == 5 and serial["bags"][3]["error"]
    # the total is the summed matrix, not a mean of per-bag mIoUs
    assert serial["miou"] != pytest.approx(sum(b["miou"] for b in per_bag) / 5, abs=1e-9)
    assert find_bags([fleet / "b0", fleet]) == [fleet / "b0"] + [fleet / f"b{i}" for i in range(1, 6)]


def test_local_jobs_equal_serial(serial, fleet, tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(eval_args(fleet, tiny_checkpoints["bisenetv2"], out, "--jobs", "2", "--pred-bag",
                            str(tmp_path / "pred")))
    captured = capsys.readouterr()
    assert rc == 2 and f"error: {fleet / CORRUPT}: cannot read bag" in captured.err
    metrics = json.loads((out / "metrics.json").read_text())
    check_fleet(metrics, serial, fleet)
    assert len({b["worker"] for b in metrics["bags"]}) == 2  # two worker processes, model loaded once in each
    lines = captured.out.splitlines()
    assert lines[1].startswith(str(fleet / CORRUPT)) and "FAILED" in lines[1]  # worst first: the failure on top
    mious = [float(ln.split()[2]) for ln in lines[2:7]]
    assert mious == sorted(mious)
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["b0", "b1", "b2", "b4", "b5"]
    assert (out / "bags" / "b5" / "metrics.json").is_file()


@pytest.fixture(scope="session")
def ray_cluster():
    """A head and a second node on this machine (real Ray processes), shut down after the session."""
    pytest.importorskip("ray", reason=RAY_HINT)
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    node = {"num_cpus": 1, "object_store_memory": 100 * 1024 ** 2, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=node)
    cluster.add_node(**{k: v for k, v in node.items() if k != "include_dashboard"})
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def ray_workers_busy() -> list[int]:
    """PIDs of Ray workers executing a bag (Ray names the process after the running task)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::_ray_evaluate"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def test_ray_two_nodes_equal_serial_and_redo_a_killed_workers_bag(serial, fleet, tiny_checkpoints, tmp_path,
                                                                     ray_cluster):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "bisenet_ros.cli", *eval_args(fleet, tiny_checkpoints["bisenetv2"], out, "--ray",
                                                                 ray_cluster.address)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        busy = ray_workers_busy()
        if busy:
            killed = busy[0]
            os.kill(killed, signal.SIGKILL)
        else:
            time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=600)
    assert killed is not None, stdout + stderr
    assert proc.returncode == 2, stdout + stderr
    metrics = json.loads((out / "metrics.json").read_text())
    check_fleet(metrics, serial, fleet)  # the killed worker's bag redone, counted once, nothing lost
    assert all(not b["worker"].endswith(f":{killed}") for b in metrics["bags"])
    assert metrics["workers"].startswith("Ray cluster at") and "(2 CPUs)" in metrics["workers"]
    assert f"error: {fleet / CORRUPT}: cannot read bag" in stderr


def test_ray_missing_is_one_line(fleet, tiny_checkpoints, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed (the optional dependency)
    rc = cli.main(eval_args(fleet / "b0", tiny_checkpoints["bisenetv2"], tmp_path / "o", "--ray"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"bisenet-ros eval-bag: error: {RAY_HINT}"]
