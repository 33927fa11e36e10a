"""ATRC context pooling: the lean local attention, global linear attention and label regions
against explicit computations."""

import math

import pytest
import torch

from densemtl.models.atrc.context import (
    ContextSearchBlock,
    global_linear_attention,
    label_region_attention,
    local_attention,
    local_attention_unfold,
    region_descriptors,
    similarity_scale,
)


def brute_force_local(q, k, v, window, scale):
    """Per pixel, per offset: logit s·q·k inside the map, 0 outside (value 0 there)."""
    b, _, h, w = q.shape
    r = window // 2
    out = torch.zeros(b, v.shape[1], h, w, dtype=q.dtype)
    for n in range(b):
        for y in range(h):
            for x in range(w):
                logits, values = [], []
                for dy in range(-r, r + 1):
                    for dx in range(-r, r + 1):
                        yy, xx = y + dy, x + dx
                        if 0 <= yy < h and 0 <= xx < w:
                            logits.append(scale * float(q[n, :, y, x] @ k[n, :, yy, xx]))
                            values.append(v[n, :, yy, xx])
                        else:
                            logits.append(0.0)
                            values.append(torch.zeros(v.shape[1], dtype=q.dtype))
                a = torch.tensor(logits, dtype=q.dtype).softmax(0)
                out[n, :, y, x] = (a[:, None] * torch.stack(values)).sum(0)
    return out


@pytest.mark.parametrize("window", [3, 9])
def test_local_attention_equals_brute_force_loop(window):
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64)
    expected = brute_force_local(q, k, v, window, 0.7)
    torch.testing.assert_close(local_attention(q, k, v, window, 0.7), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(local_attention_unfold(q, k, v, window, 0.7), expected,
                               rtol=0, atol=1e-12)


def test_local_attention_outside_neighbours_stay_in_the_softmax():
    # 1×1 map, 3×3 window: the one real neighbour has logit 0 like the 8 padded ones -> v/9
    q = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    k = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    v = torch.full((1, 1, 1, 1), 9.0, dtype=torch.float64)
    assert local_attention(q, k, v, 3).item() == pytest.approx(1.0)


def test_local_attention_gradcheck():
    g = torch.Generator().manual_seed(1)
    args = [torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
            for _ in range(3)]
    assert torch.autograd.gradcheck(lambda q, k, v: local_attention(q, k, v, 3, 0.5), args)


def test_global_attention_equals_row_normalised_matrix():
    g = torch.Generator().manual_seed(2)
    q = torch.rand(2, 3, 7, generator=g, dtype=torch.float64)
    k = torch.rand(2, 3, 5, generator=g, dtype=torch.float64)
    v = torch.randn(2, 4, 5, generator=g, dtype=torch.float64)
    a = torch.einsum("bdn,bdm->bnm", q, k)  # sim(q_i, k_j) = q_i·k_j
    a = a / a.sum(2, keepdim=True)
    expected = torch.einsum("bnm,bcm->bcn", a, v)
    torch.testing.assert_close(global_linear_attention(q, k, v), expected)


def test_label_region_pooling_hand_worked():
    # 2 regions over 3 pixels, one feature channel
    p = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]])
    f = torch.tensor([[[1.0, 3.0, 5.0]]])
    regions = region_descriptors(p, f)
    assert regions.tolist() == [[[2.0, 5.0]]]
    # keys +1 / −1, values = the descriptors; query of pixel 0 is 1, of pixel 1 is −2, pixel 2: 0
    q = torch.tensor([[[1.0, -2.0, 0.0]]])
    k = torch.tensor([[[1.0, -1.0]]])
    out = label_region_attention(q, k, regions, scale=0.5)
    w0 = 1 / (1 + math.exp(-1.0))  # softmax([0.5, -0.5])[0]
    w1 = 1 / (1 + math.exp(2.0))  # softmax([-1, 1])[0]
    expected = [2 * w0 + 5 * (1 - w0), 2 * w1 + 5 * (1 - w1), 3.5]
    assert out[0, 0].tolist() == pytest.approx(expected)


def test_similarity_scales():
    assert similarity_scale("inv_d", 33) == pytest.approx(1 / 33)
    assert similarity_scale("inv_sqrt_d", 33) == pytest.approx(1 / math.sqrt(33))
    with pytest.raises(ValueError, match="inv_sqrt_d"):
        similarity_scale("sqrt", 33)


def block_with_alpha(values, candidates=("none", "global", "local", "t_label")):
    block = ContextSearchBlock(candidates, channels=4, width=2)
    with torch.no_grad():
        block.alpha.copy_(torch.tensor(values))
    return block


@pytest.mark.parametrize("gap, fixed", [(0.3 - 1e-4, False), (0.3 + 1e-4, True)])
def test_fixing_rule_on_alpha_gap(gap, fixed):
    block = block_with_alpha([0.0, gap, -0.1, -0.2])  # top two: gap and 0
    assert block.try_fix(0.3, on="alpha", strict=True) is fixed
    assert block.is_fixed is fixed


@pytest.mark.parametrize("gap, fixed", [(0.3 - 1e-4, False), (0.3 + 1e-4, True)])
def test_fixing_rule_on_softmax_gap(gap, fixed):
    # two candidates: softmax gap = tanh(Δα / 2)
    block = block_with_alpha([0.0, 2 * math.atanh(gap)], candidates=("none", "global"))
    assert block.try_fix(0.3, on="softmax", strict=False) is fixed


def test_fixed_block_stays_fixed():
    block = block_with_alpha([0.0, 0.5, 0.0, 0.0])
    assert block.try_fix() and block.choice() == "global"
    with torch.no_grad():
        block.alpha.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0]))  # now local leads by far
    assert not block.try_fix()
    assert block.choice() == "global"
    block.train()
    assert block.mixing_weights().tolist() == [0.0, 1.0, 0.0, 0.0]
    assert float(block.entropy()) == 0.0


def test_open_block_samples_soft_weights_in_training_and_argmax_in_eval():
    block = block_with_alpha([0.0, 0.2, 0.1, 0.0]).train()
    w = block.mixing_weights().detach()
    assert (w > 0).all() and float(w.sum()) == pytest.approx(1.0)
    assert block.eval().mixing_weights().tolist() == [0.0, 1.0, 0.0, 0.0]
    p = torch.tensor([0.0, 0.2, 0.1, 0.0]).softmax(0)
    assert float(block.entropy()) == pytest.approx(float(-(p * p.log()).sum()))
