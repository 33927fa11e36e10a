"""Dense metrics on tiny inputs against numbers worked out by hand."""

import math

import pytest
import torch

from densemtl.metrics.dense import DepthMetric, NormalsMetric, RegressionMetric, SegmentationMetric

# -- segmentation --------------------------------------------------------------------------------
# Valid (target, pred) pairs: (0,0) (0,1) (1,1) | (1,1) (1,2) (0,0); the 3 in the prediction sits
# on an ignored pixel. Class 0: hits 2, union 3 → 2/3. Class 1: hits 2, union 4 → 1/2.
# Class 2: predicted once, never GT → 0. Class 3: absent from both.
SEG_TARGET = torch.tensor([[[0, 0], [1, 255]], [[1, 1], [0, 255]]])
SEG_PRED = torch.tensor([[[0, 1], [1, 3]], [[1, 2], [0, 0]]])


@pytest.mark.parametrize("absent, miou", [("skip", (2 / 3 + 1 / 2 + 0) / 3),
                                          ("zero", (2 / 3 + 1 / 2 + 0 + 0) / 4)])
def test_segmentation_miou_absent_class_conventions(absent, miou):
    metric = SegmentationMetric(num_classes=4, absent=absent)
    metric.update(SEG_PRED, SEG_TARGET)
    out = metric.compute()
    assert out["mIoU"].item() == pytest.approx(100 * miou)
    assert out["pixel_acc"].item() == pytest.approx(100 * 4 / 6)


