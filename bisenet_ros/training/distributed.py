"""Distributed training under ``torchrun``: DistributedDataParallel over torch.distributed.

``torchrun --nproc_per_node N [--nnodes M --rdzv-backend c10d --rdzv-endpoint HOST:PORT]
-m bisenet_ros.cli train ARGS`` starts one process per GPU (or per CPU share); torchrun sets
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous address, which is how a run knows it
is distributed. Plain ``bisenet-ros train`` (no torchrun) stays the single-process trainer.

* Process group: NCCL on CUDA (each process on ``cuda:LOCAL_RANK``), gloo on the CPU, with a
  timeout (``--dist-timeout``) so a rank that dies or a host that vanishes ends every other rank
  within that time, with one line and a non-zero exit, never a hang.
* Data: :class:`DistributedIterationSampler` gives each rank its share of the single-process
  sample stream (epoch-wise permutations seeded by ``(seed, epoch)``, as DistributedSampler's
  ``set_epoch``); ``--batch-size`` is per process, the global batch is ``WORLD_SIZE x`` it, and
  each iteration's global batch holds exactly the samples (and augmentations) a single process
  with that batch size would see.
* Validation: every rank scores its share of the validation images on a plain copy of the model
  (rank 0's weights and BatchNorm statistics) and the confusion matrices are summed over ranks:
  the same mIoU as one process evaluating the saved checkpoint.
* Outputs: rank 0 alone writes the checkpoint, sidecar, curve, CSV, logs and resume state.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, one_line
from .data import IterationSampler

DEFAULT_TIMEOUT_S = 300.0


@dataclass
class DistContext:
    """Where this process stands in the job (single process: rank 0 of 1, ``active`` False)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    active: bool = False  # a process group is set up (launched by torchrun)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """``RANK`` and ``WORLD_SIZE`` in the environment: started by torchrun (or by hand as torchrun would)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def dist_device(requested: str, local_rank: int, local_world: int) -> torch.device:
    """The device of this rank: ``cuda``/``auto`` with CUDA -> ``cuda:LOCAL_RANK``, else the CPU."""
    from ..models import resolve_device

    text = str(requested).strip().lower()
    if text in ("", "auto"):
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda requested but CUDA is not available")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s): "
                              "start at most one process per GPU (--nproc_per_node)")
        return torch.device("cuda", local_rank)
    device = resolve_device(text)
    if device.type == "cuda" and local_world > 1:
        raise ConfigError(f"--device {requested} would put all {local_world} processes of this node on one GPU; "
                          "use --device cuda (each process takes cuda:LOCAL_RANK)")
    return device


def init_distributed(requested_device: str, timeout_s: float) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun describes; returns the context and this rank's device."""
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    device = dist_device(requested_device, local_rank, local_world)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=float(timeout_s)),
                                **({"device_id": device} if device.type == "cuda" else {}))
    except Exception as exc:  # noqa: BLE001 - rendezvous/store failures of every kind
        raise DistributedFailure(f"rank {rank}: could not join the {backend} process group of {world} "
                                 f"processes within {timeout_s:g} s ({one_line(exc)})") from None
    return DistContext(rank, world, local_rank, backend, True), device


def shutdown(ctx: DistContext) -> None:
    """Leave the process group after a finished run."""
    if ctx.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class DistributedFailure(Exception):
    """Another rank or host was lost (collective failed or timed out); carries a one-line reason."""


def is_collective_failure(exc: BaseException) -> bool:
    """True for errors raised by torch.distributed when a peer is gone or a collective timed out."""
    import torch.distributed as dist

    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        key in text for key in ("Gloo", "gloo", "NCCL", "Connection closed", "Connection reset", "Timed out",
                                "timed out", "ProcessGroup"))


def lost_peer_message(ctx: DistContext, exc: BaseException, iteration: int, timeout_s: float,
                      saved: str | None) -> str:
    reason = re.sub(r"\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", one_line(exc).split(" Exception raised from ")[0])
    reason = reason.split(". This is typically")[0]
    if len(reason) > 240:
        reason = reason[:237] + "..."
    keep = f"; last saved state: {saved}" if saved else "; no resume state saved (see --save-every)"
    return (f"rank {ctx.rank} of {ctx.world_size}: another rank or host stopped responding at iteration "
            f"{iteration} (collective failed or exceeded --dist-timeout {timeout_s:g} s: {reason}){keep}")


