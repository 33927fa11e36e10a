"""Gradient methods: solvers against exact solutions, and the Gram machinery against naive loops."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize, minimize_scalar
from torch import nn

from densemtl.weighting import build_weighting, solvers
from densemtl.weighting.gradient_based import task_gradients
from densemtl.weighting.upgrad import dual_cone_weights, upgrad_coefficients

TASKS = ("a", "b", "c")


def random_jacobian(t: int, p: int, seed: int) -> np.ndarray:
    """T×P task gradients with different norms and a common component (so some conflict)."""
    rng = np.random.default_rng(seed)
    jac = rng.normal(size=(t, p)) * rng.uniform(0.2, 5.0, size=(t, 1))
    return jac + rng.normal(size=p)


# -- MGDA min-norm ---------------------------------------------------------------------------------


def test_mgda_two_tasks_closed_form_without_clipping():
    # g1 = (1, 0), g2 = (0, 2): γ = (g2 − g1)·g2 / ‖g1 − g2‖² = 4/5; point (0.8, 0.4)
    assert solvers.min_norm_coefficients(np.diag([1.0, 4.0])).tolist() == pytest.approx(
        [0.8, 0.2], abs=1e-15)
    # g1 = (1, 0), g2 = (2, 0): γ = 2 clipped to exactly 1 (public code: 0.999)
    assert solvers.min_norm_coefficients(np.array([[1.0, 2.0], [2.0, 4.0]])).tolist() == [1.0, 0.0]


def test_min_norm_three_tasks_exact():
    # orthogonal gradients of norms 1, 2, 3: α ∝ 1/‖g‖² = (36, 9, 4)/49
    alpha = solvers.min_norm_coefficients(np.diag([1.0, 4.0, 9.0]))
    assert alpha.tolist() == pytest.approx([36 / 49, 9 / 49, 4 / 49], abs=1e-14)
    # g1 = (1,0), g2 = (0,1), g3 = (2,2): the min-norm point (½,½) ignores g3
    jac = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    assert solvers.min_norm_coefficients(jac @ jac.T).tolist() == pytest.approx(
        [0.5, 0.5, 0.0], abs=1e-14)


@pytest.mark.parametrize("seed", range(5))
def test_min_norm_many_tasks_meets_kkt_to_rounding(seed):
    jac = random_jacobian(6, 10, seed)
    gram = jac @ jac.T
    alpha = solvers.min_norm_coefficients(gram)
    grad = gram @ alpha  # optimality: (Gα)_j >= αᵀGα everywhere, with equality on the support
    assert alpha.min() >= 0 and alpha.sum() == pytest.approx(1.0, abs=1e-14)
    assert alpha @ grad - grad.min() <= 1e-11 * gram.diagonal().max()
    assert np.abs(grad[alpha > 0] - alpha @ grad).max() <= 1e-11 * gram.diagonal().max()


def test_mgda_normalisations():
    gram, losses = np.diag([1.0, 4.0]), np.array([2.0, 0.5])
    # l2: unit gradients e1, e2 -> α = (½, ½); update α/‖g‖ = (½, ¼)
    assert solvers.mgda_coefficients(gram, losses, "l2").tolist() == pytest.approx([0.5, 0.25])
    assert solvers.mgda_coefficients(gram, losses, "l2", normalised_update=False).tolist() == \
        pytest.approx([0.5, 0.5])
    # loss: g/L = (0.5 e1, 4 e2): α ∝ (1/0.25, 1/16) = (64, 1)/65, update α/L
    assert solvers.mgda_coefficients(gram, losses, "loss").tolist() == pytest.approx(
        [64 / 65 / 2.0, 1 / 65 / 0.5])
    # loss+: g/(L‖g‖) = (0.5 e1, 2 e2): α ∝ (4, 1/4) -> (16, 1)/17
    assert solvers.mgda_coefficients(gram, losses, "loss+", False).tolist() == pytest.approx(
        [16 / 17, 1 / 17])
    with pytest.raises(ValueError, match="normalization must be one of"):
        build_weighting("mgda", TASKS, normalization="L2")


# -- PCGrad ----------------------------------------------------------------------------------------


def test_pcgrad_projects_away_exactly_the_conflicting_component():
    # g1 = (1, 0), g2 = (−1, 1) conflict (g1·g2 = −1):
    # PC(g1) = g1 − (−1/2) g2 = (½, ½) ⟂ g2;  PC(g2) = g2 − (−1/1) g1 = (0, 1) ⟂ g1
    jac = np.array([[1.0, 0.0], [-1.0, 1.0]])
    coef = solvers.pcgrad_coefficients(jac @ jac.T, np.array([[0, 1], [1, 0]]))
    assert coef.tolist() == pytest.approx([2.0, 1.5])
    assert (coef @ jac).tolist() == pytest.approx([0.5, 1.5])
    # no conflict: plain sum
    jac = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert solvers.pcgrad_coefficients(jac @ jac.T, np.array([[0, 1], [0, 1]])).tolist() == [1, 1]


def pcgrad_on_vectors(jac: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """PCGrad as Yu et al. write it, on the gradient vectors themselves."""
    out = np.zeros(jac.shape[1])
    for i, order in enumerate(orders):
        g = jac[i].copy()
        for j in order:
            dot = g @ jac[j]
            if dot < 0:
                g -= dot / (jac[j] @ jac[j]) * jac[j]
        out += g
    return out


@pytest.mark.parametrize("seed", range(4))
def test_pcgrad_gram_form_equals_vector_form(seed):
    jac = random_jacobian(4, 7, seed)
    rng = np.random.default_rng(seed)
    orders = np.stack([rng.permutation(4) for _ in range(4)])
    coef = solvers.pcgrad_coefficients(jac @ jac.T, orders)
    np.testing.assert_allclose(coef @ jac, pcgrad_on_vectors(jac, orders), rtol=1e-12, atol=1e-12)


# -- CAGrad ----------------------------------------------------------------------------------------


def test_cagrad_symmetric_case_by_hand():
    # orthonormal g1, g2: w = (½, ½) by symmetry, g_w = g0, λ = c‖g0‖/‖g_w‖ = c
    coef = solvers.cagrad_coefficients(np.eye(2), c=0.4, rescale="none")
    assert coef.tolist() == pytest.approx([0.7, 0.7], abs=1e-9)
    assert solvers.cagrad_coefficients(np.eye(2), c=0.4).tolist() == pytest.approx(
        [0.7 / 1.16, 0.7 / 1.16], abs=1e-9)


def test_cagrad_two_tasks_matches_a_scalar_minimisation_of_the_dual():
    jac = random_jacobian(2, 5, 11)
    gram = jac @ jac.T
    g0 = jac.mean(0)
    r = 0.4 * np.linalg.norm(g0)

    def dual(gamma: float) -> float:
        gw = gamma * jac[0] + (1 - gamma) * jac[1]
        return gw @ g0 + r * np.linalg.norm(gw)

    gamma = minimize_scalar(dual, bounds=(0, 1), method="bounded",
                            options={"xatol": 1e-12}).x
    gw = gamma * jac[0] + (1 - gamma) * jac[1]
    expected = g0 + r * gw / np.linalg.norm(gw)
    coef = solvers.cagrad_coefficients(gram, 0.4, "none")
    np.testing.assert_allclose(coef @ jac, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_cagrad_update_solves_the_primal(seed):
    # max_d min_i g_i·d  subject to  ‖d − g0‖ <= c‖g0‖, solved independently with SLSQP
    jac = random_jacobian(4, 6, seed)
    g0 = jac.mean(0)
    r = 0.4 * np.linalg.norm(g0)
    res = minimize(lambda v: -v[-1], np.concatenate([g0, [0.0]]), method="SLSQP",
                   constraints=[{"type": "ineq", "fun": lambda v: jac @ v[:-1] - v[-1]},
                                {"type": "ineq", "fun": lambda v: r**2 - np.sum((v[:-1] - g0)**2)}],
                   options={"ftol": 1e-14, "maxiter": 500})
    coef = solvers.cagrad_coefficients(jac @ jac.T, 0.4, "none")
    np.testing.assert_allclose(coef @ jac, res.x[:-1], rtol=1e-5, atol=1e-6)


# -- IMTL ------------------------------------------------------------------------------------------


def test_imtl_by_hand_and_equal_projection_property():
    # g1 = (1, 0), g2 = (0, 2): projections α and 2(1 − α) equal at α = 2/3
    assert solvers.imtl_coefficients(np.diag([1.0, 4.0])).tolist() == pytest.approx([2 / 3, 1 / 3])
    jac = random_jacobian(5, 8, 3)
    alpha = solvers.imtl_coefficients(jac @ jac.T)
    d = alpha @ jac
    projections = jac @ d / np.linalg.norm(jac, axis=1)
    assert alpha.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(projections, projections[0], rtol=1e-9)


# -- Nash-MTL --------------------------------------------------------------------------------------


def test_nash_mtl_by_hand_and_residual():
    # orthogonal gradients of norms 1 and 2: α_i² ‖g_i‖² = 1
    assert solvers.nash_mtl_coefficients(np.diag([1.0, 4.0])).tolist() == pytest.approx(
        [1.0, 0.5], abs=1e-12)
    for seed in range(5):
        gram = (jac := random_jacobian(5, 9, seed)) @ jac.T
        alpha = solvers.nash_mtl_coefficients(gram)
        assert alpha.min() > 0
        assert np.linalg.norm(alpha * (gram @ alpha) - 1.0) < 1e-8


def test_nash_mtl_without_a_solution_raises():
    with pytest.raises(RuntimeError, match="no solution"):
        solvers.nash_mtl_coefficients(np.array([[1.0, -1.0], [-1.0, 1.0]]))  # g2 = −g1


# -- Aligned-MTL -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", ["min", "median", "rmse"])
def test_aligned_mtl_equal_singular_values(scale):
    jac = random_jacobian(4, 7, 5)
    sigma = np.linalg.svd(jac, compute_uv=False)
    s = {"min": sigma.min(), "median": np.median(sigma), "rmse": np.sqrt(np.mean(sigma**2))}
    aligned = solvers.aligned_mtl_matrix(jac @ jac.T, scale) @ jac
    # every singular value of the aligned gradients is s: Ĵ Ĵᵀ = s² I (condition number 1)
    np.testing.assert_allclose(aligned @ aligned.T, s[scale] ** 2 * np.eye(4), atol=1e-10)
    # independent form: Ĵ = s U Vᵀ from the SVD J = U Σ Vᵀ (orthogonal Procrustes)
    u, _, vt = np.linalg.svd(jac, full_matrices=False)
    np.testing.assert_allclose(solvers.aligned_mtl_coefficients(jac @ jac.T, scale) @ jac,
                               s[scale] * (u @ vt).sum(0), atol=1e-10)


def test_aligned_mtl_rank_deficient_uses_the_range():
    # rank 2: G = [[1, 2, 0], [2, 4, 0], [0, 0, 9]] has eigenvalues 5, 9, 0 -> s = √5
    jac = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    aligned = solvers.aligned_mtl_matrix(jac @ jac.T) @ jac
    np.testing.assert_allclose(np.linalg.svd(aligned, compute_uv=False), [5**0.5, 5**0.5])


# -- the Gram machinery on a network ---------------------------------------------------------------


class Net(nn.Module):
    """Shared encoder (two layers) and one small nonlinear head per task, float64."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.encoder = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5)).double()
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 1)).double() for _ in TASKS)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))

    def forward(self, per_task: bool = False) -> tuple[dict, torch.Tensor | dict]:
        """Losses and the representation: z, or {task: its own copy of z} with ``per_task``."""
        x = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4)
        z = self.encoder(x)
        inputs = {t: z.clone() for t in TASKS} if per_task else dict.fromkeys(TASKS, z)
        losses = {t: (h(inputs[t]) - i).pow(2).mean()
                  for i, (t, h) in enumerate(zip(TASKS, self.heads, strict=True))}
        return losses, inputs if per_task else z


