"""GradDrop by hand: a representation with two elements, two tasks."""

import torch
from torch import nn

from densemtl.weighting import build_weighting


def test_graddrop_keeps_the_sign_the_purity_picks():
    # z (batch 1, 2 elements, positive) feeds L_a = 1·z0 − 1·z1 and L_b = 1·z0 + 3·z1 (and a
    # head weight h each). Element 0: both positive, P = 1: both kept (sum 2). Element 1:
    # P = ½(1 + 2/4) = 3/4: if U < 3/4 the positive 3 survives, else the negative −1.
    w = nn.Parameter(torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    heads = nn.Parameter(torch.ones(2, dtype=torch.float64))
    z = w * 1.0
    losses = {"a": heads[0] * (z[0, 0] - z[0, 1]), "b": heads[1] * (z[0, 0] + 3 * z[0, 1])}
    strategy = build_weighting("graddrop", ["a", "b"], seed=4)
    uniform = torch.rand((1, 2), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    strategy.backward(losses, representation=z)
    expected = [2.0, 3.0 if uniform[0, 1] < 0.75 else -1.0]
    assert w.grad.tolist() == [expected]
    assert heads.grad.tolist() == [1.0 - 2.0, 1.0 + 6.0]  # task parts: plain ∇L_t
