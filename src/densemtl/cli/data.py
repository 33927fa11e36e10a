"""``densemtl-data``: create datasets (``make synthetic``)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``densemtl-data``."""
    parser = argparse.ArgumentParser(prog="densemtl-data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make", help="render a dataset to disk")
    make.add_argument("dataset", choices=["synthetic"], help="which dataset to create")
    make.add_argument("--root", default="data_cache/synthetic", help="cache directory parent")
    make.add_argument("--n", type=int, default=2000, help="number of images")
    make.add_argument("--size", type=int, default=96, help="image side in pixels")
    make.add_argument("--seed", type=int, default=0, help="scene seed")
    make.add_argument("--extras", action="store_true", help="also the LSB extra tasks' labels")
    make.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    from densemtl.data.synthetic import write_cache

    if args.n <= 0 or args.size < 16:
        print(f"--n must be > 0 and --size >= 16 (got n={args.n}, size={args.size})", file=sys.stderr)
        return 2
    start = time.perf_counter()
    path = write_cache(args.root, n=args.n, size=args.size, seed=args.seed, extras=args.extras,
                       workers=args.workers)
    print(f"{args.n} images of {args.size}x{args.size} in {time.perf_counter() - start:.1f} s "
          f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
