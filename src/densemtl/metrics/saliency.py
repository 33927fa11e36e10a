"""Saliency maxF and mIoU in the two conventions of the multi-task literature (SPEC §5).

* ``"dataset_beta2_0.3"`` — the MTI-Net / ATRC ``MaxF`` meter: thresholds ``t = 0.05·k``,
  ``k = 1..19``, prediction positive where ``prob >= t``; precision and recall from TP / predicted
  / actual positives summed over the dataset; ``F = (1 + β²)·P·R / (β²·P + R)`` with β² = 0.3;
  maxF = max over thresholds. Its mIoU (that meter reports none; defined here) is the
  mean of background and foreground IoU of the ``prob >= 0.5`` map from dataset-level counts, a
  class whose union is empty over the whole dataset being left out of the mean.
* ``"image_beta2_1"`` — ASTMT's ``eval_sal`` (copied by later multi-task code; its sal mIoU is
  the saliency score that convention's Δm uses, SPEC §5):
  15 thresholds ``t = 0.2 + 0.05·j``, ``j = 0..14``, positive where ``prob > t`` (strict);
  per image precision ``tp/(tp+fp)``, recall ``tp/(tp+fn)`` (0 when the denominator is 0) and
  foreground Jaccard ``tp/(tp+fp+fn)`` (1 when the image has neither GT nor predicted
  foreground); each averaged over images per threshold; ``F = 2·mP·mR / (mP + mR)`` (β² = 1)
  from the averaged P and R; maxF = max over thresholds of F and mIoU = max over thresholds of
  the averaged Jaccard. (ASTMT adds 1e-12 to the denominators instead of the 0 rule — a 1e-12
  relative difference.) Images whose pixels are all ignored are skipped.

Pixels whose target is 255 are ignored in both conventions. All states are sums, so
``dist_reduce_fx="sum"`` merges processes exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["SaliencyMetric"]


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` elementwise, 0 where ``den == 0``."""
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))


