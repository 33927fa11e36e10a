"""Loss-based strategies: the update is the backward of one weighted sum of the task losses.

fixed, equal, uncertainty (Kendall), DWA, GLS, RLW and LSB (SPEC §3). Weights that change per
epoch (DWA, LSB) are computed from the epoch-mean raw losses the base class accumulates.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from densemtl.weighting.base import (
    BackwardFn,
    StepInputs,
    WeightingStrategy,
    finite_option,
    register_weighting,
    task_vector,
)


class LossWeighting(WeightingStrategy):
    """A strategy whose objective is a function of the losses alone; one ``backward_fn`` call."""

    accepts_task_subset = True

    def _backward(
        self,
        losses: Tensor,
        index: list[int],
        inputs: StepInputs,
        backward_fn: BackwardFn,
    ) -> tuple[Tensor, Tensor]:
        total, weights = self.objective(losses, index)
        backward_fn(total)
        return weights, total

    @abstractmethod
    def objective(self, losses: Tensor, index: list[int]) -> tuple[Tensor, Tensor]:
        """(scalar objective on the graph, effective weights ∂objective/∂L_t) for these losses."""


class WeightVectorStrategy(LossWeighting):
    """Objective Σ w_t L_t with a constant weight vector that the strategy updates itself."""

    def objective(self, losses: Tensor, index: list[int]) -> tuple[Tensor, Tensor]:
        weights = self.current_weights().to(losses)[index]
        return (weights * losses).sum(), weights

    @abstractmethod
    def current_weights(self) -> Tensor:
        """The K weights of the next step (a constant: no gradient flows into them)."""


@register_weighting
class FixedWeighting(WeightVectorStrategy):
    """Fixed weights: the SPEC §1 defaults or a grid-search result (any non-negative vector)."""

    name = "fixed"

    def __init__(
        self, tasks: Sequence[str], weights: Sequence[float] | Mapping[str, float]
    ) -> None:
        super().__init__(tasks)
        self.register_buffer("weights", torch.tensor(task_vector(weights, self.tasks, "weights")))

    def current_weights(self) -> Tensor:
        return self.weights


@register_weighting
class EqualWeighting(WeightVectorStrategy):
    """Every weight 1: the plain sum of the losses."""

    name = "equal"

    def current_weights(self) -> Tensor:
        return torch.ones(self.num_tasks)


@register_weighting
class UncertaintyWeighting(LossWeighting):
    """Kendall et al.: Σ L_t / (2 e^{s_t}) + s_t / 2 with learned log-variances s (init −0.5).

    s lives in this module's parameters, so the trainer optimises it in its own group without
    weight decay. Minimising over s_t gives e^{s_t} = L_t: every weighted loss goes to ½.
    """

    name = "uncertainty"

    def __init__(self, tasks: Sequence[str], init: float = -0.5) -> None:
        super().__init__(tasks)
        init = finite_option(self.name, "init", init)
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), init))

    def objective(self, losses: Tensor, index: list[int]) -> tuple[Tensor, Tensor]:
        s = self.log_vars[index].to(losses.dtype)
        weights = 0.5 * torch.exp(-s)
        return (weights * losses + 0.5 * s).sum(), weights.detach()


@register_weighting
class DynamicWeightAverage(WeightVectorStrategy):
    """DWA (Liu et al.): w = K·softmax(r/T), r_k = L̄_k(e−1)/L̄_k(e−2); w = 1 in epochs 1 and 2."""

    name = "dwa"
    persistent_attrs = ("weights",)

    def __init__(self, tasks: Sequence[str], temperature: float = 2.0) -> None:
        super().__init__(tasks)
        if not temperature > 0:
            raise ValueError(f"dwa temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.weights: list[float] = [1.0] * self.num_tasks

    def current_weights(self) -> Tensor:
        return torch.tensor(self.weights)

    def _end_period(self, means: list[float]) -> None:
        if len(self.history) < 2:
            return
        prev, last = torch.tensor(self.history[-2]), torch.tensor(self.history[-1])
        _require_finite_positive(self.name, prev, self.tasks)
        _require_finite_positive(self.name, last, self.tasks)
        ratio = last / prev
        self.weights = (self.num_tasks * torch.softmax(ratio / self.temperature, 0)).tolist()


@register_weighting
class GeometricLossStrategy(LossWeighting):
    """GLS (Chennupati et al.): the objective is the geometric mean (Π L_t)^{1/K}.

    Its gradient is Σ (G / (K L_t)) ∇L_t, so the logged weight of task t is G/(K·L_t) and every
    loss scale equals G/K.
    """

    name = "gls"
    accepts_task_subset = False

    def objective(self, losses: Tensor, index: list[int]) -> tuple[Tensor, Tensor]:
        total = torch.exp(torch.log(losses).mean())
        return total, (total / (len(index) * losses)).detach()


@register_weighting
class RandomLossWeighting(WeightVectorStrategy):
    """RLW (Lin et al.): each step w = softmax(z), z ~ N(0, I), from a seeded generator (state)."""

    name = "rlw"
    accepts_task_subset = False

    def __init__(self, tasks: Sequence[str], seed: int = 0) -> None:
        super().__init__(tasks)
        self._seed(seed)

    def current_weights(self) -> Tensor:
        return torch.softmax(torch.randn(self.num_tasks, generator=self.generator,
                                         dtype=torch.float64), 0)


@register_weighting
class LossScaleBalancing(WeightVectorStrategy):
    """LSB (Lee, Lee & Kim; SPEC §3): weights frozen per period (epoch) that balance loss scales.

    Period 1: w = π. At the end of period p−1, with L̄ the period-mean raw losses:
    d_k = L̄_k(p−1)/L̄_k(p−2) (1 when p = 2), q_k = π_k d_k^β / Σ_j π_j d_j^β,
    w_k(p) = q_k·Z / L̄_k(p−1), so each loss scale w_k·L̄_k(p−1) is q_k·Z. Z is the previous
    period's weighted total Σ_k w_k(p−1)·L̄_k(p−1) (``z="previous_total"``) or 1 (``z="one"``).
    β is ``beta_init`` in period 1 and grows by ``beta_step`` at every period end, so period p
    uses β = beta_init + (p−1)·beta_step (supplement: Δβ 0.02 NYUv2+MobileNetV2, 0.05
    NYUv2+PNASNet, 0.5 Taskonomy).
    """

    name = "lsb"
    persistent_attrs = ("weights", "q", "beta", "z_value")

    def __init__(
        self,
        tasks: Sequence[str],
        priorities: Sequence[float] | Mapping[str, float] | None = None,
        beta_step: float = 0.02,
        beta_init: float = 0.0,
        z: str = "previous_total",
    ) -> None:
        super().__init__(tasks)
        k = self.num_tasks
        pi = [1.0 / k] * k if priorities is None else task_vector(priorities, self.tasks,
                                                                   "priorities")
        if z not in ("previous_total", "one"):
            raise ValueError(f"lsb z must be 'previous_total' or 'one', got {z!r}")
        self.priorities = pi
        self.beta_step = finite_option(self.name, "beta_step", beta_step)
        self.z_mode = z
        self.weights: list[float] = list(pi)
        self.q: list[float] = [p / sum(pi) for p in pi]
        self.beta = finite_option(self.name, "beta_init", beta_init)
        self.z_value = 1.0

    def current_weights(self) -> Tensor:
        return torch.tensor(self.weights)

    def _end_period(self, means: list[float]) -> None:
        last = torch.tensor(means, dtype=torch.float64)
        _require_finite_positive(self.name, last, self.tasks)
        if len(self.history) >= 2:
            difficulty = last / torch.tensor(self.history[-2], dtype=torch.float64)
        else:
            difficulty = torch.ones_like(last)
        self.beta += self.beta_step
        pi = torch.tensor(self.priorities, dtype=torch.float64)
        raw = pi * difficulty**self.beta
        q = raw / raw.sum()
        old = torch.tensor(self.weights, dtype=torch.float64)
        self.z_value = float((old * last).sum()) if self.z_mode == "previous_total" else 1.0
        self.q = q.tolist()
        self.weights = (q * self.z_value / last).tolist()


def _require_finite_positive(name: str, means: Tensor, tasks: Sequence[str]) -> None:
    """Epoch-mean losses must be finite and > 0 for ratio-based strategies (DWA, LSB)."""
    values = means.tolist()
    bad = [t for t, v in zip(tasks, values, strict=True) if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(f"{name}: the epoch-mean loss of task(s) {bad} is missing (no step this "
                         f"epoch), zero or not finite; ratios of epoch means need positive values")
