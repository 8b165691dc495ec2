"""Where the tools write: never over an input, never over a user's file, never half a file.

Every ``bisenet-ros`` tool that writes checks each output with :func:`check_output` before the
long work starts, and writes it with :func:`atomic_file` / :func:`atomic_dir`:

- an output that *is* one of the inputs, *contains* one (a directory replaced as a whole) or *lies
  inside* one (a bag directory, a dataset folder) is refused;
- an existing output is replaced only with ``--overwrite``, and then only when it is of the tool's
  own kind (:class:`Kind`: a PNG for a PNG, a bag written by bisenet-ros for a bag, ...);
- the new content is written under a hidden temporary name beside the target and renamed over it
  at the end, so an interrupted run (error, Ctrl-C, SIGTERM: see :func:`.errors.terminate_as_interrupt`)
  leaves either the old output or the complete new one; the temporary is removed on the way out.

Directories the tools fill with several files (reports, ``segment --out-dir``, the demo) carry a
:data:`MARKER` file; files in a marked directory are the tool's own and may be replaced.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator


from .errors import BisenetError
from .safe_yaml import load_yaml_file

#: written into directories a tool creates and fills (reports, segment outputs, the demo)
MARKER = ".bisenet-ros"
#: ``custom_data`` key of ``metadata.yaml`` in the bags the tools write
BAG_MARK = "bisenet_ros"
_PARTIAL = ".partial-"


class OutputError(BisenetError):
    """An output path would destroy an input or a user's file, or cannot be written."""


def _head(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _is_json_object(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_text()), dict)
    except (OSError, ValueError):
        return False


def is_bisenet_bag(path: Path) -> bool:
    """A ROS 2 bag directory whose metadata says bisenet-ros wrote it."""
    try:
        meta = load_yaml_file(path / "metadata.yaml", "bag metadata")
        custom = meta["rosbag2_bagfile_information"].get("custom_data") or {}
    except (BisenetError, TypeError, KeyError, AttributeError):
        return False
    return isinstance(custom, dict) and BAG_MARK in custom


def _is_sidecar(path: Path) -> bool:
    try:
        return "arch" in load_yaml_file(path)
    except BisenetError:
        return False


@dataclass(frozen=True)
class Kind:
    """What a tool writes: a name for messages and how to recognise an existing one of its own."""

    name: str
    is_dir: bool
    recognise: Callable[[Path], bool]


PNG = Kind("PNG image", False, lambda p: _head(p, 8) == b"\x89PNG\r\n\x1a\n")
VIDEO = Kind("MP4 video", False, lambda p: _head(p, 12)[4:8] == b"ftyp")
CHECKPOINT = Kind("PyTorch checkpoint", False, lambda p: _head(p, 4) == b"PK\x03\x04")
SIDECAR = Kind("checkpoint sidecar YAML", False, _is_sidecar)
ONNX = Kind("ONNX model", False, lambda p: _head(p, 1) == b"\x08")
JSON = Kind("JSON result", False, _is_json_object)
BAG = Kind("ROS 2 bag written by bisenet-ros", True, is_bisenet_bag)
REPORT_DIR = Kind("bisenet-ros output directory", True, lambda p: (p / MARKER).is_file())


def _resolve(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _relation(out: Path, inp: Path, replaces_tree: bool) -> str | None:
    """How ``out`` collides with ``inp`` ('is', 'contains', 'lies inside'), or None."""
    if out == inp or (out.exists() and inp.exists() and os.path.samefile(out, inp)):
        return "is"
    if replaces_tree and out in inp.parents:
        return "contains"
    if inp in out.parents and (inp.is_dir() or not inp.exists()):
        return "lies inside"
    return None


def check_output(
    out: str | Path,
    inputs: Iterable[str | Path] = (),
    *,
    kind: Kind,
    overwrite: bool = False,
    option: str = "--out",
) -> Path:
    """Refuse ``out`` if writing it could destroy an input or a user's file; return it resolved.

    ``kind.is_dir`` outputs are replaced as a whole (a bag) unless ``kind`` is
    :data:`REPORT_DIR`, which is written into. Call before the long work starts.
    """
    path = _resolve(out)
    tree = kind.is_dir and kind is not REPORT_DIR
    for inp in inputs:
        if inp is None:
            continue
        rel = _relation(path, _resolve(inp), tree)
        if rel:
            raise OutputError(f"{option} {out} {rel} the input {inp}; choose another output path")
    _remove_stale_partials(path)
    if not path.exists() and not path.is_symlink():
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise OutputError(f"{option} {out}: {parent} is a file, not a directory")
        if parent is not None:
            _probe(parent, out, option)
        return path
    if kind is REPORT_DIR:
        if not path.is_dir():
            raise OutputError(f"{option} {out} is a file, not a directory")
        _probe(path, out, option)
        return path
    if kind.is_dir != path.is_dir():
        what = "a directory" if path.is_dir() else "a file"
        raise OutputError(f"{option} {out} is {what}; expected a {kind.name}")
    if not overwrite:
        raise OutputError(f"{option} {out} exists already (pass --overwrite to replace it, or choose another path)")
    if not kind.recognise(path):
        raise OutputError(f"refusing to overwrite {out}: it is not a {kind.name}")
    _probe(path.parent, out, option)
    return path


def _probe(directory: Path, out, option: str) -> None:
    """Create and remove a file in ``directory``: the only honest test that it is writable."""
    probe = directory / f".bisenet-ros-probe-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{option} {out}: {directory} is not writable ({exc.strerror or exc})") from None


