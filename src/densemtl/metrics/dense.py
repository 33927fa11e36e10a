"""Dense-prediction metrics: segmentation, surface normals, depth and generic regression.

All are torchmetrics ``Metric``s whose states are sums (``dist_reduce_fx="sum"``), so they sync
across processes and two ``update`` calls equal one ``update`` on the concatenated batch. They
take *decoded* predictions (``task.decode(pred)``) in the torch label layout of
``densemtl.tasks.base`` and ``compute()`` returns ``dict[str, Tensor]``. Sums are kept in float64:
a validation set has ~10⁸ pixels, beyond what float32 accumulates exactly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "NORMALS_ENCODINGS",
    "DepthMetric",
    "NormalsMetric",
    "RegressionMetric",
    "SegmentationMetric",
    "normals_encoding",
]


def _check_same_shape(metric: Metric, preds: Tensor, target: Tensor) -> None:
    """Raise a clear error when prediction and target shapes differ."""
    if preds.shape != target.shape:
        raise ValueError(
            f"{type(metric).__name__}: prediction shape {tuple(preds.shape)} != target shape "
            f"{tuple(target.shape)}; pass task.decode(pred) and the batch label"
        )


def _check_dense(metric: Metric, preds: Tensor, target: Tensor, channels: int | None) -> None:
    """Raise unless preds/target are equal-shaped float ``B×C×H×W`` (C = ``channels`` if given)."""
    _check_same_shape(metric, preds, target)
    if preds.dim() != 4 or (channels is not None and preds.shape[1] != channels):
        want = f"B×{channels}×H×W" if channels is not None else "B×C×H×W"
        raise ValueError(
            f"{type(metric).__name__}: expected {want} tensors, got {tuple(preds.shape)}"
        )


class SegmentationMetric(Metric):
    """mIoU and pixel accuracy (both in %) from a dataset-wide confusion matrix.

    ``absent`` decides what happens to a class that never occurs in prediction or ground truth
    over the whole dataset (its IoU is 0/0): ``"skip"`` (default, SPEC §1) leaves it out of the
    mean; ``"zero"`` counts it as IoU 0, as the public ASTMT / ATRC code does. Pixels whose target
    equals ``ignore_index`` are not counted, so an all-ignore image (e.g. a PASCAL image without
    persons for human parts) contributes nothing: human-parts mIoU is over images with persons.
    """

    is_differentiable = False
    full_state_update = False
    ABSENT_MODES = ("skip", "zero")

    def __init__(
        self, num_classes: int, ignore_index: int = 255, absent: str = "skip", **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if absent not in self.ABSENT_MODES:
            raise ValueError(f"absent must be one of {self.ABSENT_MODES}, got {absent!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.absent = absent
        self.add_state(
            "confusion",
            default=torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add decoded class ids ``preds`` (B×H×W) against ``target`` (B×H×W) to the matrix."""
        _check_same_shape(self, preds, target)
        if preds.is_floating_point() or target.is_floating_point():
            raise ValueError(
                "SegmentationMetric expects integer class ids (task.decode(pred)), got "
                f"{preds.dtype} predictions and {target.dtype} targets"
            )
        valid = target != self.ignore_index
        t, p = target[valid].long(), preds[valid].long()
        for what, ids in (("target", t), ("prediction", p)):
            if ids.numel() and (ids.min() < 0 or ids.max() >= self.num_classes):
                raise ValueError(
                    f"{what} class ids must lie in [0, {self.num_classes}) (or be "
                    f"{self.ignore_index} in the target), got range "
                    f"[{int(ids.min())}, {int(ids.max())}]"
                )
        counts = torch.bincount(t * self.num_classes + p, minlength=self.num_classes**2)
        self.confusion += counts.reshape(self.num_classes, self.num_classes)

    def compute(self) -> dict[str, Tensor]:
        """``{"mIoU", "pixel_acc"}`` in percent (rows of the matrix = ground truth)."""
        cm = self.confusion.double()
        hits = cm.diagonal()
        union = cm.sum(0) + cm.sum(1) - hits
        iou = hits / union.clamp_min(1)
        miou = iou[union > 0].mean() if self.absent == "skip" else iou.mean()
        return {"mIoU": 100 * miou, "pixel_acc": 100 * hits.sum() / cm.sum()}


#: 8-bit PNG encodings of a unit normal n (``NormalsMetric(quantize_8bit=...)``): v = round or
#: floor of (n + 1)·127.5, decoded n = 2v/255 − 1
NORMALS_ENCODINGS = ("round", "trunc")


def normals_encoding(quantize_8bit: bool | str) -> str | None:
    """``None`` (float prediction), ``"round"`` (also for ``True``) or ``"trunc"``."""
    if quantize_8bit is False or quantize_8bit is None:
        return None
    if quantize_8bit is True:
        return "round"
    if quantize_8bit not in NORMALS_ENCODINGS:
        raise ValueError(f"quantize_8bit must be false, true or one of {NORMALS_ENCODINGS}, "
                         f"got {quantize_8bit!r}")
    return quantize_8bit


