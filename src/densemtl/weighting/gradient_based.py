"""Gradient-based strategies, all through one Gram -> coefficients -> combine path.

Every method's shared update is Σ_t c_t g_t with c a function of the T×T Gram matrix of the
task gradients g_t (``solvers.py``). ``GramStrategy`` computes the g_t w.r.t. some inputs in ONE
batched vector-Jacobian product (``is_grads_batched``; no Python loop of backward calls), forms
G, asks the subclass for c, and finishes with ONE ``backward_fn`` call. The inputs are either

* ``space="parameters"`` (exact): the shared parameters; the update c^T J lands in their
  ``.grad``;
* ``space="representation"`` ("upper bound", MGDA-UB): the shared representation z the task
  parts consumed; the batched VJP only runs through the task-specific parts, and the encoder
  receives Σ c_t ∂L_t/∂z through its single backward. When the trainer passes one tensor per
  task (``{task: z_t}``, each read only by its own task's part), the ∂L_t/∂z_t come from one
  plain backward of Σ L_t through the task parts instead: the batched VJP would run every
  task's part T times, which costs T× when the parts are whole decoders.

The single backward is of Σ_t h_t L_t + Σ_x ⟨x, stopgrad(Σ_t (c_t − h_t) g_t(x))⟩ over the
inputs x: task-specific parameters get Σ h_t ∇L_t (h = c, or 1 for methods that only alter the
shared update), and the inputs get exactly Σ c_t g_t. Going through ``backward_fn`` keeps AMP
loss scaling and DDP gradient hooks working.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from densemtl.weighting import solvers
from densemtl.weighting.base import (
    BackwardFn,
    Needs,
    StepInputs,
    WeightingStrategy,
    finite_option,
    register_weighting,
)

SPACES = ("parameters", "representation")


def _as_list(inputs: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """One tensor or a sequence of tensors, as a list."""
    return [inputs] if isinstance(inputs, Tensor) else list(inputs)


def task_gradients(losses: Tensor, inputs: Sequence[Tensor]) -> list[Tensor | None]:
    """∂L_t/∂x for every task t and input x, from one batched VJP: each ``T × x.shape``.

    Identity grad_outputs over the stacked losses; the graph is kept for the final backward.
    An input no loss depends on gives None.
    """
    eye = torch.eye(len(losses), device=losses.device, dtype=losses.dtype)
    return list(torch.autograd.grad(losses, list(inputs), grad_outputs=eye, retain_graph=True,
                                    is_grads_batched=True, allow_unused=True))


def gram_matrix(grads: Sequence[Tensor | None]) -> Tensor:
    """G = J Jᵀ in float64 over the flattened gradients (summed per input, no T×P concat)."""
    present = [g for g in grads if g is not None]
    if not present:
        raise ValueError("no task loss depends on the given inputs (all gradients are None)")
    t = present[0].shape[0]
    gram = torch.zeros(t, t, dtype=torch.float64, device=present[0].device)
    for g in present:
        flat = g.reshape(t, -1)
        gram += (flat @ flat.T).double()
    return gram


Corrections = Callable[[Tensor], list[tuple[Tensor, Tensor]]]
"""Maps δ = c − h to (input, gradient to add to that input) pairs."""


def shared_input_jacobian(losses: Tensor, inputs: Sequence[Tensor]) -> tuple[Tensor, Corrections]:
    """Gram matrix and corrections for inputs every task reads (one batched VJP)."""
    grads = task_gradients(losses, inputs)

    def corrections(delta: Tensor) -> list[tuple[Tensor, Tensor]]:
        return [(x, torch.tensordot(delta.to(g.dtype), g, dims=1))
                for x, g in zip(inputs, grads, strict=True) if g is not None]

    return gram_matrix(grads), corrections


def per_task_input_jacobian(losses: Tensor, inputs: Sequence[Tensor]
                            ) -> tuple[Tensor, Corrections]:
    """Gram matrix and corrections for one input per task (one plain backward of Σ L_t).

    Correct only when L_t depends on no other task's input (checked: distinct tensors of one
    shape; the dependency itself is the caller's contract).
    """
    shapes = {tuple(x.shape) for x in inputs}
    if len(shapes) != 1 or len({id(x) for x in inputs}) != len(inputs):
        raise ValueError(f"per-task representation tensors must be distinct and of one shape, "
                         f"got shapes {[tuple(x.shape) for x in inputs]}")
    grads = torch.autograd.grad(losses.sum(), list(inputs), retain_graph=True,
                                materialize_grads=True)
    stacked = torch.stack(grads)

    def corrections(delta: Tensor) -> list[tuple[Tensor, Tensor]]:
        return [(x, d * g) for x, d, g in zip(inputs, delta.to(stacked.dtype), grads,
                                              strict=True)]

    return gram_matrix([stacked]), corrections


def combine_backward(
    losses: Tensor,
    coefficients: Tensor,
    corrections: Corrections,
    backward_fn: BackwardFn,
    task_weights: Tensor | None = None,
    regulariser: Tensor | None = None,
) -> None:
    """One backward giving the inputs Σ c_t g_t and task-specific parts Σ h_t ∇L_t (h = c if None).

    With h ≠ c, the inputs' share Σ (c_t − h_t) g_t is added through the surrogate ⟨x, stopgrad⟩.
    ``regulariser`` (a term the inputs do not depend on, e.g. IMTL-L's −Σ s_t) is added.
    """
    if task_weights is None:
        backward_fn((coefficients * losses).sum())
        return
    objective = (task_weights * losses).sum()
    if regulariser is not None:
        objective = objective + regulariser
    for x, correction in corrections(coefficients - task_weights):
        objective = objective + (x * correction.detach()).sum()
    backward_fn(objective)


def flat_task_gradients(losses: Tensor, inputs: Sequence[Tensor]) -> Tensor:
    """The T × P matrix of per-task gradients over ``inputs`` (one batched VJP; zeros if unused).

    For strategies that need the gradient vectors themselves (running estimates, squares).
    """
    grads = task_gradients(losses, inputs)
    t = len(losses)
    return torch.cat([(torch.zeros((t, x.numel()), dtype=losses.dtype, device=losses.device)
                       if g is None else g.reshape(t, -1)) for x, g in zip(inputs, grads,
                                                                           strict=True)], dim=1)


def backward_with_update(objective: Tensor, inputs: Sequence[Tensor], current: Tensor,
                         update: Tensor, backward_fn: BackwardFn) -> None:
    """One backward of ``objective`` after which ``inputs`` hold ``update`` (flat, length P).

    ``current`` (flat) is the gradient ``objective`` itself gives the inputs; the difference is
    added through the surrogate ⟨x, stopgrad(update − current)⟩, so every other parameter keeps
    the gradient of ``objective``.
    """
    delta = (update - current).detach()
    offset = 0
    for x in inputs:
        n = x.numel()
        objective = objective + (x * delta[offset:offset + n].view_as(x).to(x.dtype)).sum()
        offset += n
    backward_fn(objective)


class SpaceStrategy(WeightingStrategy):
    """Base of the strategies that take task gradients w.r.t. the inputs of one ``space``
    (the shared parameters or the shared representation), as a Gram matrix."""

    #: default gradient space; MGDA-UB uses the representation, the rest the shared parameters.
    default_space: ClassVar[str] = "parameters"

    def __init__(self, tasks: Sequence[str], space: str | None = None) -> None:
        super().__init__(tasks)
        space = self.default_space if space is None else space
        if space not in SPACES:
            raise ValueError(f"{self.name} space must be one of {SPACES}, got {space!r}")
        self.space = space

    @property
    def needs(self) -> Needs:
        wrt = "shared_parameters" if self.space == "parameters" else "representation"
        return Needs(wrt=wrt, gradients="gram")

    def _inputs(self, index: list[int], inputs: StepInputs) -> tuple[list[Tensor], bool]:
        """The tensors of ``space`` in task order, and whether they are one per task."""
        given = inputs.shared_parameters if self.space == "parameters" else inputs.representation
        if given is None:
            key = "shared_parameters" if self.space == "parameters" else "representation"
            raise ValueError(f"{self.name} (space={self.space!r}) needs {key}= in backward()")
        per_task = isinstance(given, Mapping)
        if per_task:
            if self.space == "parameters" or set(given) != set(self.tasks):
                raise ValueError(f"{self.name}: a per-task dict is only for representation=, "
                                 f"with exactly the task keys {list(self.tasks)}")
            tensors = [given[self.tasks[i]] for i in index]
        else:
            tensors = _as_list(given)
        if not tensors or not all(x.requires_grad for x in tensors):
            raise ValueError(f"{self.name}: every {self.space} tensor must require grad")
        return tensors, per_task


class GramStrategy(SpaceStrategy):
    """Base of the Gram-matrix methods: subclasses only map (G, losses) to coefficients c."""

    #: True: task-specific parts get Σ c_t ∇L_t (MGDA, Nash-MTL reference code); False: Σ ∇L_t.
    scale_task_specific: ClassVar[bool] = False

    def _jacobian(self, losses: Tensor, index: list[int], inputs: StepInputs
                  ) -> tuple[Tensor, Corrections]:
        """Gram matrix and corrections w.r.t. the inputs of ``space``."""
        tensors, per_task = self._inputs(index, inputs)
        jacobian = per_task_input_jacobian if per_task else shared_input_jacobian
        return jacobian(losses, tensors)

    def _backward(
        self,
        losses: Tensor,
        index: list[int],
        inputs: StepInputs,
        backward_fn: BackwardFn,
    ) -> tuple[Tensor, Tensor]:
        factors, regulariser = self._loss_factors(index, losses)
        scaled = losses if factors is None else factors * losses
        gram, corrections = self._jacobian(scaled, index, inputs)
        g = gram.cpu().numpy()
        c = self.coefficients(g, losses.detach().double().cpu().numpy())
        shared = self.shared_coefficients(c, g)
        coef = torch.as_tensor(c, dtype=losses.dtype, device=losses.device)
        heads = coef if self.scale_task_specific else torch.ones_like(coef)
        if shared is not c:
            coef_shared = torch.as_tensor(shared, dtype=losses.dtype, device=losses.device)
        elif self.scale_task_specific and regulariser is None:
            coef_shared, heads = coef, None  # one plain backward of Σ c_t L_t
        else:
            coef_shared = coef
        combine_backward(scaled, coef_shared, corrections, backward_fn, heads, regulariser)
        weights = coef if factors is None else coef * factors.detach()
        return weights, (coef * scaled).sum()

    def _loss_factors(self, index: list[int], losses: Tensor
                      ) -> tuple[Tensor | None, Tensor | None]:
        """Factors f_t: gradients are taken of f_t L_t; and a term added to the objective.

        Default (None, None): the raw losses. IMTL-L: f = e^s, term −Σ s_t.
        """
        return None, None

    def shared_coefficients(self, coefficients: np.ndarray, gram: np.ndarray) -> np.ndarray:
        """The coefficients of the shared update (default: ``coefficients`` itself)."""
        return coefficients

    @abstractmethod
    def coefficients(self, gram: np.ndarray, losses: np.ndarray) -> np.ndarray:
        """c for the shared update Σ c_t g_t, from the float64 Gram matrix and raw losses."""


@register_weighting
class MGDA(GramStrategy):
    """MGDA (Sener & Koltun): the min-norm point of the task gradients' convex hull.

    ``space="representation"`` (default) is MGDA-UB. ``normalization``: none | l2 | loss | loss+
    (gradient t divided by n_t = 1, ‖g_t‖, L_t or L_t‖g_t‖ before the min-norm solve).
    ``normalised_update`` (default True): the whole update is the gradient of ONE objective,
    Σ (α_t/n_t) L_t — the shared part is the min-norm point of the normalised gradients and each
    task's own parameters get α_t/n_t ∇L_t, so shared and task-specific parameters descend the
    same scalarisation. (LibMTL leaves the task-specific parts unweighted; the official MGDA-UB
    code applies α_t to the raw losses everywhere.) False is the official code: c = α.
    """

    name = "mgda"
    default_space = "representation"
    scale_task_specific = True

    def __init__(self, tasks: Sequence[str], space: str | None = None,
                 normalization: str = "none", normalised_update: bool = True) -> None:
        super().__init__(tasks, space)
        solvers.mgda_coefficients(np.eye(1), np.ones(1), normalization)  # validates it now
        self.normalization = normalization
        self.normalised_update = bool(normalised_update)

    def coefficients(self, gram: np.ndarray, losses: np.ndarray) -> np.ndarray:
        return solvers.mgda_coefficients(gram, losses, self.normalization, self.normalised_update)


@register_weighting
class PCGrad(GramStrategy):
    """PCGrad (Yu et al.): project each gradient off the ones it conflicts with, in random order.

    The per-task random projection orders come from a seeded generator kept in the state.
    """

    name = "pcgrad"

    def __init__(self, tasks: Sequence[str], space: str | None = None, seed: int = 0) -> None:
        super().__init__(tasks, space)
        self._seed(seed)

    def coefficients(self, gram: np.ndarray, losses: np.ndarray) -> np.ndarray:
        t = self.num_tasks
        orders = np.stack([torch.randperm(t, generator=self.generator).numpy() for _ in range(t)])
        return solvers.pcgrad_coefficients(gram, orders)


@register_weighting
class CAGrad(GramStrategy):
    """CAGrad (Liu et al. 2021), c = 0.4; ``rescale``: none | 1+c^2 (reference default) | 1+c."""

    name = "cagrad"

    def __init__(self, tasks: Sequence[str], space: str | None = None, c: float = 0.4,
                 rescale: str = "1+c^2") -> None:
        super().__init__(tasks, space)
        solvers.cagrad_coefficients(np.eye(1), c, rescale)  # validates c and rescale now
        self.c = float(c)
        self.rescale = rescale

    def coefficients(self, gram: np.ndarray, losses: np.ndarray) -> np.ndarray:
        return solvers.cagrad_coefficients(gram, self.c, self.rescale)


IMTL_MODES = ("g", "l", "both")


@register_weighting
class IMTL(GramStrategy):
    """IMTL (Liu et al., ICLR 2021): ``mode`` g = IMTL-G, l = IMTL-L, both = the paper's IMTL.

    IMTL-G: the shared update has equal projections onto every unit task gradient. IMTL-L:
    every loss becomes e^{s_t} L_t − s_t with a learned scale s_t (init 0, the trainer's
    optimiser, no weight decay); its optimum e^{s_t} L_t = 1 balances the loss scales. ``both``
    runs IMTL-G on the scaled losses e^{s_t} L_t. The logged weight of task t is its coefficient
    on the raw loss (c_t e^{s_t}).
    """

    name = "imtl"

    def __init__(self, tasks: Sequence[str], space: str | None = None, mode: str = "g") -> None:
        super().__init__(tasks, space)
        if mode not in IMTL_MODES:
            raise ValueError(f"imtl mode must be one of {IMTL_MODES}, got {mode!r}")
        self.mode = mode
        if mode != "g":
            self.log_scales = nn.Parameter(torch.zeros(self.num_tasks))

    @property
    def needs(self) -> Needs:
        return Needs() if self.mode == "l" else super().needs

    def _backward(self, losses: Tensor, index: list[int], inputs: StepInputs,
                  backward_fn: BackwardFn) -> tuple[Tensor, Tensor]:
        if self.mode != "l":
            return super()._backward(losses, index, inputs, backward_fn)
        factors, regulariser = self._loss_factors(index, losses)
        total = (factors * losses).sum() + regulariser
        backward_fn(total)
        return factors.detach(), total

    def _loss_factors(self, index: list[int], losses: Tensor
                      ) -> tuple[Tensor | None, Tensor | None]:
        if self.mode == "g":
            return None, None
        s = self.log_scales[index].to(losses.dtype)
        return torch.exp(s), -s.sum()

    def coefficients(self, gram: np.ndarray, losses: np.ndarray) -> np.ndarray:
        return solvers.imtl_coefficients(gram)


@register_weighting
class NashMTL(GramStrategy):
    """Nash-MTL (Navon et al. 2022): α with α_i (Gα)_i = 1, applied to the losses as weights.

    ``max_norm`` (paper and official code: 1.0; None = off) clips the shared update Σ α_t g_t
    to that norm, as the official code clips the shared parameters' gradient; the norm comes
    from G (‖d‖² = αᵀGα, which the solution makes equal to T), so clipping costs nothing. In
    ``space="representation"`` it is the norm of the gradient handed to the encoder. The
    task-specific parts keep Σ α_t ∇L_t (the official code clips the shared parameters only).
    """

    name = "nash_mtl"
    scale_task_specific = True

    def __init__(self, tasks: Sequence[str], space: str | None = None,
                 max_norm: float | None = 1.0) -> None:
        super().__init__(tasks, space)
        if max_norm is not None and not finite_option(self.name, "max_norm", max_norm) > 0:
            raise ValueError(f"nash_mtl max_norm must be > 0 or null, got {max_norm}")
        self.max_norm = None if max_norm is None else float(max_norm)

    def coefficients(self, gram: np.ndarray, losses: np.ndarray) -> np.ndarray:
        return solvers.nash_mtl_coefficients(gram)

    def shared_coefficients(self, coefficients: np.ndarray, gram: np.ndarray) -> np.ndarray:
        norm = float(np.sqrt(max(coefficients @ gram @ coefficients, 0.0)))
        if self.max_norm is None or norm <= self.max_norm:
            return coefficients
        return coefficients * (self.max_norm / norm)


@register_weighting
class AlignedMTL(GramStrategy):
    """Aligned-MTL (Senushkin et al. 2023): sum of the eigen-aligned gradients (condition number 1).

    ``scale``: min (paper default) | median | rmse.
    """

    name = "aligned_mtl"

    def __init__(self, tasks: Sequence[str], space: str | None = None, scale: str = "min") -> None:
        super().__init__(tasks, space)
        solvers.aligned_mtl_matrix(np.eye(1), scale)  # validates scale now
        self.scale = scale

    def coefficients(self, gram: np.ndarray, losses: np.ndarray) -> np.ndarray:
        return solvers.aligned_mtl_coefficients(gram, self.scale)


@register_weighting
class GradNorm(WeightingStrategy):
    """GradNorm (Chen et al. 2018), α = 1.5, on the last shared layer's weights.

    Pass that layer's weight(s) as ``shared_parameters``. Only the Gram diagonal is needed:
    ‖∇_W w_t L_t‖ = w_t·n_t with n_t² = G_tt. The GradNorm loss Σ|w_t n_t − Ḡ r_t^α| (target
    held constant, as in the paper) has gradient sign(·)·n_t w.r.t. w_t; it is written into
    ``loss_weights.grad`` for the trainer's optimiser, and the network gets Σ w_t L_t. The
    weights are renormalised to sum K (floored at ``min_weight`` first) before each use.
    """

    name = "gradnorm"
    persistent_attrs = ("initial_losses",)

    def __init__(self, tasks: Sequence[str], alpha: float = 1.5, min_weight: float = 1e-6
                 ) -> None:
        super().__init__(tasks)
        if not min_weight > 0:
            raise ValueError(f"gradnorm min_weight must be > 0, got {min_weight}")
        self.alpha = finite_option(self.name, "alpha", alpha)
        self.min_weight = float(min_weight)
        self.loss_weights = nn.Parameter(torch.ones(self.num_tasks))
        self.initial_losses: list[float] | None = None

    @property
    def needs(self) -> Needs:
        return Needs(wrt="last_shared_parameters", gradients="gram")

    def _backward(
        self,
        losses: Tensor,
        index: list[int],
        inputs: StepInputs,
        backward_fn: BackwardFn,
    ) -> tuple[Tensor, Tensor]:
        shared_parameters = inputs.shared_parameters
        if shared_parameters is None:
            raise ValueError("gradnorm needs shared_parameters= (the last shared layer's weights)")
        with torch.no_grad():
            w = self.loss_weights.clamp_min(self.min_weight)
            self.loss_weights.copy_(self.num_tasks * w / w.sum())
        if isinstance(shared_parameters, Mapping):
            raise ValueError("gradnorm shared_parameters must be a tensor or a list of tensors")
        grads = task_gradients(losses, _as_list(shared_parameters))
        norms = gram_matrix(grads).diagonal().clamp_min(0).sqrt()
        raw = losses.detach().double()
        if self.initial_losses is None:
            self.initial_losses = raw.tolist()
        ratio = raw / torch.as_tensor(self.initial_losses, dtype=torch.float64, device=raw.device)
        inverse_rate = ratio / ratio.mean()
        weights = self.loss_weights.detach().to(norms)
        scaled = weights * norms
        target = scaled.mean() * inverse_rate**self.alpha
        grad = (torch.sign(scaled - target) * norms).to(self.loss_weights)
        if self.loss_weights.grad is None:
            self.loss_weights.grad = grad
        else:
            self.loss_weights.grad += grad
        task_weights = self.loss_weights.detach().to(losses.dtype)
        total = (task_weights * losses).sum()
        backward_fn(total)
        return task_weights, total


class SampledGramStrategy(SpaceStrategy):
    """Base of the double-sampling methods (MoDo, SDMGrad): three independent loss samples.

    Weights are updated from the cross Gram matrix A = J₁J₂ᵀ of two samples (an unbiased
    estimate of the true Gram, which J J ᵀ of one sample is not) and applied to the third, the
    step's own sample: every parameter gets Σ c_t ∇L_t of it, in one backward. The loops split
    the minibatch into three disjoint chunks (``needs.samples``). Parameter space only.
    """

    def __init__(self, tasks: Sequence[str], space: str | None = None) -> None:
        super().__init__(tasks, space)
        if self.space != "parameters":
            raise ValueError(f"{self.name} works in space='parameters' only (its samples are "
                             f"different minibatch chunks, so their representations differ)")

    @property
    def needs(self) -> Needs:
        return Needs(wrt="shared_parameters", gradients="gram", samples=3)

    def _backward(self, losses: Tensor, index: list[int], inputs: StepInputs,
                  backward_fn: BackwardFn) -> tuple[Tensor, Tensor]:
        tensors, _ = self._inputs(index, inputs)
        first, second = inputs.extra_losses
        t = len(losses)
        grads = task_gradients(torch.cat([first, second]), tensors)
        cross = torch.zeros(t, t, dtype=torch.float64, device=losses.device)
        for g in grads:
            if g is not None:
                flat = g.reshape(2 * t, -1)
                cross += (flat[:t] @ flat[t:].T).double()
        coef = torch.as_tensor(self.sample_coefficients(cross.cpu().numpy()),
                               dtype=losses.dtype, device=losses.device)
        total = (coef * losses).sum()
        backward_fn(total)
        return coef, total

    @abstractmethod
    def sample_coefficients(self, cross: np.ndarray) -> np.ndarray:
        """c for the step's sample, from the float64 cross Gram matrix A = J₁J₂ᵀ (updates state)."""
