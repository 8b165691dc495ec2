"""The segmentation node's behaviour, owned by the plain node and by the lifecycle node alike.

:class:`SegmentationCore` holds the state the parts share -- parameter values, the pipeline,
whether the node is active, the last error -- and composes the parts, each in a file of its own
and handed the node (as diagnostic_updater is): camera inputs (:mod:`.cameras`), output
publishers (:mod:`.publishers`), ``/diagnostics`` (:mod:`.diagnostics`), the worker
(:mod:`.worker`) and run-time parameter changes with the background reload (:mod:`.reconfigure`).

Its public stages are the lifecycle's: :meth:`~SegmentationCore.configure` (check the parameters,
load the model), :meth:`~SegmentationCore.activate` (topics, legend, worker),
:meth:`~SegmentationCore.deactivate`, :meth:`~SegmentationCore.cleanup` and
:meth:`~SegmentationCore.shutdown`.
"""
from __future__ import annotations

from typing import Any

from rclpy.node import Node
from rclpy.parameter import Parameter

from ..errors import ConfigError
from ..inference.backend_cache import announcing, quick_start
from ..pipeline import SegmentationPipeline, build_pipeline
from .backend_watch import BackendWatch
from .cameras import CameraInputs
from .diagnostics import NodeDiagnostics
from .perception import PerceptionHealth
from .parameters import PARAMETERS, pipeline_options, plain, validate_changes
from .points import check_class_parameters
from .publishers import OutputPublishers
from .reconfigure import Reconfigure
from .worker import Worker


def declare_parameters(node: Node) -> dict[str, Any]:
    """Declare every parameter with a typed value, so that a batched get_parameters (``ros2 param
    dump``, rqt_reconfigure) answers all of them: arrays default to a typed empty list."""
    values = {}
    for name, spec in PARAMETERS.items():
        if isinstance(spec.default, Parameter.Type):  # typed array: [] unless given (rclpy would
            writable = spec.descriptor(name)           # take a bare [] for a byte array)
            writable.read_only = False
            param = node.declare_parameter(name, spec.default, writable)
            if param.type_ == Parameter.Type.NOT_SET:
                node.set_parameters([Parameter(name, spec.default, [])])
            final = spec.descriptor(name)  # read-only again where the spec says so
            final.type = spec.default.value
            node.set_descriptor(name, final)
            param = node.get_parameter(name)
        else:
            param = node.declare_parameter(name, spec.default, spec.descriptor(name))
        values[name] = plain(name, param.value)
    return values


class SegmentationCore:
    """The node's state and parts; see the module docstring."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.values = declare_parameters(node)
        self.pipeline: SegmentationPipeline | None = None
        self.active = False
        self.last_error = ""
        self.last_error_at = 0.0  # time.monotonic() of the last reload failure
        self.inputs = CameraInputs(node, self)
        self.outputs = OutputPublishers(node, self)
        self.perception = PerceptionHealth(node, self.values)  # perception health: <node>: perception
        self.worker = Worker(node, self)
        self.diagnostics = NodeDiagnostics(node, self, self.values["diagnostics_period"])
        self.backend_watch = BackendWatch(node, self.diagnostics.publisher, self)  # auto's measurement: said, checked, redone
        self.reconfigure = Reconfigure(node, self)

    @property
    def cameras(self):
        return self.inputs.snapshot()

    def configure(self) -> None:
        """Check the parameters and load the model (raises ConfigError / the loader's errors)."""
        reason = validate_changes(self.values, dict(self.values))  # every value, read-only ones too
        if reason:
            raise ConfigError(reason)
        with announcing(self.backend_watch.announce), quick_start():  # auto measures once serving
            pipeline = build_pipeline(pipeline_options(self.values))
        reason = check_class_parameters(self.values, pipeline.preset.class_names)
        if reason:
            raise ConfigError(reason)
        self.perception.configure(self.values, pipeline)
        self.pipeline = pipeline

    def activate(self) -> None:
        """Subscribe, advertise, publish the legend and start the worker."""
        cameras = self.inputs.subscribe()
        self.outputs.advertise(cameras, self.inputs.depth_qos())
        self.outputs.publish_legend()
        self.worker.start()
        self.active = True
        info = self.pipeline.info
        self.node.get_logger().info(
            f"serving {info['model']} ({info['num_classes']} classes, {info['dataset']}) from "
            f"{info['weights']} on {info['device']} [{info['backend']}, {info['precision']}], input "
            f"{info['input_size']}; cameras: {', '.join(c.label for c in cameras)}")
        later = getattr(self.pipeline.runner, "measure_later", None)
        if later and (self.reconfigure.background is None or not self.reconfigure.background.is_alive()):
            self.backend_watch.announce(f"{info['backend']}: {later}")
            self.reconfigure.measure_in_background()

    def deactivate(self) -> None:
        """Stop the worker and remove the topics (the model stays loaded)."""
        self.active = False
        self.worker.stop()
        self.outputs.withdraw()
        self.inputs.unsubscribe()
        self.perception.reset()

    def cleanup(self) -> None:
        """Release the model (after a reload in progress has finished)."""
        self.reconfigure.wait()
        self.pipeline = None

    def shutdown(self) -> None:
        """Everything: stop the worker, remove the topics, wait for a reload, release the model."""
        self.deactivate()
        self.cleanup()
