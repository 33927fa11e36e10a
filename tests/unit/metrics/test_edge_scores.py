"""ODS / OIS precision, recall and threshold and both AP protocols, worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densemtl.metrics.edge import EdgeFMeasure, edge_scores, edge_thresholds

# Two thresholds (.25 low, .5 high) over 4 GT pixels:
#   t=.25: 4 matched of 8 predictions → R = 1,  P = .5
#   t=.5 : 2 matched of 2 predictions → R = .5, P = 1
COUNTS = np.array([[4, 4, 4, 8], [2, 4, 2, 2]])
OIS = np.array([3, 4, 3, 4])  # the images' picked counts summed: R = P = .75
THRESHOLDS = edge_thresholds(3)[:2]  # .25, .5


def test_ods_without_interpolation_picks_the_first_of_tied_thresholds():
    # F = 2/3 at both thresholds; the first (t = .25) wins: P = 50 %, R = 100 %
    s = edge_scores(COUNTS, OIS, THRESHOLDS, interpolate_ods=False)
    assert s["odsF"] == pytest.approx(200 / 3)
    assert (s["odsP"], s["odsR"], s["odsT"]) == pytest.approx((50.0, 100.0, 0.25))
    assert (s["oisF"], s["oisP"], s["oisR"]) == pytest.approx((75.0, 75.0, 75.0))


def test_ods_interpolated_point_and_threshold():
    # t=.5 now at R = .5, P = .9. On the segment from t=.25 at a ∈ {0, 1/99, …, 1}:
    # R = 1 − a/2, P = .5 + .4a, T = .25 + .25a; F = 2PR/(P+R) peaks inside, above both ends.
    counts = np.array([[4, 4, 4, 8], [2, 4, 9, 10]])
    a = np.linspace(0, 1, 100)
    r, p = 1 - a / 2, 0.5 + 0.4 * a
    f = 2 * p * r / (p + r)
    best = int(np.argmax(f))
    assert 0 < best < 99 and f[best] > max(f[0], f[-1]) + 0.02
    s = edge_scores(counts, OIS, THRESHOLDS)
    assert s["odsF"] == pytest.approx(100 * f[best])
    assert (s["odsP"], s["odsR"]) == pytest.approx((100 * p[best], 100 * r[best]))
    assert s["odsT"] == pytest.approx(0.25 + 0.25 * a[best])


def test_ap_trapezoid_and_bsds():
    # trapezoid: points (R, P) = (.5, 1), (1, .5), flat to R = 0: .5·1 + .5·(1 + .5)/2 = .875
    assert edge_scores(COUNTS, OIS, THRESHOLDS)["AP"] == pytest.approx(87.5)
    # BSDS / pyEdgeEval: levels 0, .01, …, .99; best precision at recall ≥ r is 1 for the 51
    # levels r ≤ .5 and .5 for the 49 above; sum / 101
    bsds = edge_scores(COUNTS, OIS, THRESHOLDS, ap="bsds")["AP"]
    assert bsds == pytest.approx(100 * (51 * 1 + 49 * 0.5) / 101)
    with pytest.raises(ValueError, match="ap must be one of"):
        edge_scores(COUNTS, OIS, THRESHOLDS, ap="area")


def test_perfect_map_scores_100_in_trapezoid_ap_and_100_over_101_in_bsds_ap():
    # recall 1 and precision 1 at every threshold: the BSDS levels 0….99 all see precision 1,
    # divided by 101 (pyEdgeEval's quirk)
    gt = np.zeros((16, 16))
    gt[3:13, 7] = 1
    batch = torch.tensor(gt[None, None], dtype=torch.float32)
    for ap, expected in (("trapezoid", 100.0), ("bsds", 10000 / 101)):
        metric = EdgeFMeasure(thresholds=9, nms=False, ap=ap)
        metric.update(batch, batch)
        out = metric.compute()
        assert out["AP"].item() == pytest.approx(expected, abs=1e-4)
        assert out["odsP"].item() == pytest.approx(100.0) and out["oisR"].item() == 100.0
