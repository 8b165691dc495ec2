"""package.xml declares what the code really uses, so ``rosdep install`` brings it.

Every import in the package and the launch files is mapped to its rosdep key; the keys must be the
package's exec_depends, and every exec_depend must be used. Third-party libraries without a
rosdep key used here are listed (with why) and installed with pip (README, "The ROS 2 way").
"""
from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: python module -> rosdep key (Debian/Ubuntu packages, or rosdep's pip keys where there is none)
PYTHON_KEYS = {
    "torch": "python3-torch", "numpy": "python3-numpy", "numba": "python3-numba", "cv2": "python3-opencv", "yaml": "python3-yaml",
    "tqdm": "python3-tqdm", "matplotlib": "python3-matplotlib", "rosbags": "python3-rosbags-pip",
    "onnxruntime": "python3-onnxruntime-pip",
}
#: imported, but optional and installed with pip (README): what needs them
PIP_ONLY = {"safetensors": ".safetensors checkpoints", "onnx": "export-onnx metadata / ONNX graphs",
            "av": "H.264 overlay videos of segment (optional; OpenCV otherwise)",
            "openvino": "the optional openvino backend (bf16/int8 on the CPU; setup.py extra)",
            "foxglove": "the optional Foxglove live view, foxglove-sdk (node parameter foxglove_port; setup.py extra)",
            "ray": "the optional Ray cluster for eval-bag --ray (no rosdep key; pip install 'ray[client]')"}
ROS_MODULES = {"rclpy", "launch", "launch_ros", "ament_index_python"}


def _imports(path: Path) -> set[str]:
    """Absolute module names imported by ``path`` (dotted, as written)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _launched_packages(path: Path) -> set[str]:
    """package=... of the Node actions of a launch file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Node":
            for kw in node.keywords:
                if kw.arg == "package" and isinstance(kw.value, ast.Constant):
                    found.add(kw.value.value)
    return found


def test_exec_depends_match_the_imports():
    root = ET.parse(REPO / "package.xml").getroot()
    declared = {e.text for e in root.findall("exec_depend")}
    files = list((REPO / "bisenet_ros").rglob("*.py")) + list((REPO / "launch").glob("*.launch.py"))
    modules = set().union(*(_imports(f) for f in files))
    imported = {m.split(".")[0] for m in modules} - set(sys.stdlib_module_names) - {"bisenet_ros"}
    ros = {m for m in imported if m in ROS_MODULES or m.endswith(("_msgs", "_interfaces"))}
    if "rclpy.lifecycle" in modules:  # the lifecycle node serves lifecycle_msgs services
        ros.add("lifecycle_msgs")
    launched = set().union(*(_launched_packages(f) for f in (REPO / "launch").glob("*.launch.py")))
    third_party = imported - ros
    unknown = third_party - set(PYTHON_KEYS) - set(PIP_ONLY)
    assert not unknown, f"imports without a rosdep key or a PIP_ONLY reason: {sorted(unknown)}"
    needed = ros | (launched - {"bisenet_ros"}) | {PYTHON_KEYS[m] for m in third_party if m in PYTHON_KEYS}
    assert "rviz2" in launched and "lifecycle_msgs" in ros
    assert needed - declared == set(), f"used but not in package.xml: {sorted(needed - declared)}"
    assert declared - needed == set(), f"in package.xml but not used: {sorted(declared - needed)}"


def test_test_depends_are_used():
    root = ET.parse(REPO / "package.xml").getroot()
    tests = {e.text for e in root.findall("test_depend")}
    assert tests == {"python3-pytest"}  # the suite is pytest; no ament_copyright/flake8 test exists
    assert root.find("export/build_type").text == "ament_python"
