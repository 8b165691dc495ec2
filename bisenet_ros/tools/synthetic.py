"""``python -m bisenet_ros.tools.synthetic``: write a synthetic street-scene folder dataset
(``images/`` + ``labels/`` PNGs) with :func:`bisenet_ros.data.synthetic_scenes.write_dataset`."""
from __future__ import annotations

import argparse
import sys

from ..data.synthetic_scenes import write_dataset
from .common import hw_type


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bisenet_ros.tools.synthetic",
                                description="write a synthetic street-scene folder dataset (images/ + labels/)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--count", type=int, default=100, help="number of scenes")
    p.add_argument("--seed", type=int, default=0, help="first scene seed (scene i uses seed+i)")
    p.add_argument("--size", type=hw_type(32), default=(240, 320), help="HxW (default 240x320)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (there is none anyway when stderr is not a terminal)")
    args = p.parse_args(argv)
    if args.count < 1:
        p.error("--count must be >= 1")
    write_dataset(args.out, args.count, args.seed, args.size, progress=not args.no_progress)
    print(f"wrote {args.count} scenes to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
