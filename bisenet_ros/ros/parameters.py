"""The ``segmentation`` node's parameters: names, types, defaults, descriptors, allowed values and
validation -- everything about them that needs no running Node (tested in test/test_parameters.py).

A new node parameter is one :class:`ParamSpec` entry in :data:`PARAMETERS` (choices in
:data:`CHOICES`, checks in :func:`validate_parameter` / :func:`validate_config`); one that changes
the pipeline is also listed in :data:`RELOAD` and read in
:meth:`bisenet_ros.options.PipelineOptions.from_parameters`. The node validates in its on-set
callback only and applies changes (live switches, background reloads) in its post-set callback.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.parameter import Parameter

from ..data.images import MAX_PIXELS, MAX_PIXELS_LIMIT, MAX_SIDE
from ..errors import BisenetError, file_problem, one_line, safe_text
from ..inference.backends import BACKENDS, PRECISIONS
from ..models.architectures import ARCHITECTURES
from ..models.weights_catalog import resolve_weights
from ..options import PipelineOptions

#: the allowed values of the parameters that have a fixed set: from the one list of each name set
#: (architectures, precisions, backends); launch and parameter-file texts are checked against these
CHOICES: dict[str, tuple[str, ...]] = {
    "model": ("auto", *ARCHITECTURES),
    "precision": PRECISIONS,
    "backend": BACKENDS,
    "output_resolution": ("camera", "model"),
    "input_transport": ("raw", "compressed"),
    "input_reliability": ("auto", "best_effort", "reliable"),
    "output_reliability": ("reliable", "best_effort"),
}
#: parameters whose change needs a new pipeline (loaded in the background)
RELOAD = ("model", "weights", "num_classes", "dataset", "mean", "std", "input_width", "input_height",
          "device", "precision", "backend", "output_resolution", "class_remap", "max_pixels")
#: optional outputs: parameter switch -> pipeline output name (None: not a pipeline output)
SWITCHES = {"publish_color": "color", "publish_overlay": "overlay", "publish_confidence": "confidence",
            "publish_timing": None}
CAMERA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: default (or rclpy type for 'unset'), description, range."""

    default: Any  # a value, or the Parameter.Type of an array declared as a typed []
    description: str
    int_range: tuple[int, int, int] | None = None  # from, to, step
    float_range: tuple[float, float] | None = None
    read_only: bool = False  # fixed at start (topics, QoS)

    def descriptor(self, name: str) -> ParameterDescriptor:
        d = ParameterDescriptor(name=name, description=self.description, read_only=self.read_only)
        if name in CHOICES:
            d.additional_constraints = "one of: " + ", ".join(CHOICES[name])
        if self.int_range:
            d.integer_range = [IntegerRange(from_value=self.int_range[0], to_value=self.int_range[1],
                                            step=self.int_range[2])]
        if self.float_range:
            d.floating_point_range = [FloatingPointRange(from_value=self.float_range[0],
                                                         to_value=self.float_range[1], step=0.0)]
        return d


