"""Saliency: one logit, class-balanced BCE, maxF (and sal mIoU in one convention)."""

from __future__ import annotations

from torch import Tensor

from densemtl.metrics.saliency import SaliencyMetric
from densemtl.tasks.base import register_task
from densemtl.tasks.common import BinaryMapTask, check_pair, weighted_bce


@register_task
class Saliency(BinaryMapTask):
    """Salient-object maps (SPEC §1), weight 5: BCE whose positive weight is the fraction of
    negatives among the batch's valid pixels (HED-style balancing, recomputed every batch).

    A batch with only negatives gets w = 1, so its loss is 0. ``convention`` picks the maxF
    convention of ``SaliencyMetric`` (SPEC §5); Δm uses maxF in the dataset β² = 0.3 convention
    and sal mIoU in ASTMT's per-image β² = 1 convention (the Sal column of its tables).
    """

    name = "sal"
    default_weight = 5.0
    primary_metrics = {"maxF": True}  # the default convention's; instances follow their own
    CONVENTIONS = SaliencyMetric.CONVENTIONS

    def __init__(self, convention: str = "dataset_beta2_0.3", weight: float | None = None):
        super().__init__(weight)
        self.convention = convention
        self.primary_metrics = {"mIoU" if convention == "image_beta2_1" else "maxF": True}

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Balanced BCE over valid pixels."""
        check_pair(self, pred, target)
        valid = self.valid_mask(target)
        negatives = ((target[:, 0] < 0.5) & valid).sum()
        pos_weight = negatives / valid.sum().clamp_min(1)
        return weighted_bce(pred, target, pos_weight, valid)

    def make_metric(self) -> SaliencyMetric:
        """``SaliencyMetric`` -> ``{"maxF", "mIoU"}`` in the chosen convention."""
        return SaliencyMetric(convention=self.convention)
