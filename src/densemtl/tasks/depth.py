"""Monocular depth: 1 channel (metres), L1 + gradient L1, RMSE / log-RMSE / δ1 / abs-rel."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from densemtl.metrics.dense import DepthMetric
from densemtl.tasks.base import Task, masked_mean, register_task
from densemtl.tasks.common import check_pair, colorize_unit, masked_l1, normalize_range


def gradient_l1(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Σ over x and y of the mean |Δp − Δt| of neighbouring differences, each mean taken over
    pairs whose two pixels are both valid (a difference across an invalid pixel is no gradient)."""
    total = pred.new_zeros(())
    for axis in (-1, -2):
        n = valid.shape[axis]
        both = valid.narrow(axis, 1, n - 1) & valid.narrow(axis, 0, n - 1)
        total = total + masked_mean((pred.diff(dim=axis) - target.diff(dim=axis)).abs(), both)
    return total


@register_task
class Depth(Task):
    """Depth (SPEC §1), weight 1: mean |d̂ − d| over valid pixels + ``gradient_l1`` (the
    smoothness term of Eigen & Fergus that ASTMT uses, with L1 instead of L2).

    GT 0 = invalid. ``pooled`` selects the metric mode (``DepthMetric``: over all valid pixels, or
    per image averaged). ``gradient_term=False`` drops the gradient L1 (ATRC's plain L1 loss).
    """

    name = "depth"
    kind = "dense"
    default_weight = 1.0
    ignore_value = 0
    primary_metrics = {"rmse": False}

    def __init__(self, pooled: bool = True, gradient_term: bool = True,
                 weight: float | None = None):
        super().__init__(weight)
        self.pooled = bool(pooled)
        self.gradient_term = bool(gradient_term)

    @property
    def out_channels(self) -> int:
        """Depth in metres."""
        return 1

    def valid_mask(self, target: Tensor) -> Tensor:
        """Pixels with positive depth."""
        return target[:, 0] > 0

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """L1 on valid pixels plus (``gradient_term``) L1 on spatial gradients."""
        check_pair(self, pred, target)
        valid = self.valid_mask(target)
        loss = masked_l1(pred, target, valid)
        return loss + gradient_l1(pred, target, valid) if self.gradient_term else loss

    def decode(self, pred: Tensor) -> Tensor:
        """Negative depth is meaningless: clamp at 0."""
        return pred.clamp_min(0)

    def make_metric(self) -> DepthMetric:
        """``{"rmse", "log_rmse", "delta1", "abs_rel"}``, pooled or per image."""
        return DepthMetric(pooled=self.pooled)

    def scale_label(self, label: np.ndarray, scale: float) -> np.ndarray:
        """Zooming in by ``scale`` looks like moving closer: divide depth by it (0 stays 0)."""
        if not scale > 0:
            raise ValueError(f"{self.name}: scale must be positive, got {scale!r}")
        return label / np.asarray(scale, dtype=label.dtype)

    def colour_range(self, labels: Sequence[Tensor]) -> tuple[float, float] | None:
        """Min and max over the valid pixels of all ``labels`` (None if none is valid)."""
        inside = [label[0][self.valid_mask(label.unsqueeze(0))[0]] for label in labels]
        inside = [v for v in inside if v.numel()]
        if not inside:
            return None
        values = torch.cat([v.flatten().float() for v in inside])
        return float(values.min()), float(values.max())

    def colorize(self, label: Tensor,
                 value_range: tuple[float, float] | None = None) -> np.ndarray:
        """Depth through the ``magma`` colour map, min-max scaled over the valid pixels of this
        picture or over ``value_range`` (one scale for a whole grid, see ``colour_range``).

        matplotlib is imported here so that only processes drawing pictures pay for it.
        """
        from matplotlib import colormaps

        valid = self.valid_mask(label.unsqueeze(0))[0]
        if value_range is None:
            unit = normalize_range(label, valid)[0].cpu().numpy()
        else:
            lo, hi = value_range
            unit = ((label[0].detach().float() - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
            unit = unit.cpu().numpy()
        rgb = torch.from_numpy(colormaps["magma"](unit)[..., :3]).permute(2, 0, 1)
        return colorize_unit(rgb, valid)
