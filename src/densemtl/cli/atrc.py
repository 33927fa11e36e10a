"""``densemtl-atrc``: ATRC genotype tools.

    densemtl-atrc vote run1/genotype.json run2/genotype.json ... --out voted.json
    densemtl-atrc importance run/checkpoints/last.ckpt --out importance/ [data.key=value ...]

``vote`` writes the per-block majority-vote genotype (a tie goes to the tied type first in
none, global, local, t_label, s_label) and prints the search's reliability: percentage
agreement (mean over run pairs of the fraction of blocks they agree on) and Light's κ (mean
pairwise Cohen's κ); the supplement reports 71.2 % and 0.48 for NYUD-v2, HRNet-18.
``importance`` shuffles each context block's source input across the images of each validation
batch and writes each block's drop of its target's primary metric (ATRC §4.4) as
``importance.json`` and a heat map ``importance.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def vote(paths: Sequence[str], out: str) -> str:
    """Vote over genotype files; write ``out``; the report text."""
    from densemtl.models.atrc.genotype import (
        agreement,
        lights_kappa,
        load_genotype,
        majority_vote,
        write_genotype,
    )

    first = json.loads(open(paths[0]).read())
    tasks = sorted(first) if isinstance(first, dict) else []
    genotypes = [load_genotype(p, tasks) for p in paths]
    voted = majority_vote(genotypes)
    path = write_genotype(voted, out)
    lines = [f"majority vote of {len(paths)} genotypes -> {path}"]
    lines += [f"  {t:<12} " + "  ".join(f"{s}:{k}" for s, k in row.items())
              for t, row in voted.items()]
    if len(genotypes) >= 2:
        lines.append(f"percentage agreement {100 * agreement(genotypes):.1f} %  "
                     f"Light's kappa {lights_kappa(genotypes):.3f}")
    return "\n".join(lines)


def importance(checkpoint: str, out: str, overrides: Sequence[str], batches: int | None) -> str:
    """Block importance of a trained ATRC checkpoint on its validation set; the report text."""
    import itertools

    from omegaconf import OmegaConf

    from densemtl.analysis.atrc_importance import block_importance, write_importance
    from densemtl.experiment import build_datamodule, load_module
    from densemtl.models.atrc import ATRCNet

    module = load_module(checkpoint)
    if not isinstance(module.net, ATRCNet):
        arch = module.hparams["config"]["model"].get("arch")
        raise ValueError(f"{checkpoint} is not an ATRC run (model.arch={arch!r})")
    cfg = OmegaConf.merge(OmegaConf.create(module.hparams["config"]),
                          OmegaConf.from_dotlist(list(overrides)))
    datamodule = build_datamodule(cfg, module.tasks)
    datamodule.prepare_data()
    datamodule.setup("validate")
    loader = datamodule.val_dataloader()
    result = block_importance(module.net, module.tasks, itertools.islice(loader, batches))
    paths = write_importance(result, out)
    lines = [f"{t:<10s} <- {s:<10s} {c['type']:<8s} {c['metric']} {c['base']:.4g} -> "
             f"{c['permuted']:.4g}  drop {c['drop_pct']:+.2f} %"
             for t, row in result.items() for s, c in row.items()]
    return "\n".join(lines + [f"Written: {', '.join(map(str, paths))}"])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="densemtl-atrc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_vote = sub.add_parser("vote", help="majority vote and reliability of searched genotypes")
    p_vote.add_argument("genotypes", nargs="+", help="genotype JSON files (one per search)")
    p_vote.add_argument("--out", required=True, help="where to write the voted genotype")
    p_imp = sub.add_parser("importance", help="block importance by permutation (ATRC §4.4)")
    p_imp.add_argument("checkpoint", help="an ATRC run's checkpoint (e.g. checkpoints/last.ckpt)")
    p_imp.add_argument("--out", required=True, help="directory for importance.json / .png")
    p_imp.add_argument("--batches", type=int, default=None, help="validation batches (all)")
    p_imp.add_argument("overrides", nargs="*", help="config overrides, e.g. data.batch_size=4")
    # overrides may follow the options (argparse alone would not take positionals after them)
    args, extra = parser.parse_known_args(argv)
    if extra and (args.command != "importance" or not all("=" in e for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "importance":
            overrides = [*args.overrides, *extra]
            print(importance(args.checkpoint, args.out, overrides, args.batches))
            return 0
        print(vote(args.genotypes, args.out))
    except (OSError, ValueError) as err:
        print(f"densemtl-atrc: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