PARAMETERS: dict[str, ParamSpec] = {
    # model and pipeline (changing one reloads the model in the background)
    "model": ParamSpec("auto", "architecture; auto = from the checkpoint (sidecar YAML or key layout)"),
    "weights": ParamSpec("", "checkpoint file (.pth/.pt/.safetensors), an .onnx from bisenet-ros "
                             "export-onnx or quantize, or a public checkpoint's name (bisenetv2-cityscapes, "
                             "after bisenet-ros weights get); required"),
    "num_classes": ParamSpec(0, "class count; 0 = from the checkpoint", int_range=(0, 65535, 1)),
    "dataset": ParamSpec("", "preset name (cityscapes, camvid, cocostuff, ade20k) or preset YAML; "
                             "empty = checkpoint sidecar, else cityscapes"),
    "mean": ParamSpec(Parameter.Type.DOUBLE_ARRAY, "override normalisation mean, RGB on a 0-1 scale "
                                                   "(empty = dataset preset)"),
    "std": ParamSpec(Parameter.Type.DOUBLE_ARRAY, "override normalisation std, RGB on a 0-1 scale "
                                                  "(empty = dataset preset)"),
    "input_width": ParamSpec(0, "model input width, multiple of 32; 0 (with input_height 0) = "
                                "checkpoint sidecar, else auto32 (camera size rounded up to x32)",
                             int_range=(0, MAX_SIDE, 32)),
    "input_height": ParamSpec(0, "model input height, multiple of 32; 0 = see input_width",
                              int_range=(0, MAX_SIDE, 32)),
    "device": ParamSpec("auto", "auto (CUDA when available), cpu, cuda or cuda:N"),
    "precision": ParamSpec("auto", "auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 (CUDA), "
                                    "bf16 (CPU with AVX-512 BF16/AMX) or int8 (quantized .onnx weights)"),
    "backend": ParamSpec("auto", "how the forward pass runs; auto = the fastest available backend that "
                                 "matches eager PyTorch (see bisenet-ros bench)"),
    "output_resolution": ParamSpec("camera", "resolution of labels/color/overlay: camera or model "
                                             "(model also publishes a scaled camera_info)"),
    "max_pixels": ParamSpec(MAX_PIXELS, "largest image (width x height) accepted, checked from the message "
                                        "header before anything is decoded (raw and compressed); bounds "
                                        "what one message may cost", int_range=(1, MAX_PIXELS_LIMIT, 1)),
    "class_remap": ParamSpec("", "merge/rename the model's classes for every output (labels, color, overlay, "
                                 "legend, masks): a remap name (cityscapes_driving, synthetic_street_driving) "
                                 "or YAML file; empty = the model's classes"),
    # live settings
    "confidence_threshold": ParamSpec(0.0, "pixels whose max softmax is below this get the unknown label 255 "
                                           "(65535 above 255 classes), black in color, untinted in overlay; "
                                           "0 = off", float_range=(0.0, 1.0)),
    "overlay_alpha": ParamSpec(0.5, "weight of the palette colour in the overlay", float_range=(0.0, 1.0)),
    "publish_color": ParamSpec(True, "publish the rgb8 palette image (computed only when subscribed)"),
    "publish_overlay": ParamSpec(True, "publish the overlay (computed only when subscribed)"),
    "publish_confidence": ParamSpec(False, "publish mono8 max-softmax x 255 (computed only when subscribed)"),
    "publish_timing": ParamSpec(True, "publish a DiagnosticArray with stage timings per frame"),
    "max_frame_age_ms": ParamSpec(0.0, "drop frames whose stamp is older than this when the worker "
                                       "takes them; 0 = off", float_range=(0.0, 3.6e6)),
    "always_process": ParamSpec(False, "segment every frame even when nobody subscribes to any output "
                                       "(default: as image_proc, no subscriber = no inference)"),
    "jpeg_quality": ParamSpec(80, "JPEG quality of ~/overlay/compressed", int_range=(1, 100, 1)),
    "png_level": ParamSpec(3, "PNG compression level of ~/labels/compressed", int_range=(0, 9, 1)),
    "expected_rate": ParamSpec(0.0, "expected camera rate in Hz: /diagnostics WARNs when the input rate "
                                    "falls below it by more than rate_tolerance; 0 = no rate check",
                               float_range=(0.0, 1000.0)),
    "rate_tolerance": ParamSpec(0.1, "allowed shortfall of the input rate, as a fraction of expected_rate",
                                float_range=(0.0, 1.0)),
    "input_timeout": ParamSpec(3.0, "seconds without an image after which /diagnostics WARNs "
                                    "(input stopped); 0 = never", float_range=(0.0, 3600.0)),
    # perception health (bisenet_ros/ros/perception.py), live
    "health_enabled": ParamSpec(True, "compute the perception-health statistics of every processed frame (1/8 "
                                      "logits, image subsample) and report them in ~/timing and /diagnostics"),
    "health_hold_time": ParamSpec(3.0, "seconds a symptom must persist (in 80% of the frames) before the "
                                       "perception status WARNs, and be gone (in 80%) before it is OK again",
                                  float_range=(0.1, 60.0)),
    "health_baseline": ParamSpec("", "health baseline YAML (bisenet-ros health-baseline); empty = "
                                     "<weights stem>.health.yaml when there is one, else the defaults; "
                                     "none = the defaults"),
    "health_confidence_level": ParamSpec(0.0, "a logit cell below this max softmax counts as low confidence; "
                                              "0 = the baseline's (default 0.8)", float_range=(0.0, 1.0)),
    "health_low_confidence_max": ParamSpec(0.0, "share of low-confidence cells above which the scene counts as "
                                                "outside the training domain; 0 = the baseline's (default 0.5)",
                                           float_range=(0.0, 1.0)),
    "health_frozen_frames": ParamSpec(3, "identical consecutive frames before a camera can count as frozen",
                                      int_range=(2, 100000, 1)),
    "health_checks": ParamSpec(Parameter.Type.STRING_ARRAY, "symptoms checked: frozen, black, saturated, "
                                                            "uniform, low_confidence; unset/empty = all"),
    # fixed at start
    "cameras": ParamSpec(Parameter.Type.STRING_ARRAY, "camera names; empty = one camera on "
                                                      "'image', else '<name>/image' each, batched",
                         read_only=True),
    "input_transport": ParamSpec("raw", "raw: sensor_msgs/Image on 'image'; compressed: "
                                        "sensor_msgs/CompressedImage on '<resolved image>/compressed'",
                                 read_only=True),
    "input_reliability": ParamSpec("auto", "image/camera_info subscription reliability: auto = follow the "
                                           "publishers (reliable when all are), best_effort or reliable",
                                   read_only=True),
    "input_depth": ParamSpec(1, "image subscription queue depth", int_range=(1, 100, 1), read_only=True),
    "output_reliability": ParamSpec("reliable", "reliability of the output publishers", read_only=True),
    "output_depth": ParamSpec(1, "queue depth of the output publishers", int_range=(1, 100, 1),
                              read_only=True),
    "diagnostics_period": ParamSpec(1.0, "seconds between /diagnostics messages",
                                    float_range=(0.1, 60.0), read_only=True),
    # semantic point cloud and class mask (bisenet_ros/ros/points.py), live; class names are checked
    # against the model's classes by the node (points.check_class_parameters)
    "publish_points": ParamSpec(False, "publish ~/points (PointCloud2 x,y,z,rgb,label) from the registered "
                                       "depth image 'depth', subscribed only while ~/points has subscribers"),
    "points_min_depth": ParamSpec(0.0, "metres; nearer depth pixels give no point", float_range=(0.0, 1000.0)),
    "points_max_depth": ParamSpec(0.0, "metres; farther depth pixels give no point; 0 = no limit",
                                  float_range=(0.0, 1000.0)),
    "points_stride": ParamSpec(1, "use every n-th depth pixel in rows and columns", int_range=(1, 64, 1)),
    "points_classes": ParamSpec(Parameter.Type.STRING_ARRAY, "class names or ids (as strings) kept in "
                                                             "~/points; unset/empty = all"),
    "depth_tolerance_ms": ParamSpec(0.0, "largest stamp difference between image and depth; 0 = equal stamps",
                                    float_range=(0.0, 10000.0)),
    "mask_classes": ParamSpec(Parameter.Type.STRING_ARRAY, "class names or ids (as strings): ~/mask is 255 "
                                                           "on them, 0 elsewhere; unset/empty = no ~/mask"),
    # the Foxglove live view (bisenet_ros/ros/foxglove_view.py; needs foxglove-sdk)
    "foxglove_port": ParamSpec(0, "serve the outputs to the Foxglove app (WebSocket) on this port, e.g. 8765; "
                                  "0 = off", int_range=(0, 65535, 1)),
    "foxglove_address": ParamSpec("127.0.0.1", "address the Foxglove view listens on: 127.0.0.1 = this host only "
                                               "(default), 0.0.0.0 = every interface (trusted networks only)"),
}


