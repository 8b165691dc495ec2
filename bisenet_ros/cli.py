"""``bisenet-ros``: offline segmentation, bag evaluation and replay, benchmarks, export, training.

Each subcommand is a module in :mod:`bisenet_ros.tools` with ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``. Errors from bad input are printed as one line, exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import BisenetError

#: subcommand -> module in bisenet_ros.tools
COMMANDS: dict[str, str] = {
    "segment": "segment",
    "eval-bag": "eval_bag",
    "replay": "replay",
    "make-bag": "make_bag",
    "train": "train",
    "bench": "bench",
    "export-onnx": "export_onnx",
    "node-bench": "node_bench",
    "quantize": "quantize",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bisenet-ros", description="BiSeNet V1/V2 semantic segmentation tools (ROS 2 package bisenet_ros)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"bisenet_ros.tools.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except BisenetError as exc:
        print(f"bisenet-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bisenet-ros {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
