"""The task interface and registry.

A task is one object (DESIGN principle 1): output channels, loss, metrics, decoding, the rules for
how flips / rotations / rescaling change its labels, its ignore value and its colour map all live
in its own file under ``densemtl/tasks/``. Adding a task = one file (found by the registry's
discovery) with a ``@register_task`` class + its entry in a ``conf/tasks/`` set.

Label conventions (shared by datasets, transforms, losses and metrics):

* In numpy (datasets, albumentations): every label is ``H×W×C`` (``label_channels`` = C), dtype
  ``uint8`` for class maps (``kind == "class"``) and ``float32`` otherwise.
* In torch (a batch): class maps are ``int64`` ``B×H×W``; everything else ``float32`` ``B×C×H×W``.
* Padding and "unknown" pixels carry ``ignore_value``; ``valid_mask`` says which pixels count.
* Predictions are raw network outputs ``B×out_channels×H×W`` at input resolution.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from densemtl.registry import Registry

LabelKind = Literal["class", "binary", "dense"]


class Task(ABC):
    """One dense prediction task: loss, decoding, metrics and label geometry rules."""

    name: ClassVar[str]
    kind: ClassVar[LabelKind]
    default_weight: ClassVar[float] = 1.0
    label_channels: ClassVar[int] = 1
    ignore_value: ClassVar[float] = 255
    #: the dataset / batch key holding this task's label; defaults to ``name`` (set for every
    #: class that defines ``name``), so the LSB-study ``lsb_depth`` can read the ``depth`` label.
    label_key: ClassVar[str]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and "label_key" not in cls.__dict__:
            cls.label_key = cls.name

    def __init__(self, weight: float | None = None) -> None:
        self.weight = float(self.default_weight if weight is None else weight)

    # -- network side -------------------------------------------------------------------------
    @property
    @abstractmethod
    def out_channels(self) -> int:
        """Channels the network head must emit for this task."""

    @abstractmethod
    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Unweighted scalar loss of raw prediction ``pred`` against ``target`` (batch layout)."""

    @abstractmethod
    def decode(self, pred: Tensor) -> Tensor:
        """Raw network output -> label space (class ids, probabilities, unit vectors…)."""

    def valid_mask(self, target: Tensor) -> Tensor:
        """Boolean ``B×H×W`` mask of pixels that carry a label."""
        if target.dim() == 3:
            return target != self.ignore_value
        return (target != self.ignore_value).all(dim=1)

    @abstractmethod
    def make_metric(self) -> Metric:
        """A fresh torchmetrics ``Metric``: ``update(self.decode(pred), target)`` takes *decoded*
        predictions; ``compute()`` returns a ``dict[str, Tensor]`` of named scores."""

    #: metric name -> True if higher is better; these enter Δm (SPEC §6).
    primary_metrics: ClassVar[dict[str, bool]] = {}

    def protocol(self) -> dict[str, Any]:
        """The evaluation choices behind this task's metric values (recorded in
        ``metrics.json`` beside them, since published code bases differ on them)."""
        return {}

    # -- label geometry (numpy, H×W×C, applied after the pixels were resampled) ----------------
    def hflip_label(self, label: np.ndarray) -> np.ndarray:
        """Fix label *values* after a horizontal flip of the pixel grid (e.g. negate normals' x)."""
        return label

    def rotate_label(self, label: np.ndarray, angle_deg: float) -> np.ndarray:
        """Fix label values after the pixel grid was rotated by ``angle_deg`` counter-clockwise."""
        return label

    def scale_label(self, label: np.ndarray, scale: float) -> np.ndarray:
        """Fix label values after the image was resized by ``scale`` (e.g. depth / scale)."""
        return label

    # -- visualisation --------------------------------------------------------------------------
    @abstractmethod
    def colorize(self, label: Tensor) -> np.ndarray:
        """``uint8`` ``H×W×3`` picture of one label or decoded prediction (no batch dim)."""

    def colour_range(self, labels: Sequence[Tensor]) -> tuple[float, float] | None:
        """One value range for colouring several pictures alike (a grid of ground truths and
        predictions), passed as ``colorize(label, value_range)``; None: colours need no range."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weight={self.weight})"


#: every task, by ``name``; discovered from the modules of ``densemtl.tasks`` and the plugins.
TASK_REGISTRY: Registry[type[Task]] = Registry(
    "task", "tasks.{name}", ["densemtl.tasks"], name_key="tasks"
)

#: class decorator: make a task buildable by its ``name``.
register_task = TASK_REGISTRY.register()


def build_task(name: str, **kwargs: Any) -> Task:
    """Instantiate a registered task by name (keywords checked against its constructor)."""
    return TASK_REGISTRY.build(name, **kwargs)


def build_tasks(cfg: Mapping[str, Any]) -> dict[str, Task]:
    """Task objects from ``cfg.tasks`` (name → constructor kwargs) plus the dataset's task
    arguments (``cfg.data.task_args``, e.g. the number of semantic classes); ``cfg.single_task``
    keeps one task of the set (the single-task baselines)."""
    tasks_cfg = cfg.get("tasks") or {}
    if not tasks_cfg:
        raise ValueError("config 'tasks' is empty: choose a task set, e.g. tasks=pascal5")
    only = cfg.get("single_task")
    if only is not None:
        if only not in tasks_cfg:
            raise ValueError(
                f"single_task={only!r} is not in the task set ({', '.join(tasks_cfg)})"
            )
        tasks_cfg = {only: tasks_cfg[only]}
    data_args = (cfg.get("data") or {}).get("task_args") or {}
    tasks = {}
    for name, kwargs in tasks_cfg.items():
        args = {**(data_args.get(name) or {}), **(kwargs or {})}
        tasks[name] = TASK_REGISTRY.build(name, **args)
    return tasks


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over ``mask`` (broadcast over channels); 0 (on the graph) if empty."""
    mask = mask.to(values.dtype)
    while mask.dim() < values.dim():
        mask = mask.unsqueeze(1)
    mask = mask.expand_as(values)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def ensure_finite(t: Tensor, what: str) -> Tensor:
    """Raise a clear error if ``t`` holds NaN/inf (used on labels, never on the hot path)."""
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return t
