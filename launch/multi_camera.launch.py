"""Launch segmentation for several cameras.

    ros2 launch bisenet_ros multi_camera.launch.py cameras:=front,rear \\
        image_pattern:=/{camera}/image_raw weights:=/path/model_final_v2_city.pth

Default: one node per camera, each in the camera's namespace (``/front/segmentation/labels``,
``/rear/segmentation/labels``, ...). With ``batch:=true`` a single node serves all cameras and runs
frames waiting together as one batch (one model in memory; outputs ``/segmentation/front/labels``,
...). Node arguments (weights, model, input size, params_file, ...) are those of
segment.launch.py and are applied the same way (``node_settings`` of that file), and so are
``use_sim_time`` and ``log_level``. ``use_rviz:=true`` opens one rviz2 view per camera, its Fixed
Frame the camera's frame (``frame_pattern``). Needs a ROS 2 install.
"""
from __future__ import annotations

import importlib.util
import os

PACKAGE = "bisenet_ros"


def _segment_launch():
    """segment.launch.py beside this file (source tree or share/bisenet_ros/launch)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "segment.launch.py")
    spec = importlib.util.spec_from_file_location("bisenet_ros_segment_launch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


segment = _segment_launch()

#: launch argument -> (default, description); node arguments are taken over from segment.launch.py
ARGUMENTS: dict[str, tuple[str, str]] = {
    "cameras": ("front,rear", "comma-separated camera names"),
    "image_pattern": ("/{camera}/image_raw", "image topic of each camera ({camera} is replaced)"),
    "batch": ("false", "true: one node for all cameras, frames batched; false: one node per camera"),
    "use_rviz": ("false", "start one rviz2 view (overlay, colour, labels) per camera"),
    "frame_pattern": ("{camera}", "each camera's frame_id ({camera} is replaced): rviz2's Fixed Frame"),
    **{name: segment.ARGUMENTS[name] for name in (*segment.PARAMETER_ARGUMENTS, "params_file", "use_sim_time",
                                                   "log_level")},
}


def camera_names(text: str) -> list[str]:
    """The camera names of ``cameras:=`` (comma-separated), each once: a name is the camera's
    namespace (or topic prefix with batch:=true), so a repeated one would start two nodes on the
    same topics."""
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise ValueError("launch argument cameras:= needs at least one camera name")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"launch argument cameras:={text} names {', '.join(repeated)} more than once "
                         "(each camera needs its own name: it is the camera's namespace)")
    return names


def node_settings(values: dict[str, str], share_dir: str) -> list[dict]:
    """One settings dict (namespace, parameters, remappings) per node to start."""
    cameras = camera_names(values.get("cameras", ARGUMENTS["cameras"][0]))
    pattern = values.get("image_pattern") or ARGUMENTS["image_pattern"][0]
    images = {cam: pattern.format(camera=cam) for cam in cameras}
    if values.get("batch", "false").lower() in ("true", "1", "yes"):
        settings = segment.node_settings({**values, "namespace": ""}, share_dir)
        settings["parameters"][-1]["cameras"] = cameras
        settings["remappings"] = [pair for cam in cameras for pair in (
            (f"{cam}/image", images[cam]), (f"{cam}/camera_info", segment.sibling_topic(images[cam])),
            (f"{cam}/depth", segment.sibling_topic(images[cam], "depth")))]
        return [settings]
    return [segment.node_settings({**values, "namespace": cam, "image": images[cam], "camera_info": "", "depth": ""},
                                  share_dir) for cam in cameras]


def rviz_settings(values: dict[str, str], share_dir: str) -> list[dict]:
    """One rviz2 per camera: in the camera's namespace (one node per camera), or remapped to the
    batched node's ``segmentation/<camera>/...`` topics."""
    cameras = camera_names(values.get("cameras", ARGUMENTS["cameras"][0]))
    pattern = values.get("frame_pattern") or ARGUMENTS["frame_pattern"][0]
    batch = values.get("batch", "false").lower() in ("true", "1", "yes")
    out = []
    for cam in cameras:
        remaps = [(f"segmentation/{kind}", f"segmentation/{cam}/{kind}") for kind in ("overlay", "color", "labels", "points")]
        out.append({
            "name": f"rviz2_{cam}" if batch else "rviz2", "namespace": "" if batch else cam,
            "arguments": segment.rviz_arguments(share_dir, pattern.format(camera=cam)),
            "remappings": remaps if batch else [],
            "parameters": [{"use_sim_time": segment.flag(values, "use_sim_time")}],
        })
    return out


def generate_launch_description():
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.conditions import IfCondition
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    share_dir = get_package_share_directory(PACKAGE)

    def launch_nodes(context):
        values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
        return [Node(
            package=PACKAGE, executable="segmentation_node", name="segmentation",
            namespace=s["namespace"], parameters=[p for p in s["parameters"] if p], remappings=s["remappings"],
            ros_arguments=s["ros_arguments"], output="screen", emulate_tty=True,
        ) for s in node_settings(values, share_dir)]

    def launch_rviz(context):
        values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
        return [Node(package="rviz2", executable="rviz2", output="screen", **s)
                for s in rviz_settings(values, share_dir)]

    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=description)
          for name, (default, description) in ARGUMENTS.items()),
        OpaqueFunction(function=launch_nodes),
        OpaqueFunction(function=launch_rviz, condition=IfCondition(LaunchConfiguration("use_rviz"))),
    ])
