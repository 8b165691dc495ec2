"""Shared fixtures: the reference fixtures in ../shared, small checkpoints, an isolated ROS 2 env."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    """``../shared/bisenet-reference`` beside the checkout (override: BISENET_REFERENCE_DIR)."""
    env = os.environ.get("BISENET_REFERENCE_DIR")
    return Path(env) if env else REPO.parent / "shared" / "bisenet-reference"


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """XDG_CACHE_HOME is a temp dir of this test session, set before any session fixture takes a
    copy of the environment (``ros_env``), so the node processes share it with the test process:
    the measured `auto` backend choice (bisenet_ros.inference.backend_cache) is never read from or written
    to the user's ~/.cache, node and offline pipelines agree on it, and each model/size is
    measured once per session, not per test."""
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    # a choice measured while the suite loads the machine is provisional; it is kept, not measured
    # again at a quieter moment, so that node and offline pipelines keep agreeing on one backend
    os.environ["BISENET_ROS_KEEP_PROVISIONAL_BACKEND"] = "1"
    yield
    if saved is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = saved


@pytest.fixture(scope="session")
def reference() -> Path:
    path = reference_dir()
    if not path.is_dir():
        pytest.skip(f"reference fixtures not present at {path}")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Randomly initialised V1/V2 checkpoints (5 classes) in the public key layout, with aux heads."""
    import torch

    from bisenet_ros.models import build_model

    out = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for arch in ("bisenetv1", "bisenetv2"):
        torch.manual_seed(0)
        net = build_model(arch, num_classes=5, aux_heads=True)
        path = out / f"{arch}_5cls.pth"
        torch.save(net.state_dict(), path)
        paths[arch] = path
    return paths


@pytest.fixture(scope="session")
def ros_env(tmp_path_factory, _private_cache):
    """An isolated ROS 2 environment for this test session (set before rclpy.init).

    Random ROS_DOMAIN_ID, discovery limited to this host, logs in a temp dir, and the package's
    Fast DDS profile (large shared-memory segment) applied as the node applies it.
    """
    saved = {k: os.environ.get(k) for k in
             ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR", "FASTDDS_DEFAULT_PROFILES_FILE",
              "FASTRTPS_DEFAULT_PROFILES_FILE")}
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 100))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_LOG_DIR"] = str(tmp_path_factory.mktemp("ros_log"))
    try:
        from bisenet_ros.ros.transport import apply_fastdds_profile
    except ImportError:  # the node adapter is not there yet
        pass
    else:
        apply_fastdds_profile()
    yield dict(os.environ)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def client(ros_env, request):
    """A ROS client node (``node_client.RosClient``, rclpy) in the session's private domain,
    named after the test module, closed after the test."""
    from node_client import RosClient

    c = RosClient(f"{request.module.__name__.rpartition('.')[2]}_client")
    yield c
    c.close()


def tracked_files(pattern: str) -> list[str]:
    """Files of the checkout matching a git pathspec (what a colcon build of the package sees)."""
    import subprocess

    out = subprocess.run(["git", "ls-files", pattern], cwd=REPO, capture_output=True, text=True)
    return out.stdout.split()


@pytest.fixture(scope="session")
def colcon_install(tmp_path_factory) -> Path:
    """The package built the ROS way (``colcon build`` of a copy of the tracked files) into a temp
    install; returns the package's prefix (``<install>/bisenet_ros``). Built once per session."""
    import shutil
    import subprocess
    import sys

    if not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to list the package files")
    colcon = Path(sys.executable).with_name("colcon")
    assert colcon.exists(), "colcon is part of the dev requirements (make setup)"
    root = tmp_path_factory.mktemp("colcon")
    src = root / "src" / "bisenet_ros"
    for rel in tracked_files("*"):
        if (REPO / rel).is_file():
            dst = src / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dst)
    proc = subprocess.run(
        [str(colcon), "build", "--base-paths", "src", "--build-base", "build", "--install-base", "install",
         "--event-handlers", "console_direct-"],
        cwd=root, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return root / "install" / "bisenet_ros"


# -- the test run leaves nothing in the checkout ----------------------------------------------------
#: entries of the repository root that a test run may create (tool caches, the venv)
ROOT_MAY_APPEAR = {".pytest_cache", "__pycache__", ".venv", "bisenet_ros.egg-info"}
_root_before: set[str] = set()


def pytest_sessionstart(session):
    _root_before.update(p.name for p in REPO.iterdir())


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if a test (or a library under test, e.g. ONNX Runtime's shape inference
    writing ``sym_shape_infer_temp.onnx`` + ``*.data`` into the working directory) left files in
    the repository root: temp files belong in a temp dir, .gitignore is no substitute."""
    stray = sorted(p.name for p in REPO.iterdir() if p.name not in _root_before | ROOT_MAY_APPEAR)
    if stray:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"ERROR: the test run left files in the repository root: {', '.join(stray)}",
                                red=True)
        session.exitstatus = 1
