"""``densemtl-report``: aggregate finished runs into tables, plots and one HTML page.

    densemtl-report multirun/weighting_x_seeds/2025-01-01_12-00-00 --out report/
    densemtl-report outputs/run_a outputs/run_b --baselines single_task.json --delta-m drop
    densemtl-report outputs/run_a/wandb/offline-run-20250101_120000-abcd1234 --out report/
    densemtl-report ranks ...       (rank table, LSB supplement S-3: see its --help)
    densemtl-report gridsearch ...  (best loss weights of a grid sweep as a config file)

Inputs are sweep directories (every run below them), run directories (holding metrics.json) or
wandb offline run directories (the run directory that holds them). Runs differing only in the
seed are pooled (mean ± std). Δm is taken against the single-task runs among the inputs (same
dataset; their mean over seeds, or with --pair-seeds those of the run's seed) or the --baselines
file (a metrics.json or a JSON mapping task -> {metric: value}).
A run whose metrics.json is unreadable (truncated, not a densemtl result) is left out with a
warning naming the file (exit status 0); when no run is readable the status is 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``densemtl-report``."""
    parser = argparse.ArgumentParser(prog="densemtl-report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="sweep, run or wandb offline run directories")
    parser.add_argument("--out", required=True, help="directory for report.md/.html and plots")
    parser.add_argument("--baselines", default=None,
                        help="single-task results for Δm (default: single-task runs found)")
    parser.add_argument("--delta-m", choices=["gain", "drop"], default="gain",
                        help="Δm convention: gain (ATRC, higher is better) or drop (ASTMT)")
    parser.add_argument("--pair-seeds", action="store_true",
                        help="take each run's Δm against the single-task runs of its own seed "
                             "(default: their mean over seeds)")
    parser.add_argument("--title", default="densemtl report", help="report title")
    return parser


#: ``densemtl-report <name> ...`` hands the remaining arguments to ``<module>.main(argv)``
SUBCOMMANDS = {"ranks": "densemtl.report.ranks", "gridsearch": "densemtl.report.gridsearch"}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        return int(importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:]))
    args = build_parser().parse_args(argv)
    from densemtl.report import write_report

    try:
        files = write_report(args.paths, args.out, baselines=args.baselines,
                             convention=args.delta_m, title=args.title,
                             pair_seeds=args.pair_seeds)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"densemtl-report: {err}", file=sys.stderr)
        return 1
    for problem in files.skipped:
        print(f"densemtl-report: warning: left out {problem}", file=sys.stderr)
    print(files.overview)
    print(f"\nWritten: {files.markdown}\n         {files.html}\n         {files.summary}")
    for plot in files.plots:
        print(f"         {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
