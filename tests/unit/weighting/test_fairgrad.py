"""FairGrad by hand (T = 2) and its α = 1 case, Nash-MTL."""

import numpy as np
import pytest

from densemtl.weighting import build_weighting, solvers


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
def test_fairgrad_orthogonal_two_tasks_closed_form(linear, alpha):
    # g1 = (1, 0), g2 = (0, 2): G = diag(1, 4), so w1 = w1^(-1/α) -> 1, 4 w2 = w2^(-1/α)
    problem = linear([[1.0, 0.0], [0.0, 2.0]])
    out = build_weighting("fairgrad", ["a", "b"], alpha=alpha).backward(
        problem.losses(["a", "b"]), shared_parameters=[problem.theta])
    w2 = 4.0 ** (-alpha / (alpha + 1.0))
    assert list(out.weights.values()) == pytest.approx([1.0, w2], rel=1e-10)
    assert problem.theta.grad.tolist() == pytest.approx([1.0, 2.0 * w2], rel=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_fairgrad_alpha_one_is_nash_mtl(seed):
    jac = np.random.default_rng(seed).normal(size=(4, 9))
    g = jac @ jac.T
    np.testing.assert_allclose(solvers.alpha_fair_coefficients(g, 1.0),
                               solvers.nash_mtl_coefficients(g), rtol=1e-12)
    w = solvers.alpha_fair_coefficients(g, 3.0)
    np.testing.assert_allclose(g @ w, w ** (-1 / 3.0), rtol=1e-9)
