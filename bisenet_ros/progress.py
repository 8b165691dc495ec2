"""Progress bars for the tools: on a terminal only, never into pipes and log files.

A bar redraws itself with ``\\r``; written into a pipe, a log file or CI output it becomes one
line per update. :func:`progress_bar` is the one place the tools make a tqdm bar: on stderr, and
only when stderr is a terminal and the user did not pass ``--no-progress``.
"""
from __future__ import annotations

import sys
from typing import Any, Iterable


def progress_wanted(enabled: bool = True) -> bool:
    """Whether a bar should be drawn: ``enabled`` (no ``--no-progress``) and stderr is a terminal."""
    try:
        return bool(enabled) and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any):
    """A tqdm bar on stderr, disabled (a transparent wrapper) unless :func:`progress_wanted`."""
    from tqdm import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, file=sys.stderr, disable=not progress_wanted(enabled), **kwargs)
