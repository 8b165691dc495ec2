"""ROS 2 node ``segmentation``: camera images in, class labels / colour / overlay / timing out.

A thin adapter over :class:`bisenet_ros.pipeline.SegmentationPipeline`. :class:`SegmentationNode`
owns one :class:`~bisenet_ros.ros.core.SegmentationCore` (the behaviour, composed of parts: camera
inputs, output publishers, /diagnostics, the worker, run-time parameter changes) and runs its
stages -- configure, activate -- in its constructor;
:class:`bisenet_ros.ros.lifecycle.LifecycleSegmentationNode` runs them on lifecycle transitions.

Topics, parameters and the legend's JSON format: docs/node.md.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from typing import Any, Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from ..errors import BisenetError, one_line, safe_text
from .core import SegmentationCore
from .parameters import usage_text
from .transport import apply_fastdds_profile, tuning_decision

NODE_NAME = "segmentation"


class SegmentationNode(Node):
    """The ``segmentation`` node: configured and active from its constructor; see docs/node.md."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.core = SegmentationCore(self)
        self.core.configure()
        self.core.activate()

    def close(self) -> None:
        """Stop the worker (and a background model load) and release the node."""
        self.core.shutdown()
        self.destroy_node()


def main(args: list[str] | None = None) -> int:
    """Console script ``segmentation_node``: run the node until SIGINT/SIGTERM."""
    return spin(SegmentationNode, args)


def spin(factory: Callable[[], Node], args: list[str] | None = None,
         program: str = "segmentation_node", lifecycle: bool = False) -> int:
    """Create the node ``factory`` makes (it has ``close()``) and spin it until SIGINT/SIGTERM;
    exit status 2 (one error line) when it cannot start. ``program`` names the executable in
    ``--help``/``--version`` (and ``lifecycle`` says it is the managed node)."""
    own = list(sys.argv[1:] if args is None else args)
    own = own[:own.index("--ros-args")] if "--ros-args" in own else own  # ours: before --ros-args
    if {"-h", "--help"} & set(own):
        print(usage_text(program, lifecycle))
        return 0
    if "--version" in own:
        from .. import __version__

        print(f"{program} (bisenet_ros) {__version__}")
        return 0
    transport = tuning_decision()
    apply_fastdds_profile()  # before rclpy.init: Fast DDS reads it when the participant is created
    problem = init_ros(args)
    if problem:  # --ros-args rcl cannot parse (a missing or malformed params file, a bad remap)
        print(f"{program}: cannot start ROS: {problem}", file=sys.stderr)
        return 2
    logger = rclpy.logging.get_logger(NODE_NAME)
    logger.info(f"transport: {transport.reason}")
    node = None
    code = 0
    try:
        node = factory()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except BisenetError as exc:
        logger.error(str(exc))
        code = 2
    except Exception as exc:  # parameter type/range errors from rclpy, torch errors at start
        if rclpy.ok():
            logger.error(f"cannot start: {one_line(exc)}")
            code = 2
    finally:
        if node is not None:
            node.close()
        rclpy.try_shutdown()
    return code


def init_ros(args: list[str] | None) -> str | None:
    """``rclpy.init``; None, or why it failed in one line. rcl prints its own "Failed to parse
    global arguments" line to stderr first: that line is left out (the reason says more), and so
    are rcl's source locations in the reason; anything else rcl prints is passed on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            rclpy.init(args=args)
            problem = None
        except Exception as exc:
            problem = safe_text(re.sub(r"(, at /\S+:\d+|\. Error: error not set)", "", one_line(exc, 1000)), 300)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        text = caught.read().decode(errors="replace")
    lines = [ln for ln in text.splitlines() if not (problem and "Failed to parse global arguments" in ln)]
    if lines:
        print("\n".join(lines), file=sys.stderr)
    return problem


if __name__ == "__main__":
    sys.exit(main())
