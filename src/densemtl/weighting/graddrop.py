"""GradDrop (Chen et al., "Just Pick a Sign: Gradient Sign Dropout", NeurIPS 2020).

At the shared representation z, per element: the positive sign purity
P = ½(1 + Σ_i ∇_z L_i / Σ_i |∇_z L_i|), a uniform draw U, and each task's gradient is kept where
(P > U and it is positive) or (P < U and it is negative), else dropped:
∇_z ← Σ_i (ℓ + (1 − ℓ) M_i) ∇_z L_i with leak ℓ. For a batched activation the paper's batch
extension first marginalises the batch, s_i = Σ_batch sign(z) ∘ ∇_z L_i, computes P and the
masks from s, and applies each mask to every sample (``marginalize_batch``); without it P is
computed per element of z. The task-specific parts get Σ ∇L_i unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from densemtl.weighting.base import (
    BackwardFn,
    Needs,
    StepInputs,
    WeightingStrategy,
    finite_option,
    register_weighting,
)
from densemtl.weighting.gradient_based import task_gradients


def graddrop_masks(signals: Tensor, uniform: Tensor) -> Tensor:
    """M (T × …, 0/1 in the signals' dtype) from the per-task signals (T × …) and U (…).

    Where every signal is zero P is ½ (nothing to pick from).
    """
    total = signals.abs().sum(0)
    purity = 0.5 * (1.0 + torch.where(total > 0, signals.sum(0) / total.clamp_min(1e-300),
                                      torch.zeros_like(total)))
    keep = ((purity > uniform) & (signals > 0)) | ((purity < uniform) & (signals < 0))
    return keep.to(signals.dtype)


@register_weighting
class GradDrop(WeightingStrategy):
    """GradDrop on the shared representation; ``leak`` ℓ (paper/LibMTL default 0), seeded U.

    ``representation`` is the shared tensor z, or a dict task -> z_t (each task's copy, same
    shape): then task t's mask applies to its own z_t.
    """

    name = "graddrop"

    def __init__(self, tasks: Sequence[str], leak: float = 0.0, marginalize_batch: bool = True,
                 seed: int = 0) -> None:
        super().__init__(tasks)
        self.leak = finite_option(self.name, "leak", leak)
        if not 0.0 <= self.leak <= 1.0:
            raise ValueError(f"graddrop leak must be in [0, 1], got {leak}")
        self.marginalize_batch = bool(marginalize_batch)
        self._seed(seed)

    @property
    def needs(self) -> Needs:
        return Needs(wrt="representation", gradients="matrix")

    def _backward(self, losses: Tensor, index: list[int], inputs: StepInputs,
                  backward_fn: BackwardFn) -> tuple[Tensor, Tensor]:
        rep = inputs.representation
        if isinstance(rep, Mapping):
            if set(rep) != set(self.tasks):
                raise ValueError(f"graddrop: a per-task representation needs exactly the task "
                                 f"keys {list(self.tasks)}")
            tensors = [rep[self.tasks[i]] for i in index]
            grads = torch.stack(torch.autograd.grad(losses.sum(), tensors, retain_graph=True,
                                                    materialize_grads=True))
            values = torch.stack(tensors)
        elif isinstance(rep, Tensor) and rep.requires_grad:
            tensors = [rep]
            (grads,) = task_gradients(losses, tensors)
            if grads is None:
                raise ValueError("graddrop: no task loss depends on the representation")
            values = rep.unsqueeze(0)
        else:
            raise ValueError("graddrop needs representation= (one tensor that requires grad, or "
                             "a dict task -> tensor) in backward()")
        if self.marginalize_batch:
            signals = (grads * values.sign()).sum(1, keepdim=True)
        else:
            signals = grads
        uniform = torch.rand(signals.shape[1:], generator=self.generator,
                             dtype=torch.float64).to(device=grads.device, dtype=grads.dtype)
        kept = grads * (self.leak + (1.0 - self.leak) * graddrop_masks(signals, uniform))
        objective = losses.sum()
        if len(tensors) == 1:
            pairs = [(tensors[0], kept.sum(0) - grads.sum(0))]
        else:
            pairs = list(zip(tensors, kept - grads, strict=True))
        for x, delta in pairs:
            objective = objective + (x * delta.detach()).sum()
        backward_fn(objective)
        return torch.ones_like(losses).detach(), losses.sum()
