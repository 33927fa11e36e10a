"""``densemtl-data``: create datasets (``make synthetic``), pretrain a backbone on synthetic
scenes (``pretrain``), check real benchmark trees (``verify``), write tiny trees in their
published formats (``fixture``), fetch public archives (``download``)."""

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
    pre = sub.add_parser("pretrain", help="pretrain a backbone on synthetic scenes of another "
                                          "seed (class/part presence); writes its weights file")
    pre.add_argument("--backbone", default="seresnet26_cpu",
                     help="a conf/backbone file (an SE-ResNet), e.g. seresnet26_cpu")
    pre.add_argument("--out", default=None, help="weights file (default: data_cache/pretrained/"
                                                 "<backbone>-s<size>.pth)")
    pre.add_argument("--root", default="data_cache/synthetic", help="cache directory parent")
    pre.add_argument("--n", type=int, default=2000, help="number of pretraining images")
    pre.add_argument("--size", type=int, default=64, help="image side in pixels")
    pre.add_argument("--epochs", type=int, default=12, help="epochs over the images")
    pre.add_argument("--seed", type=int, default=None, help="scene seed (default: one no study "
                                                            "uses)")
    benchmarks = ["pascal_context", "nyud", "taskonomy", "fsv"]
    variants = ["npy_480x640", "png_425x560"]
    verify = sub.add_parser("verify", help="check a benchmark tree (exit 1: broken files, "
                                           "2: loadable but not the published size)")
    verify.add_argument("dataset", choices=benchmarks)
    verify.add_argument("root", help="the tree's root directory (e.g. .../PASCAL_MT)")
    verify.add_argument("--variant", choices=variants, default=None, help="NYUD variant")
    verify.add_argument("--subset", action="store_true",
                        help="a partial tree or fixture: do not compare with published counts")
    verify.add_argument("--no-progress", action="store_true", help="no progress bar")
    verify.add_argument("--cache-dir", default=None,
                        help="cache directory (default: the one training uses, "
                             "$XDG_CACHE_HOME/densemtl/<dataset>-<hash>)")
    fixture = sub.add_parser("fixture", help="write a tiny tree in the published format")
    fixture.add_argument("dataset", choices=benchmarks)
    fixture.add_argument("dir", help="directory to write the tree into")
    fixture.add_argument("--variant", choices=variants, default=None, help="NYUD variant")
    download = sub.add_parser("download", help="fetch and safely extract a public archive")
    download.add_argument("dataset", choices=benchmarks)
    download.add_argument("dir", help="directory to download and extract into")
    download.add_argument("--sha256", default=None, help="expected SHA-256 of the archive")
    return parser


def _variant_kwargs(args: argparse.Namespace) -> dict:
    """``--variant`` as loader / fixture keyword (only NYUD has variants)."""
    if args.variant is None:
        return {}
    if args.dataset != "nyud":
        raise SystemExit(f"--variant applies to nyud only, not {args.dataset}")
    return {"variant": args.variant}


def run_benchmark_command(args: argparse.Namespace) -> int:
    """``verify`` / ``fixture`` / ``download``; returns the exit status."""
    if args.command == "verify":
        from densemtl.data.verify import format_report, verify_tree

        report = verify_tree(args.dataset, args.root, subset=args.subset,
                             progress=not args.no_progress, cache_dir=args.cache_dir,
                             **_variant_kwargs(args))
        print(format_report(report))
        return report.exit_status
    if args.command == "fixture":
        from densemtl.data.verify import write_fixture

        print(f"fixture tree -> {write_fixture(args.dataset, args.dir, **_variant_kwargs(args))}")
        return 0
    from densemtl.data.download import download

    try:
        root = download(args.dataset, args.dir, sha256=args.sha256)
    except (KeyError, ValueError) as err:
        print(f"download failed: {err}", file=sys.stderr)
        return 1
    print(f"extracted -> {root}; check it with `densemtl-data verify {args.dataset} {root}`")
    return 0


def run_pretrain(args: argparse.Namespace) -> int:
    """``pretrain``: the backbone of ``conf/backbone/<name>.yaml`` on synthetic scenes."""
    from omegaconf import OmegaConf

    from densemtl.config import conf_dir
    from densemtl.training.pretrain import PRETRAIN_SEED, pretrain_backbone

    spec = conf_dir() / "backbone" / f"{args.backbone}.yaml"
    if not spec.is_file():
        names = sorted(p.stem for p in spec.parent.glob("*.yaml"))
        print(f"--backbone {args.backbone}: no {spec}; one of {', '.join(names)}",
              file=sys.stderr)
        return 2
    out = args.out or f"data_cache/pretrained/{args.backbone}-s{args.size}.pth"
    try:
        record = pretrain_backbone(OmegaConf.to_container(OmegaConf.load(spec)), out, args.root,
                                   n=args.n, size=args.size, epochs=args.epochs,
                                   seed=PRETRAIN_SEED if args.seed is None else args.seed)
    except ValueError as err:
        print(f"densemtl-data pretrain: {err}", file=sys.stderr)
        return 2
    print(f"pretrained {args.backbone} in {record['seconds']} s: held-out presence accuracy "
          f"{record['val_accuracy']:.3f} (majority answer {record['val_majority_accuracy']:.3f})"
          f" -> {out}\nuse it with: densemtl-train backbone={args.backbone} "
          f"backbone.pretrained_path={out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "pretrain":
        return run_pretrain(args)
    if args.command != "make":
        return run_benchmark_command(args)
    from densemtl.data.synthetic import write_cache

    if args.n <= 0 or args.size < 16:
        print(f"--n must be > 0 and --size >= 16 (got n={args.n}, size={args.size})",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    path = write_cache(args.root, n=args.n, size=args.size, seed=args.seed, extras=args.extras,
                       workers=args.workers)
    print(f"{args.n} images of {args.size}x{args.size} in {time.perf_counter() - start:.1f} s "
          f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