USAGE = """\
usage: {program} [-h] [--version] --ros-args -p weights:=CHECKPOINT [-p NAME:=VALUE ...] [-r image:=TOPIC]

The bisenet_ros segmentation node: subscribes 'image' (and optional 'camera_info'), publishes
~/labels, ~/color, ~/overlay, ~/confidence, ~/camera_info, ~/timing, ~/legend and /diagnostics.
{kind}Parameters (-p NAME:=VALUE; ros2 param set at run time unless marked fixed at start):
"""
LIFECYCLE = """\
A managed (lifecycle) node: it starts unconfigured. configure checks the parameters and loads the
model, activate subscribes and advertises the outputs, deactivate stops them, cleanup releases the
model (ros2 lifecycle set /segmentation configure, then activate; or nav2's lifecycle_manager).
"""
EPILOG = """
examples:
  {program} --ros-args -r image:=/camera/image_raw -p weights:=models/bisenetv2_synthetic_street.pth
  {program} --ros-args -p weights:=model_final_v2_city.pth -p input_width:=1024 -p input_height:=512 \\
      -p dataset:=cityscapes -p backend:=onnxruntime
  ros2 launch bisenet_ros segment.launch.py weights:=/path/model.pth image:=/camera/image_raw
docs/node.md has every topic, parameter and QoS setting.
"""


