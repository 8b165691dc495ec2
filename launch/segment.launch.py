"""Launch the BiSeNet segmentation node, optionally with rviz2.

    ros2 launch bisenet_ros segment.launch.py weights:=/path/model_final_v2_city.pth \\
        input_width:=1024 input_height:=512 image:=/camera/image_raw use_rviz:=true

``image`` defaults to the relative ``camera/image_raw``, so it resolves inside ``namespace``
(``namespace:=robot1`` -> ``/robot1/camera/image_raw``). ``use_sim_time`` and ``log_level`` reach the
node (and rviz2) as usual for ROS 2 launch files; rviz2's Fixed Frame is the camera's frame
(``camera_frame``), so the Image displays work without any TF.

Node parameters come from config/segmentation.yaml of this package (the commented defaults, which
take the model's classes, mean/std and input size from the checkpoint and its sidecar), then from
``params_file`` (overrides: the public checkpoints have a file each, e.g.
config/cityscapes_bisenetv2.yaml), then from the launch arguments given on the command line;
arguments left empty keep the files' values. Needs a ROS 2 install (launch, launch_ros, rviz2 for use_rviz).

The launch API is imported inside :func:`generate_launch_description`, so that
:func:`node_settings` -- how the arguments reach the node -- can be checked without ROS installed.
"""
from __future__ import annotations

import os

PACKAGE = "bisenet_ros"
DEFAULT_PARAMS_FILE = "segmentation.yaml"  # the defaults; model settings from the checkpoint (and its sidecar)
RVIZ_CONFIG = "bisenet.rviz"

#: launch argument -> (default, description)
ARGUMENTS: dict[str, tuple[str, str]] = {
    "weights": ("", "checkpoint (.pth/.safetensors); empty = the params file's"),
    "model": ("", "auto | bisenetv1 | bisenetv2; empty = the params file's"),
    "dataset": ("", "preset name or preset YAML; empty = the params file's"),
    "input_width": ("", "model input width (multiple of 32, 0 = auto32); empty = the params file's"),
    "input_height": ("", "model input height (multiple of 32, 0 = auto32); empty = the params file's"),
    "device": ("", "auto | cpu | cuda | cuda:N; empty = the params file's"),
    "precision": ("", "auto | fp32 | fp16 | bf16 | int8; empty = the params file's"),
    "backend": ("", "auto | torch | torchscript | onnxruntime | openvino | tensorrt | cudagraph; "
                    "empty = the params file's"),
    "output_resolution": ("", "camera | model; empty = the params file's"),
    "image": ("camera/image_raw", "input image topic (remaps the node's 'image'); a relative name "
                                  "resolves in the namespace"),
    "camera_info": ("", "camera_info topic; empty = 'camera_info' beside the image topic"),
    "depth": ("", "registered depth image for ~/points (16UC1 mm or 32FC1 m, with publish_points); "
                  "empty = 'depth' beside the image topic"),
    "namespace": ("", "namespace of the node (outputs: /<namespace>/segmentation/...)"),
    "use_sim_time": ("false", "true: the node (and rviz2) use the /clock topic (simulation, bag replay)"),
    "log_level": ("info", "log level of the node: debug, info, warn, error or fatal"),
    "camera_frame": ("camera", "rviz2's Fixed Frame: the camera's frame_id (the images need no TF)"),
    "params_file": ("", f"node parameter file read after config/{DEFAULT_PARAMS_FILE} of {PACKAGE} (the "
                        "defaults): overrides, e.g. config/cityscapes_bisenetv2.yaml; empty = the defaults alone"),
    "use_rviz": ("false", "start rviz2 with the shipped view (overlay, colour, labels)"),
}

#: launch arguments that set the node parameter of the same name -> the parameter's type
PARAMETER_ARGUMENTS: dict[str, type] = {
    "weights": str, "model": str, "dataset": str, "input_width": int, "input_height": int,
    "device": str, "precision": str, "backend": str, "output_resolution": str,
}


LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")


