"""Public BiSeNet checkpoints by name: download, verify, cache; ``--weights NAME`` everywhere.

The names, URLs and what each file is live in ``resources/weights.yaml`` (the CoinCheung/BiSeNet
release files). :func:`fetch` downloads one into ``$XDG_CACHE_HOME/bisenet_ros/weights``
(``~/.cache/bisenet_ros/weights``), verifies it and writes its sidecar YAML beside it;
:func:`resolve_weights` turns a name (``bisenetv2-cityscapes``) or an upstream file name
(``model_final_v2_city.pth``, when no such file is at hand) into the cached file.

Verification, in this order: a ``sha256`` stated in the catalogue or given by the user; else the
sha256 and size recorded at this cache's first download of the file (``checksums.yaml``: trust on
first use, because upstream publishes no checksums); a download shorter than its announced
Content-Length is refused; the file must load as a checkpoint of the catalogued architecture and
class count. Every failure is one line (:class:`WeightsError`) and leaves nothing in the cache: the
download is written under a hidden temporary name and renamed only when verified.
"""
from __future__ import annotations

import datetime
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from ..errors import BisenetError, one_line
from ..safe_yaml import load_yaml_file
from ..resources import RESOURCES

CATALOG_FILE = RESOURCES / "weights.yaml"
#: base URL of a mirror holding the files under their catalogue file names
MIRROR_ENV = "BISENET_ROS_WEIGHTS_MIRROR"
RECORDS = "checksums.yaml"
_CHUNK = 1 << 20


class WeightsError(BisenetError):
    """A named checkpoint is unknown, not downloaded, or failed to download or verify."""


@dataclass(frozen=True)
class Entry:
    """One public checkpoint of the catalogue."""

    name: str
    file: str
    url: str
    arch: str
    dataset: str
    num_classes: int
    input_size: tuple[int, int] | None
    sha256: str | None
    size: int | None
    upstream: str = ""


