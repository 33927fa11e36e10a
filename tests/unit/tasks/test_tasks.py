"""Task losses, decoding, label rules and registry on tiny tensors, against hand computations."""

import math

import numpy as np
import pytest
import torch

from densemtl.tasks import TASK_REGISTRY, Task, build_task
from densemtl.tasks.common import IGNORE_RGB

LN2, LN3, LN4 = math.log(2.0), math.log(3.0), math.log(4.0)


# -- registry ------------------------------------------------------------------------------------
def test_registry_defaults_follow_spec_table():
    weights = {"edge": 50, "semseg": 1, "human_parts": 2, "normals": 10, "sal": 5, "depth": 1,
               "albedo": 10}
    assert {n: build_task(n).weight for n in weights} == weights
    assert build_task("semseg", weight=3).weight == 3.0
    channels = {"human_parts": 7, "edge": 1, "normals": 3, "sal": 1, "depth": 1, "albedo": 3,
                "curvature": 2, "reshading": 1, "keypoints3d": 1}
    assert {n: build_task(n).out_channels for n in channels} == channels
    assert build_task("semseg", num_classes=40).out_channels == 40
    from densemtl.data.synthetic import SYNTHETIC_CLASSES

    assert build_task("semseg").num_classes == len(SYNTHETIC_CLASSES)  # the default dataset
    assert all(isinstance(build_task(n), Task) for n in TASK_REGISTRY)


def test_unknown_task_lists_valid_names():
    with pytest.raises(KeyError, match=r"unknown task 'segm'.*albedo.*lsb_depth.*semseg"):
        build_task("segm")


def test_label_keys_and_primary_metrics():
    assert {n: build_task(n).label_key for n in ("lsb_depth", "lsb_normals", "lsb_semseg")} == {
        "lsb_depth": "depth", "lsb_normals": "normals", "lsb_semseg": "semseg"}
    assert build_task("human_parts").label_key == "human_parts"
    assert build_task("depth").primary_metrics == {"rmse": False}
    assert build_task("edge").primary_metrics == {"odsF": True}
    assert build_task("sal").primary_metrics == {"maxF": True}


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"pos_weight must be in \[0, 1\], got 1.5"):
        build_task("edge", pos_weight=1.5)
    with pytest.raises(ValueError, match="num_classes must be an int ≥ 2, got 1"):
        build_task("semseg", num_classes=1)
    with pytest.raises(ValueError, match=r"d_min=2.0, d_max=1.0"):
        build_task("lsb_depth", d_min=2.0, d_max=1.0)
    with pytest.raises(ValueError, match=r"prediction must be B×3×H×W, got \(1, 2, 2, 2\)"):
        build_task("normals").loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"target must have shape \(1, 2, 2\)"):
        build_task("semseg").loss(torch.zeros(1, 8, 2, 2), torch.zeros(1, 1, 2, 2).long())


# -- segmentation --------------------------------------------------------------------------------
def _seg_logits():
    # pixel (0,0): [0,0]; (0,1): [ln3,0]; (1,0): [0,ln3]; (1,1): anything (ignored)
    return torch.tensor([[[[0.0, LN3], [0.0, 9.0]], [[0.0, 0.0], [LN3, -9.0]]]])


def test_cross_entropy_with_ignore():
    target = torch.tensor([[[0, 1], [1, 255]]])
    # −log softmax: ln2; −log(1/4) = ln4; −log(3/4) = ln(4/3)
    expected = (LN2 + LN4 + math.log(4 / 3)) / 3
    assert build_task("semseg", num_classes=2).loss(_seg_logits(), target).item() == pytest.approx(
        expected, rel=1e-6)


def test_human_parts_all_ignore_batch_is_zero_on_graph():
    task = build_task("human_parts")
    logits = torch.randn(2, 7, 2, 2, requires_grad=True)
    loss = task.loss(logits, torch.full((2, 2, 2), 255))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_human_parts_images_without_persons_contribute_nothing():
    task = build_task("human_parts")
    target = torch.full((2, 2, 2), 255)
    target[1, 0] = torch.tensor([0, 3])  # only image 2 has a person: two labelled pixels
    loss = task.loss(torch.zeros(2, 7, 2, 2), target)
    assert loss.item() == pytest.approx(math.log(7))  # uniform softmax over 7 classes


