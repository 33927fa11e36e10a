"""Edge ODS/OIS/AP and saliency maxF/mIoU on tiny hand-made cases whose counts are worked out by
hand in the comments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from densemtl.metrics.edge import EdgeFMeasure, edge_match, edge_nms, edge_thresholds
from densemtl.metrics.saliency import SaliencyMetric


def _batch(*maps: np.ndarray) -> torch.Tensor:
    """Stack H×W numpy maps into a float32 B×1×H×W tensor."""
    return torch.tensor(np.stack(maps)[:, None], dtype=torch.float32)


def _scores(metric) -> dict[str, float]:
    """``metric.compute()`` as floats; for an edge metric only ODS F, OIS F and AP."""
    out = {k: v.item() for k, v in metric.compute().items()}
    if isinstance(metric, EdgeFMeasure):
        out = {k: out[k] for k in ("odsF", "oisF", "AP")}
    return out


def _vertical_line(h: int, w: int, col: int, rows: range) -> np.ndarray:
    out = np.zeros((h, w))
    out[list(rows), col] = 1
    return out


# ---------------------------------------------------------------------------------------------
# edge: thresholds, matching radius, one-to-one matching
# ---------------------------------------------------------------------------------------------


def test_thresholds_are_k_over_k_plus_one():
    np.testing.assert_allclose(edge_thresholds(3), [0.25, 0.5, 0.75])
    np.testing.assert_allclose(edge_thresholds(9), np.arange(1, 10) / 10)
    assert len(edge_thresholds(99)) == 99 and edge_thresholds(99)[0] == 0.01
    with pytest.raises(ValueError, match="positive int"):
        EdgeFMeasure(thresholds=0)


def test_one_pixel_shift_matches_exactly_when_radius_reaches_one():
    # 30×40 image: diagonal 50 px, so max_dist 0.02 gives radius 1.0 exactly and 0.019 gives 0.95.
    gt = _vertical_line(30, 40, 10, range(5, 25))  # 20 GT pixels
    pred = _vertical_line(30, 40, 11, range(5, 25))  # the same line one column to the right
    inside = EdgeFMeasure(max_dist=0.02, thresholds=1, nms=False)
    inside.update(_batch(pred), _batch(gt))
    # every predicted pixel at distance exactly 1 from its GT pixel: P = R = 20/20.
    assert inside.cnt_p.tolist() == [20] and inside.sum_p.tolist() == [20]
    assert inside.cnt_r.tolist() == [20] and inside.sum_r.tolist() == [20]
    assert _scores(inside) == pytest.approx({"odsF": 100.0, "oisF": 100.0, "AP": 100.0})

    outside = EdgeFMeasure(max_dist=0.019, thresholds=1, nms=False)
    outside.update(_batch(pred), _batch(gt))
    assert outside.cnt_p.tolist() == [0] and outside.sum_p.tolist() == [20]
    assert _scores(outside) == pytest.approx({"odsF": 0.0, "oisF": 0.0, "AP": 0.0})


def test_spurious_pixels_lower_precision_to_k_over_n():
    gt = _vertical_line(30, 40, 10, range(5, 25))  # 20 px
    pred = gt.copy()
    for row in (2, 8, 14, 20, 26):  # 5 isolated pixels far from the line (radius is 0.375 px)
        pred[row, 30] = 1
    metric = EdgeFMeasure(max_dist=0.0075, thresholds=1, nms=False)
    metric.update(_batch(pred), _batch(gt))
    # P = 20/25 = 0.8, R = 20/20 = 1, F = 2·0.8·1/1.8 = 0.8889
    assert metric.cnt_p.tolist() == [20] and metric.sum_p.tolist() == [25]
    s = _scores(metric)
    assert s["odsF"] == pytest.approx(100 * 2 * 0.8 / 1.8, abs=1e-4)
    assert s["oisF"] == pytest.approx(100 * 2 * 0.8 / 1.8, abs=1e-4)
    # one threshold: curve (0, 0.8)–(1, 0.8) → area 0.8
    assert s["AP"] == pytest.approx(80.0, abs=1e-4)


def test_two_predictions_competing_for_one_gt_pixel_get_one_match():
    gt = np.zeros((30, 40), dtype=bool)
    gt[10, 10] = True
    pred = np.zeros_like(gt)
    pred[10, 9] = pred[10, 11] = True  # both at distance 1 from the single GT pixel
    matched_pred, matched_gt = edge_match(pred, gt, radius=1.0)
    assert matched_pred.sum() == 1 and matched_gt.sum() == 1
    metric = EdgeFMeasure(max_dist=0.02, thresholds=1, nms=False)  # radius 1
    metric.update(_batch(pred.astype(float)), _batch(gt.astype(float)))
    # P = 1/2, R = 1/1 → F = 2·0.5/1.5 = 2/3
    assert _scores(metric)["odsF"] == pytest.approx(200 / 3, abs=1e-4)


def test_matching_is_maximum_not_greedy():
    # p1 = (10, 11) is within 1 of g1 = (10, 10) and g2 = (10, 12); p2 = (10, 9) only of g1.
    # Greedy p1→g1 leaves p2 unmatched (1 match); the maximum matching p1→g2, p2→g1 has 2.
    gt = np.zeros((30, 40), dtype=bool)
    gt[10, 10] = gt[10, 12] = True
    pred = np.zeros_like(gt)
    pred[10, 11] = pred[10, 9] = True
    matched_pred, matched_gt = edge_match(pred, gt, radius=1.0)
    assert matched_pred.sum() == 2 and matched_gt.sum() == 2
    # radius 0: no pixel coincides, no match; a map against itself matches every pixel
    assert edge_match(pred, gt, radius=0.0)[0].sum() == 0
    assert edge_match(gt, gt, radius=0.0)[1].sum() == 2


def test_matching_size_equals_an_independent_assignment_solver():
    # Patterned pixel sets (no random numbers) with many overlapping candidate pairs; the maximum
    # matching size must equal the number of zero-cost pairs in a dense min-cost assignment
    # (cost 0 within the radius, 1 otherwise).
    yy, xx = np.mgrid[0:20, 0:20]
    pred = (7 * xx + 3 * yy) % 11 == 0
    gt = (5 * xx + 2 * yy) % 13 == 0
    radius = 1.5
    matched_pred, matched_gt = edge_match(pred, gt, radius)
    p = np.argwhere(pred)
    g = np.argwhere(gt)
    cost = (np.linalg.norm(p[:, None] - g[None], axis=2) > radius).astype(float)
    rows, cols = linear_sum_assignment(cost)
    expected = int((cost[rows, cols] == 0).sum())
    assert 0 < expected < min(len(p), len(g))
    assert matched_pred.sum() == matched_gt.sum() == expected


# ---------------------------------------------------------------------------------------------
# edge: ODS / OIS / AP on a two-image case
# ---------------------------------------------------------------------------------------------


def _two_image_case() -> tuple[torch.Tensor, torch.Tensor]:
    """8×8 images, GT = column 2 rows 2..5 (4 px) in both.

    A: the 4 GT pixels at 0.8 plus 4 isolated spurious pixels at 0.4.
    B: GT rows 2, 3 at 0.8 and rows 4, 5 at 0.3; nothing else.
    """
    gt = _vertical_line(8, 8, 2, range(2, 6))
    a = 0.8 * gt
    for row in (0, 2, 4, 6):
        a[row, 6] = 0.4
    b = np.zeros((8, 8))
    b[2:4, 2] = 0.8
    b[4:6, 2] = 0.3
    return _batch(a, b), _batch(gt, gt)


def test_ods_and_ois_differ_on_two_images():
    # thresholds 0.25, 0.5, 0.75; radius 0.05·√128 = 0.57 px → only coinciding pixels match.
    #   A: t=.25: 8 pred, 4 matched: P=.5 R=1 F=2/3;   t=.5, .75: 4/4: P=R=F=1
    #   B: t=.25: 4/4: F=1;   t=.5, .75: 2 pred, both matched: P=1 R=.5 F=2/3
    #   sums: t=.25: cntP 8 / sumP 12, cntR 8 / sumR 8 → P=2/3 R=1 F=.8
    #         t=.5, .75: 6/6, 6/8 → P=1 R=.75 F=6/7
    #   ODS (no interpolation) = 6/7; OIS: A picks t=.5, B picks t=.25 → 8/8, 8/8 → F = 1.
    prob, target = _two_image_case()
    metric = EdgeFMeasure(max_dist=0.05, thresholds=3, nms=False, interpolate_ods=False)
    metric.update(prob, target)
    assert metric.cnt_p.tolist() == [8, 6, 6] and metric.sum_p.tolist() == [12, 6, 6]
    assert metric.cnt_r.tolist() == [8, 6, 6] and metric.sum_r.tolist() == [8, 8, 8]
    assert metric.ois_counts.tolist() == [8, 8, 8, 8]
    s = _scores(metric)
    assert s["odsF"] == pytest.approx(600 / 7, abs=1e-4)
    assert s["oisF"] == pytest.approx(100.0, abs=1e-4)
    # AP: points by recall (.75, 1), (.75, 1), (1, 2/3), extended flat to (0, 1):
    #   .75·1 + 0 + .25·(1 + 2/3)/2 = .75 + 5/24 = 0.958333
    assert s["AP"] == pytest.approx(100 * (0.75 + 5 / 24), abs=1e-4)


def test_ods_interpolates_between_thresholds_like_the_toolbox():
    # Between t=.25 (R=1, P=2/3) and t=.5 (R=.75, P=1) at a ∈ {0, 1/99, …, 1}:
    #   R = 1 − a/4, P = 2/3 + a/3 → F(a) = 2PR/(P+R) = (16 + 4a − 2a²)/(20 + a), which peaks
    #   inside the segment (a ≈ 0.785, F ≈ 0.8616) above both ends (0.8 and 6/7); the segment
    #   t=.5 → .75 is constant at 6/7.
    a = np.linspace(0, 1, 100)
    expected = 100 * ((16 + 4 * a - 2 * a**2) / (20 + a)).max()
    assert expected > 600 / 7 + 0.4
    prob, target = _two_image_case()
    metric = EdgeFMeasure(max_dist=0.05, thresholds=3, nms=False)
    metric.update(prob, target)
    assert _scores(metric)["odsF"] == pytest.approx(expected, abs=1e-4)


def test_perfect_soft_prediction_scores_100():
    gt = np.zeros((32, 32))
    # a square outline with its 4 corner pixels left out: already thin, so thinning keeps it
    gt[8, 9:23] = gt[23, 9:23] = gt[9:23, 8] = gt[9:23, 23] = 1
    metric = EdgeFMeasure(thresholds=99, nms=False)
    metric.update(_batch(gt), _batch(gt))
    assert _scores(metric) == pytest.approx({"odsF": 100.0, "oisF": 100.0, "AP": 100.0})


def test_ignore_pixels_are_removed_from_prediction_and_gt():
    gt = _vertical_line(30, 40, 10, range(5, 25))
    target = gt.copy()
    target[:, 30] = 1  # GT line under the ignore region must not count either
    target[:, 25:] = 255
    pred = gt.copy()
    pred[5:25, 30] = 1  # a second predicted line inside the ignored columns
    metric = EdgeFMeasure(max_dist=0.0075, thresholds=1, nms=False)
    metric.update(_batch(pred), _batch(target))
    assert metric.sum_p.tolist() == [20] and metric.sum_r.tolist() == [20]
    assert _scores(metric)["odsF"] == pytest.approx(100.0)

    unmasked = EdgeFMeasure(max_dist=0.0075, thresholds=1, nms=False)
    unmasked.update(_batch(pred), _batch(gt))  # spurious line counted: P = 20/40
    assert _scores(unmasked)["odsF"] == pytest.approx(100 * 2 * 0.5 / 1.5, abs=1e-4)


def test_empty_image_gives_zero_not_nan_and_does_not_hurt_ois():
    empty = np.zeros((16, 16))
    metric = EdgeFMeasure(thresholds=9, nms=False)
    metric.update(_batch(empty), _batch(empty))
    assert _scores(metric) == {"odsF": 0.0, "oisF": 0.0, "AP": 0.0}
    line = _vertical_line(16, 16, 7, range(3, 13))
    metric.update(_batch(line), _batch(line))  # adds a perfect image: 10/10 everywhere
    assert _scores(metric) == pytest.approx({"odsF": 100.0, "oisF": 100.0, "AP": 100.0})


# ---------------------------------------------------------------------------------------------
# edge: NMS, determinism, state merging, input checks
# ---------------------------------------------------------------------------------------------


def test_nms_thins_a_three_pixel_ridge_to_its_centre():
    # columns 9, 10, 11 = 0.5, 1, 0.5. The [1 2 1]/4 pre-smoothing gives 0.5, 0.75, 0.5 there and
    # 0.125 in columns 8 and 12. The ridge is vertical, so the orientation is 0 and each pixel
    # is compared with its left/right neighbours: only column 10 survives (0.75·1.01 > 0.5),
    # then rows within 5 of the top/bottom are damped by row/5 (21 rows: s = 5).
    prob = np.zeros((21, 21))
    prob[:, 9] = prob[:, 11] = 0.5
    prob[:, 10] = 1.0
    out = edge_nms(prob)
    expected = np.zeros((21, 21))
    damping = np.minimum(np.minimum(np.arange(21), np.arange(21)[::-1]) / 5, 1.0)
    expected[:, 10] = 0.75 * damping
    np.testing.assert_allclose(out, expected, atol=1e-12)


def _soft_scene() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 24×24 soft maps built from a formula (no random numbers): blurred lines plus texture."""
    yy, xx = np.mgrid[0:24, 0:24].astype(float)
    gt1 = (xx == 11).astype(float)
    gt2 = (yy == 7).astype(float)
    p1 = np.clip(np.exp(-((xx - 12) ** 2) / 2) + 0.2 * np.sin(yy) ** 2, 0, 1)
    p2 = np.clip(np.exp(-((yy - 7.5) ** 2) / 3) * (0.6 + 0.4 * np.cos(xx / 3)), 0, 1)
    return _batch(p1, p2), _batch(gt1, gt2)


