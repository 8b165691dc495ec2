"""The package builds with colcon (ament_python) and installs what `ros2 run`/`ros2 launch` need."""
from __future__ import annotations

from conftest import tracked_files


def test_colcon_build_installs_package(colcon_install):
    prefix = colcon_install
    share = prefix / "share" / "bisenet_ros"
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "bisenet_ros").is_file()
    assert (share / "package.xml").is_file()
    for script in ("segmentation_node", "segmentation_lifecycle_node", "bisenet-ros"):
        assert (prefix / "lib" / "bisenet_ros" / script).is_file(), f"ros2 run needs lib/bisenet_ros/{script}"
    for rel in tracked_files("launch/*.launch.py") + tracked_files("config/*") + tracked_files("models/*"):
        assert (share / rel).is_file(), f"{rel} not installed to share/bisenet_ros"
    site = next((prefix / "lib").glob("python3*/site-packages"))
    assert (site / "bisenet_ros" / "pipeline.py").is_file()
    resources = [f for f in tracked_files("bisenet_ros/resources/*") if not f.endswith(".py")]
    assert any(f.endswith("presets/cityscapes.yaml") for f in resources)
    for resource in resources:
        assert (site / resource).is_file(), f"{resource} missing from the installed package"
