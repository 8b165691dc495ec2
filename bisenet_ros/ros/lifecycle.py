"""The segmentation node as a managed (lifecycle) node, for nav2's lifecycle_manager and friends.

``segmentation_lifecycle_node`` (console script) starts the node ``segmentation`` unconfigured:
its parameter services and ``/diagnostics`` are up at once, nothing is loaded. Transitions:

- configure: check the parameters and load the model (a failure leaves it unconfigured, with the
  reason logged as one line);
- activate: subscribe to the camera, advertise the outputs, publish the legend, start the worker;
- deactivate: stop the worker, remove subscriptions and publishers (the model stays loaded);
- cleanup: release the model; shutdown (from any state): all of the above.

The behaviour is :class:`~bisenet_ros.ros.core.SegmentationCore`, the same object the plain
``segmentation_node`` runs in its constructor; each transition calls one of its public stages.

``change_state`` refuses what the state machine cannot do from the current state (an
unregistered transition id or label, e.g. activate while unconfigured): ``success: false`` and
one warning line naming the transitions available; the node keeps running (rclpy's own service
would raise out of the executor and end the process).
"""
from __future__ import annotations

import sys
from typing import Any

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from ..errors import BisenetError, one_line, safe_text
from .core import SegmentationCore
from .node import NODE_NAME, spin


class LifecycleSegmentationNode(LifecycleNode):
    """``segmentation`` as a lifecycle node; see the module docstring."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        guard_change_state(self)
        self.core = SegmentationCore(self)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.core.configure()
        except Exception as exc:  # BisenetError, or torch refusing the device or the weights
            self.get_logger().error(f"configure failed: {exc if isinstance(exc, BisenetError) else one_line(exc)}")
            return TransitionCallbackReturn.FAILURE
        info = self.core.pipeline.info
        self.get_logger().info(f"configured: {info['model']} ({info['num_classes']} classes) from "
                               f"{info['weights']} on {info['device']} [{info['backend']}]")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.core.activate()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.core.deactivate()
        self.get_logger().info("deactivated: not subscribed, model kept")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.core.cleanup()
        self.get_logger().info("cleaned up: model released")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.core.shutdown()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.core.shutdown()
        return TransitionCallbackReturn.SUCCESS  # back to unconfigured

    def close(self) -> None:
        """Stop the worker (and a background model load) and release the node."""
        self.core.shutdown()
        self.destroy_node()


def guard_change_state(node: LifecycleNode) -> None:
    """Wrap the ``change_state`` service: a transition not available from the current state is
    refused with one line, and nothing the state machine raises ends the node."""
    service = getattr(node, "_service_change_state", None)
    if service is None:  # no communication interface: no service to guard
        return
    handle = service.callback

    def change_state(request: Any, response: Any) -> Any:
        transition, machine = request.transition, node._state_machine
        available = [(t[0], t[1]) for t in machine.available_transitions]
        wanted = (lambda t: t[1] == transition.label) if transition.label else (lambda t: t[0] == transition.id)
        if not any(wanted(t) for t in available):
            asked = f"'{safe_text(transition.label, 80)}'" if transition.label else f"id {transition.id}"
            node.get_logger().warning(
                f"change_state refused: transition {asked} is not available in state "
                f"'{machine.current_state[1]}' (available: {', '.join(f'{label} ({tid})' for tid, label in available)})")
            response.success = False
            return response
        try:
            return handle(request, response)
        except Exception as exc:  # noqa: BLE001 - the state machine refusing: the node keeps running
            node.get_logger().error(f"change_state failed: {safe_text(one_line(exc), 300)}")
            response.success = False
            return response

    service.callback = change_state


def main(args: list[str] | None = None) -> int:
    """Console script ``segmentation_lifecycle_node``: run until SIGINT/SIGTERM."""
    return spin(LifecycleSegmentationNode, args, "segmentation_lifecycle_node", lifecycle=True)


if __name__ == "__main__":
    sys.exit(main())