def test_same_input_gives_identical_results():
    prob, target = _soft_scene()
    results = []
    for _ in range(2):
        metric = EdgeFMeasure(max_dist=0.05, thresholds=19)
        metric.update(prob, target)
        results.append((metric.cnt_p.clone(), metric.cnt_r.clone(), _scores(metric)))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert results[0][2] == results[1][2]
    assert 0 < results[0][2]["odsF"] < 100


def test_two_updates_and_merged_states_equal_one_update_on_the_concatenation():
    prob, target = _soft_scene()
    whole = EdgeFMeasure(max_dist=0.05, thresholds=9)
    whole.update(prob, target)
    split = EdgeFMeasure(max_dist=0.05, thresholds=9)
    split.update(prob[:1], target[:1])
    split.update(prob[1:], target[1:])
    other = EdgeFMeasure(max_dist=0.05, thresholds=9)
    other.update(prob[1:], target[1:])
    merged = EdgeFMeasure(max_dist=0.05, thresholds=9)
    merged.update(prob[:1], target[:1])
    merged.merge_state(other)  # what a multi-process sync does with dist_reduce_fx="sum"
    for name in ("cnt_r", "sum_r", "cnt_p", "sum_p", "ois_counts"):
        assert torch.equal(getattr(split, name), getattr(whole, name)), name
        assert torch.equal(getattr(merged, name), getattr(whole, name)), name
    assert _scores(split) == _scores(whole) == _scores(merged)


