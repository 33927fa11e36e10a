"""Normals: the exact median against numpy, the histogram median as before, the other statistics
bit-identical between the two, and the truncating 8-bit encoding worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from densemtl.metrics.dense import NormalsMetric


def _random_normals(seed: int, shape=(2, 3, 7, 9)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pred = torch.nn.functional.normalize(torch.randn(shape, generator=gen), dim=1)
    target = torch.nn.functional.normalize(torch.randn(shape, generator=gen), dim=1)
    target[:, :, 0, :2] = 0  # a few invalid pixels
    return pred, target


def _angles(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Independent angle errors (degrees) of the valid pixels, float64 numpy."""
    p = pred.permute(0, 2, 3, 1).reshape(-1, 3).double().numpy()
    t = target.permute(0, 2, 3, 1).reshape(-1, 3).double().numpy()
    valid = (t != 0).any(axis=1)
    p, t = p[valid], t[valid]
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(p, t), axis=1), (p * t).sum(axis=1)))


@pytest.mark.parametrize("batches", [1, 2])  # 122 and 244 valid pixels; and an odd count below
def test_exact_median_equals_numpy_median_over_updates(batches):
    metric = NormalsMetric()
    angles = []
    for seed in range(batches):
        pred, target = _random_normals(seed)
        metric.update(pred, target)
        angles.append(_angles(pred, target))
    expected = np.median(np.concatenate(angles))
    assert metric.compute()["median"].item() == pytest.approx(expected, abs=1e-9)

    odd = NormalsMetric()
    pred, target = _random_normals(7, (1, 3, 3, 3))  # 9 pixels, 2 invalid → 7
    odd.update(pred, target)
    assert odd.compute()["median"].item() == pytest.approx(np.median(_angles(pred, target)),
                                                           abs=1e-9)


def test_histogram_median_is_the_bin_centre_and_other_stats_are_bit_identical():
    # two pixels at 10° and 20°: exact median 15°; histogram: centres 10.005 and 20.005 → 15.005
    def at(deg: float) -> torch.Tensor:
        r = math.radians(deg)
        return torch.tensor([math.sin(r), 0.0, math.cos(r)])

    pred = torch.stack([at(10.0), at(20.0)], dim=1).view(1, 3, 1, 2)
    target = torch.stack([at(0.0), at(0.0)], dim=1).view(1, 3, 1, 2)
    exact, hist = NormalsMetric(), NormalsMetric(median="histogram")
    exact.update(pred, target)
    hist.update(pred, target)
    e, h = exact.compute(), hist.compute()
    assert e["median"].item() == pytest.approx(15.0, abs=1e-5)
    assert h["median"].item() == pytest.approx(15.005, abs=1e-5)
    pred, target = _random_normals(3)
    exact, hist = NormalsMetric(), NormalsMetric(median="histogram")
    exact.update(pred, target)
    hist.update(pred, target)
    e, h = exact.compute(), hist.compute()
    for key in ("mean", "rmse", "pct_11.25", "pct_22.5", "pct_30"):
        assert torch.equal(e[key], h[key]), key
    with pytest.raises(ValueError, match="median must be one of"):
        NormalsMetric(median="approx")


def test_truncating_8bit_encoding_by_hand():
    # float32 (0.6, 0.8, 0): (n + 1)·127.5 = 204.000003, 229.5000015, 127.5
    #   round → 204, 230, 128;  trunc → 204, 229, 127;  decoded n = 2v/255 − 1
    pred = torch.tensor([0.6, 0.8, 0.0]).view(1, 3, 1, 1)
    t = np.array([0.6, 0.8, 0.0])
    for mode, levels in (("round", (204, 230, 128)), ("trunc", (204, 229, 127))):
        q = 2 * np.array(levels) / 255 - 1
        expected = math.degrees(math.atan2(np.linalg.norm(np.cross(q, t)), q @ t))
        metric = NormalsMetric(quantize_8bit=mode)
        metric.update(pred, pred.clone())
        assert metric.compute()["mean"].item() == pytest.approx(expected, rel=1e-4), mode
    round_err = NormalsMetric(quantize_8bit=True)
    round_err.update(pred, pred.clone())
    trunc_err = NormalsMetric(quantize_8bit="trunc")
    trunc_err.update(pred, pred.clone())
    assert trunc_err.compute()["mean"] > round_err.compute()["mean"]  # truncation is biased
    with pytest.raises(ValueError, match="quantize_8bit"):
        NormalsMetric(quantize_8bit="floor")
