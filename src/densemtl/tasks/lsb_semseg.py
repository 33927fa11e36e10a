"""LSB-study segmentation loss: CE plus a logit-range regulariser (supplement Eq. 7-8)."""

from __future__ import annotations

from torch import Tensor

from densemtl.tasks.base import register_task
from densemtl.tasks.common import check_pair, cross_entropy_ignore
from densemtl.tasks.semseg import SemSeg


@register_task
class LsbSemSeg(SemSeg):
    """Segmentation as in the LSB study (13 NYUv2 classes there); reads the ``semseg`` label.

    Loss = CE over labelled pixels + mean over all pixels of Σ_c (max(|f_c|, f_max) − f_max) on
    the logits f (the supplement sums over classes and averages over pixels), f_max = 10.
    Metrics: mIoU and pixel accuracy of ``SegmentationMetric``.
    """

    name = "lsb_semseg"
    label_key = "semseg"

    def __init__(
        self,
        num_classes: int = 8,
        f_max: float = 10.0,
        absent: str = "skip",
        weight: float | None = None,
    ):
        super().__init__(num_classes=num_classes, absent=absent, weight=weight)
        if not f_max > 0:
            raise ValueError(f"{self.name}: f_max must be positive, got {f_max!r}")
        self.f_max = float(f_max)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """CE + logit-range penalty."""
        check_pair(self, pred, target)
        excess = (pred.abs() - self.f_max).clamp_min(0).sum(dim=1).mean()
        return cross_entropy_ignore(pred, target, int(self.ignore_value)) + excess