def head_grads(net: Net) -> list[torch.Tensor]:
    return [torch.cat([p.grad.flatten() for p in h.parameters()]) for h in net.heads]


def encoder_grad(net: Net) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in net.encoder.parameters()])


def test_batched_vjp_equals_a_loop_of_backward_passes():
    net = Net()
    losses, _ = net()
    params = list(net.encoder.parameters())
    batched = task_gradients(torch.stack(list(losses.values())), params)
    for t, loss in enumerate(losses.values()):
        loop = torch.autograd.grad(loss, params, retain_graph=True)
        for b, g in zip(batched, loop, strict=True):
            torch.testing.assert_close(b[t], g, rtol=1e-12, atol=1e-14)


SOLVE = {
    "mgda": lambda g, loss: solvers.mgda_coefficients(g, loss),
    "cagrad": lambda g, loss: solvers.cagrad_coefficients(g),
    "imtl": lambda g, loss: solvers.imtl_coefficients(g),
    "nash_mtl": lambda g, loss: solvers.nash_mtl_coefficients(g),
    "aligned_mtl": lambda g, loss: solvers.aligned_mtl_coefficients(g),
    "upgrad": lambda g, loss: upgrad_coefficients(g),
    "dualproj": lambda g, loss: dual_cone_weights(g, np.full(len(g), 1.0 / len(g))),
    "fairgrad": lambda g, loss: solvers.alpha_fair_coefficients(g, 1.0),
    "pcgrad": lambda g, loss: solvers.pcgrad_coefficients(g, np.stack(
        [torch.randperm(3, generator=PCGRAD_GEN).numpy() for _ in range(3)])),
}
SCALES_HEADS = {"mgda", "nash_mtl"}
PCGRAD_GEN = torch.Generator()


