"""Documentation facts a new user relies on (issue 15's doc rows): install steps that work on
Ubuntu 24.04, the full topic list, no internal wording, speed claims that name their CPU, a licence."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_ros_install_uses_a_venv_not_bare_pip():
    """Ubuntu 24.04 refuses `pip install` into the system python (PEP 668)."""
    ros_way = README.split("## The ROS 2 way", 1)[1].split("\n## ", 1)[0]
    assert "python3 -m venv --system-site-packages" in ros_way
    pip_lines = [ln for ln in ros_way.splitlines() if ln.lstrip().startswith("pip install")]
    assert pip_lines and ros_way.index("venv --system-site-packages") < ros_way.index(pip_lines[0])


def test_readme_lists_every_output_topic():
    topics = README.split("Topics (private to the node", 1)[1].split("\n\n", 1)[0]
    for name in ("labels", "color", "overlay", "confidence", "camera_info", "timing", "legend", "/diagnostics"):
        assert f"`{name}`" in topics, name


def test_no_internal_wording_in_user_docs():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "models" / "README.md"]
    for path in docs:
        text = path.read_text().lower()
        for phrase in ("the issue", "done when", "the lead", "helper"):
            assert phrase not in text, f"{path.name}: '{phrase}'"


def test_speed_ratios_name_the_cpu():
    """Every 'N.Nx eager' claim in the README names the CPU it was measured on."""
    for sentence in re.split(r"(?<=[.;])\s", README.replace("\n", " ")):
        if re.search(r"\d(\.\d+)?x eager", sentence):
            assert re.search(r"Xeon|EPYC|Core|Ryzen|ARM|Cortex|Graviton", sentence), sentence


def test_packaging_has_a_licence_and_no_deprecated_tests_require():
    setup = (ROOT / "setup.py").read_text()
    assert "tests_require" not in setup
    licence = (ROOT / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in licence
    assert "<license>Apache-2.0</license>" in (ROOT / "package.xml").read_text()


def _user_docs() -> list[Path]:
    return [ROOT / "README.md", ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").glob("*.md")),
            ROOT / "models" / "README.md"]


def test_commands_in_the_docs_exist():
    """Every ``python -m bisenet_ros...`` module the docs tell a user to run is a runnable module
    of the package, and every ``bisenet-ros SUBCOMMAND`` is a subcommand (modules moved in a
    refactor leave stale commands behind otherwise)."""
    import importlib.util

    from bisenet_ros.cli import COMMANDS

    for path in _user_docs():
        text = path.read_text()
        for module in set(re.findall(r"python3? -m (bisenet_ros[\w.]*)", text)):
            spec = importlib.util.find_spec(module)
            assert spec is not None and spec.origin, f"{path.name}: python -m {module}: no such module"
            source = Path(spec.origin).read_text()
            assert '__name__ == "__main__"' in source or spec.submodule_search_locations, \
                f"{path.name}: python -m {module} does nothing (no __main__ block)"
        for command in set(re.findall(r"bisenet-ros ([a-z][a-z-]*)", text)):
            assert command in COMMANDS, f"{path.name}: bisenet-ros {command}: no such subcommand"