class SaliencyMetric(Metric):
    """Saliency ``maxF`` and ``mIoU`` (in %) in one of ``CONVENTIONS``; see the module docstring.

    ``update(prob, target)``: ``prob`` ``B×1×H×W`` probabilities in [0, 1] (``task.decode``),
    ``target`` ``B×1×H×W`` in {0, 1} with 255 = ignore.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    CONVENTIONS = ("dataset_beta2_0.3", "image_beta2_1")

    def __init__(self, convention: str = "dataset_beta2_0.3", **kwargs) -> None:
        super().__init__(**kwargs)
        if convention not in self.CONVENTIONS:
            raise ValueError(
                f"unknown saliency convention {convention!r}; valid: {', '.join(self.CONVENTIONS)}"
            )
        self.convention = convention
        f64 = torch.float64
        if convention == "dataset_beta2_0.3":
            self.beta2 = 0.3
            self.strict = False
            thresholds = torch.arange(1, 20, dtype=f64) / 20
            zeros = torch.zeros(len(thresholds), dtype=f64)
            self.add_state("tp", default=zeros.clone(), dist_reduce_fx="sum")
            self.add_state("pred_pos", default=zeros.clone(), dist_reduce_fx="sum")
            self.add_state("gt_pos", default=zeros.clone(), dist_reduce_fx="sum")
            self.add_state("valid_pixels", default=torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        else:
            self.beta2 = 1.0
            self.strict = True
            thresholds = 0.2 + 0.05 * torch.arange(15, dtype=f64)
            zeros = torch.zeros(len(thresholds), dtype=f64)
            self.add_state("sum_precision", default=zeros.clone(), dist_reduce_fx="sum")
            self.add_state("sum_recall", default=zeros.clone(), dist_reduce_fx="sum")
            self.add_state("sum_jaccard", default=zeros.clone(), dist_reduce_fx="sum")
            self.add_state("images", default=torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.thresholds = thresholds

    def update(self, prob: Tensor, target: Tensor) -> None:
        """Add a batch of probability maps and binary targets (255 = ignore)."""
        if prob.dim() != 4 or prob.shape[1] != 1 or prob.shape != target.shape:
            raise ValueError(
                f"SaliencyMetric expects prob and target of equal shape B×1×H×W, got "
                f"{tuple(prob.shape)} and {tuple(target.shape)}"
            )
        p = prob.detach().to(torch.float64).flatten(1)  # B × N
        t = target.detach().to(torch.float64).flatten(1)
        if p.numel() and not (torch.isfinite(p).all() and p.min() >= 0 and p.max() <= 1):
            raise ValueError(
                f"SaliencyMetric: prob must be probabilities in [0, 1] (decode the logits), got "
                f"values in [{p.min().item():.4g}, {p.max().item():.4g}]"
            )
        bad = (t != 0) & (t != 1) & (t != 255)
        if bad.any():
            raise ValueError(
                f"SaliencyMetric: target values must be 0, 1 or 255 (ignore), got "
                f"{t[bad][0].item()!r}"
            )
        valid = t != 255  # B × N
        gt = (t == 1) & valid
        thr = self.thresholds.to(p.device)[None, :, None]  # 1 × K × 1
        pred = (p[:, None, :] > thr) if self.strict else (p[:, None, :] >= thr)
        pred = pred & valid[:, None, :]  # B × K × N
        tp = (pred & gt[:, None, :]).sum(-1).to(torch.float64)  # B × K
        n_pred = pred.sum(-1).to(torch.float64)
        n_gt = gt.sum(-1, keepdim=True).to(torch.float64).expand_as(tp)
        if self.convention == "dataset_beta2_0.3":
            self.tp = self.tp + tp.sum(0).to(self.tp.device)
            self.pred_pos = self.pred_pos + n_pred.sum(0).to(self.tp.device)
            self.gt_pos = self.gt_pos + n_gt.sum(0).to(self.tp.device)
            self.valid_pixels = self.valid_pixels + valid.sum().to(self.tp.device)
            return
        keep = valid.any(-1)  # images with at least one labelled pixel
        tp, n_pred, n_gt = tp[keep], n_pred[keep], n_gt[keep]
        union = n_pred + n_gt - tp
        jaccard = torch.where(union > 0, tp / union.clamp_min(1), torch.ones_like(tp))
        dev = self.images.device
        self.sum_precision = self.sum_precision + _safe_div(tp, n_pred).sum(0).to(dev)
        self.sum_recall = self.sum_recall + _safe_div(tp, n_gt).sum(0).to(dev)
        self.sum_jaccard = self.sum_jaccard + jaccard.sum(0).to(dev)
        self.images = self.images + keep.sum().to(dev)

    def _f_measure(self, precision: Tensor, recall: Tensor) -> Tensor:
        """F_β from precision and recall, 0 where both are 0."""
        return _safe_div((1 + self.beta2) * precision * recall, self.beta2 * precision + recall)

    def compute(self) -> dict[str, Tensor]:
        """``{"maxF", "mIoU"}`` in % (0–100)."""
        if self.convention == "dataset_beta2_0.3":
            precision = _safe_div(self.tp, self.pred_pos)
            recall = _safe_div(self.tp, self.gt_pos)
            max_f = self._f_measure(precision, recall).max()
            k = 9  # threshold 0.5 = 10/20
            tp = self.tp[k]
            fp = self.pred_pos[k] - tp
            fn = self.gt_pos[k] - tp
            tn = self.valid_pixels - tp - fp - fn
            intersection = torch.stack([tn, tp])  # background, foreground
            union = intersection + fp + fn
            present = union > 0  # a class absent from prediction and GT is left out
            miou = (intersection[present] / union[present]).mean() if present.any() else tp * 0
        else:
            n = self.images.clamp_min(1)
            f = self._f_measure(self.sum_precision / n, self.sum_recall / n)
            max_f = f.max()
            miou = (self.sum_jaccard / n).max()
        return {"maxF": (100 * max_f).float(), "mIoU": (100 * miou).float()}
