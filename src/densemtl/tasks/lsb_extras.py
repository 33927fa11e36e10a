"""The six extra Taskonomy tasks of the LSB study: curvature, reshading, 2D/3D edges, 2D/3D
keypoints (SPEC §1). One implementation, parameterised by channels and display scale."""

from __future__ import annotations

from torch import Tensor

from densemtl.tasks.base import register_task
from densemtl.tasks.common import RegressionTask, check_pair, masked_l1


def masked_std(x: Tensor, valid: Tensor) -> Tensor:
    """Population standard deviation of each image's valid elements (all channels), shape ``B``.

    The variance is clamped at 1e-12 before the square root, whose gradient is infinite at 0 (a
    constant prediction, e.g. at initialisation, would otherwise give NaN gradients).
    """
    m = valid.unsqueeze(1).expand_as(x).to(x.dtype)
    n = m.flatten(1).sum(dim=1).clamp_min(1)
    mean = (x * m).flatten(1).sum(dim=1) / n
    centred = (x - mean.view(-1, 1, 1, 1)) * m
    return (centred.square().flatten(1).sum(dim=1) / n).clamp_min(1e-12).sqrt()


class LsbRegression(RegressionTask):
    """LSB loss ℓ = mean |ŷ − y| + |σ(ŷ) − σ(y)| (supplement Eq. 9-10), weight 1.

    The L1 term is averaged over valid pixels *and channels* (the suite's convention; the paper's
    (1/wh)‖·‖ is ambiguous for 2-channel curvature); σ is each image's standard deviation over its
    valid elements, the |σ̂ − σ| term averaged over the batch. Evaluation = the L1 term alone,
    times ``display_scale`` (×10 for 2D edges, ×100 for 3D edges and 2D keypoints, as in the
    paper's table).
    """

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """L1 plus the standard-deviation regulariser."""
        check_pair(self, pred, target)
        valid = self.valid_mask(target)
        spread = (masked_std(pred, valid) - masked_std(target, valid)).abs().mean()
        return masked_l1(pred, target, valid) + spread


@register_task
class Curvature(LsbRegression):
    """Principal curvatures (2 channels)."""

    name = "curvature"
    label_channels = 2


@register_task
class Reshading(LsbRegression):
    """Shading under a fixed light (1 channel)."""

    name = "reshading"


@register_task
class Edge2D(LsbRegression):
    """Texture (2D) edges, errors shown ×10."""

    name = "edge2d"
    display_scale = 10.0


@register_task
class Edge3D(LsbRegression):
    """Occlusion (3D) edges, errors shown ×100."""

    name = "edge3d"
    display_scale = 100.0


@register_task
class Keypoints2D(LsbRegression):
    """2D keypoint heat maps, errors shown ×100."""

    name = "keypoints2d"
    display_scale = 100.0


@register_task
class Keypoints3D(LsbRegression):
    """3D keypoint heat maps."""

    name = "keypoints3d"