def flag(values: dict[str, str], name: str) -> bool:
    """A true/false launch argument (as launch's IfCondition reads them)."""
    text = (values.get(name) or ARGUMENTS[name][0]).strip().lower()
    if text not in ("true", "false", "1", "0"):
        raise ValueError(f"launch argument {name}:={text} must be true or false")
    return text in ("true", "1")


def ros_arguments(values: dict[str, str]) -> list[str]:
    """``--ros-args`` of the node: its log level."""
    level = values.get("log_level", "").strip().lower() or ARGUMENTS["log_level"][0]
    if level not in LOG_LEVELS:
        raise ValueError(f"launch argument log_level:={level} must be one of {', '.join(LOG_LEVELS)}")
    return ["--log-level", level]


def rviz_arguments(share_dir: str, frame: str) -> list[str]:
    """rviz2's command line: the shipped view, Fixed Frame = the camera frame (no TF needed)."""
    return ["-d", os.path.join(share_dir, "config", RVIZ_CONFIG), "-f", frame or ARGUMENTS["camera_frame"][0]]


def sibling_topic(image_topic: str, name: str = "camera_info") -> str:
    """``/camera/image_raw`` -> ``/camera/camera_info`` (``image`` -> ``camera_info``)."""
    head, sep, _ = image_topic.rpartition("/")
    return f"{head}{sep}{name}" if sep else name


def parameter_overrides(values: dict[str, str]) -> dict[str, object]:
    """The node parameters set by non-empty launch arguments, typed as the node declares them."""
    overrides: dict[str, object] = {}
    for name, type_ in PARAMETER_ARGUMENTS.items():
        text = values.get(name, "").strip()
        if text:
            try:
                overrides[name] = type_(text)
            except ValueError:
                raise ValueError(f"launch argument {name}:={text} must be an {type_.__name__}") from None
    return overrides


def parameter_files(values: dict[str, str], share_dir: str) -> list[str]:
    """The shipped defaults, then ``params_file`` (its values win) when one is given."""
    defaults = os.path.join(share_dir, "config", DEFAULT_PARAMS_FILE)
    params_file = values.get("params_file") or ""
    return [defaults] if not params_file or params_file == defaults else [defaults, params_file]


def node_settings(values: dict[str, str], share_dir: str) -> dict:
    """Namespace, parameters (defaults file, params file, then the arguments; the last ones are a
    dict) and remappings of the node."""
    image = values.get("image") or ARGUMENTS["image"][0]
    camera_info = values.get("camera_info") or sibling_topic(image)
    depth = values.get("depth") or sibling_topic(image, "depth")
    return {
        "namespace": values.get("namespace", ""),
        "parameters": [*parameter_files(values, share_dir),
                       {**parameter_overrides(values), "use_sim_time": flag(values, "use_sim_time")}],
        "remappings": [("image", image), ("camera_info", camera_info), ("depth", depth)],
        "ros_arguments": ros_arguments(values),
    }


def generate_launch_description():
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.conditions import IfCondition
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    share_dir = get_package_share_directory(PACKAGE)

    def launch_node(context):
        values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
        settings = node_settings(values, share_dir)
        return [Node(
            package=PACKAGE, executable="segmentation_node", name="segmentation",
            namespace=settings["namespace"], parameters=[p for p in settings["parameters"] if p],
            remappings=settings["remappings"], ros_arguments=settings["ros_arguments"],
            output="screen", emulate_tty=True,
        )]

    def launch_rviz(context):
        values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
        return [Node(  # the view's topics are relative: segmentation/overlay in the node's namespace
            package="rviz2", executable="rviz2", name="rviz2", output="screen", namespace=values["namespace"],
            arguments=rviz_arguments(share_dir, values["camera_frame"]),
            parameters=[{"use_sim_time": flag(values, "use_sim_time")}],
        )]

    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=description)
          for name, (default, description) in ARGUMENTS.items()),
        OpaqueFunction(function=launch_node),
        OpaqueFunction(function=launch_rviz, condition=IfCondition(LaunchConfiguration("use_rviz"))),
    ])
