"""The one-pass edge counts against the per-threshold reference (fresh thinning + one-shot exact
matching per threshold), the compiled thinning against scikit-image, the compiled NMS against
its numpy form, and hand-worked cases for what the incremental pass must get right."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.morphology import thin

from benchmarks.bench_edge import realistic_case, reference_nms, reference_pr_counts
from densemtl.metrics.edge import edge_nms, edge_pr_counts, edge_thin, edge_thresholds


@pytest.mark.parametrize("density", [0.05, 0.3, 0.6, 0.9])
def test_thinning_equals_scikit_image_on_random_maps(density):
    rng = np.random.default_rng(int(density * 100))
    for _ in range(25):
        h, w = rng.integers(1, 30, size=2)
        binary = rng.random((h, w)) < density
        np.testing.assert_array_equal(edge_thin(binary), thin(binary))


def test_thinning_equals_scikit_image_on_blobs_and_lines():
    yy, xx = np.mgrid[0:60, 0:80]
    blobs = ((yy - 30) ** 2 + (xx - 25) ** 2 < 200) | ((xx > 50) & (xx < 57)) | (yy == 3)
    np.testing.assert_array_equal(edge_thin(blobs), thin(blobs))
    full = np.ones((9, 9), dtype=bool)  # a filled square thins towards one diagonal pixel run
    np.testing.assert_array_equal(edge_thin(full), thin(full))


def test_nms_equals_its_vectorised_numpy_form_bit_for_bit():
    rng = np.random.default_rng(3)
    maps = [rng.random((31, 45)), realistic_case(2, (60, 80))[1], np.zeros((4, 4)),
            (rng.random((30, 30)) > 0.7).astype(float)]
    for prob in maps:
        for radius in (1, 2):
            np.testing.assert_array_equal(edge_nms(prob, radius=radius),
                                          reference_nms(prob, radius=radius))


@pytest.mark.parametrize("radius", [0.0, 1.0, 1.5, 3.2])
def test_counts_equal_the_reference_on_random_maps(radius):
    rng = np.random.default_rng(int(radius * 10))
    thresholds = edge_thresholds(19)
    for _ in range(6):
        shape = tuple(rng.integers(8, 40, size=2))
        prob = rng.random(shape) ** 3
        gt = rng.random(shape) < 0.15
        valid = rng.random(shape) > 0.1
        np.testing.assert_array_equal(
            edge_pr_counts(prob, gt, valid, thresholds, radius),
            reference_pr_counts(prob, gt, valid, thresholds, radius),
        )


def test_counts_equal_the_reference_on_structured_maps_with_nms():
    # rendered scenes: thick blurred responses, clutter, an ignored band (99 thresholds)
    thresholds = edge_thresholds(99)
    for seed in (0, 1):
        gt, soft = realistic_case(seed, (90, 120))
        valid = np.ones(gt.shape, dtype=bool)
        valid[:, :10] = False
        prob = edge_nms(soft)
        radius = 0.0075 * float(np.hypot(*gt.shape)) * 3  # ≈ 3.4 px: many competing pairs
        fast = edge_pr_counts(prob, gt, valid, thresholds, radius)
        np.testing.assert_array_equal(fast, reference_pr_counts(prob, gt, valid, thresholds,
                                                                radius))
        assert fast[0, 3] > fast[-1, 3] and 0 < fast[0, 0] <= fast[0, 1]


def test_matching_is_rerouted_when_a_lower_threshold_adds_a_prediction():
    # GT g1 = (10, 10), g2 = (10, 12); p1 = (10, 11) at 0.9 reaches both, p2 = (10, 9) at 0.4
    # only g1. Thresholds .25 / .5 / .75: at .75 and .5 only p1 → 1 match (it takes g1, the
    # first GT pixel in reach). At .25 p2 joins: the maximum matching p2→g1, p1→g2 has 2 — the
    # previous matching must be re-routed along the augmenting path p2 → g1 → p1 → g2.
    prob = np.zeros((20, 20))
    prob[10, 11], prob[10, 9] = 0.9, 0.4
    gt = np.zeros((20, 20), dtype=bool)
    gt[10, 10] = gt[10, 12] = True
    counts = edge_pr_counts(prob, gt, np.ones_like(gt), edge_thresholds(3), radius=1.0)
    assert counts.tolist() == [[2, 2, 2, 2], [1, 2, 1, 1], [1, 2, 1, 1]]


def test_a_prediction_dropped_by_rethinning_releases_its_match():
    # At .75 the single pixel (4, 5) is the thinned map and matches the GT pixel under it
    # (radius 0). At .25 three more pixels join into the 2×2 block rows 4–5, columns 4–5;
    # thinning keeps only its lower-left pixel (5, 4), so the GT pixel is unmatched again:
    # 0 of 1 matched, 1 prediction.
    prob = np.zeros((11, 11))
    prob[4:6, 4:6] = 0.4
    prob[4, 5] = 0.9
    gt = np.zeros((11, 11), dtype=bool)
    gt[4, 5] = True
    assert np.argwhere(thin(prob >= 0.25)).tolist() == [[5, 4]]  # the premise
    counts = edge_pr_counts(prob, gt, np.ones_like(gt), edge_thresholds(3), radius=0.0)
    assert counts.tolist() == [[0, 1, 0, 1], [1, 1, 1, 1], [1, 1, 1, 1]]


def test_counts_reject_unsorted_thresholds_and_shape_mismatch():
    prob = np.zeros((5, 5))
    gt = np.zeros((5, 5), dtype=bool)
    with pytest.raises(ValueError, match="ascending"):
        edge_pr_counts(prob, gt, ~gt, np.array([0.5, 0.2]), 1.0)
    with pytest.raises(ValueError, match="equal H×W"):
        edge_pr_counts(prob, gt[:4], ~gt, np.array([0.5]), 1.0)
