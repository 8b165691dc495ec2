"""The layout's rules, checked: the ROS layer is only ``bisenet_ros/ros/``, and the bag tools load
without torch.

"Imports rclpy" counts the rclpy client library and the packages that load it or ROS message
type support (rcl_interfaces, sensor_msgs, cv_bridge, ...). Not counted: ``rosbags`` (pure Python
bag I/O, no ROS install) and ``ament_index_python`` (a file lookup the demo tries for the
installed share directory). Imports inside functions count too.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bisenet_ros"
ROS_LAYER = PACKAGE / "ros"
ROS_RUNTIME = {"rclpy", "rcl_interfaces", "rosidl_runtime_py", "sensor_msgs", "std_msgs", "diagnostic_msgs",
               "builtin_interfaces", "geometry_msgs", "vision_msgs", "cv_bridge", "message_filters", "tf2_ros",
               "launch_ros"}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (anywhere in the file)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def core_modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if ROS_LAYER not in p.parents]


def test_only_the_ros_layer_imports_rclpy():
    offenders = {str(p.relative_to(PACKAGE.parent)): sorted(imported_modules(p) & ROS_RUNTIME)
                 for p in core_modules()}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"ROS imports outside bisenet_ros/ros/: {offenders}"
    # the check itself finds them where they are
    assert "rclpy" in imported_modules(ROS_LAYER / "node.py")


def package_imports(path: Path) -> set[str]:
    """The ``bisenet_ros`` modules ``path`` imports (absolute or relative), as dotted names."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = parts[:len(parts) - node.level] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found |= {module} | {f"{module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("bisenet_ros.")}


