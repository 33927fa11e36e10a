"""FAMO: the objective's weights by hand, the logit update against torch.optim.Adam."""

import pytest
import torch

from densemtl.weighting import build_weighting


def test_famo_weights_by_hand_at_equal_logits():
    # z = (½, ½), L = (1, 3): c = ½ + 1/6 = 2/3, weights z/(c L) = (3/4, 1/4)
    loss = {"a": torch.tensor(1.0, dtype=torch.float64, requires_grad=True),
            "b": torch.tensor(3.0, dtype=torch.float64, requires_grad=True)}
    out = build_weighting("famo", ["a", "b"]).backward(loss)
    assert list(out.weights.values()) == pytest.approx([0.75, 0.25], rel=1e-7)
    assert [loss[t].grad.item() for t in "ab"] == pytest.approx([0.75, 0.25], rel=1e-7)


def test_famo_logit_steps_equal_adam_on_the_official_gradient():
    """The official update: ξ.grad = autograd of softmax(ξ) with grad_outputs δ, Adam(w_lr,
    weight_decay=γ). Three steps, against torch.optim.Adam."""
    strategy = build_weighting("famo", ["a", "b", "c"], w_lr=0.1, gamma=0.01)
    xi = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    adam = torch.optim.Adam([xi], lr=0.1, weight_decay=0.01)
    before_after = [((1.0, 2.0, 3.0), (0.9, 1.9, 2.0)), ((0.9, 1.9, 2.0), (0.5, 1.8, 1.9)),
                    ((0.5, 1.8, 1.9), (0.45, 1.0, 1.8))]
    for before, after in before_after:
        strategy.backward({t: torch.tensor(v, dtype=torch.float64, requires_grad=True)
                           for t, v in zip("abc", before, strict=True)})
        strategy.after_step({t: torch.tensor(v, dtype=torch.float64)
                             for t, v in zip("abc", after, strict=True)})
        delta = torch.log(torch.tensor(before, dtype=torch.float64) + 1e-8) - \
            torch.log(torch.tensor(after, dtype=torch.float64) + 1e-8)
        adam.zero_grad()
        xi.grad = torch.autograd.grad(torch.softmax(xi, 0), xi, grad_outputs=delta)[0]
        adam.step()
        torch.testing.assert_close(strategy.logits, xi.detach(), rtol=1e-12, atol=1e-14)


def test_famo_next_batch_update_equals_the_same_batch_one_fed_the_next_losses():
    """update=next_batch: ξ moves at the start of the next step, by the decrease from the
    previous step's losses to this step's — the same Adam step the official update makes when
    given those losses as the post-step ones. No post-step forward is asked for."""
    official = build_weighting("famo", ["a", "b"], w_lr=0.1, gamma=0.01)
    delayed = build_weighting("famo", ["a", "b"], w_lr=0.1, gamma=0.01, update="next_batch")
    assert official.needs.post_step_losses and not delayed.needs.post_step_losses
    steps = [(1.0, 3.0), (0.8, 2.0), (0.7, 1.5), (0.6, 1.4)]

    def losses(values):
        return {t: torch.tensor(v, dtype=torch.float64, requires_grad=True)
                for t, v in zip("ab", values, strict=True)}

    for k, values in enumerate(steps):
        out_delayed = delayed.backward(losses(values))
        if k > 0:  # the official strategy learns the same decrease after its step k − 1
            official.after_step(losses(values))
        out_official = official.backward(losses(values))
        torch.testing.assert_close(delayed.logits, official.logits, rtol=1e-12, atol=1e-14)
        assert list(out_delayed.weights.values()) == pytest.approx(
            list(out_official.weights.values()), rel=1e-12)
    assert delayed.logits.abs().sum() > 0  # it did move
    with pytest.raises(ValueError, match="famo update must be"):
        build_weighting("famo", ["a", "b"], update="later")
