"""FAMO (Liu et al., "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023).

O(1) per step: task logits ξ, z = softmax(ξ), and the objective Σ_t (z_t / c) log(L_t + ε),
c = Σ_t z_t / (L_t + ε), whose gradient Σ_t z_t / (c (L_t + ε)) ∇L_t decreases every log loss
at a balanced rate. After the optimiser step the same batch's new losses give the achieved
decrease δ_t = log(L_t + ε) − log(L_t' + ε), and ξ takes one Adam step (weight decay γ as L2)
on the gradient J_softmax(ξ)ᵀ δ — the official code's update. That needs the losses after the
step: ``needs.post_step_losses`` (one extra no-grad forward per step, as the official code).
``update="next_batch"`` instead takes the decrease against the next step's losses, measured on
the next batch before its update — no extra forward, at the price of batch-to-batch noise in δ
(the one-step-delayed form some reimplementations use).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from densemtl.weighting.base import Needs, finite_option, register_weighting
from densemtl.weighting.loss_based import LossWeighting

EPS = 1e-8


@register_weighting
class FAMO(LossWeighting):
    """FAMO with logit learning rate ``w_lr`` 0.025 and weight decay ``gamma`` 1e-3 (the paper's
    dense-prediction settings, LibMTL's defaults; the official class default γ is 0.01).

    Adam moments (β 0.9, 0.999, ε 1e-8, as ``torch.optim.Adam``), ξ and the step count are state.
    """

    name = "famo"
    accepts_task_subset = False
    persistent_attrs = ("adam_step", "step_losses")

    def __init__(self, tasks: Sequence[str], w_lr: float = 0.025, gamma: float = 1e-3,
                 update: str = "same_batch") -> None:
        super().__init__(tasks)
        if update not in ("same_batch", "next_batch"):
            raise ValueError(f"famo update must be 'same_batch' or 'next_batch', got {update!r}")
        self.update = update
        self.w_lr = finite_option(self.name, "w_lr", w_lr)
        self.gamma = finite_option(self.name, "gamma", gamma)
        if not self.w_lr > 0 or self.gamma < 0:
            raise ValueError(f"famo needs w_lr > 0 and gamma >= 0, got {w_lr}, {gamma}")
        for key in ("logits", "adam_m", "adam_v"):
            self.register_buffer(key, torch.zeros(self.num_tasks, dtype=torch.float64))
        self.adam_step = 0
        self.step_losses: list[float] | None = None

    @property
    def needs(self) -> Needs:
        return Needs(post_step_losses=self.update == "same_batch")

    def extra_parameters(self) -> list:
        return []  # ξ is updated by FAMO's own rule, not by the trainer's optimiser

    def objective(self, losses: Tensor, index: list[int]) -> tuple[Tensor, Tensor]:
        if self.update == "next_batch" and self.step_losses is not None:
            self._update_logits(losses.detach().double().cpu())  # the previous step's decrease
        z = torch.softmax(self.logits, 0).to(losses)
        shifted = losses + EPS
        c = (z / shifted.detach()).sum()
        self.step_losses = losses.detach().double().cpu().tolist()
        return (z / c * torch.log(shifted)).sum(), (z / (c * shifted)).detach()

    def after_step(self, losses: Mapping[str, Tensor]) -> None:
        """One Adam step of ξ on the achieved log-loss decrease of this step."""
        if self.step_losses is None:
            raise RuntimeError("famo.after_step called before backward")
        self._update_logits(torch.stack([losses[t].detach() for t in self.tasks]).double().cpu())

    def _update_logits(self, new: Tensor) -> None:
        """Adam step of ξ on δ = log(L + ε) − log(L' + ε), ``new`` = L' (float64, CPU)."""
        delta = torch.log(torch.tensor(self.step_losses, dtype=torch.float64) + EPS) - \
            torch.log(new + EPS)
        logits = self.logits.detach().cpu()
        z = torch.softmax(logits, 0)
        grad = z * (delta - z @ delta) + self.gamma * logits  # J_softmaxᵀ δ + L2 decay
        self.adam_step += 1
        m = 0.9 * self.adam_m.cpu() + 0.1 * grad
        v = 0.999 * self.adam_v.cpu() + 0.001 * grad**2
        m_hat, v_hat = m / (1 - 0.9**self.adam_step), v / (1 - 0.999**self.adam_step)
        self.logits.copy_(logits - self.w_lr * m_hat / (v_hat.sqrt() + 1e-8))
        self.adam_m.copy_(m)
        self.adam_v.copy_(v)
        self.step_losses = None