def naive_reference(name: str, space: str) -> tuple[np.ndarray, torch.Tensor, list]:
    """Coefficients, encoder gradient and head gradients from per-task autograd.grad calls."""
    PCGRAD_GEN.manual_seed(0)
    net = Net()
    losses, z = net()
    enc = list(net.encoder.parameters())
    wrt = enc if space == "parameters" else [z]
    per_task = [torch.cat([g.flatten() for g in torch.autograd.grad(loss, wrt, retain_graph=True)])
                for loss in losses.values()]
    jac = torch.stack(per_task)
    raw = np.array([v.item() for v in losses.values()])
    coef = SOLVE[name]((jac @ jac.T).numpy(), raw)
    c = torch.as_tensor(coef)
    if space == "parameters":
        enc_grad = c @ jac
    else:
        dz = (c @ jac).reshape(z.shape)
        enc_grad = torch.cat([g.flatten() for g in torch.autograd.grad(z, enc, dz,
                                                                       retain_graph=True)])
    heads = []
    for t, (loss, head) in enumerate(zip(losses.values(), net.heads, strict=True)):
        grads = torch.autograd.grad(loss, list(head.parameters()), retain_graph=True)
        weight = coef[t] if name in SCALES_HEADS else 1.0
        heads.append(weight * torch.cat([g.flatten() for g in grads]))
    return coef, enc_grad, heads