def test_semseg_decode_metric_and_colorize():
    task = build_task("semseg", num_classes=2, absent="zero")
    assert task.decode(_seg_logits()).tolist() == [[[0, 0], [1, 0]]]
    metric = task.make_metric()
    metric.update(task.decode(_seg_logits()), torch.tensor([[[0, 1], [1, 255]]]))
    # class 0: hits 1, union 2; class 1: hits 1, union 2
    assert metric.compute()["mIoU"].item() == pytest.approx(50.0)
    rgb = task.colorize(torch.tensor([[0, 1], [2, 255]]))
    assert rgb.dtype == np.uint8
    assert rgb.tolist() == [[[0, 0, 0], [128, 0, 0]], [[0, 128, 0], list(IGNORE_RGB)]]


def test_lsb_semseg_regulariser():
    task = build_task("lsb_semseg", num_classes=2)
    logits = torch.tensor([[[[12.0, -11.0]], [[0.0, 0.0]]]])  # 1×2×1×2
    target = torch.tensor([[[0, 255]]])
    # CE at pixel 0: log(1 + e^−12); penalty: pixel 0 → 12 − 10 = 2, pixel 1 → 11 − 10 = 1
    expected = math.log1p(math.exp(-12)) + (2 + 1) / 2
    assert task.loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # logits within ±f_max: the loss is plain CE
    small = torch.tensor([[[[LN3, 0.0]], [[0.0, 0.0]]]])
    assert task.loss(small, target).item() == pytest.approx(math.log(4 / 3), rel=1e-6)


# -- binary maps ---------------------------------------------------------------------------------
BIN_LOGITS = torch.tensor([[[[0.0, LN3], [-LN3, 5.0]]]])  # σ = 1/2, 3/4, 1/4, (ignored)


def test_edge_weighted_bce():
    task = build_task("edge", pos_weight=0.95)
    target = torch.tensor([[[[1.0, 0.0], [1.0, 255.0]]]])
    # y=1, σ=1/2: 0.95·ln2; y=0, σ=3/4: 0.05·ln4; y=1, σ=1/4: 0.95·ln4; mean over 3 valid pixels
    expected = (0.95 * LN2 + 0.05 * LN4 + 0.95 * LN4) / 3
    assert task.loss(BIN_LOGITS, target).item() == pytest.approx(expected, rel=1e-6)
    assert task.decode(BIN_LOGITS)[0, 0, 0].tolist() == pytest.approx([0.5, 0.75])


def test_sal_balanced_bce_weight_is_fraction_of_negatives():
    task = build_task("sal")
    target = torch.tensor([[[[1.0, 0.0], [0.0, 255.0]]]])
    w = 2 / 3  # two negatives among three valid pixels
    # y=1, σ=1/2: w·ln2; y=0, σ=3/4: (1−w)·ln4; y=0, σ=1/4: (1−w)·ln(4/3)
    expected = (w * LN2 + (1 - w) * LN4 + (1 - w) * math.log(4 / 3)) / 3
    assert task.loss(BIN_LOGITS, target).item() == pytest.approx(expected, rel=1e-6)
    # only negatives: w = 1, so the negatives carry no weight
    assert task.loss(BIN_LOGITS, torch.zeros(1, 1, 2, 2)).item() == 0.0


def test_binary_colorize_is_greyscale_with_ignore_colour():
    rgb = build_task("edge").colorize(torch.tensor([[[1.0, 0.0], [0.5, 255.0]]]))
    assert rgb.tolist() == [[[255] * 3, [0] * 3], [[128] * 3, list(IGNORE_RGB)]]


# -- normals -------------------------------------------------------------------------------------
def _field(vectors):
    """2×2 vector field (row-major list of 4 xyz triples) -> 1×3×2×2 tensor."""
    return torch.tensor(vectors, dtype=torch.float32).T.reshape(1, 3, 2, 2)


