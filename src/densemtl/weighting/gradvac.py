"""GradVac (Wang et al., "Gradient Vaccine", ICLR 2021): pairwise cosine targets kept as EMAs.

For each task i, in a random order of the other tasks j: if the cosine φ_ij between the
(already modified) g_i' and g_j is below the target φ̂_ij, add to g_i' the multiple of g_j that
lifts the cosine to exactly φ̂_ij,

    g_i' += g_j · ‖g_i'‖ (φ̂_ij √(1 − φ_ij²) − φ_ij √(1 − φ̂_ij²)) / (‖g_j‖ √(1 − φ̂_ij²)),

then φ̂_ij ← (1 − β) φ̂_ij + β φ_ij. The update is Σ_i g_i'. Every g_i' is Σ_k C_ik g_k, so
norms and inner products come from the Gram matrix (‖g_i'‖² = C_i G C_iᵀ). With φ̂ = 0 it is
PCGrad.

The paper sets the similarity targets per parameter group rather than for the whole model,
because gradient similarity differs between layers: ``granularity="tensor"`` (default) runs
the procedure on every shared tensor's own gradient block, with its own targets φ̂ (the same
random orders for all blocks in a step); ``"whole"`` on the concatenated shared gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from densemtl.weighting.base import BackwardFn, StepInputs, finite_option, register_weighting
from densemtl.weighting.gradient_based import GramStrategy, combine_backward, task_gradients

GRANULARITIES = ("tensor", "whole")


def gradvac_coefficients(gram: np.ndarray, targets: np.ndarray, orders: Sequence[Sequence[int]],
                         beta: float) -> tuple[np.ndarray, np.ndarray]:
    """(c with Σ c_t g_t = Σ_i g_i', the updated targets φ̂) for projection orders ``orders[i]``.

    ``gram`` is one T×T Gram matrix (then c has shape T) or a stack K×T×T, one per parameter
    group, solved together with the same orders (then c is K×T; ``targets`` has ``gram``'s
    shape). ``orders[i]`` lists the tasks j ≠ i in the order task i visits them. Tasks with a
    zero gradient (in a group) are neither corrected nor used as a direction there.
    """
    g = np.asarray(gram, dtype=np.float64)
    single = g.ndim == 2
    g = g[None] if single else g
    k, t, _ = g.shape
    phi_hat = np.array(targets, dtype=np.float64).reshape(g.shape)
    coef = np.repeat(np.eye(t)[None], k, axis=0)
    norms = np.sqrt(np.maximum(np.diagonal(g, axis1=1, axis2=2), 0.0))  # K × T
    for i in range(t):
        for j in orders[i]:
            cg = np.einsum("ks,ksr->kr", coef[:, i], g)  # (C_i G) per group
            norm_i = np.sqrt(np.maximum(np.einsum("kr,kr->k", cg, coef[:, i]), 0.0))
            active = (norm_i > 0) & (norms[:, j] > 0)
            phi = np.clip(cg[:, j] / np.where(active, norm_i * norms[:, j], 1.0), -1.0, 1.0)
            target = phi_hat[:, i, j]
            lift = active & (phi < target)
            root_hat = np.sqrt(np.maximum(1.0 - target**2, 0.0))
            step = norm_i * (target * np.sqrt(np.maximum(1.0 - phi**2, 0.0)) - phi * root_hat)
            coef[:, i, j] += np.where(lift, step / np.where(lift, norms[:, j] * root_hat, 1.0),
                                      0.0)
            phi_hat[:, i, j] = np.where(active, (1.0 - beta) * target + beta * phi, target)
    out = coef.sum(axis=1)
    return (out[0], phi_hat[0]) if single else (out, phi_hat)


@register_weighting
class GradVac(GramStrategy):
    """GradVac with EMA rate ``beta`` (paper: 0.01; LibMTL's default is 0.5), seeded orders.

    ``granularity``: ``tensor`` (default; one set of targets per shared tensor — per parameter
    tensor in ``space="parameters"``, LibMTL's ``all_matrix``; a layer's weight and bias are
    separate groups) or ``whole`` (one set for the concatenated gradient). With one input
    tensor (the usual ``space="representation"``) the two coincide. The logged weight of a task
    is its coefficient averaged over the groups, weighted by their sizes. The targets φ̂ (per
    group T×T, start 0) and the RNG are state: a resumed run continues exactly.
    """

    name = "gradvac"
    persistent_attrs = ("targets",)

    def __init__(self, tasks: Sequence[str], space: str | None = None, beta: float = 0.01,
                 seed: int = 0, granularity: str = "tensor") -> None:
        super().__init__(tasks, space)
        self.beta = finite_option(self.name, "beta", beta)
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"gradvac beta must be in [0, 1], got {beta}")
        if granularity not in GRANULARITIES:
            raise ValueError(f"gradvac granularity must be one of {GRANULARITIES}, "
                             f"got {granularity!r}")
        self.granularity = granularity
        #: φ̂ per parameter group (K × T × T as lists), created at the first step
        self.targets: list[list[list[float]]] = []
        self._seed(seed)

    def _orders(self) -> list[list[int]]:
        """Per task i, the other tasks in a fresh random order."""
        t = self.num_tasks
        orders = []
        for i in range(t):
            others = [j for j in range(t) if j != i]
            orders.append([others[k] for k in torch.randperm(t - 1, generator=self.generator)])
        return orders

    def _solve(self, grams: np.ndarray) -> np.ndarray:
        """K × T coefficients for the K×T×T group Grams; updates the targets."""
        if not self.targets:
            self.targets = np.zeros(grams.shape).tolist()
        if len(self.targets) != len(grams):
            raise ValueError(f"gradvac keeps targets for {len(self.targets)} parameter "
                             f"group(s) but got {len(grams)}: the shared inputs changed")
        coef, targets = gradvac_coefficients(grams, np.array(self.targets), self._orders(),
                                             self.beta)
        self.targets = targets.tolist()
        return coef

    def coefficients(self, gram: np.ndarray, losses: np.ndarray) -> np.ndarray:
        return self._solve(gram[None])[0]

    def _backward(self, losses: Tensor, index: list[int], inputs: StepInputs,
                  backward_fn: BackwardFn) -> tuple[Tensor, Tensor]:
        tensors, per_task = self._inputs(index, inputs)
        if self.granularity == "whole" or per_task or len(tensors) == 1:
            return super()._backward(losses, index, inputs, backward_fn)
        t = len(losses)
        present = [(x, g) for x, g in zip(tensors, task_gradients(losses, tensors), strict=True)
                   if g is not None]
        if not present:
            raise ValueError("no task loss depends on the given inputs (all gradients are None)")
        flats = [g.reshape(t, -1) for _, g in present]
        grams = torch.stack([(f @ f.T).double() for f in flats]).cpu().numpy()
        coef = torch.as_tensor(self._solve(grams), dtype=losses.dtype, device=losses.device)

        def corrections(delta: Tensor) -> list[tuple[Tensor, Tensor]]:
            return [(x, torch.tensordot(d.to(g.dtype), g, dims=1))
                    for (x, g), d in zip(present, delta, strict=True)]

        combine_backward(losses, coef, corrections, backward_fn, torch.ones_like(losses))
        sizes = torch.tensor([float(f.shape[1]) for f in flats], dtype=coef.dtype,
                             device=coef.device)
        weights = sizes @ coef / sizes.sum()
        return weights, (weights * losses).sum()
