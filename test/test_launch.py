"""Launch files, parameter files and the rviz2 view, without running launch.

The launch files run for real in ``test_launch_run.py`` (ROS 2's launch library against a colcon
install). Here: their argument -> node wiring (``node_settings``, free of launch imports) against
the node's declared parameters, the rviz2 action (rviz2 itself is not installable here, so its
wiring is read with ``ast``), and the parameter files through rclpy's real ``--params-file``
handling in a child process.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bisenet_ros.ros.parameters import CHOICES, PARAMETERS, validate_config, validate_parameter

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
CONFIG = REPO / "config"
ISSUE_ARGUMENTS = {"weights", "model", "dataset", "input_width", "input_height", "device", "precision",
                   "image", "namespace", "params_file", "use_rviz"}


def load_launch(name: str):
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), LAUNCH / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def calls(tree: ast.AST, func_name: str) -> list[ast.Call]:
    def name(node: ast.expr) -> str:
        return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and name(n.func) == func_name]


def keywords(call: ast.Call) -> dict[str, ast.expr]:
    return {k.arg: k.value for k in call.keywords}


def constant(tree: ast.Module, node: ast.expr):
    """A literal, or the literal a module-level NAME = ... assigns."""
    if isinstance(node, ast.Name):
        for stmt in tree.body:
            if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                if any(isinstance(t, ast.Name) and t.id == node.id for t in targets):
                    return ast.literal_eval(stmt.value)
    return ast.literal_eval(node)


# -- structure (ast) -------------------------------------------------------------------------------
@pytest.mark.parametrize("filename", ["segment.launch.py", "multi_camera.launch.py"])
def test_rviz_is_started_only_with_use_rviz(filename):
    tree = ast.parse((LAUNCH / filename).read_text())
    rviz = [keywords(c) for c in calls(tree, "OpaqueFunction")
            if isinstance(keywords(c).get("function"), ast.Name) and keywords(c)["function"].id == "launch_rviz"]
    assert len(rviz) == 1
    cond = rviz[0]["condition"]
    assert isinstance(cond, ast.Call) and cond.func.id == "IfCondition"
    assert ast.literal_eval(cond.args[0].args[0]) == "use_rviz"


def test_rviz_fixed_frame_is_the_camera_frame():
    seg = load_launch("segment.launch.py")
    assert seg.rviz_arguments("/share", "cam_optical") == ["-d", "/share/config/bisenet.rviz", "-f", "cam_optical"]
    assert seg.rviz_arguments("/share", "")[-2:] == ["-f", "camera"]  # the frame_id the tools write
    view = yaml.safe_load((CONFIG / "bisenet.rviz").read_text())
    assert view["Visualization Manager"]["Global Options"]["Fixed Frame"] == "camera"
    multi = load_launch("multi_camera.launch.py")
    values = {name: d for name, (d, _) in multi.ARGUMENTS.items()}
    views = multi.rviz_settings({**values, "use_sim_time": "true"}, "/share")
    assert [(v["namespace"], v["arguments"][-1], v["remappings"]) for v in views] == [
        ("front", "front", []), ("rear", "rear", [])]
    assert views[0]["parameters"] == [{"use_sim_time": True}]
    batched = multi.rviz_settings({**values, "batch": "true", "frame_pattern": "{camera}_optical"}, "/share")
    assert [(v["name"], v["namespace"], v["arguments"][-1]) for v in batched] == [
        ("rviz2_front", "", "front_optical"), ("rviz2_rear", "", "rear_optical")]
    assert ("segmentation/overlay", "segmentation/rear/overlay") in batched[1]["remappings"]


def test_use_sim_time_log_level_and_namespaced_image_default():
    seg = load_launch("segment.launch.py")
    defaults = {name: d for name, (d, _) in seg.ARGUMENTS.items()}
    s = seg.node_settings({**defaults, "namespace": "robot1"}, "/share")
    # relative default: resolves to /robot1/camera/image_raw in the namespace
    assert s["remappings"] == [("image", "camera/image_raw"), ("camera_info", "camera/camera_info"),
                               ("depth", "camera/depth")]
    s = seg.node_settings({"depth": "/camera/aligned_depth_to_color/image_raw"}, "/share")
    assert s["remappings"][2] == ("depth", "/camera/aligned_depth_to_color/image_raw")
    assert s["parameters"][-1]["use_sim_time"] is False and s["ros_arguments"] == ["--log-level", "info"]
    s = seg.node_settings({**defaults, "use_sim_time": "true", "log_level": "DEBUG"}, "/share")
    assert s["parameters"][-1]["use_sim_time"] is True and s["ros_arguments"] == ["--log-level", "debug"]
    with pytest.raises(ValueError, match="log_level:=loud"):
        seg.node_settings({**defaults, "log_level": "loud"}, "/share")
    with pytest.raises(ValueError, match="use_sim_time:=maybe"):
        seg.node_settings({**defaults, "use_sim_time": "maybe"}, "/share")
    multi = load_launch("multi_camera.launch.py")
    mdefaults = {name: d for name, (d, _) in multi.ARGUMENTS.items()}
    for s in multi.node_settings({**mdefaults, "use_sim_time": "true", "log_level": "warn"}, "/share"):
        assert s["parameters"][-1]["use_sim_time"] is True and s["ros_arguments"] == ["--log-level", "warn"]


# -- wiring (node_settings) ------------------------------------------------------------------------
def test_issue_arguments_are_declared_and_reach_the_node():
    seg = load_launch("segment.launch.py")
    assert ISSUE_ARGUMENTS <= set(seg.ARGUMENTS)
    for name, type_ in seg.PARAMETER_ARGUMENTS.items():
        assert name in PARAMETERS, f"launch argument {name} sets no node parameter"
        assert isinstance(PARAMETERS[name].default, type_), name
    values = {name: "" for name in seg.ARGUMENTS}
    values.update(weights="/w.pth", model="bisenetv1", dataset="camvid", input_width="1024",
                  input_height="512", device="cuda:1", precision="fp16", image="/front/image_raw",
                  namespace="robot", params_file="/p.yaml")
    s = seg.node_settings(values, "/share")
    assert s["namespace"] == "robot"
    assert s["parameters"] == ["/share/config/segmentation.yaml", "/p.yaml", {"weights": "/w.pth", "model": "bisenetv1", "dataset": "camvid",
                                           "input_width": 1024, "input_height": 512, "device": "cuda:1",
                                           "precision": "fp16", "use_sim_time": False}]
    assert s["remappings"] == [("image", "/front/image_raw"), ("camera_info", "/front/camera_info"),
                               ("depth", "/front/depth")]
    # unset arguments keep the params file's values; the default file is the shipped one
    s = seg.node_settings({name: d for name, (d, _) in seg.ARGUMENTS.items()}, "/share")
    assert s["parameters"] == ["/share/config/segmentation.yaml", {"use_sim_time": False}]
    assert s["remappings"] == [("image", "camera/image_raw"), ("camera_info", "camera/camera_info"),
                               ("depth", "camera/depth")]
    s = seg.node_settings({"depth": "/camera/aligned_depth_to_color/image_raw"}, "/share")
    assert s["remappings"][2] == ("depth", "/camera/aligned_depth_to_color/image_raw")
    assert (CONFIG / seg.DEFAULT_PARAMS_FILE).is_file() and (CONFIG / seg.RVIZ_CONFIG).is_file()
    with pytest.raises(ValueError, match="input_width:=wide must be an int"):
        seg.node_settings({"input_width": "wide"}, "/share")


def test_multi_camera_settings():
    multi = load_launch("multi_camera.launch.py")
    values = {name: d for name, (d, _) in multi.ARGUMENTS.items()}
    values.update(weights="/w.pth", input_width="640", input_height="480")
    per_camera = multi.node_settings(values, "/share")
    assert [s["namespace"] for s in per_camera] == ["front", "rear"]
    assert per_camera[1]["remappings"] == [("image", "/rear/image_raw"), ("camera_info", "/rear/camera_info"),
                                           ("depth", "/rear/depth")]
    assert per_camera[0]["parameters"][-1] == {"weights": "/w.pth", "input_width": 640, "input_height": 480,
                                              "use_sim_time": False}
    batched = multi.node_settings({**values, "batch": "true", "cameras": "left, right"}, "/share")
    assert len(batched) == 1 and batched[0]["namespace"] == ""
    assert batched[0]["parameters"][-1]["cameras"] == ["left", "right"]
    assert batched[0]["remappings"] == [("left/image", "/left/image_raw"), ("left/camera_info", "/left/camera_info"),
                                        ("left/depth", "/left/depth"),
                                        ("right/image", "/right/image_raw"), ("right/camera_info", "/right/camera_info"),
                                        ("right/depth", "/right/depth")]
    assert validate_parameter("cameras", ["left", "right"]) is None
    with pytest.raises(ValueError, match="at least one camera"):
        multi.node_settings({**values, "cameras": " , "}, "/share")


# -- parameter files through rclpy ---------------------------------------------------------------
LOAD_PARAMS = """
import json, sys
import rclpy
from rclpy.node import Node
from bisenet_ros.ros.parameters import PARAMETERS
out = {}
for path in sys.argv[1:]:
    for ns in ("/", "/front"):
        ctx = rclpy.Context()
        files = [a for f in path.split("+") for a in ("--params-file", f)]
        rclpy.init(context=ctx, args=["--ros-args", *files, "-p", "weights:=/cli.pth"])
        node = Node("segmentation", namespace=ns, context=ctx)
        values = {n: node.declare_parameter(n, s.default, s.descriptor(n)).value for n, s in PARAMETERS.items()}
        out[f"{path}|{ns}"] = {k: list(v) if isinstance(v, (list, tuple)) or hasattr(v, "tolist") else v
                               for k, v in values.items()}
        node.destroy_node()
        rclpy.shutdown(context=ctx)
