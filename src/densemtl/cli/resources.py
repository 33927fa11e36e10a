"""``densemtl-resources``: parameters and multiply-adds of a model config; Δm-vs-cost plots.

    densemtl-resources model=astmt modulation=se_decoder backbone=seresnet50 --size 512
    densemtl-resources --plot fig5.png multirun/astmt_ablation/<date_time>
    densemtl-resources --plot fig5.png outputs/run_a outputs/run_b --baselines st.json

With --plot the inputs are read as by densemtl-report (sweep, run or wandb offline run
directories; runs differing only in the seed pooled) and Δm is taken the same way: against
--baselines, else the single-task runs among the inputs (same dataset), else the Δm a run stored.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def plot(paths: Sequence[str], png: str, baselines: str | None, convention: str) -> str:
    """Draw the Δm-vs-cost figure of the runs under ``paths``; returns the PNG's path."""
    from densemtl.report import load_groups
    from densemtl.report.plots import plot_delta_m_resources

    groups = load_groups(paths, baselines)
    out = plot_delta_m_resources(groups, png, convention)
    if out is None:
        multi = [g.label for g in groups if len(g.tasks) > 1]
        raise ValueError(
            f"no Δm for the multi-task configurations {multi or '(none found)'}: the inputs hold "
            "no single-task run of each of their tasks (same dataset) and no run was trained "
            "with baselines=; pass --baselines <metrics.json or JSON task -> {metric: value}>"
        )
    return str(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="densemtl-resources", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("items", nargs="*",
                        help="Hydra overrides of conf/train.yaml, or run/sweep directories with "
                             "--plot")
    parser.add_argument("--size", type=int, default=512, help="inference image side (pixels)")
    parser.add_argument("--plot", metavar="PNG", help="plot Δm vs resources of the given runs")
    parser.add_argument("--baselines", default=None,
                        help="with --plot: single-task results for Δm (default: the single-task "
                             "runs found)")
    parser.add_argument("--delta-m", choices=["gain", "drop"], default="drop",
                        help="with --plot: Δm convention (drop: ASTMT Fig. 5, lower is better)")
    args = parser.parse_args(argv)

    if args.plot:
        if not args.items:
            parser.error("--plot needs sweep or run directories")
        try:
            print(plot(args.items, args.plot, args.baselines, args.delta_m))
        except (FileNotFoundError, KeyError, ValueError) as err:
            print(f"densemtl-resources: {err}", file=sys.stderr)
            return 1
        return 0
    from densemtl import resources
    from densemtl.config import compose
    from densemtl.experiment import build_net, build_tasks

    cfg = compose(args.items)
    tasks = build_tasks(cfg)
    net = build_net(cfg, tasks)
    print(resources.format_report(resources.resource_report(net, list(tasks), args.size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