class NormalsMetric(Metric):
    """Angular error of surface normals, pooled over valid pixels (ground truth not all zero).

    Returns ``mean``, ``median``, ``rmse`` (degrees) and ``pct_11.25``, ``pct_22.5``, ``pct_30``
    (% of pixels with error below that angle). The angle is ``atan2(|p×t|, p·t)``, accurate also
    near 0° where ``acos`` of a float dot product is not, and independent of vector lengths.
    ``median="exact"`` (default) keeps every angle (8 bytes per valid pixel, concatenated across
    processes) and returns the exact median, the mean of the two middle angles for an even
    count, as ``np.median`` of the public evaluation code; ``median="histogram"`` keeps only a
    histogram of ``bin_width_deg`` bins (bounded memory) and returns the centre of the bin that
    holds the median, exact to half a bin (0.005° by default). ``quantize_8bit`` first maps the
    prediction through its 8-bit PNG encoding v = round((n + 1)·127.5) (``True`` or ``"round"``)
    or v = floor((n + 1)·127.5) (``"trunc"``, the public pipeline's ``astype(uint8)``), then
    n = 2v/255 − 1 — what a prediction saved in that format scores.
    """

    is_differentiable = False
    full_state_update = False
    THRESHOLDS = (11.25, 22.5, 30.0)
    MEDIANS = ("exact", "histogram")

    def __init__(
        self, bin_width_deg: float = 0.01, quantize_8bit: bool | str = False,
        median: str = "exact", **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if not 0 < bin_width_deg <= 1:
            raise ValueError(f"bin_width_deg must be in (0, 1], got {bin_width_deg!r}")
        if median not in self.MEDIANS:
            raise ValueError(f"median must be one of {self.MEDIANS}, got {median!r}")
        self.bin_width = float(bin_width_deg)
        self.encoding = normals_encoding(quantize_8bit)
        self.median = median
        self.num_bins = math.ceil(180.0 / self.bin_width)
        zero = torch.zeros((), dtype=torch.float64)
        self.add_state("angle_sum", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("angle_sq_sum", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state(
            "below", default=torch.zeros(len(self.THRESHOLDS), dtype=torch.long),
            dist_reduce_fx="sum",
        )
        if median == "exact":
            self.add_state("angles", default=[], dist_reduce_fx="cat")
        else:
            self.add_state(
                "histogram", default=torch.zeros(self.num_bins, dtype=torch.long),
                dist_reduce_fx="sum",
            )

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add decoded normals ``preds`` (B×3×H×W) against ``target`` (B×3×H×W, zero = invalid)."""
        _check_dense(self, preds, target, 3)
        valid = (target != 0).any(dim=1)
        if self.encoding is not None:
            scaled = (preds.clamp(-1, 1) + 1) * 127.5
            levels = torch.round(scaled) if self.encoding == "round" else torch.floor(scaled)
            preds = levels / 127.5 - 1
        p = preds.permute(0, 2, 3, 1)[valid].double()
        t = target.permute(0, 2, 3, 1)[valid].double()
        angle = torch.rad2deg(
            torch.atan2(torch.linalg.cross(p, t).norm(dim=-1), (p * t).sum(dim=-1))
        )
        self.angle_sum += angle.sum()
        self.angle_sq_sum += angle.square().sum()
        self.count += angle.numel()
        self.below += torch.stack([(angle < th).sum() for th in self.THRESHOLDS])
        if self.median == "exact":
            self.angles.append(angle)
        else:
            bins = (angle / self.bin_width).long().clamp_(0, self.num_bins - 1)
            self.histogram += torch.bincount(bins, minlength=self.num_bins)

    def _value_of_rank(self, rank: int) -> Tensor:
        """Centre of the histogram bin that holds the ``rank``-th smallest angle (1-based)."""
        cumulative = self.histogram.cumsum(0)
        index = torch.searchsorted(cumulative, torch.tensor(rank, device=cumulative.device))
        return (index.double() + 0.5) * self.bin_width

    def _median(self, n: int) -> Tensor:
        """The median of the ``n`` (> 0) angles seen, exact or from the histogram."""
        if self.median == "exact":
            angles = self.angles if isinstance(self.angles, Tensor) else torch.cat(self.angles)
            ordered = angles.sort().values
            if n % 2:
                return ordered[n // 2]
            return (ordered[n // 2 - 1] + ordered[n // 2]) / 2
        if n % 2:
            return self._value_of_rank((n + 1) // 2)
        return (self._value_of_rank(n // 2) + self._value_of_rank(n // 2 + 1)) / 2

    def compute(self) -> dict[str, Tensor]:
        """Pooled angle statistics over every valid pixel seen (NaN if there were none)."""
        n = int(self.count)
        if n == 0:
            median = torch.tensor(math.nan, dtype=torch.float64, device=self.count.device)
        else:
            median = self._median(n)
        denom = self.count.double()
        out = {
            "mean": self.angle_sum / denom,
            "median": median,
            "rmse": (self.angle_sq_sum / denom).sqrt(),
        }
        for th, below in zip(self.THRESHOLDS, self.below):
            out[f"pct_{th:g}"] = 100.0 * below.double() / denom
        return out


class DepthMetric(Metric):
    """Depth errors: ``rmse``, ``log_rmse`` (natural log), ``delta1`` (% with max ratio < 1.25),
    ``abs_rel``; ground truth ≤ 0 is invalid.

    ``pooled=True`` (default) averages over all valid pixels of the dataset; ``pooled=False``
    computes each statistic per image (RMSE = root of that image's mean square) and averages over
    images that have valid pixels. The keys are the same in both modes; the mode is a config value
    (SPEC §5). Predictions are clamped to ≥ 1e-9 for the log and the ratio.
    """

    is_differentiable = False
    full_state_update = False
    EPS = 1e-9
    _STATS = ("sq", "log_sq", "delta1", "abs_rel")

    def __init__(self, pooled: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pooled = bool(pooled)
        # pooled: sums over valid pixels and their number; per image: sums of per-image values
        # (per-image RMSEs for "sq" / "log_sq") and the number of images with valid pixels
        for stat in self._STATS:
            self.add_state(stat, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add decoded depth ``preds`` (B×1×H×W) against ``target`` (B×1×H×W, 0 = invalid)."""
        _check_dense(self, preds, target, 1)
        valid = (target > 0).flatten(1)
        d = target.double().flatten(1).clamp_min(self.EPS)
        p = preds.double().flatten(1)
        p_pos = p.clamp_min(self.EPS)
        ratio = torch.maximum(p_pos / d, d / p_pos)
        per_pixel = {
            "sq": (p - d).square(),
            "log_sq": (p_pos.log() - d.log()).square(),
            "delta1": (ratio < 1.25).double() * 100.0,
            "abs_rel": (p - d).abs() / d,
        }
        sums = {stat: torch.where(valid, v, 0.0).sum(dim=1) for stat, v in per_pixel.items()}
        n = valid.sum(dim=1).double()
        if self.pooled:
            for stat, per_image in sums.items():
                setattr(self, stat, getattr(self, stat) + per_image.sum())
            self.count += n.sum()
            return
        has = n > 0
        for stat, per_image in sums.items():
            mean = per_image[has] / n[has]
            if stat in ("sq", "log_sq"):
                mean = mean.sqrt()
            setattr(self, stat, getattr(self, stat) + mean.sum())
        self.count += has.sum()

    def compute(self) -> dict[str, Tensor]:
        """The four depth statistics (see the class docstring); NaN if nothing was valid."""
        n = self.count
        sq, log_sq = self.sq / n, self.log_sq / n
        if self.pooled:
            sq, log_sq = sq.sqrt(), log_sq.sqrt()
        return {
            "rmse": sq, "log_rmse": log_sq, "delta1": self.delta1 / n, "abs_rel": self.abs_rel / n
        }


class RegressionMetric(Metric):
    """Mean absolute (``l1``) and squared (``mse``) error over valid label elements.

    Elements whose target equals ``ignore_value`` (padding) are skipped. Both values are multiplied
    by ``scale``, a display factor: the LSB paper reports 2D-edge errors ×10 and 3D-edge and
    2D-keypoint errors ×100.
    """

    is_differentiable = False
    full_state_update = False

    def __init__(self, scale: float = 1.0, ignore_value: float = 255, **kwargs) -> None:
        super().__init__(**kwargs)
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        self.scale = float(scale)
        self.ignore_value = ignore_value
        zero = torch.zeros((), dtype=torch.float64)
        self.add_state("abs_sum", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("sq_sum", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("count", default=zero.clone(), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add ``preds`` against ``target`` (both B×C×H×W)."""
        _check_dense(self, preds, target, None)
        valid = (target != self.ignore_value).all(dim=1, keepdim=True).expand_as(target)
        diff = (preds.double() - target.double())[valid]
        self.abs_sum += diff.abs().sum()
        self.sq_sum += diff.square().sum()
        self.count += diff.numel()

    def compute(self) -> dict[str, Tensor]:
        """``{"l1", "mse", "rmse"}`` times ``scale``; NaN if nothing was valid."""
        n = self.count
        mse = self.sq_sum / n
        return {"l1": self.scale * self.abs_sum / n, "mse": self.scale * mse,
                "rmse": self.scale * mse.sqrt()}
