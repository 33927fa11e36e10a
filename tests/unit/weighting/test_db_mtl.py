"""DB-MTL by hand (T = 2, first step)."""

import pytest

from densemtl.weighting import build_weighting


def test_db_mtl_first_step_by_hand(linear):
    # θ = 0: L = (2, 1), ∇ log L = a / L = (0.5, 0) and (0, 3); the EMA from 0 with β = 0.9 is
    # 0.1 × that: norms 0.05 and 0.3, α = (6, 1), update 6·(0.05, 0) + (0, 0.3) = (0.3, 0.3)
    problem = linear([[1.0, 0.0], [0.0, 3.0]], [2.0, 1.0])
    strategy = build_weighting("db_mtl", ["a", "b"])
    out = strategy.backward(problem.losses(["a", "b"]), shared_parameters=[problem.theta])
    assert problem.theta.grad.tolist() == pytest.approx([0.3, 0.3], rel=1e-6)
    assert list(out.weights.values()) == pytest.approx([6.0 / 2.0, 1.0 / 1.0], rel=1e-6)
    # second step, same gradients: EMA 0.9·0.1 g + 0.1 g = 0.19 g -> update scales to 0.57
    strategy.backward(problem.losses(["a", "b"]), shared_parameters=[problem.theta])
    assert problem.theta.grad.tolist() == pytest.approx([0.57, 0.57], rel=1e-6)
