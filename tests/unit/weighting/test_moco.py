"""MoCo: with exact tracking (β = 1) on fixed gradients, λ converges to the MGDA solution."""

import numpy as np
import pytest

from densemtl.weighting import build_weighting, solvers


def test_moco_first_step_by_hand(linear):
    # β_1 = 0.5: y = 0.5·g (no normalisation); λ = Π(½·1 − 0.1·(YYᵀ)λ) with YYᵀ = diag(.25, 1)
    # -> (0.5 − 0.0125, 0.5 − 0.05) = (0.4875, 0.45), projected: +0.03125 each
    problem = linear([[1.0, 0.0], [0.0, 2.0]])
    strategy = build_weighting("moco", ["a", "b"], normalization="none")
    out = strategy.backward(problem.losses(["a", "b"]), shared_parameters=[problem.theta])
    lam = [0.51875, 0.48125]
    assert list(out.weights.values()) == pytest.approx(lam, rel=1e-12)
    assert problem.theta.grad.tolist() == pytest.approx([0.5 * lam[0], 1.0 * lam[1]], rel=1e-12)


def test_moco_exact_tracking_converges_to_mgda(linear):
    rows = [[1.0, 0.2, 0.0], [-0.5, 1.0, 0.3], [0.1, -0.4, 1.5]]
    problem = linear(rows)
    strategy = build_weighting("moco", ["a", "b", "c"], beta=1.0, beta_sigma=0.0, gamma=0.5,
                               gamma_sigma=0.0, normalization="none")
    for _ in range(400):
        out = strategy.backward(problem.losses(["a", "b", "c"]),
                                shared_parameters=[problem.theta])
    jac = np.array(rows)
    np.testing.assert_allclose(out.weight_tensor.numpy(),
                               solvers.min_norm_coefficients(jac @ jac.T), atol=1e-8)
