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


def _shell_lines(text: str) -> list[str]:
    """Command lines of the fenced ``bash``/``sh`` blocks, continuation lines joined, comments dropped."""
    lines = []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        lines += [ln.strip().removeprefix("$ ") for ln in joined.splitlines()
                  if ln.strip() and not ln.strip().startswith("#")]
    return lines


def _bisenet_commands(text: str) -> list[list[str]]:
    """Every ``bisenet-ros SUB ...`` command in fenced blocks and inline code, as argv after the program."""
    import shlex

    found = []
    for line in _shell_lines(text) + re.findall(r"`(bisenet-ros [^`]+)`", text):
        for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line):
            words = part.split()
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # VAR=value prefixes
                words.pop(0)
            if len(words) > 1 and words[1].endswith(":"):
                continue  # the program's own output quoted in the docs ("bisenet-ros train: error: ...")
            if len(words) > 1 and words[0] in ("bisenet-ros", ".venv/bin/bisenet-ros"):
                try:
                    found.append(shlex.split(" ".join(words[1:]), comments=True))
                except ValueError:
                    found.append(words[1:])
    return found


def test_every_subcommand_and_flag_in_the_docs_exists():
    """Each ``bisenet-ros SUB --flag`` a user copies from README or docs/ names a real subcommand and
    real options of it (renamed options leave stale docs behind otherwise)."""
    import argparse

    from bisenet_ros.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    checked = 0
    for path in _user_docs():
        for argv in _bisenet_commands(path.read_text()):
            if argv[0].startswith("-") or argv[0].isupper():
                continue  # bisenet-ros --help, bisenet-ros COMMAND --help
            for sub in argv[0].split("/"):  # prose: `bisenet-ros segment/eval-bag/replay --weights W`
                assert sub in subs, f"{path.name}: bisenet-ros {sub}: no such subcommand"
                options = subs[sub]._option_string_actions
                for word in argv[1:]:
                    if word.startswith("--"):
                        flag = word.split("=", 1)[0]
                        assert flag in options, f"{path.name}: bisenet-ros {sub} {flag}: no such option"
                checked += 1
    assert checked > 20  # the extraction really found the docs' commands


def test_evaluation_example_runs_as_written(tmp_path):
    """docs/evaluation.md's example, from a fresh directory with the venv's programs first on PATH
    (the venv activated) and the checkout's models/: the data is made by the commands before it, and
    eval-bag prints the mIoU the doc shows (the replay through a live node is test_replay's)."""
    import os
    import subprocess
    import sys

    doc = (ROOT / "docs" / "evaluation.md").read_text()
    example = doc.split("## Example", 1)[1]
    lines = [ln for ln in _shell_lines(example) if not ln.startswith("bisenet-ros replay")]
    assert [ln.split()[0:2] for ln in lines] == [["python", "-m"], ["bisenet-ros", "make-bag"],
                                                 ["bisenet-ros", "eval-bag"]]
    (tmp_path / "models").symlink_to(ROOT / "models")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    out = ""
    for line in lines:
        proc = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-2000:]}"
        out = proc.stdout
    shown = float(re.search(r"40 labelled, mIoU (\d\.\d+)", example).group(1))
    got = float(re.search(r"40 labelled, mIoU (\d\.\d+)", out).group(1))
    assert abs(got - shown) < 0.01, (got, shown)
    assert (tmp_path / "pred_demo" / "pred_demo_0.mcap").is_file()
