"""Exceptions with one-line, user-facing messages.

Every error the package raises for bad input (files, checkpoints, images, configuration) derives
from :class:`BisenetError`; the CLI and the node print ``str(err)`` as a single line.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
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


def file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as an input file ("not found", "is a directory", "is not a
    regular file", "is not readable"), or None: the one rule for weights, images and videos."""
    path = Path(path).expanduser()
    if path.is_dir():
        return "is a directory"
    if not path.exists():
        return "not found"
    if not path.is_file():
        return "is not a regular file"
    if not os.access(path, os.R_OK):
        return "is not readable"
    return None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that clean-up (``finally``, atomic writes) runs
    (installed by :func:`terminate_as_interrupt`)."""


def safe_text(text: str, limit: int = 500) -> str:
    """``text`` safe for one log or terminal line: control characters escaped, long text cut
    (text that came from outside: file names, frame_ids, messages of errors about them)."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return out if len(out) <= limit else out[:limit] + f"... ({len(out) - limit} more characters)"


def terminate_as_interrupt() -> None:
    """Turn SIGTERM into :class:`Terminated` in the main thread (CLI tools only)."""
    def handler(signum, frame):  # noqa: ARG001
        raise Terminated()

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. called from a test runner thread)
        pass


def run_reporting(prog: str, run: Callable[[], T]) -> tuple[int, T | None]:
    """Run a command's ``run()``: ``(0, result)``; a :class:`BisenetError` or a refusal of the file
    system (``OSError``) -> one line ``PROG: error: ...`` on stderr and ``(2, None)``; Ctrl-C ->
    ``PROG: interrupted``, ``(130, None)``; SIGTERM -> ``PROG: terminated``, ``(143, None)``."""
    terminate_as_interrupt()  # SIGTERM cleans up like Ctrl-C: no half-written outputs left
    try:
        return 0, run()
    except BisenetError as exc:
        print(f"{prog}: error: {safe_text(str(exc))}", file=sys.stderr)
        return 2, None
    except OSError as exc:  # permissions, disk full, ...: the user's to fix, in one line
        where = f": {safe_text(exc.filename)}" if exc.filename else ""
        print(f"{prog}: error: {safe_text(exc.strerror or str(exc))}{where}", file=sys.stderr)
        return 2, None
    except Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        return 143, None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130, None
