"""UPGrad by hand (T = 2) and its defining property."""

import numpy as np
import pytest

from densemtl.weighting import build_weighting
from densemtl.weighting.upgrad import upgrad_coefficients


@pytest.mark.parametrize(("rows", "update"), [
    # conflicting: g1 = (1, 0) projects onto the cone's edge x2 = x1 -> (1/2, 1/2); g2 = (-1, 1)
    # onto x1 = 0 -> (0, 1); the mean of the two is (1/4, 3/4)
    ([[1.0, 0.0], [-1.0, 1.0]], [0.25, 0.75]),
    # no conflict: both gradients lie in the dual cone, UPGrad is their mean
    ([[1.0, 0.0], [1.0, 1.0]], [1.0, 0.5]),
])
def test_upgrad_two_tasks_by_hand(linear, rows, update):
    problem = linear(rows)
    strategy = build_weighting("upgrad", ["a", "b"])
    strategy.backward(problem.losses(["a", "b"]), shared_parameters=[problem.theta])
    assert problem.theta.grad.tolist() == pytest.approx(update, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_upgrad_update_conflicts_with_no_task(seed):
    jac = np.random.default_rng(seed).normal(size=(5, 4))  # T > dimension: conflicts certain
    d = upgrad_coefficients(jac @ jac.T) @ jac
    assert np.all(jac @ d >= -1e-10)


def test_upgrad_preference_weights_the_projections():
    rows = np.array([[1.0, 0.0], [-1.0, 1.0]])
    c = upgrad_coefficients(rows @ rows.T, np.array([0.75, 0.25]))
    # 3/4 of g1's projection (1/2, 1/2) plus 1/4 of g2's (0, 1)
    np.testing.assert_allclose(c @ rows, [0.375, 0.625], atol=1e-12)