def test_segmentation_two_updates_equal_one():
    split, whole = SegmentationMetric(4), SegmentationMetric(4)
    split.update(SEG_PRED[:1], SEG_TARGET[:1])
    split.update(SEG_PRED[1:], SEG_TARGET[1:])
    whole.update(SEG_PRED, SEG_TARGET)
    assert torch.equal(split.confusion, whole.confusion)
    assert split.confusion.tolist() == [[2, 1, 0, 0], [0, 2, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_segmentation_bad_input():
    metric = SegmentationMetric(num_classes=4)
    with pytest.raises(ValueError, match=r"target class ids must lie in \[0, 4\).*\[0, 7\]"):
        metric.update(SEG_PRED, torch.tensor([[[0, 7], [1, 255]], [[1, 1], [0, 255]]]))
    with pytest.raises(ValueError, match="integer class ids"):
        metric.update(SEG_PRED.float(), SEG_TARGET)
    with pytest.raises(ValueError, match="absent must be one of"):
        SegmentationMetric(4, absent="nan")


# -- normals ---------------------------------------------------------------------------------------
def _tilted(angles_deg, length=1.0):
    """B=1 × 3 × 1 × N field of vectors tilted from +z toward +x by the given angles."""
    a = torch.tensor(angles_deg, dtype=torch.float64).deg2rad()
    v = torch.stack([a.sin(), torch.zeros_like(a), a.cos()]) * length
    return v.view(1, 3, 1, -1).float()


def test_normals_angle_statistics():
    # angles 0°, 10°, 20°, 45° plus one invalid pixel (GT all zero) with a 90° prediction
    pred = torch.cat([_tilted([0, 10, 20, 45], length=3.0), _tilted([90])], dim=3)
    target = torch.cat([_tilted([0, 0, 0, 0]), torch.zeros(1, 3, 1, 1)], dim=3)
    metric = NormalsMetric()
    metric.update(pred, target)
    out = metric.compute()
    assert out["mean"].item() == pytest.approx((0 + 10 + 20 + 45) / 4, abs=1e-5)
    assert out["median"].item() == pytest.approx((10 + 20) / 2, abs=0.01)
    assert out["rmse"].item() == pytest.approx(math.sqrt((0 + 100 + 400 + 2025) / 4), abs=1e-5)
    assert out["pct_11.25"].item() == pytest.approx(50.0)
    assert out["pct_22.5"].item() == pytest.approx(75.0)
    assert out["pct_30"].item() == pytest.approx(75.0)


def test_normals_two_updates_equal_one_and_odd_median():
    pred, target = _tilted([0.5, 7.0, 50.0]), _tilted([0.0, 0.0, 0.0])
    split, whole = NormalsMetric(), NormalsMetric()
    split.update(pred[..., :1], target[..., :1])
    split.update(pred[..., 1:], target[..., 1:])
    whole.update(pred, target)
    a, b = split.compute(), whole.compute()
    for key in b:
        assert a[key].item() == pytest.approx(b[key].item(), abs=1e-9)
    assert b["median"].item() == pytest.approx(7.0, abs=0.01)
    assert b["mean"].item() == pytest.approx(57.5 / 3, abs=1e-6)


# -- depth ---------------------------------------------------------------------------------------
# image 1: valid (gt, pred) = (1,1) (2,2) (4,2), one invalid pixel; image 2: (2,2)×3 and (2,3).
DEPTH_TARGET = torch.tensor([[[[1.0, 2.0], [4.0, 0.0]]], [[[2.0, 2.0], [2.0, 2.0]]]])
DEPTH_PRED = torch.tensor([[[[1.0, 2.0], [2.0, 5.0]]], [[[2.0, 2.0], [2.0, 3.0]]]])
LN2, LN15 = math.log(2.0), math.log(1.5)


def test_depth_pooled_over_pixels():
    metric = DepthMetric(pooled=True)
    metric.update(DEPTH_PRED, DEPTH_TARGET)
    out = metric.compute()
    assert out["rmse"].item() == pytest.approx(math.sqrt((4 + 1) / 7))
    assert out["log_rmse"].item() == pytest.approx(math.sqrt((LN2**2 + LN15**2) / 7))
    assert out["delta1"].item() == pytest.approx(100 * 5 / 7)  # ratios 2 and 1.5 fail
    assert out["abs_rel"].item() == pytest.approx((2 / 4 + 1 / 2) / 7)


def test_depth_per_image_differs_and_skips_empty_images():
    metric = DepthMetric(pooled=False)
    empty = torch.zeros(1, 1, 2, 2)
    metric.update(DEPTH_PRED[:1], DEPTH_TARGET[:1])
    metric.update(torch.cat([DEPTH_PRED[1:], empty + 3]), torch.cat([DEPTH_TARGET[1:], empty]))
    out = metric.compute()
    assert out["rmse"].item() == pytest.approx((math.sqrt(4 / 3) + math.sqrt(1 / 4)) / 2)
    assert out["log_rmse"].item() == pytest.approx((LN2 / math.sqrt(3) + LN15 / 2) / 2)
    assert out["delta1"].item() == pytest.approx(100 * (2 / 3 + 3 / 4) / 2)
    assert out["abs_rel"].item() == pytest.approx((0.5 / 3 + 0.5 / 4) / 2)  # |3 − 2| / 2 = 0.5
    assert out["rmse"].item() != pytest.approx(math.sqrt(5 / 7))


def test_depth_pooled_two_updates_equal_one():
    split, whole = DepthMetric(), DepthMetric()
    split.update(DEPTH_PRED[:1], DEPTH_TARGET[:1])
    split.update(DEPTH_PRED[1:], DEPTH_TARGET[1:])
    whole.update(DEPTH_PRED, DEPTH_TARGET)
    a, b = split.compute(), whole.compute()
    assert all(a[k].item() == pytest.approx(b[k].item()) for k in b)


def test_depth_shape_error_names_shapes():
    with pytest.raises(ValueError, match=r"\(2, 1, 2, 2\) != target shape \(2, 2, 2\)"):
        DepthMetric().update(DEPTH_PRED, DEPTH_TARGET[:, 0])


# -- regression ----------------------------------------------------------------------------------
def test_regression_l1_mse_with_ignore_and_scale():
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [5.0, 255.0]]]])  # errors 0, 2, −2; one padded pixel
    metric = RegressionMetric(scale=10.0)
    metric.update(pred, target)
    out = metric.compute()
    assert out["l1"].item() == pytest.approx(10 * 4 / 3)
    assert out["mse"].item() == pytest.approx(10 * 8 / 3)


def test_no_valid_pixels_gives_nan_not_zero():
    normals, depth = NormalsMetric(), DepthMetric()
    normals.update(torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2))
    depth.update(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    values = list(normals.compute().values()) + list(depth.compute().values())
    assert len(values) == 10 and all(math.isnan(v.item()) for v in values)


def test_normals_8bit_quantisation_scores_the_png_encoding():
    """With quantize_8bit the prediction is first rounded to v = round((n+1)·127.5): the unit
    vector (0.6, 0.8, 0) becomes (2·204/255 − 1, 2·230/255 − 1, 2·128/255 − 1)."""
    import math

    from densemtl.metrics.dense import NormalsMetric

    pred = torch.tensor([0.6, 0.8, 0.0]).view(1, 3, 1, 1)
    target = pred.clone()
    exact = NormalsMetric()
    exact.update(pred, target)
    assert float(exact.compute()["mean"]) == pytest.approx(0.0, abs=1e-6)
    quant = NormalsMetric(quantize_8bit=True)
    quant.update(pred, target)
    q = torch.tensor([2 * 204 / 255 - 1, 2 * 230 / 255 - 1, 2 * 128 / 255 - 1], dtype=torch.float64)
    t = torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64)
    angle = math.degrees(math.atan2(torch.linalg.cross(q, t).norm(), q @ t))
    assert float(quant.compute()["mean"]) == pytest.approx(angle, rel=1e-4)  # float32 input
    assert angle > 0.2