def test_normals_l1_after_normalisation_and_masking():
    task = build_task("normals")
    pred = _field([[0, 0, 5], [3, 0, 4], [7, 7, 7], [0, 2, 0]])
    target = _field([[0, 0, 1], [0, 0, 1], [0, 0, 0], [1, 0, 0]])
    # |(0,0,1)−(0,0,1)| = 0; |(.6,0,.8)−(0,0,1)| = .6+.2; invalid; |(0,1,0)−(1,0,0)| = 2
    assert task.loss(pred, target).item() == pytest.approx((0 + 0.8 + 2) / 9, rel=1e-6)
    assert task.valid_mask(target).tolist() == [[[True, True], [False, True]]]


def test_normals_hflip_and_rotate_label():
    task = build_task("normals")
    label = np.array([[[1, 0, 0], [0.6, 0.0, 0.8]], [[0, 0, 0], [0, 1, 0]]], dtype=np.float32)
    flipped = task.hflip_label(label)
    np.testing.assert_allclose(flipped[..., 0], [[-1, -0.6], [0, 0]], atol=1e-7)
    assert np.array_equal(flipped[..., 1:], label[..., 1:])
    turned = task.rotate_label(label, 90.0)  # x → y, y → −x, z kept
    assert turned.dtype == np.float32
    np.testing.assert_allclose(turned, [[[0, 1, 0], [0, 0.6, 0.8]], [[0, 0, 0], [-1, 0, 0]]],
                               atol=1e-7)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    np.testing.assert_allclose(task.rotate_label(label, 30.0)[0, 0], [c, s, 0], atol=1e-7)


def test_normals_decode_metric_and_colorize():
    task = build_task("normals")
    pred = _field([[0, 0, 2], [1, 0, 1], [0, 0, 3], [0, 0, 1]])
    target = _field([[0, 0, 1], [0, 0, 1], [0, 0, 0], [0, 0, 1]])
    metric = task.make_metric()
    metric.update(task.decode(pred), target)
    assert metric.compute()["mean"].item() == pytest.approx(45 / 3, abs=1e-4)  # 0°, 45°, 0°
    rgb = task.colorize(target[0])
    assert rgb[0, 0].tolist() == [128, 128, 255] and rgb[1, 0].tolist() == list(IGNORE_RGB)


def test_lsb_normals_loss_and_invariants():
    task = build_task("lsb_normals")
    target = torch.tensor([[[[0.0, 0.0]], [[0.0, 0.0]], [[1.0, 0.0]]]])  # pixel 2 invalid
    pred = torch.tensor([[[[0.0, 0.0]], [[0.0, 3.0]], [[0.5, 4.0]]]])
    # 1 − cos (0.5 on the valid pixel) + mean | ‖n̂‖ − 1 | over both pixels = (0.5 + 4) / 2
    assert task.loss(pred, target).item() == pytest.approx(1 - 0.5 + 2.25)
    unit = torch.tensor([[[[0.0]], [[0.6]], [[0.8]]]])
    assert task.loss(unit, unit).item() == pytest.approx(0.0, abs=1e-7)
    assert task.loss(2 * unit, unit).item() == pytest.approx(0.0, abs=1e-6)  # 1 − 2 + |2 − 1|


# -- depth ---------------------------------------------------------------------------------------
def test_depth_l1_plus_gradient_term():
    task = build_task("depth")
    target = torch.tensor([[[[1.0, 2.0], [3.0, 0.0]]]])
    pred = torch.tensor([[[[1.5, 2.0], [2.0, 7.0]]]])
    # L1 over 3 valid pixels: (0.5 + 0 + 1)/3. x pairs with both valid: top row only,
    # |0.5 − 1| = 0.5; y pairs: left column only, |0.5 − 2| = 1.5.
    assert task.loss(pred, target).item() == pytest.approx(0.5 + 0.5 + 1.5)
    assert task.valid_mask(target).tolist() == [[[True, True], [True, False]]]
    assert task.decode(torch.tensor([-1.0, 2.0])).tolist() == [0.0, 2.0]