def usage_text(program: str = "segmentation_node", lifecycle: bool = False) -> str:
    """``segmentation_node --help`` (``segmentation_lifecycle_node --help`` with ``lifecycle``):
    how to start it and every parameter with its default."""
    lines = [USAGE.format(program=program, kind=LIFECYCLE if lifecycle else "")]
    for name, spec in PARAMETERS.items():
        default = "unset" if isinstance(spec.default, Parameter.Type) else repr(spec.default)
        extra = f"; one of: {', '.join(CHOICES[name])}" if name in CHOICES else ""
        fixed = " (fixed at start)" if spec.read_only else ""
        lines.append(f"  {name} (default {default}){fixed}\n      {spec.description}{extra}")
    return "\n".join(lines) + "\n" + EPILOG.format(program=program)


def validate_parameter(name: str, value: Any) -> str | None:
    """The reason ``value`` is not acceptable for parameter ``name``, or None if it is."""
    if name in CHOICES and value not in CHOICES[name]:
        return f"{name} must be one of {', '.join(CHOICES[name])}, got '{value}'"
    if name == "weights":
        if not value:
            return "parameter 'weights' is required (a BiSeNet checkpoint, e.g. -p weights:=model.pth)"
        try:  # a public checkpoint's name (bisenetv2-cityscapes) -> the cached file
            value = resolve_weights(value)
        except BisenetError as exc:
            return str(exc)
        problem = file_problem(value)
        if problem:
            return f"weights '{value}' {problem}"
    if name in ("mean", "std") and value is not None and len(value) not in (0, 3):
        return f"{name} needs three values (R, G, B on a 0-1 scale), got {list(value)}"
    if name in ("mean", "std") and value and not all(math.isfinite(v) for v in value):
        return f"{name} must be finite numbers, got {list(value)}"
    if name == "std" and value and min(value) <= 0:
        return f"std must be positive, got {list(value)}"
    if name == "device" and not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(value)):
        return f"device must be auto, cpu, cuda or cuda:N, got '{value}'"
    if name == "dataset" and value:
        from ..data.datasets import load_preset
        try:
            load_preset(value)
        except BisenetError as exc:
            return str(exc)
    if name == "confidence_threshold" and not 0.0 <= value < 1.0:
        return f"confidence_threshold must be in [0, 1), got {value}"
    if name == "class_remap" and value:
        from ..data.remap import REMAP_DIR, available_remaps
        if not (Path(value).expanduser().is_file() or (REMAP_DIR / f"{value}.yaml").is_file()):
            return f"unknown class remap '{value}' (shipped: {', '.join(available_remaps())}; or a YAML file)"
    if name == "health_baseline" and value and value != "none":
        from ..inference.health import load_baseline
        try:
            load_baseline(value)
        except BisenetError as exc:
            return str(exc)
    if name == "health_checks" and value:
        from ..inference.health import SYMPTOMS
        bad = [c for c in value if c not in SYMPTOMS]
        if bad:
            return f"health_checks takes {', '.join(SYMPTOMS)}, got {bad}"
    if name == "foxglove_address" and not valid_address(value):
        return f"foxglove_address must be an IP address of this host or 'localhost' (0.0.0.0 = all), got '{value}'"
    if name == "cameras" and value:
        bad = [c for c in value if not CAMERA_NAME.match(c)]
        if bad:
            return f"camera names must be letters, digits and '_', starting with a letter: {bad}"
        if len(set(value)) != len(value):
            return f"camera names must be unique, got {list(value)}"
    return None


