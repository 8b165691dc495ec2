"""``bisenet-ros train`` under torchrun: real processes, real torch.distributed (gloo on the CPU).

* Two ranks (DistributedDataParallel) against one process: the same global batch, the same data
  order, the same weights. torch's SyncBatchNorm does not run on the CPU, so each rank normalises
  its own half of the batch; the single-process reference does exactly that (forward each half on
  its own, rank 0's half last for the running statistics, mean of the two losses) and everything
  else is the trainer's own code. Tolerance: max |difference| < 1e-4 on every parameter.
* SIGKILL of rank 1 ends rank 0 (no torchrun agent to help: the process group notices) within the
  timeout, with one line, exit 2, the last saved state intact.
* Two hosts (network namespaces joined by a veth pair): ``torchrun --nnodes 2`` with c10d
  rendezvous across them; rank 0 alone writes the checkpoint.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bisenet_ros.models import build_model
from bisenet_ros.training import TrainConfig, evaluate, lr_at, state_path, training_defaults
from bisenet_ros.training.data import IterationSampler
from bisenet_ros.training.losses import SegmentationLoss
from bisenet_ros.training.trainer import _datasets, _param_groups, _seed_everything, init_classifiers, resolve_preset

from test_train import _shapes

REPO = Path(__file__).resolve().parents[1]
ITERS, BATCH, WORLD, LR = 3, 2, 2, 0.01


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("dist")
    return _shapes(root / "train", 8, 0), _shapes(root / "val", 5, 1)  # 5: ranks score 3 and 2 images


def train_args(data: Path, val: Path | None, out: Path, *extra: str, model: str = "bisenetv1",
               iters: int = ITERS) -> list[str]:
    return ["train", "--model", model, "--data", str(data), *(["--val", str(val)] if val else []),
            "--num-classes", "3", "--iters", str(iters), "--batch-size", str(BATCH), "--crop", "64x64",
            "--device", "cpu", "--workers", "0", "--threads", "1", "--lr", str(LR), "--warmup-iters", "0",
            "--no-progress", "--out", str(out), *extra]


def env(**extra: str) -> dict:
    e = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(key, None)
    e.update(extra)
    return e


def reference_weights(data: Path, cfg_args: dict) -> tuple[dict, dict]:
    """One process, global batch WORLD*BATCH, BatchNorm per rank-sized part (see module doc):
    (initial, final) state dicts."""
    cfg = TrainConfig(**cfg_args)
    arch, defaults = cfg.model, training_defaults(cfg.model)
    hp = {k: defaults[k] for k in ("momentum", "weight_decay", "scale", "aux_weight")}
    _seed_everything(cfg.seed, torch.device("cpu"))
    preset = resolve_preset(cfg)
    train_ds, _ = _datasets(cfg, preset, defaults, hp, lambda m: None, progress=False)
    model = build_model(arch, preset.num_classes, aux_heads=True)
    init_classifiers(model, arch)
    model.train()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(_param_groups(model, hp["weight_decay"]), lr=LR, momentum=hp["momentum"])
    crit = SegmentationLoss(preset.ignore_index, False, float(defaults["ohem_thresh"]), hp["aux_weight"])
    stream = iter(IterationSampler(len(train_ds), cfg.seed))
    for it in range(ITERS):
        for group in opt.param_groups:
            group["lr"] = lr_at(it, ITERS, LR, 0, float(defaults["warmup_ratio"]), float(defaults["poly_power"]))
        items = [train_ds[next(stream)] for _ in range(WORLD * BATCH)]
        parts = [items[r * BATCH:(r + 1) * BATCH] for r in range(WORLD)]
        losses, kept = [], None
        for part in parts:  # rank 0's part first: the running statistics it leaves are the ones kept
            images, labels = torch.stack([p[0] for p in part]), torch.stack([p[1] for p in part])
            losses.append(crit(model(images), labels)[0])
            kept = kept or {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
        opt.zero_grad()
        (sum(losses) / WORLD).backward()
        model.load_state_dict(kept, strict=False)
        opt.step()
    return init, model.state_dict()


def test_two_ranks_match_one_process_and_rank0_writes_once(shapes, tmp_path):
    data, val = shapes
    out = tmp_path / "run" / "m.pth"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(WORLD), "-m", "bisenet_ros.cli", *train_args(data, val, out)],
                          env=env(), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count(f"global batch {WORLD * BATCH} ({BATCH} per process)") == 1, proc.stderr
    assert proc.stdout.count("trained bisenetv1") == 1  # rank 0 reports, rank 1 is silent
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.pth", "m.train.csv", "m.train.png", "m.yaml"]
    got = torch.load(out, map_location="cpu", weights_only=True)

    torch.set_num_threads(1)
    init, want = reference_weights(data, dict(model="bisenetv1", data=str(data), out=str(tmp_path / "ref.pth"),
                                        iters=ITERS, batch_size=WORLD * BATCH, crop=(64, 64), num_classes=3,
                                        workers=0, progress=False))
    params = [k for k in want if want[k].is_floating_point()]
    diff = max((got[k] - want[k]).abs().max().item() for k in params)
    moved = max((want[k] - init[k]).abs().max().item() for k in params)
    print(f"max |2 ranks - 1 process| over {len(params)} tensors: {diff:.3g} (training moved them by up to {moved:.3g})")
    assert diff < 1e-4 and moved > 100 * diff

    # validation: the confusion matrices summed over ranks = one process scoring the checkpoint
    cfg = TrainConfig(model="bisenetv1", data=str(val), out=str(tmp_path / "x.pth"), iters=1, batch_size=2,
                      crop=(64, 64), num_classes=3)
    val_ds = _datasets(cfg, resolve_preset(cfg), training_defaults("bisenetv1"), {"scale": (1, 1)},
                       lambda m: None, progress=False)[0]
    model = build_model("bisenetv1", 3, aux_heads=True)
    model.load_state_dict(got)
    single = evaluate(model, val_ds, torch.device("cpu"))["miou"]
    logged = [ln for ln in (out.parent / "m.train.csv").read_text().splitlines()[1:] if ln.split(",")[-1]]
    assert logged and float(logged[-1].split(",")[-1]) == pytest.approx(single, abs=5e-6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigkill_of_rank1_ends_rank0_in_one_line(shapes, tmp_path):
    data, _ = shapes
    out = tmp_path / "kill" / "m.pth"
    timeout_s = 30
    base = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    argv = [sys.executable, "-m", "bisenet_ros.cli", *train_args(data, None, out, "--save-every", "2",
                                                                 "--log-every", "1", "--dist-timeout",
                                                                 str(timeout_s), model="bisenetv2", iters=10000)]
    ranks = [subprocess.Popen(argv, env=env(**base, RANK=str(r), LOCAL_RANK=str(r)), stderr=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, text=True, cwd=tmp_path) for r in range(2)]
    try:
        lines = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = ranks[0].stderr.readline()
            assert line, "rank 0 ended early: " + "".join(lines)
            lines.append(line)
            if line.startswith("iter 3/"):  # state saved at 2
                break
        ranks[1].send_signal(signal.SIGKILL)
        t_kill = time.monotonic()
        rest = ranks[0].communicate(timeout=timeout_s + 60)[1]
        elapsed = time.monotonic() - t_kill
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert ranks[0].returncode == 2 and elapsed < timeout_s + 30, (elapsed, rest)
    tail = [ln for ln in rest.splitlines() if not ln.startswith("iter ")]
    assert len(tail) == 1 and "Traceback" not in rest, rest
    assert tail[0].startswith("bisenet-ros train: error: rank 0 of 2: another rank or host stopped responding")
    assert f"last saved state: {state_path(out)}" in tail[0]
    state = torch.load(state_path(out), map_location="cpu", weights_only=True)  # intact, loadable
    assert state["iteration"] >= 2 and state["iteration"] % 2 == 0 and not out.exists()


# -- two hosts --------------------------------------------------------------------------------------
@pytest.fixture
def two_hosts(request):
    """Hosts A and B: network namespaces joined by a veth pair on 10.201.<n>.0/24 (removed after)."""
    if shutil.which("ip") is None:
        pytest.skip("two-host tests need iproute2's ip (network namespaces)")
    if os.geteuid() != 0:
        pytest.skip("two-host tests need root to create network namespaces (ip netns)")
    tag = f"{os.getpid() % 100000}t{random.randint(0, 999)}"
    ns, dev = (f"bst{tag}a", f"bst{tag}b"), (f"bsw{tag}a", f"bsw{tag}b")
    request.addfinalizer(lambda: [subprocess.run(["ip", "netns", "del", n], capture_output=True) for n in ns])
    net = random.randint(1, 254)
    steps = [["ip", "netns", "add", ns[0]], ["ip", "netns", "add", ns[1]],
             ["ip", "link", "add", dev[0], "netns", ns[0], "type", "veth", "peer", "name", dev[1], "netns", ns[1]]]
    for n, d, host in ((ns[0], dev[0], 1), (ns[1], dev[1], 2)):
        steps += [["ip", "-n", n, "addr", "add", f"10.201.{net}.{host}/24", "dev", d],
                  ["ip", "-n", n, "link", "set", "lo", "up"], ["ip", "-n", n, "link", "set", d, "up"]]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"network namespaces not permitted here ({' '.join(step[:3])}: {proc.stderr.strip()})")
    return [(ns[i], dev[i], f"10.201.{net}.{i + 1}") for i in range(2)]


def test_two_hosts_c10d_rendezvous(two_hosts, shapes, tmp_path):
    data, val = shapes
    out = tmp_path / "hosts" / "m.pth"
    endpoint = f"{two_hosts[0][2]}:{random.randint(20000, 40000)}"
    procs = []
    for i, (ns, dev, addr) in enumerate(two_hosts):
        # host A runs the rendezvous store (is_host: its address does not resolve from the shared hostname)
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
               "--nproc_per_node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "bst",
               "--rdzv-conf", f"is_host={str(i == 0).lower()}", "--local-addr", addr, "-m", "bisenet_ros.cli",
               *train_args(data, val, out, "--log-every", "1", "--dist-timeout", "120", iters=2)]
        procs.append(subprocess.Popen(cmd, env=env(GLOO_SOCKET_IFNAME=dev), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, cwd=tmp_path))
    try:
        results = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = "\n".join(o + e for o, e in results)
    assert [p.returncode for p in procs] == [0, 0], logs[-4000:]
    print(logs)
    assert logs.count("distributed: 2 processes on 2 node(s), gloo on cpu, global batch 4") == 1, logs
    assert logs.count("trained bisenetv1 for 2 iterations") == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.pth", "m.train.csv", "m.train.png", "m.yaml"]
    assert torch.load(out, map_location="cpu", weights_only=True)
