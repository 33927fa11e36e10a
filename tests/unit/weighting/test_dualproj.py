"""DualProj by hand (T = 2) and its defining properties."""

import numpy as np
import pytest

from densemtl.weighting import build_weighting
from densemtl.weighting.upgrad import dual_cone_weights


@pytest.mark.parametrize(("rows", "update"), [
    # conflicting: the mean (-1/2, 1/2) has a negative inner product with g1 = (1, 0); the dual
    # cone is {x1 ≥ 0, x2 ≥ 2 x1}, and the nearest point of it is (0, 1/2) = 1·g1 + 1/2·g2
    ([[1.0, 0.0], [-2.0, 1.0]], [0.0, 0.5]),
    # no conflict: the mean (1, 1/2) already lies in the dual cone and is the update
    ([[1.0, 0.0], [1.0, 1.0]], [1.0, 0.5]),
])
def test_dualproj_two_tasks_by_hand(linear, rows, update):
    problem = linear(rows)
    strategy = build_weighting("dualproj", ["a", "b"])
    strategy.backward(problem.losses(["a", "b"]), shared_parameters=[problem.theta])
    assert problem.theta.grad.tolist() == pytest.approx(update, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_dualproj_is_the_nearest_non_conflicting_update_to_the_mean(seed):
    rng = np.random.default_rng(seed)
    jac = rng.normal(size=(5, 4))  # T > dimension: conflicts certain
    d = dual_cone_weights(jac @ jac.T, np.full(5, 0.2)) @ jac
    assert np.all(jac @ d >= -1e-10)
    mean = jac.mean(axis=0)
    # projection onto a convex cone: ⟨mean − d, d⟩ = 0 and ⟨mean − d, x⟩ ≤ 0 for every x in it,
    # checked on the cone's points Jᵀv (v ≥ 0) that are in it: the other tasks' projections
    assert (mean - d) @ d == pytest.approx(0.0, abs=1e-10)
    for i in range(5):
        x = dual_cone_weights(jac @ jac.T, np.eye(5)[i]) @ jac
        assert (mean - d) @ x <= 1e-10
        assert np.linalg.norm(mean - d) <= np.linalg.norm(mean - x) + 1e-12


def test_dualproj_preference_moves_the_projected_point():
    rows = np.array([[1.0, 0.0], [-2.0, 1.0]])
    strategy = build_weighting("dualproj", ["a", "b"], preference={"a": 1.0, "b": 3.0})
    c = strategy.coefficients(rows @ rows.T, np.ones(2))
    # p = (1/4, 3/4): Jᵀp = (-5/4, 3/4), conflicting with g1; projected onto x1 = 0: (0, 3/4)
    np.testing.assert_allclose(c @ rows, [0.0, 0.75], atol=1e-12)
