"""MoDo and SDMGrad by hand: the λ / w step from the cross Gram matrix of two samples, the
update from the third sample (the step's own)."""

import numpy as np
import pytest
import torch
from torch import nn

from densemtl.weighting import build_weighting
from densemtl.weighting.modo import modo_step
from densemtl.weighting.sdmgrad import sdmgrad_step


def sampled_losses(theta, rows_per_sample):
    """Per sample: L_t = a_tᵀθ with that sample's rows a_t."""
    return [{t: torch.tensor(a, dtype=torch.float64) @ theta for t, a in zip("ab", rows,
                                                                              strict=True)}
            for rows in rows_per_sample]


def test_modo_step_by_hand():
    # A = diag(1, 3), λ = (½, ½), γ = 0.1, ρ = 0: λ − γAλ = (0.45, 0.35); projected: +0.1 each
    np.testing.assert_allclose(modo_step(np.array([0.5, 0.5]), np.diag([1.0, 3.0]), 0.1, 0.0),
                               [0.55, 0.45], rtol=1e-12)


def test_modo_uses_two_samples_for_lambda_and_the_third_for_the_update():
    theta = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    # samples 1 and 2: A = J1 J2ᵀ = diag(1, 3); sample 3: gradients (2, 0) and (0, 5)
    first, second, own = sampled_losses(theta, [[[1, 0], [0, 1]], [[1, 0], [0, 3]],
                                                [[2, 0], [0, 5]]])
    strategy = build_weighting("modo", ["a", "b"], gamma=0.1, rho=0.0)
    out = strategy.backward(own, extra_losses=[first, second], shared_parameters=[theta])
    assert list(out.weights.values()) == pytest.approx([0.55, 0.45])
    assert theta.grad.tolist() == pytest.approx([2 * 0.55, 5 * 0.45])
    with pytest.raises(ValueError, match="needs 2 extra loss sample"):
        strategy.backward(own, shared_parameters=[theta])


def test_sdmgrad_one_inner_step_by_hand():
    # A = diag(1, 4): s = mean(1, 2) = 1.5, Â = A / 2.25. λ = 0.5, w̃ = w = (½, ½):
    # grad = Â (w + λw̃) = Â (0.75, 0.75) = (1/3, 4/3); w − 0.3·grad = (0.4, 0.1) -> +0.25 each
    w, coef = sdmgrad_step(np.array([0.5, 0.5]), np.diag([1.0, 4.0]), 0.5, 0.3, 0.5, 1)
    np.testing.assert_allclose(w, [0.65, 0.35], rtol=1e-6)
    np.testing.assert_allclose(coef, (np.array([0.65, 0.35]) + 0.25) / 1.5, rtol=1e-6)


def test_sdmgrad_large_lambda_is_the_mean_gradient():
    w, coef = sdmgrad_step(np.array([0.5, 0.5]), np.diag([1.0, 4.0]), 1e8, 10.0, 0.5, 20)
    np.testing.assert_allclose(coef, [0.5, 0.5], rtol=1e-6)


def test_sampled_methods_refuse_the_representation_space():
    with pytest.raises(ValueError, match="space='parameters' only"):
        build_weighting("sdmgrad", ["a", "b"], space="representation")