def catalog() -> dict[str, Entry]:
    """The catalogue's entries by name (URLs with :data:`MIRROR_ENV` applied)."""
    data = load_yaml_file(CATALOG_FILE, "weights catalogue")
    base = (os.environ.get(MIRROR_ENV) or data["base_url"]).rstrip("/")
    out = {}
    for name, e in data["weights"].items():
        size = e.get("input_size")
        out[name] = Entry(name, e["file"], f"{base}/{e['file']}", e["arch"], e["dataset"], int(e["num_classes"]),
                          tuple(size) if size else None, e.get("sha256") or None, e.get("size") or None,
                          e.get("upstream", ""))
    return out


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/bisenet_ros/weights`` (``~/.cache/bisenet_ros/weights`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "bisenet_ros" / "weights"


def lookup(name: str) -> Entry | None:
    """The entry named ``name`` or whose upstream file name is ``name``."""
    entries = catalog()
    return entries.get(name) or next((e for e in entries.values() if e.file == name), None)


def cached(entry: Entry) -> Path | None:
    path = cache_dir() / entry.file
    return path if path.is_file() else None


def resolve_weights(value: str | os.PathLike | None) -> str | None:
    """``value`` itself unless it names a catalogue checkpoint that is not a file here; then the
    cached file, or :class:`WeightsError` saying how to download it."""
    if value is None or str(value) == "":
        return value
    text = str(value)
    if "/" in text or Path(text).expanduser().exists():
        return text
    entry = lookup(text)
    if entry is None:
        return text
    path = cached(entry)
    if path is None:
        raise WeightsError(f"weights '{text}' is the public checkpoint {entry.name}, not downloaded yet: "
                           f"run `bisenet-ros weights get {entry.name}`")
    return str(path)


# -- download ---------------------------------------------------------------------------------------
def _records() -> dict:
    try:
        return load_yaml_file(cache_dir() / RECORDS, "download records")
    except BisenetError:  # none yet, or unreadable: as before, nothing recorded
        return {}


def expected_checksum(entry: Entry, sha256: str | None = None) -> tuple[str | None, int | None, str]:
    """(sha256, size, where it comes from) a download of ``entry`` must match."""
    if sha256:
        return sha256.lower(), None, "given with --sha256"
    if entry.sha256:
        return entry.sha256.lower(), entry.size, "stated in the catalogue"
    rec = _records().get(entry.file)
    if isinstance(rec, dict) and rec.get("sha256"):
        return str(rec["sha256"]), rec.get("size"), f"recorded at the first download ({rec.get('downloaded', '?')})"
    return None, entry.size, "none published; recorded now (trust on first use)"


def _download(url: str, dest: Path, progress: Callable[[int, int | None], None] | None) -> tuple[str, int]:
    """Stream ``url`` into ``dest``: (sha256, bytes). Refuses a body shorter than announced."""
    digest, n = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 (http/https from the catalogue)
            total = resp.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            with open(dest, "wb") as f:
                while True:
                    block = resp.read(_CHUNK)
                    if not block:
                        break
                    f.write(block)
                    digest.update(block)
                    n += len(block)
                    if progress:
                        progress(n, total)
    except urllib.error.HTTPError as exc:
        raise WeightsError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:  # refused, reset, cut off
        reason = getattr(exc, "reason", None) or exc
        raise WeightsError(f"download of {url} failed: {one_line(reason) if isinstance(reason, BaseException) else reason}"
                           ) from None
    if total is not None and n != total:
        raise WeightsError(f"download of {url} is truncated: {n} of {total} bytes")
    if n == 0:
        raise WeightsError(f"download of {url} is empty")
    return digest.hexdigest(), n


def _check_loads(path: Path, entry: Entry) -> None:
    from .checkpoint import Checkpoint
    from .architectures import build_model

    try:
        fit = Checkpoint.read(path, entry.arch, entry.num_classes).fit(build_model(entry.arch, entry.num_classes))
        if fit.reinitialised:
            raise WeightsError(f"{len(fit.reinitialised)} class-dependent tensors do not fit")
    except BisenetError as exc:
        raise WeightsError(f"{entry.name}: the downloaded file is not a {entry.arch} checkpoint with "
                           f"{entry.num_classes} classes ({one_line(exc)})") from None


def sidecar(entry: Entry, url: str, sha256: str) -> dict:
    data = {"arch": entry.arch, "num_classes": entry.num_classes, "dataset": entry.dataset,
            "source": url, "sha256": sha256, "catalogue_name": entry.name}
    if entry.input_size:
        data["input_size"] = list(entry.input_size)
    return data


def fetch(name: str, *, url: str | None = None, sha256: str | None = None, force: bool = False,
          progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download, verify and cache the checkpoint ``name``; returns the cached file. A cached file
    is returned as is unless ``force``."""
    from .checkpoint import sidecar_path
    from ..output_files import atomic_file, write_text

    entry = lookup(name)
    if entry is None:
        raise WeightsError(f"unknown weights '{name}' (known: {', '.join(catalog())}; "
                           "`bisenet-ros weights list`)")
    if cached(entry) is not None and not force:
        return cached(entry)
    if sha256 is not None and (len(sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha256)):
        raise WeightsError(f"--sha256 must be 64 hex digits, got '{sha256}'")
    want, want_size, origin = expected_checksum(entry, sha256)
    url = url or entry.url
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the weights cache {folder} ({exc.strerror or exc})") from None
    target = folder / entry.file
    with atomic_file(target) as tmp:
        got, n = _download(url, tmp, progress)
        if want_size is not None and n != int(want_size):
            raise WeightsError(f"{entry.name}: {url} gave {n} bytes, expected {want_size} ({origin})")
        if want is not None and got != want:
            raise WeightsError(f"{entry.name}: sha256 mismatch for {url}: got {got}, expected {want} ({origin}); "
                               "nothing was cached")
        _check_loads(tmp, entry)
        write_text(sidecar_path(target, existing=False), yaml.safe_dump(sidecar(entry, url, got), sort_keys=False))
    _record(entry, url, got, n)
    return target


def _record(entry: Entry, url: str, sha256: str, size: int) -> None:
    from ..output_files import write_text

    records = _records()
    if entry.file in records:
        return
    records[entry.file] = {"sha256": sha256, "size": size, "url": url,
                           "downloaded": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    write_text(cache_dir() / RECORDS, yaml.safe_dump(records, sort_keys=True))
