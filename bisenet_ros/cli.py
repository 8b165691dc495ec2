"""``bisenet-ros``: offline segmentation, bag evaluation and replay, benchmarks, export, training.

Each subcommand is a module in :mod:`bisenet_ros.tools` with ``HELP``, ``EXAMPLES`` (shown at
the end of its ``--help``), ``add_arguments(parser)`` and ``run(args) -> int``. Errors from bad
input are printed as one line, exit status 2. Every ``--help`` shows each option's default.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import run_reporting

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
    "health-baseline": "health_baseline",
    "weights": "weights",
    "camera": "camera",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks and appends ``(default: X)`` to every option whose help
    does not already say its default (None, False and empty defaults are not shown)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or "%(default)" in text
            or default in (None, False, argparse.SUPPRESS)
            or default == []
            or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
            or not action.option_strings
        ):
            return text
        shown = "x".join(str(v) for v in default) if isinstance(default, tuple) else "%(default)s"
        return f"{text} (default: {shown})"


class Parser(argparse.ArgumentParser):
    """argparse with the project's error form: one line naming the command, exit 2, no usage block
    (a tool's usage is 10-30 lines that bury the one that says what is wrong; --help shows it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_subcommand(sub, name: str, module) -> argparse.ArgumentParser:
    """The subparser of one tool module: description, options, examples epilog."""
    examples = getattr(module, "EXAMPLES", "").strip("\n")
    p = sub.add_parser(name, help=module.HELP, description=module.HELP, formatter_class=HelpFormatter,
                       epilog=f"examples:\n{examples}" if examples else None)
    module.add_arguments(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="bisenet-ros", description="BiSeNet V1/V2 semantic segmentation tools (ROS 2 package bisenet_ros)",
        formatter_class=HelpFormatter,
        epilog="examples:\n  bisenet-ros segment street.jpg --weights models/bisenetv2_synthetic_street.pth "
               "--out out/\n  bisenet-ros COMMAND --help",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"bisenet_ros.tools.{module_name}")
        p = add_subcommand(sub, name, module)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code, result = run_reporting(f"bisenet-ros {args.command}", lambda: args._run(args))
    return int(result or 0) if code == 0 else code


def moved_command(old: str, new: str) -> None:
    """What an old ``python -m`` path does now: one line on stderr naming its new command, exit 2."""
    print(f"bisenet_ros: 'python -m {old}' moved: run '{new}'", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    sys.exit(main())
