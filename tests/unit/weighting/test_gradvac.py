"""GradVac by hand (T = 2) and its φ̂ = 0, β = 0 case, PCGrad."""

import numpy as np
import pytest

from densemtl.weighting import solvers
from densemtl.weighting.gradvac import gradvac_coefficients


def test_gradvac_lifts_the_cosine_to_its_target():
    # g1 = (1, 0), g2 = (0, 1): φ = 0 < φ̂ = 1/2, so g1' = g1 + g2·(1/2)/√(3/4) = (1, 1/√3),
    # whose cosine with g2 is 1/2; g2 gets the symmetric correction
    jac = np.eye(2)
    targets = np.full((2, 2), 0.5)
    coef, new = gradvac_coefficients(jac @ jac.T, targets, [[1], [0]], beta=0.01)
    np.testing.assert_allclose(coef, [1 + 1 / np.sqrt(3), 1 + 1 / np.sqrt(3)], rtol=1e-12)
    g1 = np.array([1.0, 1 / np.sqrt(3)])
    assert g1 @ jac[1] / np.linalg.norm(g1) == pytest.approx(0.5)
    assert new[0, 1] == pytest.approx(0.99 * 0.5 + 0.01 * 0.0)  # EMA of the cosine before


@pytest.mark.parametrize("seed", range(4))
def test_gradvac_with_zero_targets_and_no_update_is_pcgrad(seed):
    rng = np.random.default_rng(seed)
    jac = rng.normal(size=(4, 6))
    orders = [[j for j in rng.permutation(4) if j != i] for i in range(4)]
    coef, _ = gradvac_coefficients(jac @ jac.T, np.zeros((4, 4)), orders, beta=0.0)
    full = np.array([[i, *o] for i, o in enumerate(orders)])  # PCGrad skips j = i itself
    np.testing.assert_allclose(coef, solvers.pcgrad_coefficients(jac @ jac.T, full), rtol=1e-12)
