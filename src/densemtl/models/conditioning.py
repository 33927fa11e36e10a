"""Task conditioning: per-task SE, per-task BN and residual adapters, and the task routing.

The conditioned modules are made by *converting* existing modules (a timm SE-ResNet's blocks, the
DeepLab decoder's conv blocks): every task gets a deep copy of the original SE / BN, so all copies
start from the same (pretrained) values. Each task's parameters are separate ``nn.Parameter``
objects inside an ``nn.ModuleDict`` keyed by task (``per_task``): a task that did not run in a
step keeps ``grad is None``, so SGD / Adam give it no momentum or weight-decay update (ASTMT
appendix D).

timm blocks call their submodules with a single tensor, so the active task(s) reach the
conditioned modules through a :class:`TaskRouter` owned by the network and set by its ``forward``.
With one active task a module runs that task's copy. With T active tasks the batch is the
task-major stack of T minibatches (``T·B``) and every module applies task ``k``'s parameters to
chunk ``k`` in one batched call: BN over a ``B×(T·C)×H×W`` view, SE by batched matmul, adapters by
a grouped convolution.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from timm.layers import SEModule
from torch import Tensor, nn
from torch.nn.utils import skip_init

from .backbones import BlockSlots

__all__ = [
    "PerTaskModule",
    "TaskAdapter",
    "TaskBatchNorm2d",
    "TaskRouter",
    "TaskSqueezeExcite",
    "condition_blocks",
    "stack_to_channels",
    "channels_to_stack",
]


class TaskRouter:
    """The active task(s) of one forward call of the network that owns this router.

    Set with :meth:`route` (a context manager that restores the previous value on exit, also on
    error); conditioned modules read :attr:`active`. One router per network, never global state.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        self.tasks = tuple(tasks)
        self._active: tuple[str, ...] | None = None

    @contextmanager
    def route(self, tasks: Sequence[str]) -> Iterator[None]:
        """Make ``tasks`` active for the duration of the ``with`` block."""
        tasks = tuple(tasks)
        unknown = [t for t in tasks if t not in self.tasks]
        if unknown or not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(
                f"cannot route tasks {list(tasks)}: need distinct names from {list(self.tasks)}"
            )
        previous, self._active = self._active, tasks
        try:
            yield
        finally:
            self._active = previous

    @property
    def active(self) -> tuple[str, ...]:
        """Active tasks; an error outside a routed call (a conditioned module run on its own)."""
        if self._active is None:
            raise RuntimeError(
                "a task-conditioned module ran with no active task: call the network's forward "
                "(or wrap the call in `with net.router.route(tasks):`)"
            )
        return self._active


class PerTaskModule(nn.Module):
    """Base of modules holding one parameter set per task in ``self.per_task`` (a ModuleDict).

    The network's ``task_parameters(task)`` collects ``per_task[task]`` of every such module.
    """

    per_task: nn.ModuleDict


def stack_to_channels(x: Tensor, num_tasks: int) -> Tensor:
    """Task-major stack ``(T·B)×C×…`` -> ``B×(T·C)×…`` (task k's channels at ``k·C:(k+1)·C``)."""
    n = x.shape[0] // num_tasks
    return x.reshape(num_tasks, n, *x.shape[1:]).transpose(0, 1).reshape(n, -1, *x.shape[2:])


def channels_to_stack(x: Tensor, num_tasks: int) -> Tensor:
    """Inverse of :func:`stack_to_channels`: ``B×(T·C)×…`` -> ``(T·B)×C×…``."""
    n, c = x.shape[0], x.shape[1] // num_tasks
    return x.reshape(n, num_tasks, c, *x.shape[2:]).transpose(0, 1).reshape(-1, c, *x.shape[2:])


class _Routed(PerTaskModule):
    """Shared machinery: per-task deep copies of a source module and the active-task lookup."""

    def __init__(self, copies: dict[str, nn.Module], router: TaskRouter) -> None:
        super().__init__()
        self.per_task = nn.ModuleDict(copies)
        self._router = router  # a plain attribute: the router is not a module and holds no state

    def _active(self, x: Tensor) -> tuple[str, ...]:
        tasks = self._router.active
        if x.shape[0] % len(tasks):
            raise ValueError(
                f"stacked batch of {x.shape[0]} is not a multiple of the {len(tasks)} active tasks"
            )
        return tasks


class TaskSqueezeExcite(_Routed):
    """Per-task squeeze-and-excitation: one copy of a timm ``SEModule`` per task."""

    def __init__(self, source: SEModule, tasks: Sequence[str], router: TaskRouter) -> None:
        if not isinstance(source, SEModule):
            raise TypeError(f"expected a timm SEModule to convert, got {type(source).__name__}")
        if source.add_maxpool or not isinstance(source.bn, nn.Identity):
            raise ValueError("only SE modules without max-pool squeeze or inner BN are supported")
        super().__init__({t: copy.deepcopy(source) for t in tasks}, router)

    def forward(self, x: Tensor) -> Tensor:
        """Gate channels with the active task's SE (batched over tasks when stacked)."""
        tasks = self._active(x)
        if len(tasks) == 1:
            return self.per_task[tasks[0]](x)
        mods = [self.per_task[t] for t in tasks]
        squeezed = x.mean((2, 3)).reshape(len(tasks), -1, x.shape[1])  # T×B×C
        hidden = mods[0].act(_batched_linear(squeezed, [m.fc1 for m in mods]))
        gate = mods[0].gate(_batched_linear(hidden, [m.fc2 for m in mods]))
        return x * gate.reshape(x.shape[0], x.shape[1], 1, 1)