def test_the_core_imports_neither_the_ros_layer_nor_the_tools():
    layers = (PACKAGE / "tools", ROS_LAYER)
    core = [p for p in core_modules() if not any(layer in p.parents for layer in layers) and p.name != "cli.py"]
    offenders = {str(p.relative_to(PACKAGE.parent)): sorted(m for m in package_imports(p)
                                                          if m.startswith(("bisenet_ros.ros", "bisenet_ros.tools")))
                 for p in core}
    assert not {k: v for k, v in offenders.items() if v}, offenders
    assert "bisenet_ros.tools.common" in package_imports(PACKAGE / "tools" / "bench.py")  # the check sees them


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_bags_load_without_torch_and_the_core_without_rclpy():
    assert "torch" not in _loaded_after("import bisenet_ros.data.bags")
    assert "torch" not in _loaded_after("import bisenet_ros.data.images")
    modules = [".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts) for p in core_modules()]
    modules = [m.removesuffix(".__init__") for m in modules]
    loaded = _loaded_after("\n".join(f"import {m}" for m in modules))
    assert "torch" in loaded  # the statement really imported the core
    assert not loaded & ROS_RUNTIME, sorted(loaded & ROS_RUNTIME)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each package module -> the package modules it imports explicitly (anywhere in the file, inside
    functions too). ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
    ``pkg``; the implicit import of a parent package's ``__init__`` is not an edge."""
    paths = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    graph = {}
    for name, path in paths.items():
        graph[name] = {m for m in package_imports(path) if m in paths} - {name}
        # `from pkg import name`: package_imports gave both pkg and pkg.name; keep pkg only for non-modules
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = _from_base(name, path, node)
                if all(f"{base}.{a.name}" in paths for a in node.names):
                    graph[name].discard(base)
    return graph


def _from_base(name: str, path: Path, node: ast.ImportFrom) -> str:
    parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    if not node.level:
        return node.module or ""
    base = parts[:len(parts) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_package_modules():
    graph = import_graph()
    assert "bisenet_ros.errors" in graph["bisenet_ros.pipeline"]  # the graph sees top-level imports
    assert "bisenet_ros.inference.onnx_model" in graph["bisenet_ros.pipeline"]  # and imports inside functions
    assert not import_cycles(graph), f"import cycles: {import_cycles(graph)}"
    # the check finds a cycle where there is one
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


#: what one sitting reads: a module, a function (issue 19)
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 65


def long_functions(path: Path, limit: int, root: Path) -> list[str]:
    """``file:line name (N lines)`` for every function or method of ``path`` longer than ``limit``
    (decorators included), ``file`` relative to ``root``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            length = node.end_lineno - start + 1
            if length > limit:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_modules_and_functions_read_in_one_sitting():
    files = sorted(PACKAGE.rglob("*.py"))
    long_files = [f"{p.relative_to(PACKAGE.parent)} ({n} lines)" for p in files
                  if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES]
    assert not long_files, f"modules over {MAX_FILE_LINES} lines (split them by concern): {long_files}"
    functions = [f for p in files for f in long_functions(p, MAX_FUNCTION_LINES, PACKAGE.parent)]
    assert not functions, f"functions over {MAX_FUNCTION_LINES} lines (split them into named stages): {functions}"


def test_the_length_check_finds_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(70))
    (tmp_path / "m.py").write_text(f"def short():\n    return 1\n\n\n@staticmethod\ndef long():\n{body}\n")
    assert long_functions(tmp_path / "m.py", MAX_FUNCTION_LINES, tmp_path) == ["m.py:6 long (72 lines)"]


OLD_COMMANDS = {"bisenet_ros.synthetic": "python -m bisenet_ros.tools.synthetic",
                "bisenet_ros.node": "segmentation_node", "bisenet_ros.demo": "make demo"}


def test_old_module_paths_say_where_the_command_went():
    for old, new in OLD_COMMANDS.items():
        run = subprocess.run([sys.executable, "-m", old, "--help"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 2, (old, run.stdout, run.stderr)
        assert run.stderr.strip().splitlines() == [f"bisenet_ros: 'python -m {old}' moved: run '{new}'"]


YAML_READERS = {"safe_load", "load", "full_load", "unsafe_load", "safe_load_all", "load_all", "full_load_all",
                "unsafe_load_all", "parse", "compose", "compose_all", "scan", "SafeLoader", "CSafeLoader", "Loader",
                "CLoader", "FullLoader", "UnsafeLoader"}


def yaml_readers(path: Path) -> list[str]:
    """``yaml.safe_load(...)``-like reads in ``path`` (attribute uses and ``from yaml import ...``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Attribute) and node.attr in YAML_READERS and isinstance(node.value, ast.Name)
                and node.value.id == "yaml"):
            found.append(f"yaml.{node.attr} (line {node.lineno})")
        elif isinstance(node, ast.ImportFrom) and node.module == "yaml":
            found += [f"from yaml import {a.name} (line {node.lineno})" for a in node.names if a.name in YAML_READERS]
    return found


def test_every_yaml_is_read_through_the_one_safe_loader():
    """Every YAML the package reads goes through ``bisenet_ros.safe_yaml`` (size cap, alias
    expansion bounded, types checked): no module parses YAML itself."""
    loader = PACKAGE / "safe_yaml.py"
    offenders = {str(p.relative_to(PACKAGE.parent)): yaml_readers(p) for p in sorted(PACKAGE.rglob("*.py"))
                 if p != loader}
    assert not {k: v for k, v in offenders.items() if v}, offenders
    assert yaml_readers(loader)  # the check sees them where they are


def test_a_main_block_is_the_last_statement_of_its_module():
    """``python -m bisenet_ros.ros.node`` (how replay, demo and node-bench start the node) runs the
    module as ``__main__``: a function defined below ``if __name__ == "__main__":`` does not exist
    yet when that block runs (the console script, which imports the module, would not notice)."""
    late = []
    for path in sorted(PACKAGE.rglob("*.py")):
        body = ast.parse(path.read_text()).body
        for i, stmt in enumerate(body):
            if (isinstance(stmt, ast.If) and isinstance(stmt.test, ast.Compare)
                    and isinstance(stmt.test.left, ast.Name) and stmt.test.left.id == "__name__"
                    and i != len(body) - 1):
                late.append(f"{path.relative_to(PACKAGE.parent)}:{stmt.lineno}")
    assert not late, f"statements after the __main__ block: {late}"