TEXT = Kind("text file", False, lambda p: b"\0" not in _head(p, 4096))
_BY_SUFFIX = {".png": PNG, ".mp4": VIDEO, ".json": JSON, ".md": TEXT, ".onnx": ONNX, ".pth": CHECKPOINT,
              ".yaml": SIDECAR}


def kind_for(path: str | Path) -> Kind:
    """The :class:`Kind` of a file the tools write, by its suffix."""
    return _BY_SUFFIX.get(Path(path).suffix.lower(), TEXT)


def check_in_dir(directory: str | Path, names: Iterable[str], *, overwrite: bool = False) -> None:
    """Files ``names`` about to be written into ``directory`` (a :data:`REPORT_DIR`).

    In a directory marked as the tool's own they are replaced; elsewhere an existing one needs
    ``--overwrite`` and must be of the tool's kind for its suffix (:func:`kind_for`).
    """
    directory = Path(directory).expanduser()
    own = (directory / MARKER).is_file()
    for name in names:
        path = directory / name
        if not path.exists():
            continue
        kind = kind_for(path)
        if path.is_dir():
            raise OutputError(f"{path} is a directory; expected a {kind.name}")
        if own:
            continue
        if not overwrite:
            raise OutputError(f"{path} exists already (pass --overwrite to replace it, or choose another path)")
        if not kind.recognise(path):
            raise OutputError(f"refusing to overwrite {path}: it is not a {kind.name}")


def check_own_dir(directory: str | Path, inputs: Iterable[str | Path] = (), *, overwrite: bool = False,
                  option: str = "--out") -> Path:
    """A directory the tool fills with files whose names are not known up front: new, empty,
    marked as a bisenet-ros output, or (with ``overwrite``) any directory."""
    path = check_output(directory, inputs, kind=REPORT_DIR, overwrite=overwrite, option=option)
    if path.is_dir() and not overwrite and not (path / MARKER).is_file() and any(path.iterdir()):
        raise OutputError(f"{option} {directory} is a non-empty directory bisenet-ros did not create "
                          "(pass --overwrite to write into it, or choose another path)")
    return path


def prepare_dir(directory: str | Path, tool: str) -> Path:
    """Create ``directory`` if needed; mark it as this tool's output when it was created or empty."""
    path = Path(directory).expanduser()
    try:
        fresh = not path.exists() or not any(path.iterdir())
        path.mkdir(parents=True, exist_ok=True)
        if fresh:
            (path / MARKER).write_text(f"written by bisenet-ros {tool}; its files may be replaced by it\n")
    except OSError as exc:
        raise OutputError(f"{directory}: cannot create the output directory ({exc.strerror or exc})") from None
    return path


def _partial_name(path: Path, tag: str = _PARTIAL) -> Path:
    return path.with_name(f".{path.stem}{tag}{os.getpid()}{path.suffix}")


def _remove_stale_partials(path: Path) -> None:
    """Temporaries of earlier runs that were killed (their process is gone)."""
    parent = path.parent
    if not parent.is_dir():
        return
    prefix = f".{path.stem}{_PARTIAL}"
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    for cand in candidates:
        pid = cand.name[len(prefix):].removesuffix(path.suffix)
        if pid.isdigit() and not _alive(int(pid)):
            _remove(cand)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def _with_parent(path: str | Path) -> Path:
    path = Path(path).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create {path.parent} ({exc.strerror or exc})") from None
    return path


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); renamed over ``path`` on success.

    On any exception (including KeyboardInterrupt and SIGTERM via :func:`.errors.terminate_as_interrupt`)
    the temporary is removed and ``path`` is left as it was.
    """
    path = _with_parent(path)
    tmp = _partial_name(path)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"{path}: nothing was written")
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a not-yet-existing temporary directory path beside ``path``; swapped in on success.

    An existing ``path`` (already approved by :func:`check_output`) is replaced only once the new
    directory is complete.
    """
    path = _with_parent(path)
    tmp = _partial_name(path)
    _remove(tmp)
    try:
        yield tmp
        old = None
        if path.exists():
            old = _partial_name(path, ".old-")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            _remove(old)
    except BaseException:
        _remove(tmp)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)
