"""Albedo (FSV): 3 channels in [0, 1], L1 loss, L1 / MSE / RMSE metric."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from densemtl.tasks.base import register_task
from densemtl.tasks.common import RegressionTask, colorize_unit


@register_task
class Albedo(RegressionTask):
    """Albedo (SPEC §1), weight 10: L1 over valid pixels; padding carries 255. Δm uses the RMSE
    (the Albedo column of ASTMT's FSV tables)."""

    name = "albedo"
    primary_metrics = {"rmse": False}
    default_weight = 10.0
    label_channels = 3

    def colorize(self, label: Tensor) -> np.ndarray:
        """Albedo is a colour: shown as is (clipped to [0, 1])."""
        return colorize_unit(label, self.valid_mask(label.unsqueeze(0))[0])