print(json.dumps(out))
"""


def file_parameters(path: Path) -> dict:
    (params,) = yaml.safe_load(path.read_text()).values()
    return params["ros__parameters"]


@pytest.mark.ros
def test_parameter_files_load_through_rclpy(ros_env):
    """The defaults file alone, and each checkpoint's file of overrides after it (as the launch files
    pass them and as two --params-file do): rclpy reads what the files say, -p beats them."""
    defaults_file = CONFIG / "segmentation.yaml"
    overrides = sorted(CONFIG.glob("*_bisenetv*.yaml"))
    assert {f.name for f in overrides} >= {"cityscapes_bisenetv2.yaml", "cityscapes_bisenetv1.yaml",
                                           "camvid_bisenetv2.yaml", "cocostuff_bisenetv2.yaml",
                                           "ade20k_bisenetv2.yaml"}
    defaults = file_parameters(defaults_file)
    # the defaults file: every parameter a launch user sets, the model left to the checkpoint
    assert set(defaults) <= set(PARAMETERS), f"unknown {set(defaults) - set(PARAMETERS)}"
    assert defaults["dataset"] == "" and defaults["model"] == "auto"
    assert defaults["input_width"] == defaults["input_height"] == 0 and "mean" not in defaults
    cases = {str(defaults_file): defaults}
    for path in overrides:  # overrides only: a few keys, each different from the default
        params = file_parameters(path)
        dataset, model = path.stem.split("_")
        assert params["dataset"] == dataset and params["model"] == model
        assert set(params) <= set(defaults) and len(params) <= 6, (path.name, sorted(params))
        assert all(params[k] != defaults[k] for k in params), (path.name, "repeats a default")
        cases[f"{defaults_file}+{path}"] = {**defaults, **params}
    proc = subprocess.run([sys.executable, "-c", LOAD_PARAMS, *cases], env=ros_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    for case, params in cases.items():
        for ns in ("/", "/front"):
            got = loaded[f"{case}|{ns}"]
            for name, value in params.items():
                if name != "weights":
                    assert got[name] == value, (case, ns, name)
            assert got["weights"] == "/cli.pth"  # -p on the command line beats the file
            for name, value in got.items():
                if name != "weights":
                    assert validate_parameter(name, value) is None, (case, name, value)
            assert validate_config(got) is None


def choices_in(text: str) -> set[str]:
    """The values of a choice text ``a (note) | b | c; more`` or ``# a | b (note)``."""
    text = text.split(";", 1)[0].lstrip("#").strip()
    return {re.sub(r"\(.*?\)", "", part).strip() for part in text.split("|")}


