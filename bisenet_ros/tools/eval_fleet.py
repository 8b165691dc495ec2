"""``bisenet-ros eval-bag BAG BAG ... [--jobs N | --ray [ADDRESS]]``: a fleet of bags.

Each bag is evaluated as ``eval-bag`` evaluates one (same pipeline, same scoring) by an
:class:`EvalJob` in this process, in ``--jobs`` local worker processes or as Ray tasks
(:mod:`bisenet_ros.evaluation.fleet`); the driver writes one report per bag under ``OUT/bags/<name>/``, the
fleet total (summed confusion matrices) in ``OUT/`` and prints the per-bag table, worst first.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data.bags import BagError, check_bag_output
from ..errors import ConfigError
from ..evaluation.fleet import bag_names, fleet_total, run_local, run_ray, run_serial, table, timed
from ..evaluation.report import check_report_dir, write_report
from .common import cpu_name
from .eval_job import EvalJob


def check_fleet_outputs(args: argparse.Namespace, bags: list[Path], out: Path, names: list[str]) -> dict[str, Path]:
    """Before any work: the report folder and the prediction folder touch no input; the
    prediction bags' paths (one per input, named after it)."""
    label_map = args.label_map if args.label_map and Path(args.label_map).is_file() else None
    inputs = [*bags, args.weights, label_map]
    if args.label_topic and args.label_topic == args.image_topic:
        raise ConfigError("--label-topic must differ from --image-topic")
    check_report_dir(out, [*inputs, args.pred_bag], overwrite=args.overwrite)
    if not args.pred_bag:
        return {}
    root = Path(args.pred_bag).expanduser()
    if root.resolve() == out.expanduser().resolve():
        raise ConfigError("--pred-bag and --out must be different paths")
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--pred-bag {root}: with several bags this is a folder of prediction bags")
    paths = {}
    for bag, name in zip(bags, names):
        paths[str(bag)] = check_bag_output(root / name, inputs, args.overwrite, option="--pred-bag")
    root.mkdir(parents=True, exist_ok=True)
    return paths


def run_fleet(args: argparse.Namespace, bags: list[Path]) -> int:
    out = args.out or Path("eval_fleet")
    names = bag_names(bags)
    job = EvalJob(args, check_fleet_outputs(args, bags, out, names))
    if args.ray is not None:
        (results, cpus), wall = timed(lambda: run_ray(bags, job, args.ray))
        workers = f"Ray cluster at {args.ray} ({cpus} CPUs)"
    elif args.jobs > 1:
        results, wall = timed(lambda: run_local(bags, job, min(args.jobs, len(bags))))
        workers = f"{min(args.jobs, len(bags))} local worker processes"
    else:
        results, wall = timed(lambda: run_serial(bags, job))
        workers = "this process"
    report, cm, latencies = fleet_total(results, wall, workers)
    report["label_map"], report["cpu"] = args.label_map, cpu_name()
    for result, name in zip(results, names):
        if result.report is not None:
            write_report(out / "bags" / name, result.report,
                         confusion=result.confusion.matrix if result.confusion is not None else None,
                         latency_samples=result.latencies, title=f"eval-bag: {name}", tool="eval-bag")
    paths = write_report(out, report, confusion=cm.matrix if cm is not None else None, latency_samples=latencies,
                         title=f"eval-bag: {len(bags)} bags", tool="eval-bag")
    print("\n".join(table(results)))
    failed = [r for r in results if r.error]
    miou = report.get("miou")
    print(f"fleet: {len(bags)} bags ({len(failed)} failed), {report['frames']} frames, "
          f"{report['labelled_frames']} labelled, mIoU {'n/a' if miou is None else f'{miou:.4f}'}; "
          f"{report['wall_fps'] or 0:.1f} frames/s over the fleet ({wall:.1f} s, {workers})")
    print(f"report: {paths['report']}")
    print(f"metrics: {paths['metrics']}")
    if args.pred_bag:
        print(f"predictions: {args.pred_bag}/<bag name>")
    for r in failed:
        print(f"bisenet-ros eval-bag: error: {r.bag}: {r.error}", file=sys.stderr)
    return 2 if failed else 0
