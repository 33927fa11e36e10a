"""ExcessMTL by hand: two steps with changing gradients."""

import math

import pytest

from densemtl.weighting import build_weighting


def test_excess_mtl_two_steps_by_hand(linear):
    strategy = build_weighting("excess_mtl", ["a", "b"], robust_step_size=0.5)
    # step 1: g = (1, 0), (0, 2): only the baseline r₁ = (1, 2) is recorded, weights stay 1
    problem = linear([[1.0, 0.0], [0.0, 2.0]])
    out = strategy.backward(problem.losses(["a", "b"]), shared_parameters=[problem.theta])
    assert list(out.weights.values()) == [1.0, 1.0]
    assert problem.theta.grad.tolist() == pytest.approx([1.0, 2.0])
    # step 2: g = (2, 0), (0, 2): S = (5, 8) -> r = (4/√5, 4/√8); r/r₁ = (4/√5, 1/√2)
    problem.a[0, 0] = 2.0
    out = strategy.backward(problem.losses(["a", "b"]), shared_parameters=[problem.theta])
    raw = [math.exp(0.5 * 4 / math.sqrt(5)), math.exp(0.5 / math.sqrt(2))]
    expected = [2 * r / sum(raw) for r in raw]
    assert list(out.weights.values()) == pytest.approx(expected, rel=1e-6)
    assert problem.theta.grad.tolist() == pytest.approx([2 * expected[0], 2 * expected[1]],
                                                        rel=1e-6)
