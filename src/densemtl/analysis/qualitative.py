"""Predictions of several trained models side by side on the same images (ASTMT Figs. 7–8).

Each row is one image seen by one model (or its ground truth); each column is one task drawn
with that task's own colour map (``Task.colorize`` of ``Task.decode`` of the raw output).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from densemtl.analysis.se_activations import evaluating, network_of
from densemtl.data.datamodule import MultiTaskDataModule
from densemtl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from densemtl.tasks import Task

__all__ = [
    "PanelRow",
    "ValidationBatch",
    "denormalize",
    "plot_panels",
    "predict",
    "qualitative_panels",
    "validation_batch",
]

GROUND_TRUTH = "ground truth"


@dataclass
class ValidationBatch:
    """A collated validation batch with the standardisation its images went through."""

    batch: dict[str, Any]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def images(self) -> Tensor:
        """The standardised ``B×3×H×W`` network input."""
        return self.batch["image"]

    def picture(self, index: int) -> np.ndarray:
        """Image ``index`` as the ``uint8 H×W×3`` picture it was before standardisation."""
        return denormalize(self.images[index], self.mean, self.std)


def denormalize(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the standardisation of one ``3×H×W`` image: ``uint8 H×W×3``.

    ``mean`` and ``std`` are fractions of 255, as in the data configuration.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a 3×H×W image, got shape {tuple(image.shape)}")
    m = torch.tensor(mean, dtype=torch.float64).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(3, 1, 1)
    pixels = (image.detach().cpu().double() * s + m) * 255.0
    return pixels.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def validation_batch(
    module: nn.Module,
    n_images: int = 4,
    tasks: Mapping[str, Task] | None = None,
    data: Mapping[str, Any] | None = None,
) -> ValidationBatch:
    """The first ``n_images`` validation images of the run a module was trained in.

    The data configuration comes from the checkpoint (``module.hparams["config"]["data"]``),
    updated with ``data`` (e.g. ``{"root": ...}`` when the data moved); ``tasks`` chooses whose
    labels the batch carries (default: the module's tasks; pass the union when comparing models
    trained on different task sets).
    """
    config = dict(getattr(module, "hparams", {}).get("config") or {})
    if "data" not in config:
        raise ValueError(
            f"{type(module).__name__} carries no run configuration (hparams['config']['data']); "
            "load it with densemtl.experiment.load_module(checkpoint)"
        )
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    data_cfg = {**config["data"], **dict(data or {}), "val_batch_size": n_images}
    datamodule = MultiTaskDataModule.from_config(data_cfg, tasks or module.tasks)
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    augment = data_cfg.get("augment") or {}
    return ValidationBatch(
        batch,
        tuple(augment.get("mean") or IMAGENET_MEAN),
        tuple(augment.get("std") or IMAGENET_STD),
    )


def predict(module: nn.Module, images: Tensor) -> dict[str, Tensor]:
    """Decoded predictions of every task of a trained module (eval mode, no gradients)."""
    net = network_of(module)
    with evaluating(net):
        device = next(net.parameters()).device
        raw = net(images.to(device))
    return {t: module.tasks[t].decode(pred).cpu() for t, pred in raw.items()}


@dataclass
class PanelRow:
    """One row of the figure: ``source`` (a model name or ground truth) on image ``index``."""

    source: str
    index: int
    panels: dict[str, np.ndarray] = field(default_factory=dict)


def qualitative_panels(
    models: Mapping[str, nn.Module], data: ValidationBatch, indices: Sequence[int] = (0,)
) -> list[PanelRow]:
    """For each image: a ground-truth row, then one row per model; columns ``image`` + tasks.

    The columns are the union of the models' tasks (in order of first appearance); a model
    without a task has no panel there. Each task is decoded and coloured by the task object of
    the model that predicted it; the ground truth by the first model having the task.
    """
    if not models:
        raise ValueError("qualitative_panels needs at least one model (name -> module)")
    n = data.images.shape[0]
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise IndexError(f"image indices {bad} outside the batch of {n} images")
    owners: dict[str, Task] = {}
    for module in models.values():
        for name, task in module.tasks.items():
            owners.setdefault(name, task)
    missing = sorted(set(owners) - set(data.batch))
    if missing:
        raise KeyError(f"the batch lacks labels {missing}: build it with every model's tasks")
    predictions = {name: predict(module, data.images) for name, module in models.items()}
    # one colour scale per task for the whole grid (depth): every panel of it reads alike
    ranges = {
        t: task.colour_range([data.batch[t][i] for i in indices]
                             + [p[t][i] for p in predictions.values() if t in p for i in indices])
        for t, task in owners.items()
    }

    def colour(t: str, task: Task, label: Tensor) -> np.ndarray:
        scale = ranges[t]
        return task.colorize(label) if scale is None else task.colorize(label, scale)

    rows = []
    for i in indices:
        picture = data.picture(i)
        truth = {t: colour(t, task, data.batch[t][i]) for t, task in owners.items()}
        rows.append(PanelRow(GROUND_TRUTH, i, {"image": picture, **truth}))
        for name, module in models.items():
            preds = {t: colour(t, module.tasks[t], p[i]) for t, p in predictions[name].items()}
            rows.append(PanelRow(name, i, {"image": picture, **preds}))
    return rows


def plot_panels(rows: Sequence[PanelRow]) -> Figure:
    """Draw :func:`qualitative_panels` rows as a grid (empty cells where a model lacks a task)."""
    columns = list(dict.fromkeys(c for row in rows for c in row.panels))
    fig = Figure(figsize=(1.7 * len(columns) + 1.0, 1.7 * len(rows)), layout="constrained")
    axes = np.asarray(fig.subplots(len(rows), len(columns), squeeze=False))
    for r, row in enumerate(rows):
        for c, column in enumerate(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if column in row.panels:
                ax.imshow(row.panels[column], interpolation="nearest")
            else:
                ax.axis("off")
            if r == 0:
                ax.set_title(column, fontsize=8)
            if c == 0:
                ax.set_ylabel(f"#{row.index} {row.source}", fontsize=7)
    return fig
