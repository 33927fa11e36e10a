"""IMTL's L / both modes, Nash-MTL's update clipping, MGDA's normalised update on a network."""

import math

import pytest
import torch
from torch import nn

from densemtl.weighting import build_weighting


def test_imtl_l_gradient_of_the_scales_and_its_optimum(linear):
    # objective Σ e^{s} L − s: ∂/∂s = e^{s} L − 1, zero at e^{s} L = 1
    problem = linear([[1.0, 0.0], [0.0, 2.0]], [2.0, 0.5])
    strategy = build_weighting("imtl", ["a", "b"], mode="l").double()
    out = strategy.backward(problem.losses(["a", "b"]))
    assert strategy.log_scales.grad.tolist() == pytest.approx([1.0, -0.5])
    assert out.weights == {"a": 1.0, "b": 1.0}
    with torch.no_grad():
        strategy.log_scales.copy_(torch.tensor([-math.log(2.0), math.log(2.0)],
                                                 dtype=torch.float64))
    strategy.log_scales.grad = None
    out = strategy.backward(problem.losses(["a", "b"]))
    assert strategy.log_scales.grad.tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
    assert list(out.loss_scales.values()) == pytest.approx([1.0, 1.0])


def test_imtl_both_is_imtl_g_on_the_scaled_losses(linear):
    # s = (0, log 2): scaled gradients (1, 0) and (0, 4); IMTL-G on them: α ∝ G⁻¹‖g‖ =
    # (1, 1/4) -> α = (0.8, 0.2), update (0.8, 0.8); raw-loss weights α e^{s} = (0.8, 0.4)
    problem = linear([[1.0, 0.0], [0.0, 2.0]], [2.0, 0.5])
    strategy = build_weighting("imtl", ["a", "b"], mode="both").double()
    with torch.no_grad():
        strategy.log_scales.copy_(torch.tensor([0.0, math.log(2.0)], dtype=torch.float64))
    out = strategy.backward(problem.losses(["a", "b"]), shared_parameters=[problem.theta])
    assert problem.theta.grad.tolist() == pytest.approx([0.8, 0.8])
    assert list(out.weights.values()) == pytest.approx([0.8, 0.4])
    assert strategy.log_scales.grad.tolist() == pytest.approx([2.0 - 1.0, 1.0 - 1.0])


def test_nash_mtl_clips_the_shared_update_only(linear):
    # g = (1, 0), (0, 2): α = (1, ½), d = (1, 1), ‖d‖ = √2 = √T > max_norm 1 -> d/√2; the
    # task-specific part (here the offset's head weight) keeps α
    problem = linear([[1.0, 0.0], [0.0, 2.0]])
    head = nn.Parameter(torch.ones(2, dtype=torch.float64))
    losses = {t: head[i] * loss for i, (t, loss) in enumerate(problem.losses("ab").items())}
    out = build_weighting("nash_mtl", ["a", "b"], max_norm=1.0).backward(
        losses, shared_parameters=[problem.theta])
    assert out.weights == pytest.approx({"a": 1.0, "b": 0.5})
    assert problem.theta.grad.tolist() == pytest.approx([2**-0.5, 2**-0.5])
    assert head.grad.tolist() == pytest.approx([1.0 * 10.0, 0.5 * 10.0])  # α_t L_t at θ = 0
    problem.losses("ab")
    build_weighting("nash_mtl", ["a", "b"], max_norm=None).backward(
        problem.losses("ab"), shared_parameters=[problem.theta])
    assert problem.theta.grad.tolist() == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize("normalization", ["l2", "loss", "loss+"])
def test_mgda_normalised_update_is_one_scalarised_objective(linear, normalization):
    """Chosen convention (documented in ``MGDA``): with ``normalised_update`` the whole update is
    the gradient of Σ (α_t/n_t) L_t — the shared part is the min-norm point of the normalised
    gradients and each task's own part gets α_t/n_t — so shared and task-specific parameters
    descend the same scalarised objective. ``normalised_update=False`` is the MGDA-UB code:
    α_t on the raw losses everywhere."""
    problem = linear([[1.0, 0.0], [0.0, 2.0]], [2.0, 0.5])
    head = nn.Parameter(torch.ones(2, dtype=torch.float64))
    losses = {t: head[i] * loss for i, (t, loss) in enumerate(problem.losses("ab").items())}
    out = build_weighting("mgda", ["a", "b"], space="parameters",
                          normalization=normalization).backward(
        losses, shared_parameters=[problem.theta])
    n = {"l2": [1.0, 2.0], "loss": [2.0, 0.5], "loss+": [2.0, 1.0]}[normalization]
    c = out.weight_tensor.tolist()
    # the normalised gradients (1, 0)/n1 and (0, 2)/n2; α = their min-norm weights
    u1, u2 = 1.0 / n[0], 2.0 / n[1]
    alpha = torch.tensor([u2**2, u1**2], dtype=torch.float64) / (u1**2 + u2**2)
    torch.testing.assert_close(out.weight_tensor, alpha / torch.tensor(n, dtype=torch.float64))
    assert problem.theta.grad.tolist() == pytest.approx([c[0] * 1.0, c[1] * 2.0])
    assert head.grad.tolist() == pytest.approx([c[0] * 2.0, c[1] * 0.5])
    problem.losses("ab")
    head.grad = None
    losses = {t: head[i] * loss for i, (t, loss) in enumerate(problem.losses("ab").items())}
    raw = build_weighting("mgda", ["a", "b"], space="parameters", normalization=normalization,
                          normalised_update=False).backward(
        losses, shared_parameters=[problem.theta])
    torch.testing.assert_close(raw.weight_tensor, alpha)
    assert head.grad.tolist() == pytest.approx([alpha[0].item() * 2.0, alpha[1].item() * 0.5])
