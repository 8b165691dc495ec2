"""Exceptions with one-line, user-facing messages.

Every error the package raises for bad input (files, checkpoints, images, configuration) derives
from :class:`BisenetError`; the CLI and the node print ``str(err)`` as a single line.
"""


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
