"""The weighting interface: one ``nn.Module`` per strategy, a registry, input checks.

A strategy owns everything that decides how per-task losses become one update: it receives the
losses still on the graph, performs the backward itself (through the trainer's ``backward_fn``,
e.g. Lightning's ``manual_backward``), records what weights it used, and keeps its whole state
(loss history, learned parameters, RNG) in ``state_dict`` so a resumed run continues exactly.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from densemtl.registry import Registry

BackwardFn = Callable[[Tensor], Any]
"""Runs the backward of one scalar (``Tensor.backward`` or Lightning's ``manual_backward``)."""

Inputs = Tensor | Sequence[Tensor] | Mapping[str, Tensor]
"""Shared parameters, or the shared representation tensor(s) the task-specific parts consumed.

A mapping task -> tensor (representation only) names the input each task's part consumed, one
distinct tensor per task (e.g. ``z.clone()`` per decoder, or ASTMT's ``net.features[task]``):
then all ∂L_t/∂z_t come from ONE ordinary backward through the task parts.
"""


#: what a strategy's gradients are taken with respect to (``Needs.wrt``).
WRT = ("shared_parameters", "last_shared_parameters", "representation")
#: what a strategy computes from those gradients (``Needs.gradients``).
GRADIENTS = ("none", "gram", "matrix")


@dataclass(frozen=True)
class Needs:
    """What ``backward`` needs besides the task losses; the training loops provide exactly this.

    ``wrt``: the tensors gradients are taken w.r.t. — the net's ``shared_parameters()``, its
    ``last_shared_parameters()`` (GradNorm's W) or its ``shared_representation`` — or None for
    a strategy of the loss values alone. ``gradients``: what it forms from them — the T×T Gram
    matrix only, or the per-task gradient ``matrix`` itself (signs, running estimates, squares).
    ``samples``: independent loss samples per step (MoDo, SDMGrad draw three); the loops split
    the minibatch into that many disjoint chunks and pass the others as ``extra_losses``.
    ``post_step_losses``: the losses on the same batch after the optimiser step (FAMO), given
    to ``after_step``.
    """

    wrt: str | None = None
    gradients: str = "none"
    samples: int = 1
    post_step_losses: bool = False

    def __post_init__(self) -> None:
        if self.wrt not in (None, *WRT) or self.gradients not in GRADIENTS or self.samples < 1:
            raise ValueError(f"invalid strategy needs {self}")


@dataclass(frozen=True)
class StepInputs:
    """What one ``backward`` call received, as the strategy's ``_backward`` sees it.

    ``extra_losses``: one stacked tensor per extra sample, in the order of the step's tasks.
    """

    shared_parameters: Inputs | None = None
    representation: Inputs | None = None
    extra_losses: tuple[Tensor, ...] = ()


@dataclass(frozen=True)
class WeightingOutput:
    """What one ``backward`` call used: per-task weights, raw losses and the combined objective.

    Values are detached tensors (no device sync until a float is asked for, so logging every N
    steps costs nothing on the other steps). For gradient methods ``weight_tensor`` holds the
    coefficients c of the shared update Σ c_t g_t.
    """

    tasks: tuple[str, ...]
    weight_tensor: Tensor
    loss_tensor: Tensor
    total: Tensor

    @property
    def weights(self) -> dict[str, float]:
        """Task -> weight (or gradient coefficient) used in this step."""
        return dict(zip(self.tasks, self.weight_tensor.tolist(), strict=True))

    @property
    def loss_scales(self) -> dict[str, float]:
        """Task -> loss scale w·L, the quantity LSB balances (for the weight/scale plots)."""
        scales = (self.weight_tensor * self.loss_tensor).tolist()
        return dict(zip(self.tasks, scales, strict=True))


def default_backward(total: Tensor) -> None:
    """Plain ``total.backward()``; the trainer passes ``manual_backward`` under Lightning."""
    total.backward()


def check_finite(losses: Mapping[str, Tensor]) -> list[str]:
    """Names of the tasks whose loss is NaN or infinite (the trainer then skips the step).

    One device sync for all tasks together, rather than one per task.
    """
    if not losses:
        return []
    names = list(losses)
    finite = torch.isfinite(torch.stack([losses[t].detach().float() for t in names])).tolist()
    return [t for t, ok in zip(names, finite, strict=True) if not ok]


def finite_option(strategy: str, key: str, value: float) -> float:
    """``value`` as a float; a clear error naming the option if it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{strategy} {key} must be a finite number, got {value!r}")
    return float(value)


def task_vector(
    values: Sequence[float] | Mapping[str, float],
    tasks: Sequence[str],
    what: str,
    *,
    allow_zero: bool = True,
) -> list[float]:
    """Validate a per-task vector (list in task order, or dict with exactly the task keys).

    Raises ``ValueError`` naming ``what`` and the expected shape when the length or keys do not
    match, or when a value is negative, zero (if not allowed), NaN or infinite, or all are zero.
    """
    if isinstance(values, Mapping):
        keys = set(values)
        if keys != set(tasks):
            missing = sorted(set(tasks) - keys)
            extra = sorted(keys - set(tasks))
            raise ValueError(
                f"{what} must have exactly the task keys {list(tasks)}; "
                f"missing {missing}, unexpected {extra}"
            )
        raw = [values[t] for t in tasks]
    elif isinstance(values, str) or not isinstance(values, Sequence):
        raise ValueError(f"{what} must be a list of {len(tasks)} numbers or a dict task -> number, "
                         f"got {values!r}")
    else:
        raw = list(values)
        if len(raw) != len(tasks):
            raise ValueError(
                f"{what} has {len(raw)} values but there are {len(tasks)} tasks {list(tasks)}"
            )
    out = []
    for t, v in zip(tasks, raw, strict=True):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"{what}[{t!r}] must be a number, got {v!r}")
        v = float(v)
        if not math.isfinite(v):
            raise ValueError(f"{what}[{t!r}] must be finite, got {v}")
        if v < 0 or (v == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{what}[{t!r}] must be {bound}, got {v}")
        out.append(v)
    if not any(out):
        raise ValueError(f"{what} must have at least one positive value, got {out}")
    return out


class WeightingStrategy(nn.Module, ABC):
    """Base of every strategy: input checks, epoch-mean loss bookkeeping, state round-trip.

    Subclasses implement ``_backward``. State that is not a parameter or fixed-shape buffer
    (histories, β, RNG) is listed in ``persistent_attrs`` and travels through
    ``get_extra_state`` as plain floats/lists/tensors, so checkpoints load with
    ``torch.load(weights_only=True)``.
    """

    name: ClassVar[str]
    #: whether ``backward`` may receive losses for only some tasks (single-tasking passes).
    accepts_task_subset: ClassVar[bool] = False
    #: attribute names saved in the extra state besides ``history`` and the RNG.
    persistent_attrs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__()
        tasks = tuple(tasks)
        if not tasks or len(set(tasks)) != len(tasks) or not all(isinstance(t, str) for t in tasks):
            raise ValueError(f"tasks must be a non-empty list of distinct names, got {list(tasks)}")
        self.tasks = tasks
        self.register_buffer("loss_sum", torch.zeros(len(tasks), dtype=torch.float64))
        self.register_buffer("loss_count", torch.zeros(len(tasks), dtype=torch.float64))
        #: epoch-mean raw losses, one list per finished epoch (NaN where a task had no step).
        self.history: list[list[float]] = []
        self.generator: torch.Generator | None = None
        self.last_output: WeightingOutput | None = None

    @property
    def num_tasks(self) -> int:
        """K, the number of tasks."""
        return len(self.tasks)

    @property
    def needs(self) -> Needs:
        """What ``backward`` needs besides the losses (default: the loss values alone)."""
        return Needs()

    def extra_parameters(self) -> list[nn.Parameter]:
        """Learned parameters of the strategy; the trainer gives them a group without decay."""
        return list(self.parameters())

    def _seed(self, seed: int) -> None:
        """Create the strategy's own RNG (saved in the state, so resumes draw the same numbers)."""
        self.generator = torch.Generator().manual_seed(int(seed))

    def backward(
        self,
        losses: Mapping[str, Tensor],
        *,
        shared_parameters: Inputs | None = None,
        representation: Inputs | None = None,
        extra_losses: Sequence[Mapping[str, Tensor]] = (),
        backward_fn: BackwardFn = default_backward,
    ) -> WeightingOutput:
        """Combine the per-task ``losses`` (on the graph), run the backward, return what was used.

        ``shared_parameters``: the shared network's parameters (exact gradient methods, GradNorm's
        last shared layer). ``representation``: the shared encoder output the task-specific parts
        consumed (representation-space methods). ``extra_losses``: the losses of the other
        ``needs.samples − 1`` independent samples. ``needs`` says which of these to pass.
        """
        present = self._check_losses(losses)
        index = [self.tasks.index(t) for t in present]
        stacked = torch.stack([losses[t] for t in present])
        want = self.needs.samples - 1
        if len(extra_losses) != want:
            raise ValueError(f"{self.name} needs {want} extra loss sample(s) (extra_losses=), "
                             f"got {len(extra_losses)}")
        extra = []
        for sample in extra_losses:
            if self._check_losses(sample) != present:
                raise KeyError(f"{self.name}: every extra loss sample needs the tasks {present}")
            extra.append(torch.stack([sample[t] for t in present]))
        self._accumulate(index, stacked)
        inputs = StepInputs(shared_parameters, representation, tuple(extra))
        weights, total = self._backward(stacked, index, inputs, backward_fn)
        self.last_output = WeightingOutput(present, weights.detach(), stacked.detach(),
                                           total.detach())
        return self.last_output

    def _accumulate(self, index: list[int], losses: Tensor) -> None:
        """Add a step's raw losses to the epoch sums (``on_epoch_end`` turns them into
        ``history``), summed over the processes under DDP.

        So every process holds the same sums, of the whole minibatch, at every step: weightings
        that follow the epoch means (DWA, LSB) give every process the same weights, and a
        checkpoint (rank 0's) holds the sums all processes resume from.
        """
        with torch.no_grad():
            counts = torch.ones(len(index), dtype=self.loss_sum.dtype, device=self.loss_sum.device)
            values = torch.cat([losses.detach().to(self.loss_sum), counts])
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(values)
            idx = torch.tensor(index, device=self.loss_sum.device)
            self.loss_sum.index_add_(0, idx, values[:len(index)])
            self.loss_count.index_add_(0, idx, values[len(index):])

    @abstractmethod
    def _backward(
        self,
        losses: Tensor,
        index: list[int],
        inputs: StepInputs,
        backward_fn: BackwardFn,
    ) -> tuple[Tensor, Tensor]:
        """Run the backward of the stacked ``losses`` (tasks ``index``); return (weights, total)."""

    def after_step(self, losses: Mapping[str, Tensor]) -> None:
        """The losses on the same batch after the optimiser step (only if ``needs`` asks)."""

    def on_epoch_end(self) -> None:
        """Close the epoch: append the epoch-mean raw losses to ``history``, reset, update.

        Called by the trainer once per training epoch (the DWA epoch, the LSB period).
        """
        with torch.no_grad():
            means = (self.loss_sum / self.loss_count).tolist()
            self.loss_sum.zero_()
            self.loss_count.zero_()
        self.history.append(means)
        self._end_period(means)

    def _end_period(self, means: list[float]) -> None:
        """Hook for strategies that change their weights per epoch (DWA, LSB)."""

    def _check_losses(self, losses: Mapping[str, Tensor]) -> tuple[str, ...]:
        """The task names of ``losses`` in task order, after checking keys and shapes."""
        unknown = sorted(set(losses) - set(self.tasks))
        if unknown:
            raise KeyError(f"{self.name}: losses for unknown task(s) {unknown}; "
                           f"tasks are {list(self.tasks)}")
        present = tuple(t for t in self.tasks if t in losses)
        if not present or (len(present) != self.num_tasks and not self.accepts_task_subset):
            raise KeyError(f"{self.name} needs a loss for every task {list(self.tasks)}, "
                           f"got {sorted(losses)}")
        for t in present:
            if losses[t].dim() != 0:
                raise ValueError(f"loss of task {t!r} must be a scalar, got shape "
                                 f"{tuple(losses[t].shape)}")
        return present

    def get_extra_state(self) -> dict[str, Any]:
        """History, persistent attributes and RNG state (plain types, ``weights_only``-safe)."""
        state: dict[str, Any] = {"history": [list(h) for h in self.history]}
        state.update({k: getattr(self, k) for k in self.persistent_attrs})
        if self.generator is not None:
            state["rng"] = self.generator.get_state()
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what ``get_extra_state`` saved."""
        self.history = [list(h) for h in state["history"]]
        for k in self.persistent_attrs:
            setattr(self, k, state[k])
        if self.generator is not None:
            self.generator.set_state(state["rng"])

    def extra_repr(self) -> str:
        return f"tasks={list(self.tasks)}"


#: every strategy, by ``name``; discovered from the modules of ``densemtl.weighting`` and the
#: plugins.
WEIGHTING_REGISTRY: Registry[type[WeightingStrategy]] = Registry(
    "weighting", "weighting", ["densemtl.weighting"]
)

#: class decorator: make a strategy buildable by its ``name``.
register_weighting = WEIGHTING_REGISTRY.register()


def subset_weightings() -> list[str]:
    """The registered strategies that take a subset of the tasks' losses (per-task passes)."""
    return sorted(n for n in WEIGHTING_REGISTRY.names()
                  if WEIGHTING_REGISTRY.get(n).accepts_task_subset)


def build_weighting(name: str, tasks: Sequence[str], **cfg: Any) -> WeightingStrategy:
    """Build a registered strategy; an unknown name or option lists the valid ones."""
    return WEIGHTING_REGISTRY.build(name, tasks, **cfg)
