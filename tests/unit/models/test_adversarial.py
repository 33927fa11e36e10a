"""Adversarial task disentanglement: reversal layer, λ schedule, discriminator loss, 2nd order."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from densemtl.models.adversarial import (
    W_D_PAPER,
    W_D_REFERENCE,
    ReversalSchedule,
    TaskDiscriminator,
    adversarial_loss,
    combine_losses,
    discriminator_accuracy,
    ganin_lambda,
    grad_reverse,
    normalize_gradient,
    task_gradient,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# -- gradient reversal ---------------------------------------------------------------------------


def test_reversal_forward_is_identity_and_backward_is_exactly_minus_lambda() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    upstream = torch.randn(2, 3, 4, 5)
    y = grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    y.backward(upstream)
    assert torch.equal(x.grad, -0.3 * upstream)

    # behind a nonlinearity: exactly -λ times the gradient without the layer
    x0 = x.detach().requires_grad_()
    (ref,) = torch.autograd.grad(torch.sin(x0).pow(2).sum(), x0)
    (rev,) = torch.autograd.grad(torch.sin(grad_reverse(x0, 0.3)).pow(2).sum(), x0)
    assert torch.equal(rev, -0.3 * ref)

    (zero,) = torch.autograd.grad(grad_reverse(x0, 0.0).sum(), x0)
    assert torch.count_nonzero(zero) == 0


def test_reversal_gradcheck_and_gradgradcheck_float64() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)

    def vjp(v_: Tensor) -> Tensor:
        # the backward of the layer, as a function: v -> -0.3 v (FD can check this, not the
        # forward, whose true derivative +1 the layer deliberately misreports)
        (g,) = torch.autograd.grad(grad_reverse(x, 0.3), x, v_, create_graph=True)
        return g

    assert torch.autograd.gradcheck(vjp, (v,))
    assert torch.autograd.gradgradcheck(lambda a: grad_reverse(a, 0.3), (x,))


def test_reversal_passes_second_order_terms_to_parameters() -> None:
    torch.manual_seed(2)
    w = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(10, 3, dtype=torch.float64)
    feats = torch.tanh(x @ w.T)
    loss = (feats.pow(3)).sum()
    (g,) = torch.autograd.grad(loss, feats, create_graph=True)
    probe = torch.randn(10, 4, dtype=torch.float64)
    (plain,) = torch.autograd.grad((g * probe).sum(), w, retain_graph=True)
    (reversed_,) = torch.autograd.grad((grad_reverse(g, 0.7) * probe).sum(), w)
    assert plain.abs().max() > 1e-3  # the second-order path carries a real gradient
    torch.testing.assert_close(reversed_, -0.7 * plain, rtol=1e-12, atol=1e-15)


def test_reversal_rejects_bad_lambda() -> None:
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"lambd must be a finite number >= 0, got {bad}"):
            grad_reverse(torch.zeros(2), bad)
    with pytest.raises(TypeError, match="lambd must be a real number, got Tensor"):
        grad_reverse(torch.zeros(2), torch.tensor(0.5))  # type: ignore[arg-type]


# -- λ schedule ----------------------------------------------------------------------------------


def test_ganin_lambda_values() -> None:
    assert ganin_lambda(0.0) == 0.0
    assert math.isclose(ganin_lambda(1.0), 0.9999092042625951, rel_tol=1e-12)
    # 2/(1+e^{-x}) - 1 = tanh(x/2): an independent formula
    for p in (0.01, 0.1, 0.25, 0.5, 0.9):
        assert math.isclose(ganin_lambda(p), math.tanh(5 * p), rel_tol=1e-12)
    values = [ganin_lambda(i / 20) for i in range(21)]
    assert all(b > a for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan")])
def test_ganin_lambda_rejects_progress_outside_unit_interval(bad: float) -> None:
    with pytest.raises(ValueError, match=r"progress must be in \[0, 1\]"):
        ganin_lambda(bad)


def test_reversal_schedule() -> None:
    const = ReversalSchedule("constant", 0.4)
    assert [const(p) for p in (0.0, 0.5, 1.0)] == [0.4, 0.4, 0.4]
    ganin = ReversalSchedule("ganin", None)
    assert ganin(0.3) == ganin_lambda(0.3)
    with pytest.raises(ValueError, match="'linear' is not one of constant, ganin"):
        ReversalSchedule("linear", 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"value must be in \[0, 1\], got 1.5"):
        ReversalSchedule("constant", 1.5)
    with pytest.raises(ValueError, match="needs a value"):
        ReversalSchedule("constant", None)
    with pytest.raises(ValueError, match="takes no value"):
        ReversalSchedule("ganin", 0.5)
    with pytest.raises(ValueError, match="progress"):
        const(2.0)


# -- discriminator and loss pieces ---------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
def test_task_discriminator_shape_params_and_receptive_field(k: int) -> None:
    torch.manual_seed(3)
    c, h, t = 6, 5, 3
    disc = TaskDiscriminator(c, t, hidden=h, kernel_size=k)
    assert sum(p.numel() for p in disc.parameters()) == c * h * k * k + h + h * t + t
    x = torch.randn(2, c, 7, 8)
    out = disc(x)
    assert out.shape == (2, t, 7, 8)
    # a change at one interior pixel moves the logits of exactly its k×k neighbourhood
    x2 = x.clone()
    x2[1, :, 3, 4] += 1.0
    changed = (disc(x2) != out).any(dim=1)
    assert int(changed.sum()) == k * k
    assert bool(changed[1, 3 - k // 2 : 4 + k // 2, 4 - k // 2 : 5 + k // 2].all())
    assert TaskDiscriminator(c, t).body.out_channels == c  # hidden defaults to in_channels


def test_task_discriminator_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        TaskDiscriminator(4, 2, kernel_size=2)
    with pytest.raises(ValueError, match="num_tasks must be an integer >= 2, got 1"):
        TaskDiscriminator(4, 1)


def test_task_gradient_is_normalised_gradient_on_the_graph() -> None:
    torch.manual_seed(4)
    f = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    z = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    mask = torch.ones(2, 1, 4, 4, dtype=torch.float64)
    mask[0, :, 1, 2] = 0  # this pixel's loss is masked out: its gradient is exactly zero
    g = task_gradient(0.5 * ((f - z).pow(2) * mask).sum() / 7.0, f)
    raw = (f - z).detach() * mask / 7.0
    expected = raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-300)
    torch.testing.assert_close(g, expected, rtol=1e-10, atol=1e-12)
    norms = g.norm(dim=1)
    assert norms[0, 1, 2] == 0
    torch.testing.assert_close(norms[norms > 0], torch.ones(31, dtype=torch.float64))
    assert g.requires_grad  # create_graph=True: differentiable w.r.t. f
    (gg,) = torch.autograd.grad(g.sum(), f)
    assert gg.abs().max() > 0


def test_task_gradient_errors() -> None:
    f = torch.randn(1, 2, 2, 2, requires_grad=True)
    with pytest.raises(ValueError, match="scalar"):
        task_gradient(f * 2, f)
    with pytest.raises(ValueError, match="does not depend on features"):
        task_gradient(torch.randn(3, requires_grad=True).sum(), f)
    with pytest.raises(ValueError, match="does not require grad"):
        task_gradient(f.sum(), f.detach())


def test_normalize_gradient_half_precision_keeps_zero_pixels_finite() -> None:
    g = torch.zeros(1, 2, 1, 2, dtype=torch.float16)
    g[0, :, 0, 1] = torch.tensor([3e-3, 4e-3])
    out = normalize_gradient(g)
    assert out.dtype == torch.float16
    assert torch.equal(out[0, :, 0, 0], torch.zeros(2, dtype=torch.float16))
    torch.testing.assert_close(out[0, :, 0, 1].float(), torch.tensor([0.6, 0.8]), atol=2e-3, rtol=0)


def identity_discriminator(x: Tensor) -> Tensor:
    """Logits = the gradient map itself (C = T): lets the loss be worked out by hand."""
    return x


def test_adversarial_loss_hand_computed_value() -> None:
    # T = 2, one task-0 map with three pixels: (1, 0), (0, 1), (0, 0) (invalid)
    g = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).reshape(1, 2, 1, 3)
    loss = adversarial_loss(g, [0], identity_discriminator, 1.0)
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1))) / 2
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    # the same pixels labelled task 1: the roles swap, same value by symmetry
    assert math.isclose(
        adversarial_loss(g, [1], identity_discriminator, 1.0).item(), expected, rel_tol=1e-6
    )
    acc = discriminator_accuracy(g, [0], identity_discriminator)
    assert acc.item() == 0.5  # (1, 0) right, (0, 1) wrong, (0, 0) not scored


def _maps_with_holes(seed: int) -> tuple[list[Tensor], list[Tensor]]:
    """Three normalised gradient maps of different batch sizes with some exactly-zero pixels."""
    gen = torch.Generator().manual_seed(seed)
    maps, holes = [], []
    for n in (2, 2, 2):
        g = normalize_gradient(torch.randn(n, 4, 5, 5, generator=gen))
        hole = torch.rand(n, 5, 5, generator=gen) < 0.3 * (len(maps) + 1)
        maps.append(g * ~hole[:, None])
        holes.append(hole)
    return maps, holes


def test_invalid_pixels_do_not_change_the_loss() -> None:
    torch.manual_seed(5)
    maps, holes = _maps_with_holes(0)
    disc = TaskDiscriminator(4, 3, hidden=8)
    stacked, hole = torch.cat(maps), torch.cat(holes)
    assert 0 < int(hole.sum()) < hole.numel()
    loss = adversarial_loss(stacked, [0, 1, 2], disc, 1.0)

    bump = torch.randn(stacked.shape[0], 3, 5, 5) * 100 * hole[:, None]
    loss_bumped = adversarial_loss(stacked, [0, 1, 2], lambda x: disc(x) + bump, 1.0)
    assert torch.equal(loss, loss_bumped)

    # an explicit mask excludes more pixels; outputs there do not matter either
    extra = torch.zeros_like(hole)
    extra[:, :2] = True
    valid = ~extra
    masked = adversarial_loss(stacked, [0, 1, 2], disc, 1.0, valid=valid)
    bump2 = torch.randn(stacked.shape[0], 3, 5, 5) * 100 * (hole | extra)[:, None]
    masked_bumped = adversarial_loss(
        stacked, [0, 1, 2], lambda x: disc(x) + bump2, 1.0, valid=valid
    )
    assert torch.equal(masked, masked_bumped)
    assert not torch.equal(masked, loss)

    # the logits at invalid pixels get exactly zero gradient
    logits = disc(stacked).detach().requires_grad_()
    adversarial_loss(stacked, [0, 1, 2], lambda x: logits, 1.0).backward()
    assert torch.count_nonzero(logits.grad * hole[:, None]) == 0
    assert torch.count_nonzero(logits.grad * ~hole[:, None]) > 0


def test_all_invalid_gives_zero_loss_and_zero_gradient() -> None:
    disc = TaskDiscriminator(4, 2, hidden=3)
    feats = torch.randn(2, 4, 3, 3, requires_grad=True)
    g = task_gradient((feats * 0).sum(), feats)  # every pixel's gradient is exactly zero
    loss = adversarial_loss(g, [1], disc, 1.0)
    assert loss.item() == 0.0
    loss.backward()
    assert all(torch.count_nonzero(p.grad) == 0 for p in disc.parameters())
    assert torch.isnan(discriminator_accuracy(g, [1], disc))


def test_stacked_list_and_per_task_calls_agree() -> None:
    torch.manual_seed(6)
    maps, holes = _maps_with_holes(1)
    counts = [int((~h).sum()) for h in holes]
    assert len(set(counts)) == 3  # the tasks have different numbers of valid pixels
    disc = TaskDiscriminator(4, 3, hidden=8, kernel_size=3)
    per_task = [adversarial_loss(m, [t], disc, 1.0) for t, m in enumerate(maps)]
    as_list = adversarial_loss(maps, [0, 1, 2], disc, 1.0)
    stacked = adversarial_loss(torch.cat(maps), [0, 1, 2], disc, 1.0)
    torch.testing.assert_close(as_list, torch.stack(per_task).mean(), rtol=1e-6, atol=0)
    torch.testing.assert_close(stacked, as_list, rtol=1e-6, atol=0)
    # each per-task value is the mean CE over that map's valid pixels (independent formula)
    for t, (m, h) in enumerate(zip(maps, holes)):
        logp = torch.log_softmax(disc(m), dim=1)[:, t]
        torch.testing.assert_close(per_task[t], -logp[~h].mean(), rtol=1e-6, atol=0)
    # a task whose map is all-invalid drops out of the average instead of diluting it
    empty = torch.zeros_like(maps[2])
    with_empty = adversarial_loss([maps[0], maps[1], empty], [0, 1, 2], disc, 1.0)
    torch.testing.assert_close(with_empty, (per_task[0] + per_task[1]) / 2, rtol=1e-6, atol=0)


def test_adversarial_loss_input_errors() -> None:
    disc = TaskDiscriminator(4, 2, hidden=3)
    g = torch.randn(4, 4, 2, 2)
    with pytest.raises(ValueError, match="cannot be split evenly among 3 task indices"):
        adversarial_loss(g, [0, 1, 1], disc, 1.0)
    with pytest.raises(ValueError, match="got 2 gradient maps but 1 task indices"):
        adversarial_loss([g, g], [0], disc, 1.0)
    with pytest.raises(ValueError, match="task index 2 out of range .* 2 task logits"):
        adversarial_loss(g, [2], disc, 1.0)
    with pytest.raises(ValueError, match=r"valid must be a bool mask of shape \(4, 2, 2\)"):
        adversarial_loss(g, [0], disc, 1.0, valid=torch.ones(4, 2, 3, dtype=torch.bool))


def test_combine_losses_eq5() -> None:
    assert W_D_PAPER == 0.1 and W_D_REFERENCE == 0.01
    out = combine_losses(torch.tensor(2.0), torch.tensor(3.0))
    assert math.isclose(out.item(), 0.9 * 2 + 0.1 * 3, rel_tol=1e-7)
    assert math.isclose(
        combine_losses(torch.tensor(2.0), torch.tensor(3.0), 0.01).item(),
        0.99 * 2 + 0.01 * 3,
        rel_tol=1e-7,
    )
    with pytest.raises(ValueError, match=r"w_d must be a number in \[0, 1\], got 1.5"):
        combine_losses(torch.tensor(1.0), torch.tensor(1.0), 1.5)


# -- full objective: double backprop against finite differences ----------------------------------


class TinyNet(nn.Module):
    """Shared 3×3 conv + tanh, two 1×1 task heads (3-class CE with ignored pixels; 2-ch MSE)."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Conv2d(3, 4, 3, padding=1)
        self.head0 = nn.Conv2d(4, 3, 1)
        self.head1 = nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f = torch.tanh(self.shared(x))
        return f, self.head0(f), torch.tanh(self.head1(f))


