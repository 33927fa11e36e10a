"""LSB-study normals loss: 1 − mean cosine plus a unit-length regulariser (supplement Eq. 5-6)."""

from __future__ import annotations

from torch import Tensor

from densemtl.tasks.base import masked_mean, register_task
from densemtl.tasks.common import check_pair
from densemtl.tasks.normals import Normals


@register_task
class LsbNormals(Normals):
    """Normals as in the LSB study; reads the ``normals`` label.

    Loss = 1 − mean over valid pixels of ⟨n, n̂⟩ + mean over all pixels of |‖n̂‖ − 1|, on the raw
    (unnormalised) prediction n̂; the regulariser involves only the prediction, so it applies where
    GT is missing too. Note n̂ = c·n with c ≥ 1 also gives 0 (1 − c + c − 1): the paper's loss.
    Metrics: δ30° (``pct_30``) and mean angle of ``NormalsMetric``.
    """

    name = "lsb_normals"
    label_key = "normals"
    default_weight = 1.0

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """1 − mean cosine (unnormalised) + mean | ‖n̂‖ − 1 |."""
        check_pair(self, pred, target)
        cosine = masked_mean((pred * target).sum(dim=1), self.valid_mask(target))
        return 1 - cosine + (pred.norm(dim=1) - 1).abs().mean()
