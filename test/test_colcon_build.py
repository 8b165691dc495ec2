"""The package builds with colcon (ament_python) and installs what `ros2 run`/`ros2 launch` need."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tracked(pattern: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", pattern], cwd=REPO, capture_output=True, text=True)
    return out.stdout.split()


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs a git checkout to list the package files")
def test_colcon_build_installs_package(tmp_path):
    colcon = Path(sys.executable).with_name("colcon")
    assert colcon.exists(), "colcon is part of the dev requirements (make setup)"
    src = tmp_path / "src" / "bisenet_ros"
    for rel in _tracked("*"):
        dst = src / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dst)
    proc = subprocess.run(
        [str(colcon), "build", "--base-paths", "src", "--build-base", "build", "--install-base", "install",
         "--event-handlers", "console_direct-"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    prefix = tmp_path / "install" / "bisenet_ros"
    share = prefix / "share" / "bisenet_ros"
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "bisenet_ros").is_file()
    assert (share / "package.xml").is_file()
    for script in ("segmentation_node", "segmentation_lifecycle_node", "bisenet-ros"):
        assert (prefix / "lib" / "bisenet_ros" / script).is_file(), f"ros2 run needs lib/bisenet_ros/{script}"
    for rel in _tracked("launch/*.launch.py") + _tracked("config/*") + _tracked("models/*"):
        assert (share / rel).is_file(), f"{rel} not installed to share/bisenet_ros"
    site = next((prefix / "lib").glob("python3*/site-packages"))
    assert (site / "bisenet_ros" / "pipeline.py").is_file()
    for preset in _tracked("bisenet_ros/presets/*.yaml"):
        assert (site / preset).is_file(), f"{preset} missing from the installed package"