class DistributedIterationSampler(IterationSampler):
    """This rank's share of the single-process stream of ``(index, key)``.

    Counted from ``start``, each run of ``batch_size`` positions goes to ranks 0, 1, ...,
    ``world_size - 1`` in turn, so iteration ``k`` of the job (all ranks) consumes exactly the
    positions ``start + k*B .. start + (k+1)*B - 1`` (``B = world_size * batch_size``), which a single
    process with batch ``B`` consumes at its iteration ``k``. Each epoch is a fresh permutation seeded
    by ``(seed, epoch)`` (DistributedSampler's ``set_epoch``), the same on every rank.
    """

    def __init__(self, size: int, seed: int, start: int, rank: int, world_size: int, batch_size: int) -> None:
        super().__init__(size, seed, start)
        self.rank, self.world_size, self.batch_size = int(rank), int(world_size), int(batch_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index, pos in super().__iter__():
            if ((pos - self.start) // self.batch_size) % self.world_size == self.rank:
                yield index, pos


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device, sync_bn: bool) -> nn.Module:
    """DistributedDataParallel around ``model`` (SyncBatchNorm first when asked); rank 0's weights
    and buffers are broadcast to every rank here."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids, output_device=ids[0] if ids else None)


def check_sync_bn(sync_bn: bool | None, device: torch.device, world_size: int) -> bool:
    """``--sync-bn``: default on for CUDA with several processes (the public recipe), off on the CPU
    (torch's SyncBatchNorm runs on GPUs only)."""
    if sync_bn is None:
        return device.type == "cuda" and world_size > 1
    if sync_bn and device.type != "cuda":
        raise ConfigError("--sync-bn needs CUDA: torch's SyncBatchNorm does not run on the CPU (use --no-sync-bn)")
    return bool(sync_bn)


def average(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of a scalar over ranks (the logged loss is the job's, not rank 0's alone)."""
    if not ctx.active or ctx.world_size == 1:
        return value
    import torch.distributed as dist

    out = value.detach().clone().float()
    dist.all_reduce(out)
    return out / ctx.world_size


def sync_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Rank 0's BatchNorm running statistics on every rank (each rank updated them from its own batch)."""
    if ctx.active and ctx.world_size > 1:
        import torch.distributed as dist

        for buf in model.buffers():
            dist.broadcast(buf, 0)


def sum_confusion(cm, ctx: DistContext, device: torch.device) -> None:
    """Sum a :class:`~bisenet_ros.evaluation.metrics.ConfusionMatrix` over ranks in place (exact, int64)."""
    if not ctx.active or ctx.world_size == 1:
        return
    import torch.distributed as dist

    where = device if ctx.backend == "nccl" else torch.device("cpu")
    flat = np.concatenate([cm.matrix.ravel(), cm.unknown, [cm.frames, cm.out_of_range]]).astype(np.int64)
    t = torch.from_numpy(flat).to(where)
    dist.all_reduce(t)
    total = t.cpu().numpy()
    n = cm.num_classes
    cm.matrix[:] = total[: n * n].reshape(n, n)
    cm.unknown[:] = total[n * n: n * n + n]
    cm.frames, cm.out_of_range = int(total[-2]), int(total[-1])


def broadcast_object(obj, ctx: DistContext, device: torch.device):
    """Rank 0's ``obj`` on every rank (the resume state: only rank 0 needs to read ``--out``)."""
    if not ctx.active or ctx.world_size == 1:
        return obj
    import torch.distributed as dist

    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0, device=device if ctx.backend == "nccl" else None)
    return box[0]


def describe(ctx: DistContext, device: torch.device, batch_size: int, sync_bn: bool) -> str:
    """The one start-up line: world, backend, device, global batch."""
    nodes = int(os.environ.get("GROUP_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    nodes = max(1, ctx.world_size // max(1, local)) if "GROUP_WORLD_SIZE" not in os.environ else nodes
    return (f"distributed: {ctx.world_size} processes on {nodes} node(s), {ctx.backend} on "
            f"{'cuda:LOCAL_RANK' if device.type == 'cuda' else 'cpu'}, global batch "
            f"{ctx.world_size * batch_size} ({batch_size} per process), SyncBatchNorm {'on' if sync_bn else 'off'}")