def test_double_backprop_gradient_matches_finite_differences() -> None:
    torch.manual_seed(7)
    net = TinyNet().double()
    disc = TaskDiscriminator(4, 2, hidden=5, kernel_size=3).double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 5, 5))
    labels[torch.rand(2, 5, 5) < 0.25] = 255
    z = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    lambd, w_d = 0.7, 0.3

    def parts() -> tuple[Tensor, Tensor, Tensor]:
        f, y0, y1 = net(x)
        l0 = nn.functional.cross_entropy(y0, labels, ignore_index=255)
        l1 = 10.0 * nn.functional.mse_loss(y1, z)
        grads = [task_gradient(l0, f), task_gradient(l1, f)]
        return l0 + l1, adversarial_loss(grads, [0, 1], disc, lambd), grads[0]

    task_loss, disc_loss, g0 = parts()
    ignored = labels == 255
    assert torch.equal((g0 == 0).all(dim=1), ignored)  # ignored labels -> exactly-zero gradient
    combine_losses(task_loss, disc_loss, w_d).backward()

    def fd(param: Tensor, h: float = 1e-6) -> tuple[Tensor, Tensor]:
        d_task, d_disc = torch.zeros_like(param), torch.zeros_like(param)
        flat = param.data.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + h
            tp, dp, _ = parts()
            flat[i] = old - h
            tm, dm, _ = parts()
            flat[i] = old
            d_task.view(-1)[i] = (tp - tm).item() / (2 * h)
            d_disc.view(-1)[i] = (dp - dm).item() / (2 * h)
        return d_task, d_disc

    def rel_err(a: Tensor, b: Tensor) -> float:
        return ((a - b).norm() / b.norm()).item()

    # network parameters: task gradient plus the *reversed* discriminator gradient (Eq. 3, 5)
    for param in [net.shared.weight, net.shared.bias, net.head0.weight, net.head1.weight]:
        d_task, d_disc = fd(param)
        assert d_disc.norm() > 1e-4  # L_D really depends on these weights (second order)
        expected = (1 - w_d) * d_task - lambd * w_d * d_disc
        assert rel_err(param.grad, expected) < 1e-6, rel_err(param.grad, expected)
    # discriminator parameters: plain gradient of w_d·L_D
    for param in [disc.body.bias, disc.classifier.weight, disc.classifier.bias]:
        d_task, d_disc = fd(param)
        assert d_task.abs().max() == 0
        assert rel_err(param.grad, w_d * d_disc) < 1e-6


