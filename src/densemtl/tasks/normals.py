"""Surface normals: 3 channels, L1 between the unit prediction and GT, angle-error metrics.

Frame: x right, y up, z toward the camera (the image y axis is flipped relative to the normals'
y). All-zero ground truth marks invalid pixels (``ignore_value`` 0).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from densemtl.metrics.dense import NormalsMetric, normals_encoding
from densemtl.tasks.base import Task, register_task
from densemtl.tasks.common import check_pair, colorize_unit, masked_l1


@register_task
class Normals(Task):
    """Normals (SPEC §1), weight 10: L1 between the L2-normalised prediction and the GT as given
    (as in the ASTMT code, only the prediction is normalised), averaged over valid pixels and
    channels (``reduction="mean"``) or, as the ATRC reference code, summed over the three channels
    and averaged over valid pixels (``"pixel_sum"``, 3× the mean). ``quantize_8bit`` (false,
    true = ``"round"``, ``"trunc"``) scores the prediction's 8-bit PNG encoding; ``median`` is
    ``"exact"`` or ``"histogram"`` (see ``NormalsMetric``)."""

    name = "normals"
    kind = "dense"
    default_weight = 10.0
    label_channels = 3
    ignore_value = 0
    primary_metrics = {"mean": False}

    def __init__(self, quantize_8bit: bool | str = False, median: str = "exact",
                 reduction: str = "mean", weight: float | None = None) -> None:
        super().__init__(weight)
        self.encoding = normals_encoding(quantize_8bit)
        if median not in NormalsMetric.MEDIANS:
            raise ValueError(f"{self.name}: median must be one of {NormalsMetric.MEDIANS}, "
                             f"got {median!r}")
        if reduction not in ("mean", "pixel_sum"):
            raise ValueError(f"{self.name}: reduction must be 'mean' or 'pixel_sum', "
                             f"got {reduction!r}")
        self.median = median
        self.reduction = reduction

    @property
    def out_channels(self) -> int:
        """A 3-vector per pixel."""
        return 3

    def valid_mask(self, target: Tensor) -> Tensor:
        """Pixels whose GT has any non-zero channel."""
        return (target != 0).any(dim=1)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean |n̂/‖n̂‖ − n| over valid pixels and channels (× 3 for ``pixel_sum``)."""
        check_pair(self, pred, target)
        loss = masked_l1(self.decode(pred), target, self.valid_mask(target))
        return loss * target.shape[1] if self.reduction == "pixel_sum" else loss

    def decode(self, pred: Tensor) -> Tensor:
        """Unit vectors (a zero output stays zero)."""
        return F.normalize(pred, dim=1)

    def make_metric(self) -> NormalsMetric:
        """Pooled angle errors: mean, median, rmse, % below 11.25° / 22.5° / 30° (of the float
        prediction, or of its 8-bit PNG encoding with ``quantize_8bit``)."""
        return NormalsMetric(quantize_8bit=self.encoding or False, median=self.median)

    def protocol(self) -> dict[str, Any]:
        """Which prediction is scored (float or an 8-bit encoding) and how the median is taken."""
        return {"encoding": self.encoding or "float", "median": self.median}

    def hflip_label(self, label: np.ndarray) -> np.ndarray:
        """A mirrored surface faces the mirrored way: negate x."""
        out = label.copy()
        out[..., 0] = -label[..., 0]
        return out

    def rotate_label(self, label: np.ndarray, angle_deg: float) -> np.ndarray:
        """Rotating the picture counter-clockwise by θ rotates (x, y) counter-clockwise by θ (the
        normals' y axis points up, so counter-clockwise means the same in both frames)."""
        theta = math.radians(angle_deg)
        c, s = math.cos(theta), math.sin(theta)
        x, y = label[..., 0], label[..., 1]
        out = label.copy()
        out[..., 0] = c * x - s * y
        out[..., 1] = s * x + c * y
        return out

    def colorize(self, label: Tensor) -> np.ndarray:
        """(n + 1) / 2 as RGB; invalid pixels in IGNORE_RGB."""
        return colorize_unit((label + 1) / 2, self.valid_mask(label.unsqueeze(0))[0])
