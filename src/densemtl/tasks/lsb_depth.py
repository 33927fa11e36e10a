"""LSB-study depth loss: L1 of log depth plus range penalties (supplement Eq. 2-4)."""

from __future__ import annotations

import torch
from torch import Tensor

from densemtl.tasks.base import masked_mean, register_task
from densemtl.tasks.common import check_pair
from densemtl.tasks.depth import Depth


@register_task
class LsbDepth(Depth):
    """Depth as in the LSB study; reads the ``depth`` label.

    Parameterisation: the network outputs log depth r, so d̂ = exp(r) is positive and
    log d̂ = r needs no clamp. Loss = mean over valid pixels |r − log d| + mean over *all* pixels
    of max(d_min − d̂, 0) + max(d̂ − d_max, 0). The penalties involve only the prediction, so they
    apply where GT is missing too. The supplement's Eq. 4 writes max(D, d_max) with the GT D —
    a penalty without gradient — and is read as d̂ here. Metrics: δ1 and RMSE (plus log-RMSE,
    abs-rel) of ``DepthMetric``. The default range [0.7, 10] m is NYUD's (the ATRC depth bins).
    """

    name = "lsb_depth"
    label_key = "depth"

    def __init__(
        self,
        d_min: float = 0.7,
        d_max: float = 10.0,
        pooled: bool = True,
        weight: float | None = None,
    ):
        super().__init__(pooled=pooled, weight=weight)
        if not 0 < d_min < d_max:
            raise ValueError(f"{self.name}: need 0 < d_min < d_max, got d_min={d_min!r}, "
                             f"d_max={d_max!r}")
        self.d_min, self.d_max = float(d_min), float(d_max)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """|log d̂ − log d| on valid pixels + the two range penalties."""
        check_pair(self, pred, target)
        valid = self.valid_mask(target)
        log_gt = torch.where(valid.unsqueeze(1), target, torch.ones_like(target)).log()
        depth = pred.exp()
        below = (self.d_min - depth).clamp_min(0).mean()
        above = (depth - self.d_max).clamp_min(0).mean()
        return masked_mean((pred - log_gt).abs(), valid) + below + above

    def decode(self, pred: Tensor) -> Tensor:
        """Log depth -> depth."""
        return pred.exp()
