"""The one YAML reader of the package: every YAML file or text it reads goes through here.

Presets, class remaps, checkpoint and ``.onnx.yaml`` sidecars, label maps, the backends
configuration, bag metadata and ``--node-param`` values are all untrusted text. Before anything
is built from one, it is checked in this order, and refused with one line naming the file:

1. size: at most :data:`MAX_BYTES` (1 MiB), checked before parsing (only that much is read);
2. text: UTF-8;
3. shape, in one streaming pass over the parser's events (nothing is kept): at most
   :data:`MAX_NODES` nodes *after* alias expansion (an alias counts as the whole node it names,
   so an alias bomb -- ``&a [*b, *b, ...]`` nested 8 deep -- is refused after reading a few
   hundred events), nesting at most :data:`MAX_DEPTH` deep, no alias to a node that is not
   complete yet (a recursive structure);
4. only then the document is built (safe types only: no Python objects), and its top-level
   type is checked (a mapping unless the caller says otherwise).

A file within these bounds costs at most about 40 MB and well under a second to load (the node
count, not the byte count, bounds the memory: 1 MiB of ``[a,a,a,...]`` would be 500k nodes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, ScalarEvent

from .errors import BisenetError, ConfigError, one_line, safe_text

MAX_BYTES = 1 << 20  #: largest YAML file read (1 MiB)
MAX_NODES = 100_000  #: most nodes (scalars and collections, aliases expanded) in one document
MAX_DEPTH = 64  #: deepest nesting of collections

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: same safe types


class YamlError(ConfigError):
    """A YAML file or text refused by :func:`load_yaml_file` / :func:`load_yaml_text`."""


def _refuse(error: type[BisenetError], source: str, what: str, reason: str) -> BisenetError:
    return error(f"{safe_text(source)}: {what}: {reason}")


def check_shape(text: str, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> str | None:
    """What makes ``text`` too costly to build (see the module doc), or None. Streams the
    parser's events and keeps only the expanded size of each anchor."""
    sizes: dict[str, int] = {}  # anchor -> expanded node count of the complete node it names
    open_: list[tuple[str | None, int]] = []  # (anchor, node count before it) of open collections
    count = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, AliasEvent):
            if event.anchor not in sizes:
                return f"alias *{safe_text(event.anchor, 40)} names no complete node (recursive or undefined)"
            count += sizes[event.anchor]
        elif isinstance(event, CollectionStartEvent):
            if len(open_) >= max_depth:
                return f"nested deeper than {max_depth} levels"
            open_.append((event.anchor, count))
            count += 1
        elif isinstance(event, CollectionEndEvent):
            anchor, before = open_.pop()
            if anchor is not None:
                sizes[anchor] = count - before
        elif isinstance(event, ScalarEvent):
            count += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        if count > max_nodes:
            return f"more than {max_nodes} nodes (aliases expanded)"
    return None


def _describe(exc: yaml.YAMLError) -> str:
    """The parser's complaint and where, in a few words (its own text quotes the input)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if not problem:
        return safe_text(" ".join(str(exc).split()), 200)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return safe_text(f"{problem}{where}", 200)


def load_yaml_text(text: str, source: str, what: str = "YAML", *, error: type[BisenetError] = YamlError,
                   expect: type | tuple[type, ...] | None = dict, max_bytes: int = MAX_BYTES) -> Any:
    """Parse ``text`` (from ``source``, named in errors) within the bounds of the module doc.
    ``expect``: the type(s) the document must have (``None`` = any); an empty document is ``{}``
    when a mapping is expected, else ``None``."""
    if len(text) > max_bytes:
        raise _refuse(error, source, what, f"{len(text)} characters, more than the {max_bytes} a YAML text may have")
    try:
        problem = check_shape(text)
        if problem:
            raise _refuse(error, source, what, f"refused: {problem}")
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader, bounded above
    except yaml.YAMLError as exc:
        raise _refuse(error, source, what, f"cannot read: not valid YAML ({_describe(exc)})") from None
    except (RecursionError, MemoryError, ValueError, OverflowError) as exc:
        raise _refuse(error, source, what, f"cannot be read ({one_line(exc, 200)})") from None
    if data is None and expect is dict:
        data = {}
    if expect is not None and not isinstance(data, expect):
        kinds = {dict: "a YAML mapping", list: "a YAML list"}
        wanted = " or ".join(kinds.get(t, t.__name__) for t in (expect if isinstance(expect, tuple) else (expect,)))
        raise _refuse(error, source, what, f"expected {wanted}, got {type(data).__name__}")
    return data


def load_yaml_file(path: str | Path, what: str = "YAML file", *, error: type[BisenetError] = YamlError,
                   expect: type | tuple[type, ...] | None = dict, max_bytes: int = MAX_BYTES) -> Any:
    """Read and parse the YAML file ``path`` within the bounds of the module doc; every problem
    (missing, too large, not UTF-8, bad YAML, too many nodes, wrong type) is one ``error`` line
    naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)  # never more than the cap (a FIFO or /dev/zero stops here too)
    except IsADirectoryError:
        raise _refuse(error, str(path), what, "is a directory") from None
    except OSError as exc:
        raise _refuse(error, str(path), what, f"cannot be read ({exc.strerror or one_line(exc)})") from None
    if len(raw) > max_bytes:
        raise _refuse(error, str(path), what, f"larger than {max_bytes // 1024} KiB, the most a YAML file may have "
                                              "(refused unparsed)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse(error, str(path), what, f"not UTF-8 text (byte {exc.start})") from None
    return load_yaml_text(text, str(path), what, error=error, expect=expect, max_bytes=max_bytes)
