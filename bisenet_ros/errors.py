"""Exceptions with one-line, user-facing messages.

Every error the package raises for bad input (files, checkpoints, images, configuration) derives
from :class:`BisenetError`; the CLI and the node print ``str(err)`` as a single line.
"""
from __future__ import annotations

import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class BisenetError(Exception):
    """Base class: the message is one line that names the file or value and the cause."""


class CheckpointError(BisenetError):
    """A weights file is missing, unreadable, or does not fit the configured model."""


class ConfigError(BisenetError):
    """A preset, parameter file or option value is invalid."""


class ImageError(BisenetError):
    """An image (array or ROS message) cannot be segmented as given."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of ``exc``'s message (at most ``limit`` characters), or its type name."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


def run_reporting(prog: str, run: Callable[[], T]) -> tuple[int, T | None]:
    """Run a command's ``run()``: ``(0, result)``; a :class:`BisenetError` -> one line
    ``PROG: error: ...`` on stderr and ``(2, None)``; Ctrl-C -> ``PROG: interrupted``, ``(130, None)``."""
    try:
        return 0, run()
    except BisenetError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2, None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130, None
