"""GradVac by hand (T = 2; per tensor and whole gradient) and its φ̂ = 0, β = 0 case, PCGrad."""

import numpy as np
import pytest
import torch

from densemtl.weighting import build_weighting, solvers
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


def two_layer_losses(a_rows, b_rows):
    """L_t = a_t·θ_A + b_t·θ_B + 10 with θ_A a 2-vector and θ_B a scalar layer."""
    theta_a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    theta_b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    a = torch.tensor(a_rows, dtype=torch.float64)
    b = torch.tensor(b_rows, dtype=torch.float64)
    losses = {t: a[i] @ theta_a + b[i] @ theta_b + 10 for i, t in enumerate("xy")}
    return losses, theta_a, theta_b


@pytest.mark.parametrize(("granularity", "update_a", "update_b", "targets"), [
    # per tensor: in layer A, g_x = (1, 0) and g_y = (−1, 1) conflict (cosine −1/√2 < 0), so
    # each is projected off the other: g_x' = (1/2, 1/2), g_y' = (0, 1); layer B's (3), (3)
    # agree; update (1/2, 3/2 | 6); targets β·cosine: layer A −1/(2√2), layer B 1/2
    ("tensor", [0.5, 1.5], [6.0], [[-0.5 / np.sqrt(2)] * 2, [0.5] * 2]),
    # whole: (1, 0, 3)·(−1, 1, 3) = 8 > 0, no conflict, update g_x + g_y = (0, 1 | 6); one
    # target β·8/(√10·√11)
    ("whole", [0.0, 1.0], [6.0], [[0.5 * 8 / np.sqrt(110)] * 2]),
])
def test_gradvac_per_tensor_and_whole_gradient_by_hand(granularity, update_a, update_b, targets):
    losses, theta_a, theta_b = two_layer_losses([[1.0, 0.0], [-1.0, 1.0]], [[3.0], [3.0]])
    strategy = build_weighting("gradvac", ["x", "y"], beta=0.5, granularity=granularity)
    strategy.backward(losses, shared_parameters=[theta_a, theta_b])
    assert theta_a.grad.tolist() == pytest.approx(update_a, abs=1e-12)
    assert theta_b.grad.tolist() == pytest.approx(update_b, abs=1e-12)
    got = [[group[0][1], group[1][0]] for group in strategy.targets]
    np.testing.assert_allclose(got, targets, rtol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_gradvac_groups_solved_together_equal_one_by_one(seed):
    """The stacked K-group solve is K independent whole-gradient solves with the same orders."""
    rng = np.random.default_rng(seed)
    jacs = [rng.normal(size=(4, n)) for n in (3, 5, 2)]
    grams = np.stack([j @ j.T for j in jacs])
    targets = rng.uniform(-0.5, 0.5, size=grams.shape)
    orders = [[j for j in rng.permutation(4) if j != i] for i in range(4)]
    coef, new = gradvac_coefficients(grams, targets, orders, beta=0.3)
    for k in range(3):
        one, one_new = gradvac_coefficients(grams[k], targets[k], orders, beta=0.3)
        np.testing.assert_allclose(coef[k], one, rtol=1e-12)
        np.testing.assert_allclose(new[k], one_new, rtol=1e-12)


def test_gradvac_refuses_a_change_in_the_parameter_groups():
    losses, theta_a, theta_b = two_layer_losses([[1.0, 0.0], [-1.0, 1.0]], [[3.0], [3.0]])
    strategy = build_weighting("gradvac", ["x", "y"])
    strategy.backward(losses, shared_parameters=[theta_a, theta_b])
    losses, theta_a, theta_b = two_layer_losses([[1.0, 0.0], [-1.0, 1.0]], [[3.0], [3.0]])
    third = torch.ones(1, dtype=torch.float64, requires_grad=True)
    losses = {t: loss + third.sum() for t, loss in losses.items()}
    with pytest.raises(ValueError, match="targets for 2 parameter group"):
        strategy.backward(losses, shared_parameters=[theta_a, theta_b, third])


def test_gradvac_rejects_an_unknown_granularity():
    with pytest.raises(ValueError, match="granularity must be one of"):
        build_weighting("gradvac", ["x", "y"], granularity="layer")
