"""The network contract every architecture implements, and the architecture registry.

The training loops and weighting strategies drive any ``MultiTaskNet`` the same way; an
architecture implements ``_predict`` (per-task outputs at any resolution, setting ``features``
and ``shared_representation``), ``task_modules`` and ``last_shared_parameters``, says what its
features are (``feature_width``, ``per_task_features``) and registers a builder with
``@ARCHITECTURES.register("name")`` in any module of ``densemtl.models`` (or a plugin). The
builder is called with ``tasks`` (name → output channels) and the ``model`` options; one that
takes a ``backbone`` parameter also gets the ``backbone`` group, and the ``modulation`` options
that are its parameters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from densemtl.registry import Registry

__all__ = ["ARCHITECTURES", "MultiTaskNet", "check_task_channels", "select_tasks"]

#: every architecture, by ``model.arch``; discovered from the modules of ``densemtl.models``.
ARCHITECTURES: Registry[Callable[..., MultiTaskNet]] = Registry(
    "architecture", "model", ["densemtl.models"], name_key="model.arch"
)


def select_tasks(tasks: Sequence[str] | str | None, known: tuple[str, ...]) -> tuple[str, ...]:
    """The requested task names (None: all ``known``), checked to be distinct and known."""
    if tasks is None:
        return known
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown or not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(f"forward needs distinct task names from {list(known)}, got {list(tasks)}")
    return tasks


def check_task_channels(tasks: Mapping[str, int]) -> tuple[str, ...]:
    """Task names of a ``name -> output channels`` mapping, checked non-empty and positive."""
    if not tasks:
        raise ValueError("tasks must name at least one task (name -> output channels)")
    bad = {t: c for t, c in tasks.items() if not isinstance(c, int) or c < 1}
    if bad:
        raise ValueError(f"task output channels must be positive integers, got {bad}")
    return tuple(tasks)


class MultiTaskNet(nn.Module, ABC):
    """A multi-task dense prediction network: ``forward(images, tasks) -> {task: prediction at
    the input size}``, with the parameters split into shared and per-task ones.

    After each forward, ``features[task]`` is the exact tensor the task's own part consumed (the
    adversarial discriminator's input — kept on the module because tensors returned through a
    DDP wrapper are not the ones the heads consumed) and ``shared_representation`` the tensor(s)
    after which everything is task-specific (a tensor, ``{task: view}``, a tuple, or None when
    shared and task-specific modules interleave).
    """

    #: whether ``features[task]`` come out of task-specific modules (not one shared tensor)
    per_task_features: bool
    #: channels of ``features[task]`` (the discriminator's input width): an attribute set in
    #: ``__init__`` or a property
    feature_width: int
    #: stride of the coarsest feature map: inputs with a side shorter than it are refused at
    #: start-up (their deepest map would be a single pixel); 1 = no downsampling encoder
    output_stride: int = 1
    #: whether a forward sets ``shared_representation`` (False where shared and task-specific
    #: modules interleave), so strategies that need it are refused at start-up, not at step 1
    has_shared_representation: bool = True

    def __init__(self, tasks: Mapping[str, int]) -> None:
        super().__init__()
        self.tasks = check_task_channels(tasks)
        self.channels = dict(tasks)
        self.features: dict[str, Tensor] = {}
        self.shared_representation: Tensor | tuple[Tensor, ...] | dict[str, Tensor] | None = None

    def select_tasks(self, tasks: Sequence[str] | str | None) -> tuple[str, ...]:
        """The requested tasks (None: all), checked against the network's."""
        return select_tasks(tasks, self.tasks)

    def forward(self, images: Tensor, tasks: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Predictions at the input resolution for ``tasks`` (default: all), keyed by task."""
        tasks = self.select_tasks(tasks)
        self.shared_representation = None
        outputs = self._predict(images, tasks)
        size = images.shape[2:]
        return {
            t: y
            if y.shape[2:] == size
            else F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            for t, y in outputs.items()
        }

    @abstractmethod
    def _predict(self, images: Tensor, tasks: tuple[str, ...]) -> dict[str, Tensor]:
        """Per-task outputs (any resolution); sets ``features`` and ``shared_representation``."""

    @abstractmethod
    def task_modules(self, task: str) -> list[nn.Module]:
        """Modules only ``task`` uses."""

    @abstractmethod
    def last_shared_parameters(self) -> list[nn.Parameter]:
        """Weights of the last layer every task's loss reaches (GradNorm's W)."""

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Parameters used only by ``task`` (each once, in module order)."""
        self.select_tasks((task,))
        seen: dict[int, nn.Parameter] = {}
        for module in self.task_modules(task):
            for p in module.parameters():
                seen.setdefault(id(p), p)
        return list(seen.values())

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task uses (the complement of all tasks' ``task_parameters``)."""
        task_ids = {id(p) for t in self.tasks for p in self.task_parameters(t)}
        return [p for p in self.parameters() if id(p) not in task_ids]