@pytest.mark.parametrize("space", ["parameters", "representation", "per-task representation"])
@pytest.mark.parametrize("name", sorted(SOLVE))
def test_strategy_update_equals_naive_per_task_math(name, space):
    coef, enc_grad, heads = naive_reference(name, space.removeprefix("per-task "))
    net = Net()
    losses, z = net(per_task=space.startswith("per-task"))
    options = {"max_norm": None} if name == "nash_mtl" else {}  # clipping: see test_nash_mtl_*
    strategy = build_weighting(name, TASKS, space=space.removeprefix("per-task "), **options)
    out = strategy.backward(losses, shared_parameters=list(net.encoder.parameters()),
                            representation=z)
    np.testing.assert_allclose(out.weight_tensor.numpy(), coef, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(encoder_grad(net), enc_grad, rtol=1e-10, atol=1e-12)
    for got, want in zip(head_grads(net), heads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_gradient_method_on_known_gradients_writes_the_min_norm_point():
    theta = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    losses = {"a": theta @ torch.tensor([1.0, 0.0], dtype=torch.float64),
              "b": theta @ torch.tensor([0.0, 2.0], dtype=torch.float64)}
    out = build_weighting("mgda", ["a", "b"], space="parameters").backward(
        losses, shared_parameters=[theta])
    assert out.weights == pytest.approx({"a": 0.8, "b": 0.2})
    assert theta.grad.tolist() == pytest.approx([0.8, 0.4])


def test_gradient_method_needs_its_inputs_and_every_task():
    net = Net()
    losses, z = net()
    with pytest.raises(ValueError, match=r"space='representation'\) needs representation="):
        build_weighting("mgda", TASKS).backward(losses)
    with pytest.raises(ValueError, match=r"needs shared_parameters="):
        build_weighting("imtl", TASKS).backward(losses, representation=z)
    with pytest.raises(KeyError, match="needs a loss for every task"):
        build_weighting("imtl", TASKS).backward({"a": losses["a"]},
                                                shared_parameters=list(net.parameters()))
    with pytest.raises(ValueError, match="space must be one of"):
        build_weighting("pcgrad", TASKS, space="features")
    with pytest.raises(ValueError, match="per-task dict is only for representation="):
        build_weighting("imtl", TASKS, space="representation").backward(
            losses, representation={"a": z, "b": z})
    with pytest.raises(ValueError, match="must be distinct and of one shape"):
        build_weighting("imtl", TASKS, space="representation").backward(
            losses, representation={"a": z, "b": z, "c": z})


# -- GradNorm --------------------------------------------------------------------------------------


def test_gradnorm_hand_worked_steps():
    # last shared layer W (2 values); L_t = a_t·W + b_t, so ∇_W L_t = a_t, n = (1, 3)
    w_layer = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    a = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    strategy = build_weighting("gradnorm", ["a", "b"], alpha=1.5).double()

    def step(b: tuple[float, float]):
        w_layer.grad = None
        strategy.loss_weights.grad = None
        losses = {t: a[i] @ w_layer + b[i] for i, t in enumerate(["a", "b"])}
        return strategy.backward(losses, shared_parameters=[w_layer])

    # step 1: w = (1, 1), r = 1; G = w·n = (1, 3), target = mean G = 2; ∂/∂w = sign(G − 2)·n
    out = step((5.0, 5.0))
    assert out.weights == {"a": 1.0, "b": 1.0}
    assert strategy.loss_weights.grad.tolist() == [-1.0, 3.0]
    assert w_layer.grad.tolist() == [1.0, 3.0]
    # the trainer's optimiser moved w to (0.5, 2.5): renormalised to sum 2 -> (1/3, 5/3)
    with torch.no_grad():
        strategy.loss_weights.copy_(torch.tensor([0.5, 2.5]))
    # step 2: L = (2.5, 10): L/L0 = (0.5, 2), r = (0.4, 1.6); G = (1/3, 5), mean 8/3
    out = step((2.5, 10.0))
    assert list(out.weights.values()) == pytest.approx([1 / 3, 5 / 3])
    # target = 8/3 · r^1.5 = (0.6746, 5.3970): G_a < target_a and G_b < target_b -> −n
    assert strategy.loss_weights.grad.tolist() == [-1.0, -3.0]
    assert w_layer.grad.tolist() == pytest.approx([1 / 3, 5.0])