def test_choice_texts_follow_the_one_lists():
    """Launch argument descriptions and the defaults file's comments name exactly the allowed values
    of each choice parameter (CHOICES, itself built from the one list of each name set)."""
    from bisenet_ros.inference.backends import BACKENDS, PRECISIONS
    from bisenet_ros.models.architectures import ARCHITECTURES

    assert CHOICES["precision"] == PRECISIONS and CHOICES["backend"] == BACKENDS
    assert CHOICES["model"] == ("auto", *ARCHITECTURES)
    stale = []
    for filename in ("segment.launch.py", "multi_camera.launch.py"):
        for name, (_, description) in load_launch(filename).ARGUMENTS.items():
            if name in CHOICES and choices_in(description) != set(CHOICES[name]):
                stale.append(f"{filename} {name}: {description!r}")
    lines = (CONFIG / "segmentation.yaml").read_text().splitlines()
    for name in CHOICES:
        line = next((ln for ln in lines if ln.strip().startswith(f"{name}:")), None)
        if line is not None and choices_in(line.split("#", 1)[1] if "#" in line else "") != set(CHOICES[name]):
            stale.append(f"config/segmentation.yaml {name}: {line.strip()!r}")
    for path in CONFIG.glob("*.yaml"):  # no file repeats a choice comment that could go stale
        if path.name != "segmentation.yaml":
            assert "|" not in "".join(ln.split("#", 1)[-1] for ln in path.read_text().splitlines()
                                      if not ln.startswith("#") and "#" in ln), path.name
    assert not stale, "choice texts that differ from the one lists:\n" + "\n".join(stale)
    assert choices_in("auto (fp16 on CUDA) | fp32; empty = x") == {"auto", "fp32"}


