"""ATRC block importance by permutation (ATRC §4.4): each context block's source input is
shuffled across the images of each evaluation batch (rolled by one along the batch axis, so
every image distils from another image's features; S-label blocks get the shuffled source's
region map too), and the target task's primary metric is measured again. The drop — relative,
in %, positive = worse — says how much the target relies on that block.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from densemtl.analysis.se_activations import evaluating
from densemtl.models.atrc import ATRCNet
from densemtl.tasks import Task

__all__ = ["block_importance", "plot_importance", "write_importance"]


def _roll_source(module: torch.nn.Module, args: tuple) -> tuple:
    target, source, regions = args
    regions = dict(regions)
    if regions.get("s_label") is not None:
        regions["s_label"] = regions["s_label"].roll(1, 0)
    return target, source.roll(1, 0), regions


def _score(net: ATRCNet, task: str, spec: Task, batches: list[Mapping[str, Tensor]],
           device: torch.device) -> dict[str, float]:
    metric = spec.make_metric().to(device)
    for batch in batches:
        batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        net.region_labels = batch if net.gt_regions else None
        metric.update(spec.decode(net(batch["image"], [task])[task]), batch[task])
    return {k: float(v) for k, v in metric.compute().items()}


def block_importance(net: ATRCNet, tasks: Mapping[str, Task],
                     batches: Iterable[Mapping[str, Tensor]]) -> dict[str, Any]:
    """``{target: {source: {"type", "metric", "base", "permuted", "drop_pct"}}}`` for every block
    that is not ``none`` (the search's current choice for a search net). Batches of one image
    (nothing to shuffle with) are left out of both measurements."""
    batches = [b for b in batches if b["image"].shape[0] >= 2]
    if not batches:
        raise ValueError("block importance needs evaluation batches of at least 2 images")
    device = next(net.parameters()).device
    genotype = net.current_genotype()
    out: dict[str, Any] = {}
    with evaluating(net):
        for t, spec in tasks.items():
            name, higher = next(iter(spec.primary_metrics.items()))
            base = _score(net, t, spec, batches, device)[name]
            out[t] = {}
            for s, kind in genotype[t].items():
                if kind == "none":
                    continue
                hook = net.heads[t].blocks[s].register_forward_pre_hook(_roll_source)
                try:
                    permuted = _score(net, t, spec, batches, device)[name]
                finally:
                    hook.remove()
                sign = 1.0 if higher else -1.0
                drop = sign * (base - permuted) / abs(base) * 100 if base else 0.0
                out[t][s] = {"type": kind, "metric": name, "base": base, "permuted": permuted,
                             "drop_pct": drop}
    return out


def plot_importance(result: Mapping[str, Any], path: str | Path) -> Path:
    """Heat map target × source of the metric drop (%), each cell labelled with its block type."""
    from matplotlib.figure import Figure

    targets = list(result)
    sources = sorted({s for row in result.values() for s in row} | set(targets),
                     key=lambda s: targets.index(s) if s in targets else len(targets))
    grid = np.full((len(targets), len(sources)), np.nan)
    fig = Figure(figsize=(1.4 * len(sources) + 2, 1.1 * len(targets) + 1.5))
    ax = fig.add_subplot()
    for i, t in enumerate(targets):
        for j, s in enumerate(sources):
            cell = result[t].get(s)
            if cell is None:
                ax.text(j, i, "none", ha="center", va="center", fontsize=8, color="grey")
                continue
            grid[i, j] = cell["drop_pct"]
            ax.text(j, i, f"{cell['type']}\n{cell['drop_pct']:+.1f} %", ha="center",
                    va="center", fontsize=8)
    limit = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_xticks(range(len(sources)), sources)
    ax.set_yticks(range(len(targets)), targets)
    ax.set_xlabel("source (shuffled input)")
    ax.set_ylabel("target")
    fig.colorbar(image, ax=ax, label="target metric drop (%)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def write_importance(result: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """``importance.json`` and ``importance.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "importance.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return [path, plot_importance(result, out_dir / "importance.png")]
