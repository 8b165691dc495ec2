"""The node as a user starts it, in a child process: :func:`node_command` spells the command line
(parameters, remaps), :class:`NodeProcess` runs it (same interpreter, full environment, log in a
file), says why it exited (:meth:`NodeProcess.exit_reason`) and stops it with SIGINT (then SIGTERM,
SIGKILL). Used by ``bisenet-ros replay``, ``node-bench``, ``make demo`` and the node tests. No rclpy.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import BisenetError


class NodeError(BisenetError):
    """The node could not be reached or started, or it exited (also: bad replay input)."""


#: a node's ERROR/FATAL log line as rcutils prints it: "[ERROR] [1796523971.17] [segmentation]: text"
LOG_ERROR = re.compile(r"\[(?:ERROR|FATAL)\] \[[\d.]+\] \[[^\]]*\]: (.+)")


def node_command(node_args: Sequence[str] | Mapping[str, Any] | None, image_topic: str,
                 node_namespace: str = "/segmentation", compressed: bool = False) -> list[str]:
    """``python -m bisenet_ros.ros.node --ros-args ...`` with ``image`` remapped to ``image_topic``.

    ``node_args`` is a list of command-line arguments (``["--ros-args", "-p", "weights:=m.pth"]``)
    or a dict of parameters (``{"weights": "m.pth", "publish_color": False}``). ``compressed``:
    ``image_topic`` carries CompressedImage (it must end in ``/compressed``, as the node expects).
    """
    if compressed:
        if not image_topic.endswith("/compressed"):
            raise NodeError(f"a CompressedImage topic for the node must end in /compressed, got "
                               f"'{image_topic}' (use publish_topic / --publish-topic)")
        image_topic = image_topic[: -len("/compressed")]
    if isinstance(node_args, Mapping):
        args = ["--ros-args"]
        for key, value in node_args.items():
            args += ["-p", f"{key}:={parameter_text(value)}"]
    else:
        args = list(node_args or [])
    if "--ros-args" not in args:
        args.append("--ros-args")
    if not any(a.startswith("image:=") for a in args):
        args += ["-r", f"image:={image_topic}"]
    if compressed and not any(a.startswith("input_transport:=") for a in args):
        args += ["-p", "input_transport:=compressed"]
    ns, _, name = node_namespace.rstrip("/").rpartition("/")
    if name and name != "segmentation" and not any(a.startswith("__node:=") for a in args):
        args += ["-r", f"__node:={name}"]
    if ns and not any(a.startswith("__ns:=") for a in args):
        args += ["-r", f"__ns:={ns}"]
    return [sys.executable, "-m", "bisenet_ros.ros.node", *args]


def parameter_text(value: Any) -> str:
    """A parameter value as ``-p name:=TEXT`` spells it (YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(parameter_text(v) for v in value) + "]"
    return str(value)


class NodeProcess:
    """A ``segmentation_node`` child process (same interpreter and environment), its log in a file.

    ``log_path`` default: a new file in ``$ROS_LOG_DIR`` (else the temp dir), kept for the user.
    """

    def __init__(self, command: list[str], env: Mapping[str, str] | None = None,
                 log_path: str | Path | None = None) -> None:
        self.command = command
        if log_path is None:
            log_dir = os.environ.get("ROS_LOG_DIR") or None  # next to the ROS logs when set
            if log_dir:
                Path(log_dir).mkdir(parents=True, exist_ok=True)
            fd, log_path = tempfile.mkstemp(prefix="segmentation_node_", suffix=".log", dir=log_dir)
            os.close(fd)
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=dict(env if env is not None else os.environ), start_new_session=True)

    @property
    def log(self) -> str:
        """The log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        return " | ".join(line.strip() for line in self.log.strip().splitlines()[-lines:])

    def exit_reason(self) -> str:
        """What went wrong in the node (why it stopped, or did not come up): its last ERROR or
        FATAL log line without the logger's prefix, else the log's last lines."""
        for line in reversed(self.log.strip().splitlines()):
            match = LOG_ERROR.match(line.strip())
            if match:
                return match.group(1)
        return self.log_tail(3) or "(no output)"

    def check_alive(self) -> None:
        """A :class:`NodeError` with :meth:`exit_reason` if the node has exited."""
        if not self.alive():
            raise NodeError(f"segmentation_node exited with code {self.proc.returncode}: {self.exit_reason()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGINT (the node shuts down cleanly), then SIGTERM, then SIGKILL; returns the exit code."""
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if self.proc.poll() is not None:
                break
            try:
                self.proc.send_signal(sig)
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        self._log.close()
        return self.proc.poll()
