"""STCH by hand: warm-up, nadir point, smooth maximum and its limits."""

import math

import pytest
import torch

from densemtl.weighting import build_weighting


def losses(*values):
    return {t: torch.tensor(v, dtype=torch.float64, requires_grad=True)
            for t, v in zip("ab", values, strict=True)}


def test_stch_without_warmup_by_hand():
    # nadir 1, z = (0, log 2): total = 2·μ log(1 + 2^{1/μ}); μ = 1: 2 log 3
    loss = losses(1.0, 2.0)
    out = build_weighting("stch", ["a", "b"], warmup_epochs=0).backward(loss)
    assert float(out.total) == pytest.approx(2 * math.log(3.0))
    # ∂/∂L_t = 2·softmax(z)_t / L_t = 2·(1/3, 2/3)/(1, 2)
    assert [loss[t].grad.item() for t in "ab"] == pytest.approx([2 / 3, 2 / 3])
    assert list(out.weights.values()) == pytest.approx([2 / 3, 2 / 3])


def test_stch_warmup_then_the_last_warmup_epoch_is_the_nadir():
    strategy = build_weighting("stch", ["a", "b"], warmup_epochs=2)
    for epoch_losses in [(5.0, 5.0), (2.0, 4.0), (3.0, 6.0)]:  # the nadir is epoch 2's mean
        loss = losses(*epoch_losses)
        out = strategy.backward(loss)
        if len(strategy.history) < 2:  # warm-up: Σ log L
            assert float(out.total) == pytest.approx(sum(math.log(v) for v in epoch_losses))
        strategy.on_epoch_end()
    # epoch 3: z = log((3, 6)/(2, 4)) = log 1.5 twice: total = 2·(log 1.5 + log 2)
    assert float(out.total) == pytest.approx(2 * (math.log(1.5) + math.log(2.0)))


@pytest.mark.parametrize(("mu", "limit"), [(1e-3, 2 * math.log(2.0)),
                                           (1e4, math.log(2.0) + 2 * 1e4 * math.log(2.0))])
def test_stch_limits(mu, limit):
    # μ → 0: T·max z = 2 log 2; μ → ∞: Σ z + T μ log T
    out = build_weighting("stch", ["a", "b"], mu=mu, warmup_epochs=0).backward(losses(1.0, 2.0))
    assert float(out.total) == pytest.approx(limit, rel=1e-3)
