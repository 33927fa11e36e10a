"""``densemtl-resources``: parameters and multiply-adds of a model config; Δm-vs-cost plots.

    densemtl-resources model=astmt modulation=se_decoder backbone=seresnet50 --size 512
    densemtl-resources --plot fig5.png outputs/run_a outputs/run_b ...
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="densemtl-resources", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("items", nargs="*",
                        help="Hydra overrides of conf/train.yaml, or run directories with --plot")
    parser.add_argument("--size", type=int, default=512, help="inference image side (pixels)")
    parser.add_argument("--plot", metavar="PNG", help="plot Δm vs resources of the given runs")
    args = parser.parse_args(argv)

    from densemtl import resources

    if args.plot:
        if not args.items:
            parser.error("--plot needs run directories")
        print(resources.plot_delta_m(args.items, args.plot))
        return 0
    from densemtl.config import compose
    from densemtl.experiment import build_net, build_tasks

    cfg = compose(args.items)
    tasks = build_tasks(cfg)
    net = build_net(cfg, tasks)
    print(resources.format_report(resources.resource_report(net, list(tasks), args.size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
