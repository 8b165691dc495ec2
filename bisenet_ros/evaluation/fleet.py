"""Evaluating many bags: in this process, in local worker processes, or as Ray tasks on a cluster.

Every bag is evaluated by one call of a *job* (a picklable callable ``job(bag) -> BagResult``
that builds its pipeline on first use and keeps it, so a worker process loads the model once,
not once per bag). Each bag's :class:`BagResult` carries that bag's own confusion matrix; the
driver sums the matrices of the results it receives, once per bag, in input order, so the fleet
total is exactly the serial one whichever way the bags ran, and a Ray task retried after its
worker died is counted once (only the retry's result ever reaches the driver).

* :func:`find_bags`: bags and folders of bags -> the bag list (input order, folders sorted).
* :func:`run_serial`, :func:`run_local` (``--jobs N``: ``concurrent.futures`` worker processes
  with an initializer), :func:`run_ray` (``--ray ADDRESS``: one Ray task per bag, retried once if
  its worker dies).
* :func:`fleet_total`: the summed confusion matrix, warnings and latencies as one report in the
  shape of a single-bag report, plus ``bags`` (``bag``, ``miou``, ``error``) in input order.

ROS-free; the bags are read with rosbags. Workers must reach the bags, the weights and the
output folder under the same paths (shared storage on a cluster).
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import BisenetError, ConfigError, one_line
from .metrics import ConfusionMatrix, fps_from_latencies, LatencyRecorder

RAY_HINT = "--ray needs Ray: pip install 'ray==2.60.0' (and 'ray[client]' for ray:// addresses)"
BAG_SUFFIXES = (".mcap", ".db3")


def is_bag(path: Path) -> bool:
    """A bag: a ``.mcap``/``.db3`` file, or a folder with ``metadata.yaml`` or such files in it."""
    if path.is_file():
        return path.suffix.lower() in BAG_SUFFIXES
    return path.is_dir() and ((path / "metadata.yaml").is_file()
                              or any(p.suffix.lower() in BAG_SUFFIXES for p in path.iterdir() if p.is_file()))


def find_bags(paths: Sequence[str | Path]) -> list[Path]:
    """Bags named on the command line, folders of bags expanded (sorted); each bag once."""
    from ..data.bags import BagError

    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise BagError(f"bag '{path}' does not exist")
        inner = sorted(p for p in path.iterdir() if is_bag(p)) if path.is_dir() and not is_bag(path) else []
        found.extend(inner or [path])  # not a bag and no bags inside: reading it says what is wrong
    seen, unique = set(), []
    for bag in found:
        key = bag.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(bag)
    return unique


def bag_names(bags: Sequence[Path]) -> list[str]:
    """A distinct folder name per bag (its stem; ``_2``, ``_3`` ... for repeats)."""
    names, used = [], {}
    for bag in bags:
        base = bag.stem if bag.is_file() else bag.name
        used[base] = used.get(base, 0) + 1
        names.append(base if used[base] == 1 else f"{base}_{used[base]}")
    return names


@dataclass
class BagResult:
    """One bag's evaluation, or its error; ``pid``: the worker process that produced it."""

    bag: str
    report: dict | None = None
    confusion: ConfusionMatrix | None = None
    latencies: dict[str, list[float]] = field(default_factory=dict)
    error: str | None = None
    pid: int = 0
    host: str = ""

    @property
    def miou(self) -> float | None:
        return None if self.report is None else self.report.get("miou")