def test_edge_rejects_bad_input():
    metric = EdgeFMeasure()
    ones = torch.ones(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"B×1×H×W"):
        metric.update(torch.ones(1, 2, 4, 4), torch.ones(1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metric.update(ones * 2, ones)
    with pytest.raises(ValueError, match="0, 1 or 255"):
        metric.update(ones, ones * 0.5)
    with pytest.raises(ValueError, match="max_dist"):
        EdgeFMeasure(max_dist=-0.1)


# ---------------------------------------------------------------------------------------------
# saliency
# ---------------------------------------------------------------------------------------------


def _saliency_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 2×2 images. Valid (prob, gt) pixels, 7 in all (image 2's 0.08 pixel is ignored):

    image 1: (.93, 1) (.62, 0) (.37, 0) (.12, 0);  image 2: (.82, 1) (.47, 1) (.27, 0).
    """
    prob = _batch(np.array([[0.93, 0.62], [0.37, 0.12]]), np.array([[0.82, 0.47], [0.27, 0.08]]))
    target = _batch(np.array([[1, 0], [0, 0]]), np.array([[1, 1], [0, 255]]))
    return prob, target


def test_saliency_dataset_convention_by_hand():
    # thresholds .05k, positive if prob >= t, β² = .3, F = 1.3PR/(.3P + R); 3 GT pixels:
    #   t ∈ {.85, .9}:    TP 1 / pred 1: P 1,   R 1/3 → F = .4333/.6333 = 13/19 = .684
    #   t ∈ {.65 … .8}:   TP 2 / pred 2: P 1,   R 2/3 → F = .8667/.9667 = 26/29 = .8966 ← max
    #   t ∈ {.5, .55, .6}: TP 2 / pred 3: P 2/3, R 2/3 → F = 2/3
    #   t ∈ {.4, .45}:    TP 3 / pred 4: P .75, R 1   → F = .975/1.225 = .796
    #   lower thresholds: P ≤ .6, R 1 → F ≤ .78/1.18 = .661;  t = .95: nothing predicted → 0
    # mIoU at prob >= .5: pred {.93, .82, .62}: TP 2, FP 1, FN 1 (.47), TN 3 (.37, .27, .12)
    #   fg IoU = 2/4 = .5, bg IoU = 3/5 = .6 → mean .55
    prob, target = _saliency_case()
    metric = SaliencyMetric("dataset_beta2_0.3")
    metric.update(prob, target)
    assert _scores(metric) == pytest.approx({"maxF": 100 * 26 / 29, "mIoU": 55.0}, abs=1e-4)


def test_saliency_image_convention_by_hand():
    # thresholds .2, .25, …, .9, positive if prob > t, per-image P, R, Jaccard, averaged:
    #   image 1 (1 GT px): t < .37: pred 3 → P 1/3 R 1 J 1/3;  .37 ≤ t < .62: P 1/2 R 1 J 1/2;
    #                      t ≥ .62: P 1 R 1 J 1
    #   image 2 (2 GT px): t < .27: P 2/3 R 1 J 2/3;  .27 ≤ t < .47: P 1 R 1 J 1;
    #                      .47 ≤ t < .82: P 1 R 1/2 J 1/2;  t ≥ .82: nothing → P 0 R 0 J 0
    #   t    mP    mR    F = 2mPmR/(mP+mR)  mJ
    #   .2   1/2   1     2/3               1/2
    #   .3   2/3   1     4/5               2/3
    #   .4   3/4   1     6/7               3/4
    #   .5   3/4   3/4   3/4               1/2
    #   .65  1     3/4   6/7               3/4
    #   .85  1/2   1/2   1/2               1/2
    #   maxF = 6/7, mIoU = max mJ = 3/4
    prob, target = _saliency_case()
    metric = SaliencyMetric("image_beta2_1")
    metric.update(prob, target)
    assert _scores(metric) == pytest.approx({"maxF": 600 / 7, "mIoU": 75.0}, abs=1e-4)


def test_saliency_empty_image_and_fully_ignored_image():
    empty = _batch(np.zeros((2, 2)))
    # image convention: no GT and no prediction → P = R = 0 (F 0) but Jaccard 1
    image = SaliencyMetric("image_beta2_1")
    image.update(empty, empty)
    assert _scores(image) == {"maxF": 0.0, "mIoU": 100.0}
    # dataset convention: foreground absent from prediction and GT is left out; bg IoU 4/4
    dataset = SaliencyMetric("dataset_beta2_0.3")
    dataset.update(empty, empty)
    assert _scores(dataset) == {"maxF": 0.0, "mIoU": 100.0}
    # a fully ignored image changes nothing in either convention
    prob, target = _saliency_case()
    for convention in SaliencyMetric.CONVENTIONS:
        ref = SaliencyMetric(convention)
        ref.update(prob, target)
        padded = SaliencyMetric(convention)
        padded.update(torch.cat([prob, empty]), torch.cat([target, torch.full_like(empty, 255)]))
        assert _scores(padded) == _scores(ref)


def test_saliency_two_updates_equal_one_and_unknown_convention():
    prob, target = _saliency_case()
    for convention in SaliencyMetric.CONVENTIONS:
        whole = SaliencyMetric(convention)
        whole.update(prob, target)
        split = SaliencyMetric(convention)
        split.update(prob[:1], target[:1])
        other = SaliencyMetric(convention)
        other.update(prob[1:], target[1:])
        split.merge_state(other)
        assert _scores(split) == pytest.approx(_scores(whole), abs=1e-9)
    with pytest.raises(ValueError, match="dataset_beta2_0.3, image_beta2_1"):
        SaliencyMetric("beta2_0.5")
    with pytest.raises(ValueError, match="0, 1 or 255"):
        SaliencyMetric().update(prob, target * 0.5)


def test_pairs_in_reach_equal_brute_force_distances():
    """The disc-offset pair search finds exactly the pairs a brute-force distance check finds."""
    from densemtl.metrics.edge import _pairs_in_reach

    rng = np.random.default_rng(1)
    for reach in (0.0, 0.7, 1.0, 1.5, 2.9):
        pred = rng.random((17, 23)) < 0.3
        gt = rng.random((17, 23)) < 0.3
        py, px = np.nonzero(pred)
        gy, gx = np.nonzero(gt)
        i, j = _pairs_in_reach(py, px, gy, gx, pred.shape, reach)
        got = set(zip(i.tolist(), j.tolist()))
        d2 = (py[:, None] - gy[None]) ** 2 + (px[:, None] - gx[None]) ** 2
        expected = set(zip(*np.nonzero(d2 <= reach * reach)))
        assert got == {(int(a), int(b)) for a, b in expected}