def test_depth_scale_label_and_colorize():
    task = build_task("lsb_depth")  # shares the depth label rules
    label = np.array([[[4.0], [0.0]]], dtype=np.float32)
    assert task.scale_label(label, 2.0).tolist() == [[[2.0], [0.0]]]
    with pytest.raises(ValueError, match="scale must be positive, got 0"):
        task.scale_label(label, 0)
    rgb = task.colorize(torch.tensor([[[1.0, 3.0], [2.0, 0.0]]]))
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[1, 1].tolist() == list(IGNORE_RGB)
    assert rgb[0, 0].tolist() != rgb[0, 1].tolist()  # min and max of the colour map


def test_lsb_depth_log_l1_and_range_penalties():
    task = build_task("lsb_depth", d_min=0.5, d_max=10.0)
    depth_hat = torch.tensor([[[[0.25, 1.0], [2.0, 20.0]]]])
    target = torch.tensor([[[[1.0, math.e], [2.0, 0.0]]]])
    # |ln .25 − 0| + |0 − 1| + 0 over 3 valid; below: (0.5 − 0.25)/4; above: (20 − 10)/4
    expected = (LN4 + 1) / 3 + 0.25 / 4 + 10 / 4
    assert task.loss(depth_hat.log(), target).item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(task.decode(depth_hat.log()), depth_hat)
    # inside the range the loss is scale invariant: d̂ and d both × 3 → same loss
    inside, gt = torch.tensor([[[[1.0, 2.0]]]]), torch.tensor([[[[1.5, 2.0]]]])
    assert task.loss((3 * inside).log(), 3 * gt).item() == pytest.approx(
        task.loss(inside.log(), gt).item(), rel=1e-6)


# -- regression tasks ----------------------------------------------------------------------------
def test_albedo_l1_over_valid_channels():
    task = build_task("albedo")
    target = torch.zeros(1, 3, 2, 2)
    target[..., 1, 1] = 255.0  # padding
    pred = torch.full((1, 3, 2, 2), 0.5)
    pred[0, 0, 0, 0] = 2.0  # error 2 in one channel of one pixel; 0.5 everywhere else
    assert task.loss(pred, target).item() == pytest.approx((2 + 0.5 * 8) / 9)
    metric = task.make_metric()
    metric.update(task.decode(pred), target)
    assert metric.compute()["mse"].item() == pytest.approx((4 + 0.25 * 8) / 9)


def test_lsb_extra_loss_std_regulariser_and_display_scale():
    task = build_task("edge2d")
    target = torch.tensor([[[[0.0, 2.0], [0.0, 2.0]]]])  # std 1
    pred = torch.ones(1, 1, 2, 2, requires_grad=True)  # std 0, error 1 everywhere
    loss = task.loss(pred, target)
    assert loss.item() == pytest.approx(1 + 1)
    loss.backward()
    assert torch.isfinite(pred.grad).all()  # sqrt of a zero variance is clamped
    metric = task.make_metric()
    metric.update(pred.detach(), target)
    assert metric.compute()["l1"].item() == pytest.approx(10 * 1)  # displayed ×10
    assert (build_task("edge3d").display_scale, build_task("keypoints2d").display_scale) == (
        100.0, 100.0)


def test_curvature_two_channels_with_padding():
    task = build_task("curvature")
    target = torch.tensor([[[[1.0, 3.0, 255.0]], [[1.0, 3.0, 255.0]]]])  # 1×2×1×3, std 1
    pred = torch.tensor([[[[1.0, 1.0, 9.0]], [[1.0, 1.0, 9.0]]]])  # valid part: std 0
    # L1 over 2 valid pixels × 2 channels: (0 + 2 + 0 + 2)/4 = 1; |0 − 1| = 1
    assert task.loss(pred, target).item() == pytest.approx(2.0, rel=1e-5)


def test_regression_colorize_normalises_each_channel():
    label = torch.tensor([[[0.0, 2.0]], [[5.0, 1.0]]])  # curvature: 2×1×2
    rgb = build_task("curvature").colorize(label)
    assert rgb.tolist() == [[[0, 255, 0], [255, 0, 0]]]  # channel-wise min-max, blue = 0
