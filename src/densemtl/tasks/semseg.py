"""Semantic segmentation: C logits, cross-entropy ignoring 255, mIoU and pixel accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from densemtl.metrics.dense import SegmentationMetric
from densemtl.tasks.base import Task, register_task
from densemtl.tasks.common import check_pair, colorize_classes, cross_entropy_ignore


@register_task
class SemSeg(Task):
    """Semantic segmentation (SPEC §1): CE over labelled pixels, weight 1.

    ``num_classes`` comes from the dataset (21 for PASCAL-Context incl. background, 40 NYUD,
    13 NYUv2 in the LSB study); the default 8 is that of the embedded synthetic scenes
    (``densemtl.data.synthetic.SYNTHETIC_CLASSES``). ``absent`` is the mIoU convention of
    ``SegmentationMetric`` (``"skip"``: classes absent from prediction and GT are left out;
    ``"zero"``: counted as 0).
    """

    name = "semseg"
    kind = "class"
    default_weight = 1.0
    primary_metrics = {"mIoU": True}

    def __init__(self, num_classes: int = 8, absent: str = "skip", weight: float | None = None):
        super().__init__(weight)
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"{self.name}: num_classes must be an int ≥ 2, got {num_classes!r}")
        if absent not in SegmentationMetric.ABSENT_MODES:
            raise ValueError(f"{self.name}: absent must be one of "
                             f"{SegmentationMetric.ABSENT_MODES}, got {absent!r}")
        self.num_classes = num_classes
        self.absent = absent

    @property
    def out_channels(self) -> int:
        """One logit per class."""
        return self.num_classes

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy averaged over labelled pixels (0 if the batch has none)."""
        check_pair(self, pred, target)
        return cross_entropy_ignore(pred, target, int(self.ignore_value))

    def decode(self, pred: Tensor) -> Tensor:
        """Logits -> class ids ``B×H×W`` (int64)."""
        return pred.argmax(dim=1)

    def make_metric(self) -> SegmentationMetric:
        """Dataset-wide confusion matrix -> ``{"mIoU", "pixel_acc"}`` in %."""
        return SegmentationMetric(self.num_classes, int(self.ignore_value), absent=self.absent)

    def protocol(self) -> dict[str, Any]:
        """How a class absent from prediction and ground truth enters the mIoU."""
        return {"absent": self.absent}

    def colorize(self, label: Tensor) -> np.ndarray:
        """VOC palette; ignore (255) in IGNORE_RGB."""
        return colorize_classes(label)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_classes={self.num_classes}, weight={self.weight})"