def valid_address(value: str) -> bool:
    """An IPv4/IPv6 address or 'localhost' (what a listening socket can bind)."""
    import ipaddress

    if value == "localhost":
        return True
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def validate_config(values: dict[str, Any]) -> str | None:
    """Cross-parameter checks on a full configuration."""
    if (values["input_width"] == 0) != (values["input_height"] == 0):
        return ("input_width and input_height must both be 0 (auto) or both be set "
                f"(got {values['input_width']}x{values['input_height']}); set them together")
    return None


def validate_changes(values: dict[str, Any], changes: dict[str, Any], model_classes: int | None = None) -> str | None:
    """Why ``changes`` (plain values) cannot apply on top of ``values``, or None: the on-set check.
    ``model_classes``: the running model's class count (a new ``dataset`` must have as many)."""
    for name, value in changes.items():
        reason = validate_parameter(name, value)
        if reason:
            return reason
    return validate_config({**values, **changes}) or check_dataset_classes(values, changes, model_classes)


def check_remap(changes: dict[str, Any], source: Any) -> str | None:
    """Why a run-time ``class_remap`` does not fit the running model's classes ``source`` (a
    DatasetPreset), or None; a remap changed together with the model is checked at the reload."""
    if not changes.get("class_remap") or {"weights", "model", "dataset", "num_classes"} & set(changes):
        return None
    from ..data.remap import load_remap
    try:
        load_remap(changes["class_remap"], source)
    except BisenetError as exc:
        return str(exc)
    return None


def check_dataset_classes(values: dict[str, Any], changes: dict[str, Any], model_classes: int | None) -> str | None:
    """Why a run-time ``dataset`` change does not fit the model's class count, or None.

    Names, colours and mean/std of a preset with another class count would silently mislabel
    every class; unless ``weights``/``model`` change with it (the new checkpoint decides)."""
    if not changes.get("dataset") or "weights" in changes or "model" in changes:
        return None
    n = changes.get("num_classes", values.get("num_classes")) or model_classes
    if not n:
        return None
    from ..data.datasets import load_preset

    preset = load_preset(changes["dataset"])
    if preset.num_classes != n:
        return (f"dataset '{changes['dataset']}' has {preset.num_classes} classes but the model has {n}; "
                "change weights (and num_classes) together with it")
    return None


def reload_changes(values: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The ``changes`` that need a new pipeline (a RELOAD parameter set to a new value)."""
    return {k: changes[k] for k in RELOAD if k in changes and changes[k] != values[k]}


def pipeline_options(values: dict[str, Any]) -> PipelineOptions:
    """Node parameter values -> the pipeline's options."""
    return PipelineOptions.from_parameters(values)


def default_values() -> dict[str, Any]:
    """Every parameter's value when nothing is set (unset arrays as [])."""
    return {name: plain(name, None if isinstance(s.default, Parameter.Type) else s.default)
            for name, s in PARAMETERS.items()}


def plain(name: str, value: Any) -> Any:
    """Array parameters as lists (unset -> []), other values unchanged."""
    spec = PARAMETERS.get(name)
    if spec is not None and isinstance(spec.default, Parameter.Type):
        return list(value or [])
    return value


def as_parameter(name: str, value: Any) -> Parameter:
    """A Parameter of the declared type (so that [] stays a double/string array)."""
    default = PARAMETERS[name].default
    if isinstance(default, Parameter.Type):
        return Parameter(name, default, list(value))
    return Parameter(name, value=value)


def never_raises(check: Callable[[list[Parameter]], SetParametersResult]) -> Callable[[list[Parameter]], SetParametersResult]:
    """An on-set parameters callback that cannot raise: whatever escapes ``check`` (a value no
    validator foresaw) is a refused set whose reason is one line naming the parameters, never an
    exception out of the executor, which would end the node."""
    def callback(params: list[Parameter]) -> SetParametersResult:
        try:
            return check(params)
        except Exception as exc:  # noqa: BLE001 - refusing is always possible; dying is not
            names = ", ".join(p.name for p in params)
            kind = "" if isinstance(exc, BisenetError) else f"{type(exc).__name__}: "
            return SetParametersResult(successful=False,
                                       reason=f"{names}: refused: {kind}{safe_text(one_line(exc), 300)}")
    return callback
