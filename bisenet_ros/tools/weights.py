"""``bisenet-ros weights list|get NAME``: the public CoinCheung/BiSeNet checkpoints by name.

``get`` downloads one into the cache (``$XDG_CACHE_HOME/bisenet_ros/weights``), verifies it (see
:mod:`bisenet_ros.models.weights_catalog`) and writes its sidecar; afterwards ``--weights NAME`` (every
tool) and ``-p weights:=NAME`` (the node) use it.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError
from ..models.weights_catalog import MIRROR_ENV, cache_dir, cached, catalog, expected_checksum, fetch

HELP = "list and download the public BiSeNet checkpoints by name (then --weights NAME)"
EXAMPLES = f"""\
  bisenet-ros weights list
  bisenet-ros weights get bisenetv2-cityscapes
  bisenet-ros segment street.jpg --weights bisenetv2-cityscapes --out out/
  bisenet-ros weights get bisenetv2-cityscapes --url https://mirror.example/model_final_v2_city.pth
  {MIRROR_ENV}=https://mirror.example/bisenet bisenet-ros weights get bisenetv1-ade20k
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "get"), help="list the names, or download one")
    parser.add_argument("name", nargs="?", default=None, help="the checkpoint to get (see 'list')")
    parser.add_argument("--url", default=None,
                        help=f"download from this URL instead (a mirror; default: the catalogue's, or ${MIRROR_ENV})")
    parser.add_argument("--sha256", default=None, metavar="HEX",
                        help="require this checksum (default: the catalogue's, else the one recorded at the "
                             "first download)")
    parser.add_argument("--force", action="store_true", help="download again although the file is cached")
    parser.add_argument("--no-progress", action="store_true", help="no download progress on stderr")


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        if args.name or args.url or args.sha256 or args.force:
            raise ConfigError("'weights list' takes no name or download options")
        return _list()
    if not args.name:
        raise ConfigError("'weights get' needs a NAME (see 'bisenet-ros weights list')")
    progress = None if args.no_progress or not sys.stderr.isatty() else _progress
    path = fetch(args.name, url=args.url, sha256=args.sha256, force=args.force, progress=progress)
    if progress:
        print(file=sys.stderr)
    print(f"{args.name}: {path} (sidecar {path.with_suffix('.yaml').name}); use --weights {args.name}")
    return 0


def _progress(n: int, total: int | None) -> None:
    done = f"{n / 1e6:.1f} MB" + (f" of {total / 1e6:.1f} MB" if total else "")
    print(f"\r  {done}", end="", file=sys.stderr, flush=True)


def _list() -> int:
    print(f"cache: {cache_dir()}")
    print(f"{'name':<22} {'arch':<10} {'dataset':<10} {'classes':>7}  {'sha256':<26} cached")
    for name, entry in catalog().items():
        sha, _, origin = expected_checksum(entry)
        if sha is None:
            check = "none published"
        elif origin.startswith("recorded"):
            check = f"{sha[:12]}.. (recorded)"
        else:
            check = f"{sha[:12]}.. (official)"
        path = cached(entry)
        print(f"{name:<22} {entry.arch:<10} {entry.dataset:<10} {entry.num_classes:>7}  {check:<26} "
              f"{path if path else 'no'}")
    print("source: github.com/CoinCheung/BiSeNet release 0.0.0. Upstream publishes no checksums: the first "
          "download's sha256 and size are recorded (checksums.yaml in the cache) and later downloads must match.")
    return 0