# -- toy adversarial game ------------------------------------------------------------------------

C_TOY = 4


def _toy_problem(seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Targets z_t = M_t x; task 0 regresses f onto z_0, task 1 regresses A f onto z_1.

    At small shared weights W the task-0 gradient f − z_0 ≈ −M_0 x lives in channels {0, 1} and
    the task-1 gradient Aᵀ(A f − z_1) ≈ −N x in channels {2, 3}: perfectly separable. W can make
    them coincide (W = (N − M_0)/3 with AᵀA = 4I), so an adversary has room to hide the task.
    """
    gen = torch.Generator().manual_seed(seed)
    m0 = torch.zeros(C_TOY, C_TOY)
    m0[:2, :2] = torch.randn(2, 2, generator=gen) + 2 * torch.eye(2)
    n1 = torch.zeros(C_TOY, C_TOY)
    n1[2:, 2:] = torch.randn(2, 2, generator=gen) + 2 * torch.eye(2)
    a = 2 * torch.linalg.qr(torch.randn(C_TOY, C_TOY, generator=gen))[0]
    m1 = torch.linalg.solve(a.T, n1)
    return m0, a, m1


def _toy_grads(shared: nn.Module, x: Tensor, problem: tuple[Tensor, Tensor, Tensor]) -> list:
    m0, a, m1 = problem
    f = shared(x)
    z0 = torch.einsum("oc,nchw->nohw", m0, x)
    z1 = torch.einsum("oc,nchw->nohw", m1, x)
    y1 = torch.einsum("oc,nchw->nohw", a, f)
    return [
        task_gradient(0.5 * (f - z0).pow(2).mean(), f),
        task_gradient(0.5 * (y1 - z1).pow(2).mean(), f),
    ]


def _play(lambd: float, steps: int = 300, seed: int = 0) -> dict[str, float]:
    """Train discriminator and (through the reversal layer) the shared layer; then probe."""
    torch.manual_seed(seed)
    problem = _toy_problem(seed)
    shared = nn.Conv2d(C_TOY, C_TOY, 1)
    with torch.no_grad():
        shared.weight.mul_(0.1)
        shared.bias.zero_()
    w_before = shared.weight.detach().clone()
    disc = TaskDiscriminator(C_TOY, 2, hidden=16)
    opt_w = torch.optim.Adam(shared.parameters(), lr=0.05)
    opt_d = torch.optim.Adam(disc.parameters(), lr=0.01)
    for _ in range(steps):
        grads = _toy_grads(shared, torch.randn(8, C_TOY, 4, 4), problem)
        loss = adversarial_loss(grads, [0, 1], disc, lambd)
        opt_w.zero_grad()
        opt_d.zero_grad()
        loss.backward()
        opt_w.step()
        opt_d.step()
    held_out = torch.randn(64, C_TOY, 4, 4)
    acc_disc = discriminator_accuracy(_toy_grads(shared, held_out, problem), [0, 1], disc)
    # a fresh probe trained on the final network's (detached) gradients measures separability
    probe = TaskDiscriminator(C_TOY, 2, hidden=16)
    opt_p = torch.optim.Adam(probe.parameters(), lr=0.01)
    for _ in range(200):
        grads = [g.detach() for g in _toy_grads(shared, torch.randn(8, C_TOY, 4, 4), problem)]
        loss = adversarial_loss(grads, [0, 1], probe, 0.0)
        opt_p.zero_grad()
        loss.backward()
        opt_p.step()
    grads = [g.detach() for g in _toy_grads(shared, held_out, problem)]
    return {
        "disc_acc": acc_disc.item(),
        "probe_acc": discriminator_accuracy(grads, [0, 1], probe).item(),
        "probe_ce": adversarial_loss(grads, [0, 1], probe, 0.0).item(),
        "w_moved": (shared.weight.detach() - w_before).abs().max().item(),
    }


def test_reversal_makes_task_gradients_harder_to_tell_apart() -> None:
    off = _play(lambd=0.0)
    on = _play(lambd=1.0)
    # λ = 0: the shared layer gets exactly zero gradient; the discriminator learns the tasks
    assert off["w_moved"] == 0.0
    assert off["disc_acc"] > 0.98
    assert off["probe_acc"] > 0.98
    # λ = 1: the shared layer moves to hide the task; a fresh probe does clearly worse
    assert on["w_moved"] > 0.1
    assert on["probe_acc"] < 0.85
    assert on["probe_acc"] < off["probe_acc"] - 0.15
    assert on["probe_ce"] > 10 * off["probe_ce"]
