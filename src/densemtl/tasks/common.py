"""Pieces shared by several task files: input checks, losses, colour maps and small task bases.

Not a task itself (nothing here is registered); it keeps the per-task files free of copies.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from densemtl.metrics.dense import RegressionMetric
from densemtl.tasks.base import Task, masked_mean

#: colour of ignored / invalid pixels in every visualisation (the PASCAL VOC colour of 255)
IGNORE_RGB = (224, 224, 192)


# -- checks ------------------------------------------------------------------------------------
def check_pair(task: Task, pred: Tensor, target: Tensor) -> None:
    """Raise a clear error unless ``pred``/``target`` follow the task's torch layout.

    Shapes only (no data-dependent checks), so it costs nothing on the GPU hot path.
    """
    if pred.dim() != 4 or pred.shape[1] != task.out_channels:
        raise ValueError(
            f"{task.name}: prediction must be B×{task.out_channels}×H×W, got {tuple(pred.shape)}"
        )
    b, _, h, w = pred.shape
    expected = (b, h, w) if task.kind == "class" else (b, task.label_channels, h, w)
    if tuple(target.shape) != expected:
        raise ValueError(
            f"{task.name}: target must have shape {expected} for a prediction of shape "
            f"{tuple(pred.shape)}, got {tuple(target.shape)}"
        )
    if task.kind == "class" and target.dtype != torch.int64:
        raise ValueError(f"{task.name}: class-map target must be int64, got {target.dtype}")


# -- losses ------------------------------------------------------------------------------------
def cross_entropy_ignore(logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """Cross-entropy averaged over non-ignored pixels; 0 (still on the graph) if there are none.

    ``F.cross_entropy(..., reduction="mean")`` returns NaN for an all-ignore batch (0/0), which
    happens for human parts when no image of the batch shows a person.
    """
    per_pixel = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    return masked_mean(per_pixel, target != ignore_index)


def weighted_bce(
    logits: Tensor, target: Tensor, pos_weight: float | Tensor, valid: Tensor
) -> Tensor:
    """Mean over valid pixels of −[w·y·log σ(x) + (1−w)(1−y)·log(1−σ(x))].

    Normalised by the number of *valid* pixels; the public ASTMT code divides the same sum by all
    pixels, ignored ones included — identical when nothing is ignored.
    """
    y = torch.where(valid.unsqueeze(1), target, torch.zeros_like(target))
    weight = pos_weight * y + (1 - pos_weight) * (1 - y)
    per_pixel = F.binary_cross_entropy_with_logits(logits, y, weight=weight, reduction="none")
    return masked_mean(per_pixel, valid)


def masked_l1(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Mean |pred − target| over the channels of valid pixels (ASTMT: averaged over W·H·C·N)."""
    return masked_mean((pred - target).abs(), valid)


# -- visualisation -----------------------------------------------------------------------------
def class_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC palette (bit-interleaved class ids), ``n×3`` uint8; 255 -> IGNORE_RGB."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        c, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[index] = (r, g, b)
    return palette


_PALETTE = class_palette()


def colorize_classes(label: Tensor) -> np.ndarray:
    """``H×W`` class ids -> ``H×W×3`` uint8 with the VOC palette."""
    ids = label.detach().cpu().numpy().astype(np.int64)
    if ids.ndim != 2:
        raise ValueError(f"expected an H×W class map, got shape {ids.shape}")
    return _PALETTE[np.clip(ids, 0, 255)]


def colorize_unit(values: Tensor, valid: Tensor) -> np.ndarray:
    """``C×H×W`` values in [0, 1] (C = 1: grey, 2: red/green, 3: RGB) -> ``H×W×3`` uint8.

    Values outside [0, 1] are clipped; invalid pixels get IGNORE_RGB.
    """
    v = values.detach().float().cpu().clamp(0, 1)
    if v.dim() != 3 or v.shape[0] not in (1, 2, 3):
        raise ValueError(f"expected a C×H×W map with C in 1..3, got shape {tuple(v.shape)}")
    if v.shape[0] == 1:
        v = v.expand(3, -1, -1)
    elif v.shape[0] == 2:
        v = torch.cat([v, torch.zeros_like(v[:1])])
    rgb = (v.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    rgb[~valid.detach().cpu().numpy()] = IGNORE_RGB
    return rgb


def normalize_range(values: Tensor, valid: Tensor) -> Tensor:
    """Min-max normalise each channel of ``C×H×W`` ``values`` to [0, 1] over the valid pixels."""
    v = values.detach().float()
    out = torch.zeros_like(v)
    for c in range(v.shape[0]):
        inside = v[c][valid]
        if inside.numel():
            lo, hi = inside.min(), inside.max()
            out[c] = (v[c] - lo) / (hi - lo).clamp_min(1e-12)
    return out


# -- task bases --------------------------------------------------------------------------------
class BinaryMapTask(Task):
    """A task predicting one logit per pixel against a {0, 1} map with 255 = ignore (edge, sal)."""

    kind = "binary"

    @property
    def out_channels(self) -> int:
        """One logit."""
        return 1

    def decode(self, pred: Tensor) -> Tensor:
        """Logits -> probabilities ``B×1×H×W``."""
        return torch.sigmoid(pred)

    def colorize(self, label: Tensor) -> np.ndarray:
        """Greyscale (white = positive / probability 1), ignored pixels in IGNORE_RGB."""
        return colorize_unit(label, label[0] != self.ignore_value)


class RegressionTask(Task):
    """A dense regression task with an L1 loss over valid pixels and an L1/MSE metric."""

    kind = "dense"
    primary_metrics = {"l1": False}
    #: factor the metric's values are multiplied by when reported (LSB paper's table)
    display_scale: float = 1.0

    @property
    def out_channels(self) -> int:
        """As many channels as the label."""
        return self.label_channels

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean absolute error over valid pixels and channels."""
        check_pair(self, pred, target)
        return masked_l1(pred, target, self.valid_mask(target))

    def decode(self, pred: Tensor) -> Tensor:
        """The regression output is already in label space."""
        return pred

    def make_metric(self) -> RegressionMetric:
        """``{"l1", "mse"}`` over valid pixels, times ``display_scale``."""
        return RegressionMetric(scale=self.display_scale, ignore_value=self.ignore_value)

    def colorize(self, label: Tensor) -> np.ndarray:
        """Each channel min-max normalised over the valid pixels (see ``colorize_unit``)."""
        valid = self.valid_mask(label.unsqueeze(0))[0]
        return colorize_unit(normalize_range(label, valid), valid)
