"""ATRC training: the fixed-genotype loop (retraining, fixed-type rows, baselines) and the
context-type search (supplement §A; SPEC §4).

Both add the auxiliary label heads' cross-entropy to each task's loss, so it is weighted by the
task's own loss weight (under the default fixed weighting, exactly the supplement's ω_n); the
auxiliary heads read detached backbone features, so this term trains only them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from densemtl.models.atrc.genotype import write_genotype
from densemtl.models.atrc.labels import NormalsCodebook
from densemtl.training.joint import JointModule
from densemtl.training.optim import build_optimizer, build_schedule

__all__ = ["SEARCH_DEFAULTS", "ATRCModule", "ATRCSearchModule", "linear_schedule"]

#: supplement §A / SPEC §4 (``fix_on``/``fix_strict``: paper "the difference between the two
#: largest values of α_j exceeds 0.3"; the reference code tests softmax(α) with ≥)
SEARCH_DEFAULTS: dict[str, Any] = dict(
    temperature=(1.0, 0.05),
    entropy_weight=(-0.02, 0.06),
    alpha_lr=5e-4,
    fix_threshold=0.3,
    fix_on="alpha",
    fix_strict=True,
    grad_clip=10.0,
)


def linear_schedule(start: float, end: float, progress: float) -> float:
    """start + (end − start)·progress, progress clamped to [0, 1]."""
    p = min(max(float(progress), 0.0), 1.0)
    return start + (end - start) * p


class ATRCModule(JointModule):
    """Joint training of an ``ATRCNet`` with its auxiliary losses.

    ``codebook_batches``: training batches whose valid normals fit the normals codebook by
    k-means before the first step (skipped once fitted, e.g. on resume).
    """

    def __init__(self, *args: Any, codebook_batches: int = 20, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.codebook_batches = int(codebook_batches)

    # -- normals codebook -------------------------------------------------------------------
    def on_fit_start(self) -> None:
        spaces = [s for s in self.net.label_spaces.values()
                  if isinstance(s, NormalsCodebook) and not bool(s.fitted)]
        if not spaces:
            return
        task = next(t for t, s in self.net.label_spaces.items() if s is spaces[0])
        if self.trainer.is_global_zero:
            samples = []
            for i, batch in enumerate(self.trainer.datamodule.train_dataloader()):
                if i >= self.codebook_batches:
                    break
                n = batch[task].permute(0, 2, 3, 1).reshape(-1, 3)
                samples.append(n[(n != 0).any(1)])
            normals = torch.cat(samples)
            keep = torch.randperm(normals.shape[0], generator=torch.Generator().manual_seed(0))
            spaces[0].fit(normals[keep[:200_000]])
        spaces[0].codebook.copy_(self.trainer.strategy.broadcast(spaces[0].codebook.cpu(), 0))
        spaces[0].fitted.fill_(True)

    # -- losses ---------------------------------------------------------------------------------
    def auxiliary_losses(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Cross-entropy of each auxiliary head (upsampled to the label size) against its label."""
        out = {}
        for t, logits in self.net.aux_logits.items():
            size = batch[t].shape[-2:]
            up = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            out[t] = self.net.label_spaces[t].loss(up, batch[t])
        return out

    def task_losses(self, preds: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> dict:
        """Each task's loss plus its auxiliary head's cross-entropy (when it has one)."""
        losses = super().task_losses(preds, batch)
        for t, aux in self.auxiliary_losses(batch).items():
            if t in losses:
                self.log(f"train/aux_loss/{t}", aux.detach(), on_step=False, on_epoch=True)
                losses[t] = losses[t] + aux
        return losses

    def _set_region_labels(self, batch: Mapping[str, Tensor]) -> None:
        self.net.region_labels = batch if self.net.gt_regions else None

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor | None:
        self._set_region_labels(batch)
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._set_region_labels(batch)
        super().validation_step(batch, batch_idx)
        self.net.region_labels = None

    def on_train_batch_end(self, *args: Any) -> None:
        self.net.region_labels = None  # the batch's labels never leak into a later forward

    def param_groups(self) -> list[dict]:
        """The network's weights (never the search's α) and the weighting's parameters."""
        return [
            {"name": "net", "params": self.net.weight_parameters()},
            {"name": "weighting", "params": self.weighting.extra_parameters(), "weight_decay": 0.0},
        ]


class ATRCSearchModule(ATRCModule):
    """The context-type search: single-level, manual optimisation.

    Each step: τ and the entropy weight ω_H follow their linear schedules in training progress;
    loss = weighted task (+ auxiliary) losses + ω_H · mean over blocks of H(softmax α); one
    backward; the weights' gradient norm clipped to ``grad_clip`` (Lightning forbids
    ``gradient_clip_val`` under manual optimisation); SGD (the run's optimiser, poly) on the
    weights and Adam (``alpha_lr``, no decay, constant) on α from the same batch; then every
    open block whose top-2 gap passes ``fix_threshold`` is fixed for good. At the end of fit the
    genotype of the fixed choices (argmax α for blocks never fixed) goes to ``genotype.json`` in
    the run directory, with α, the fixing steps and the curves in ``search.json``.
    """

    def __init__(self, *args: Any, search: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.net.searching:
            raise ValueError("the ATRC search needs model.genotype=null (every block searched)")
        unknown = sorted(set(search or {}) - set(SEARCH_DEFAULTS))
        if unknown:
            raise ValueError(f"model.search has unknown keys {unknown}; known: "
                             f"{sorted(SEARCH_DEFAULTS)}")
        self.search = {**SEARCH_DEFAULTS, **dict(search or {})}
        if self.search["fix_on"] not in ("alpha", "softmax"):
            raise ValueError(f"model.search.fix_on={self.search['fix_on']!r}: alpha or softmax")
        self.automatic_optimization = False
        self.fixed_at: dict[str, int] = {}
        self.history: list[dict[str, float]] = []

    def configure_optimizers(self):
        weights = build_optimizer(self.optimizer_cfg, self.param_groups())
        alpha = torch.optim.Adam(self.net.architecture_parameters(), lr=self.search["alpha_lr"],
                                 weight_decay=0.0)
        schedule = build_schedule(self.optimizer_cfg, weights, self.total_iterations())
        return [weights, alpha], [{"scheduler": schedule, "interval": "step"}]

    def search_state(self) -> tuple[float, float]:
        """(τ, ω_H) at the current progress."""
        p = self.progress()
        return (linear_schedule(*self.search["temperature"], p),
                linear_schedule(*self.search["entropy_weight"], p))

    def mean_entropy(self) -> Tensor:
        """Mean over all blocks of H(softmax α) (fixed blocks count 0)."""
        return torch.stack([b.entropy() for _, _, b in self.net.search_blocks()]).mean()

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        tau, w_entropy = self.search_state()
        for _, _, block in self.net.search_blocks():
            block.temperature = tau
        self._set_region_labels(batch)
        preds = self.net(batch["image"], self.task_names)
        losses = self.task_losses(preds, batch)
        if not self.losses_finite(losses):
            return
        entropy = self.mean_entropy()
        opt_w, opt_a = self.optimizers()
        opt_w.zero_grad()
        opt_a.zero_grad()
        self.weighted_backward(
            losses, lambda total: self.manual_backward(total + w_entropy * entropy)
        )
        clip = float(self.search["grad_clip"])
        torch.nn.utils.clip_grad_norm_(self.net.weight_parameters(), clip)
        opt_w.step()
        # the raw optimiser: Lightning counts wrapped steps, and global_step stays one per batch
        opt_a.optimizer.step()
        self.lr_schedulers().step()
        self.fix_blocks()
        n_fixed = sum(b.is_fixed for _, _, b in self.net.search_blocks())
        self.log_dict({"search/temperature": tau, "search/entropy_weight": w_entropy,
                       "search/entropy": entropy.detach(), "search/fixed": float(n_fixed)},
                      on_step=True, on_epoch=False)
        self.history.append({"step": self.global_step, "temperature": tau,
                             "entropy_weight": w_entropy, "entropy": float(entropy.detach()),
                             "fixed": n_fixed})

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """Lightning's plain backward (``manual_backward`` calls this hook; the joint loop's
        override expects its automatic-optimisation bookkeeping)."""
        pl.LightningModule.backward(self, loss, *args, **kwargs)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["atrc_search"] = {"history": list(self.history), "fixed_at": dict(self.fixed_at)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A resumed search continues its ``search.json`` history and fixing steps."""
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("atrc_search", {})
        self.history = list(state.get("history", []))
        self.fixed_at = dict(state.get("fixed_at", {}))

    def fix_blocks(self) -> list[str]:
        """Fix every open block whose top-2 gap passes the threshold; the newly fixed names."""
        newly = []
        for t, s, block in self.net.search_blocks():
            if block.try_fix(self.search["fix_threshold"], self.search["fix_on"],
                             bool(self.search["fix_strict"])):
                self.fixed_at[f"{t}<-{s}"] = self.global_step
                newly.append(f"{t}<-{s}")
        return newly

    def on_fit_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        out = Path(self.trainer.default_root_dir)
        write_genotype(self.net.current_genotype(), out / "genotype.json")
        blocks = {
            f"{t}<-{s}": {"candidates": list(b.candidates),
                          "softmax_alpha": b.alpha.detach().softmax(0).tolist(),
                          "fixed": b.choice() if b.is_fixed else None,
                          "fixed_at_step": self.fixed_at.get(f"{t}<-{s}")}
            for t, s, b in self.net.search_blocks()
        }
        (out / "search.json").write_text(json.dumps(
            {"blocks": blocks, "history": self.history, "settings": self.search}, indent=1))