def safe_call(job: Callable[[Path], BagResult], bag: Path) -> BagResult:
    """``job(bag)``; a failing bag becomes a result with its one-line error (others go on)."""
    try:
        result = job(bag)
    except BisenetError as exc:
        result = BagResult(str(bag), error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a corrupt bag may fail deep inside a reader
        result = BagResult(str(bag), error=f"{type(exc).__name__}: {one_line(exc)}")
    result.pid, result.host = os.getpid(), socket.gethostname()
    return result


def run_serial(bags: Sequence[Path], job) -> list[BagResult]:
    return [safe_call(job, bag) for bag in bags]


_JOB = None  # the job of this worker process (set once by the pool's initializer)


def _init_worker(job) -> None:
    global _JOB
    _JOB = job


def _work(bag: Path) -> BagResult:
    return safe_call(_JOB, bag)


def run_local(bags: Sequence[Path], job, jobs: int) -> list[BagResult]:
    """``jobs`` worker processes (spawned: no forked torch threads), each with one copy of ``job``."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(job,)) as pool:
        futures = [pool.submit(_work, bag) for bag in bags]
        results = []
        for bag, fut in zip(bags, futures):
            try:
                results.append(fut.result())
            except BrokenProcessPool:
                results.append(BagResult(str(bag), error="a worker process died (killed, or out of memory)"))
    return results


_RAY_JOBS: dict[bytes, object] = {}  # per Ray worker process: the job (and its loaded model), by its bytes


def _ray_evaluate(job_bytes: bytes, bag: str) -> BagResult:
    """The Ray task: the worker keeps the job it unpickled first, so its model is loaded once."""
    import pickle

    job = _RAY_JOBS.get(job_bytes)
    if job is None:
        job = _RAY_JOBS[job_bytes] = pickle.loads(job_bytes)
    return safe_call(job, Path(bag))


def connect_ray(address: str):
    """``ray.init`` on an existing cluster (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``)."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_HINT) from None
    if ray.is_initialized():
        return ray
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR", configure_logging=True)
    except Exception as exc:  # noqa: BLE001 - no cluster, client not installed, ...
        raise ConfigError(f"--ray {address}: cannot connect to a Ray cluster ({one_line(exc)}); start one with "
                          "'ray start --head' (and 'ray start --address HEAD:6379' on the other machines)") from None
    return ray


def run_ray(bags: Sequence[Path], job, address: str, retries: int = 1) -> tuple[list[BagResult], int]:
    """One Ray task per bag (1 CPU each; retried ``retries`` times if its worker dies). Returns the
    results in input order and the cluster's CPU count."""
    import pickle

    ray = connect_ray(address)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        task = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=False)(_ray_evaluate)
        job_ref = ray.put(pickle.dumps(job))
        refs = [task.remote(job_ref, str(bag)) for bag in bags]
        results = []
        for bag, ref in zip(bags, refs):
            try:
                results.append(ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - worker lost beyond its retries, node died, ...
                results.append(BagResult(str(bag), error=f"Ray task failed: {one_line(exc)[:300]}"))
        return results, cpus
    finally:
        ray.shutdown()


def sum_confusion(results: Sequence[BagResult]) -> ConfusionMatrix | None:
    """The fleet's confusion matrix: the bags' matrices added, once each."""
    mats = [r.confusion for r in results if r.confusion is not None]
    if not mats:
        return None
    first = mats[0]
    total = ConfusionMatrix(first.num_classes, first.ignore_index, first.unknown_index)
    for cm in mats:
        total.matrix += cm.matrix
        total.unknown += cm.unknown
        total.frames += cm.frames
        total.out_of_range += cm.out_of_range
        total.out_of_range_values |= cm.out_of_range_values
    return total


ACCURACY_KEYS = ("miou", "per_class_iou", "pixel_accuracy", "mean_class_accuracy", "fwiou", "per_class_accuracy",
                 "valid_classes", "labelled_pixels", "gt_pixels", "pred_pixels", "unknown_pixels")


def fleet_total(results: Sequence[BagResult], wall_s: float, workers: str) -> tuple[dict, ConfusionMatrix | None,
                                                                                   dict[str, list[float]]]:
    """(report, summed confusion matrix, all latency samples) of the bags that worked."""
    ok = [r for r in results if r.report is not None]
    first = ok[0].report if ok else {}
    lat = LatencyRecorder()
    for r in ok:
        for key, values in r.latencies.items():
            lat.samples.setdefault(key, []).extend(values)
    frames = sum(r.report["frames"] for r in ok)
    totals = lat.samples.get("total_ms", [])
    report = {
        "tool": "eval-bag", "bag": f"{len(results)} bags", "image_topic": first.get("image_topic"),
        "label_topic": first.get("label_topic"), "model": first.get("model"), "frames": frames,
        "timed_frames": len(totals), "labelled_frames": sum(r.report["labelled_frames"] for r in ok),
        "fps": fps_from_latencies(totals), "fps_definition": first.get("fps_definition"),
        "wall_s": wall_s, "wall_fps": frames / wall_s if wall_s > 0 else None, "workers": workers,
        "latency_ms": lat.summary(), "ignore_index": first.get("ignore_index"),
        "stamp_tolerance_ms": first.get("stamp_tolerance_ms"), "class_names": first.get("class_names"),
    }
    cm = sum_confusion(ok)
    if cm is not None:
        m = cm.compute(first.get("class_names"))
        report.update({k: m[k] for k in ACCURACY_KEYS})
        report["confusion_matrix"] = cm.matrix.tolist()
    else:
        report.update({"miou": None, "per_class_iou": None, "pixel_accuracy": None})
    warnings: dict[str, int] = {}
    for r in ok:
        for k, v in r.report.get("warnings", {}).items():
            warnings[k] = warnings.get(k, 0) + v
    report["warnings"] = warnings
    report["warning_messages"] = {k: v for r in ok for k, v in r.report.get("warning_messages", {}).items()}
    report["bags"] = [bag_entry(r) for r in results]
    report["failed_bags"] = sum(1 for r in results if r.error)
    return report, cm, lat.samples


def bag_entry(result: BagResult) -> dict:
    entry = {"bag": result.bag, "miou": result.miou, "worker": f"{result.host}:{result.pid}"}
    if result.report is not None:
        entry.update(frames=result.report["frames"], labelled_frames=result.report["labelled_frames"],
                     fps=result.report.get("fps"))
    if result.error:
        entry["error"] = result.error
    return entry


def table(results: Sequence[BagResult]) -> list[str]:
    """The per-bag lines, worst mIoU first (failed bags on top)."""
    def key(r: BagResult):
        return (r.error is None, r.miou if r.miou is not None else -1.0, r.bag)

    width = max([len(r.bag) for r in results] + [3])
    lines = [f"{'bag':<{width}}  {'frames':>6}  {'mIoU':>6}  {'fps':>7}"]
    for r in sorted(results, key=key):
        if r.error:
            lines.append(f"{r.bag:<{width}}  {'-':>6}  {'-':>6}  {'-':>7}  FAILED: {r.error}")
            continue
        miou = f"{r.miou:.4f}" if r.miou is not None else "n/a"
        fps = r.report.get("fps")
        lines.append(f"{r.bag:<{width}}  {r.report['frames']:>6}  {miou:>6}  {fps or 0:>7.1f}")
    return lines


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def as_array(cm: ConfusionMatrix | None) -> np.ndarray | None:
    return None if cm is None else cm.matrix