def test_rviz_config_shows_overlay_and_labels():
    view = yaml.safe_load((CONFIG / "bisenet.rviz").read_text())
    displays = view["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"] for d in displays if d["Class"] == "rviz_default_plugins/Image"}
    assert {"segmentation/overlay", "segmentation/labels", "segmentation/color"} <= topics
    clouds = [d for d in displays if d["Class"] == "rviz_default_plugins/PointCloud2"]
    assert [(d["Topic"]["Value"], d["Color Transformer"]) for d in clouds] == [("segmentation/points", "RGB8")]
    assert all(d["Topic"]["Reliability Policy"] == "Reliable" for d in displays)


def test_docs_list_every_parameter_and_launch_argument():
    text = (REPO / "docs" / "node.md").read_text()
    for name in PARAMETERS:
        assert f"| `{name}` |" in text, f"docs/node.md: parameter {name} missing from the table"
    for name, choices in CHOICES.items():  # the row names every allowed value
        row = text.split(f"| `{name}` |", 1)[1].split("\n", 1)[0]
        for choice in choices:
            assert choice in row, f"docs/node.md: parameter {name}: value {choice} not described"
    for filename in ("segment.launch.py", "multi_camera.launch.py"):
        for name in load_launch(filename).ARGUMENTS:
            assert f"`{name}`" in text, f"docs/node.md: launch argument {name} of {filename} missing"
    assert "need a ROS 2 install" in text