def _batched_linear(x: Tensor, convs: Sequence[nn.Conv2d]) -> Tensor:
    """Apply 1×1 conv k (as a linear map) to ``x[k]`` for ``x`` of shape T×B×C_in."""
    weight = torch.stack([c.weight.flatten(1) for c in convs]).transpose(1, 2)  # T×C_in×C_out
    if convs[0].bias is None:
        return torch.bmm(x, weight)
    bias = torch.stack([c.bias for c in convs]).unsqueeze(1)
    return torch.baddbmm(bias, x, weight)


class TaskBatchNorm2d(_Routed):
    """Per-task batch norm: one copy (affine + running statistics) of a BatchNorm2d per task.

    Also converts timm's ``BatchNormAct2d`` (BN fused with its activation): the copies keep the
    activation, and the stacked path applies it after the batched normalisation.
    """

    def __init__(self, source: nn.BatchNorm2d, tasks: Sequence[str], router: TaskRouter) -> None:
        if not isinstance(source, nn.BatchNorm2d):
            raise TypeError(f"expected a BatchNorm2d to convert, got {type(source).__name__}")
        super().__init__({t: copy.deepcopy(source) for t in tasks}, router)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise with the active task's BN; stacked: one batch_norm over T·C channels."""
        tasks = self._active(x)
        if len(tasks) == 1:
            return self.per_task[tasks[0]](x)
        bns = [self.per_task[t] for t in tasks]
        first = bns[0]
        track = first.track_running_stats and first.running_mean is not None
        use_batch_stats = first.training or not track
        update_stats = first.training and track
        if update_stats and first.momentum is None:
            raise ValueError("stacked per-task BN needs a fixed momentum (momentum=None given)")

        def cat(name: str, present: bool) -> Tensor | None:
            return torch.cat([getattr(bn, name) for bn in bns]) if present else None

        running_mean, running_var = cat("running_mean", track), cat("running_var", track)
        y = F.batch_norm(
            stack_to_channels(x, len(tasks)),
            running_mean,
            running_var,
            cat("weight", first.affine),
            cat("bias", first.affine),
            use_batch_stats,
            first.momentum or 0.0,
            first.eps,
        )
        if update_stats:
            with torch.no_grad():
                means, variances = running_mean.chunk(len(tasks)), running_var.chunk(len(tasks))
                for bn, mean, var in zip(bns, means, variances):
                    bn.running_mean.copy_(mean)
                    bn.running_var.copy_(var)
                    bn.num_batches_tracked.add_(1)
        y = channels_to_stack(y, len(tasks))
        if hasattr(first, "act"):  # timm BatchNormAct2d: dropout then activation after the BN
            y = first.act(first.drop(y))
        return y


class TaskAdapter(_Routed):
    """A conv plus a per-task residual adapter: ``conv(x) + adapter_t(x)`` (ASTMT Eq. 2).

    The adapter is a zero-initialised 1×1 conv with the wrapped conv's stride and groups, so the
    network is unchanged at initialisation; its sum is taken before the following BN. The
    adapters skip the random initialisation, so a network draws the same random numbers with or
    without them.
    """

    def __init__(self, conv: nn.Module, tasks: Sequence[str], router: TaskRouter) -> None:
        adapters = {}
        for task in tasks:
            adapter = skip_init(
                nn.Conv2d,
                conv.in_channels,
                conv.out_channels,
                kernel_size=1,
                stride=conv.stride,
                groups=conv.groups,
                bias=False,
            )
            nn.init.zeros_(adapter.weight)
            adapters[task] = adapter
        super().__init__(adapters, router)
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:
        """Shared conv output plus the active task's adapter (a grouped conv when stacked)."""
        tasks = self._active(x)
        if len(tasks) == 1:
            return self.conv(x) + self.per_task[tasks[0]](x)
        adapters = [self.per_task[t] for t in tasks]
        adapted = F.conv2d(
            stack_to_channels(x, len(tasks)),
            torch.cat([a.weight for a in adapters]),
            stride=adapters[0].stride,
            groups=adapters[0].groups * len(tasks),
        )
        return self.conv(x) + channels_to_stack(adapted, len(tasks))


def _get(module: nn.Module, path: str) -> nn.Module:
    return module.get_submodule(path)


def _set(module: nn.Module, path: str, value: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, name, value)


def condition_blocks(
    blocks: Iterable[tuple[nn.Module, BlockSlots]],
    tasks: Sequence[str],
    router: TaskRouter,
    *,
    squeeze_excite: bool,
    batch_norm: bool,
    adapters: bool,
) -> int:
    """Convert blocks in place: SE -> TaskSqueezeExcite, BN -> TaskBatchNorm2d, conv -> adapted.

    Returns the number of submodules converted. A slot whose module is absent (None / Identity)
    is skipped.
    """
    converted = 0
    for block, slots in blocks:
        if squeeze_excite and slots.se is not None:
            se = getattr(block, slots.se, None) if "." not in slots.se else _get(block, slots.se)
            if se is None:
                raise ValueError(
                    f"per-task SE needs SE blocks, but {type(block).__name__} has none (a backbone "
                    "built with squeeze_excite=False); use modulation=none or adapters, or an "
                    "SE backbone"
                )
            if isinstance(se, SEModule):
                _set(block, slots.se, TaskSqueezeExcite(se, tasks, router))
                converted += 1
        if batch_norm:
            for path in slots.norms:
                _set(block, path, TaskBatchNorm2d(_get(block, path), tasks, router))
                converted += 1
        if adapters and slots.conv is not None:
            _set(block, slots.conv, TaskAdapter(_get(block, slots.conv), tasks, router))
            converted += 1
    return converted
