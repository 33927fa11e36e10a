"""Edge detection: one logit, positive-weighted BCE, odsF / oisF / AP."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchmetrics import Metric

from densemtl.tasks.base import register_task
from densemtl.tasks.common import BinaryMapTask, check_pair, weighted_bce


@register_task
class Edge(BinaryMapTask):
    """Edges (SPEC §1), weight 50: loss = mean over valid pixels of
    −[w·y·log σ + (1−w)(1−y)·log(1−σ)] with w = ``pos_weight`` (0.95 PASCAL, 0.8 NYUD).

    Normalisation: divided by the number of valid (non-255) pixels. The public ASTMT code divides
    the same weighted sum by all pixels of the batch; the two agree when nothing is ignored (the
    paper: "averaged to the number of samples the prediction contains"). ``max_dist`` is the
    matching tolerance of the odsF evaluation as a fraction of the image diagonal (0.0075 PASCAL,
    0.011 NYUD); ``nms`` whether the soft maps go through non-maximum suppression before the
    thresholds (the evaluation scripts of the code bases differ); ``ap`` the AP protocol
    (``"trapezoid"`` area or ``"bsds"``, see ``EdgeFMeasure``).
    """

    name = "edge"
    default_weight = 50.0
    primary_metrics = {"odsF": True}

    def __init__(
        self,
        pos_weight: float = 0.95,
        max_dist: float = 0.0075,
        thresholds: int = 99,
        nms: bool = True,
        ap: str = "trapezoid",
        weight: float | None = None,
    ):
        super().__init__(weight)
        if not 0.0 <= pos_weight <= 1.0:
            raise ValueError(f"{self.name}: pos_weight must be in [0, 1], got {pos_weight!r}")
        if ap not in ("trapezoid", "bsds"):
            raise ValueError(f"{self.name}: ap must be 'trapezoid' or 'bsds', got {ap!r}")
        self.pos_weight = float(pos_weight)
        self.max_dist = float(max_dist)
        self.thresholds = int(thresholds)
        self.nms = nms
        self.ap = ap

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Positive-weighted BCE over valid pixels."""
        check_pair(self, pred, target)
        return weighted_bce(pred, target, self.pos_weight, self.valid_mask(target))

    def make_metric(self) -> Metric:
        """``EdgeFMeasure`` -> ``{"odsF", "oisF", "AP"}``.

        Imported here: the matcher pulls in scipy / scikit-image, which training-only processes
        (losses and decoding) do not need.
        """
        from densemtl.metrics.edge import EdgeFMeasure

        return EdgeFMeasure(max_dist=self.max_dist, thresholds=self.thresholds, nms=self.nms,
                            ap=self.ap)

    def protocol(self) -> dict[str, Any]:
        """Tolerance, thresholds, NMS and AP protocol of the odsF / oisF / AP values."""
        return {"max_dist": self.max_dist, "thresholds": self.thresholds, "nms": self.nms,
                "ap": self.ap, "ods": "interpolated (findBestRPF)"}

    def __repr__(self) -> str:
        return f"Edge(pos_weight={self.pos_weight}, weight={self.weight})"
