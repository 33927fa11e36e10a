"""Trivial reference points: what a constant predictor scores on the validation set.

A trained network must beat these clearly; the README quotes them next to the default run.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from densemtl.tasks import Task


def constant_predictions(
    train: DataLoader, tasks: Mapping[str, Task]
) -> dict[str, Tensor]:
    """The best constant *decoded* prediction per task, fitted on the training labels.

    Class maps: the most frequent valid class. Dense maps: the per-channel mean of valid pixels
    (normals re-normalised to unit length). Binary maps: the positive fraction.
    """
    sums: dict[str, Tensor] = {}
    counts: dict[str, Tensor] = {}
    for batch in train:
        for name, task in tasks.items():
            target = batch[name]
            valid = task.valid_mask(target)
            if task.kind == "class":
                hist = torch.bincount(target[valid].flatten(), minlength=task.out_channels)
                sums[name] = sums.get(name, 0) + hist[: task.out_channels].double()
            else:
                v = valid.unsqueeze(1).expand_as(target)
                s = (target * v).sum(dim=(0, 2, 3)).double()
                sums[name] = sums.get(name, 0) + s
                counts[name] = counts.get(name, 0) + v.sum(dim=(0, 2, 3)).double()
    constants = {}
    for name, task in tasks.items():
        if task.kind == "class":
            constants[name] = torch.tensor(int(sums[name].argmax()))
        else:
            mean = (sums[name] / counts[name].clamp_min(1)).float()
            if name == "normals":
                mean = torch.nn.functional.normalize(mean, dim=0)
            constants[name] = mean
    return constants


def constant_predictor_results(
    train: DataLoader, val: DataLoader, tasks: Mapping[str, Task]
) -> dict[str, dict[str, float]]:
    """Validation metrics of :func:`constant_predictions` (same metrics as a trained run)."""
    constants = constant_predictions(train, tasks)
    metrics = {name: task.make_metric() for name, task in tasks.items()}
    for batch in val:
        for name, task in tasks.items():
            target = batch[name]
            if task.kind == "class":
                pred = torch.full_like(target, int(constants[name]))
            else:
                b, _, h, w = target.shape
                pred = constants[name].view(1, -1, 1, 1).expand(b, -1, h, w).contiguous()
            metrics[name].update(pred, target)
    return {n: {k: float(v) for k, v in m.compute().items()} for n, m in metrics.items()}
