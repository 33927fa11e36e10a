"""Our combined updates against torchjd's aggregators (an independent implementation).

Seeded random Jacobians J (T × 40) of four kinds — well-conditioned, ill-conditioned (condition
number 1e4), conflicting (pairwise negative inner products), rank-deficient (rank T − 1, or 1
for T = 2) — for T = 2, 3, 5, 8. For every method both libraries implement, our update Jᵀc is
compared with torchjd's aggregation of J. Where the two differ by a convention the test states
it and checks the relation instead; where torchjd's solver is approximate (Frank–Wolfe for
MGDA, 20 convex-concave iterations for Nash-MTL, a QP on a regularised Gram for UPGrad) the
test checks that our exact solution is at least as good in the method's own criterion.
"""

import numpy as np
import pytest
import torch

torchjd = pytest.importorskip("torchjd")
from torchjd import aggregation as jd  # noqa: E402
from torchjd._linalg import QuadprogProjector  # noqa: E402

from densemtl.weighting import solvers  # noqa: E402
from densemtl.weighting.excess_mtl import excess_risks  # noqa: E402
from densemtl.weighting.graddrop import graddrop_masks  # noqa: E402
from densemtl.weighting.gradient_based import NashMTL  # noqa: E402
from densemtl.weighting.gradvac import gradvac_coefficients  # noqa: E402
from densemtl.weighting.modo import modo_step  # noqa: E402
from densemtl.weighting.sdmgrad import sdmgrad_step  # noqa: E402
from densemtl.weighting.upgrad import dual_cone_weights, upgrad_coefficients  # noqa: E402

KINDS = ("well", "ill", "conflicting", "rank_deficient")
SIZES = (2, 3, 5, 8)
CASES = [(kind, t) for kind in KINDS for t in SIZES]
P = 40


def jacobian(kind: str, t: int, seed: int = 0) -> torch.Tensor:
    """A seeded T × P float64 Jacobian of the given kind."""
    g = torch.Generator().manual_seed(1000 * t + KINDS.index(kind) + seed)
    a = torch.randn(t, P, generator=g, dtype=torch.float64)
    if kind == "ill":
        u, _, vh = torch.linalg.svd(a, full_matrices=False)
        a = u @ torch.diag(torch.logspace(0, -4, t, dtype=torch.float64)) @ vh
    elif kind == "conflicting":
        shared = torch.randn(P, generator=g, dtype=torch.float64)
        signs = torch.tensor([(-1.0) ** i for i in range(t)], dtype=torch.float64)
        sizes = torch.linspace(1, 2, t, dtype=torch.float64)
        a = 0.3 * a + (signs * sizes)[:, None] * shared[None, :]
    elif kind == "rank_deficient":
        r = max(1, t - 1)
        a = torch.randn(t, r, generator=g, dtype=torch.float64) @ torch.randn(
            r, P, generator=g, dtype=torch.float64)
    return a


def ours(jac: torch.Tensor, coef: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(coef, dtype=jac.dtype) @ jac


def gram_of(jac: torch.Tensor) -> np.ndarray:
    return (jac @ jac.T).numpy()


def assert_update_close(got: torch.Tensor, want: torch.Tensor, rtol: float,
                        jac: torch.Tensor | None = None) -> None:
    """‖got − want‖ ≤ rtol · max(‖want‖, ‖got‖, largest ‖g_t‖ of ``jac``).

    The gradient scale matters where the update itself is ~0 (opposite dependent rows).
    """
    scale = max(float(want.norm()), float(got.norm()), 1e-300)
    if jac is not None:
        scale = max(scale, float(jac.norm(dim=1).max()))
    assert float((got - want).norm()) <= rtol * scale, (float((got - want).norm()), scale)


@pytest.mark.parametrize(("kind", "t"), CASES)
def test_upgrad(kind, t):
    """Same method; torchjd solves the QP on G/tr(G) + 1e-4·I by default, so it is compared with
    its regularisation turned down to 1e-12 (1e-9 where G is singular, for quadprog)."""
    jac = jacobian(kind, t)
    reg = 1e-9 if kind == "rank_deficient" else 1e-12
    theirs = jd.UPGrad(projector=QuadprogProjector(norm_eps=0.0, reg_eps=reg))(jac)
    # ill-conditioned: G's smallest eigenvalue is 1e-8 of its largest, so their 1e-12 ridge
    # moves the projection by ~1e-4 relative; ours is checked by its KKT conditions instead
    rtol = 1e-3 if kind == "ill" else 1e-5
    assert_update_close(ours(jac, upgrad_coefficients(gram_of(jac))), theirs, rtol, jac)


@pytest.mark.parametrize(("kind", "t"), CASES)
def test_upgrad_projections_meet_the_kkt_conditions(kind, t):
    """w = argmin_{v ≥ e_i/T} vᵀGv iff Gw ≥ 0 and (Gw)_k = 0 wherever w_k > 1/T (k ≠ i)."""
    g = gram_of(jacobian(kind, t))
    scale = np.diag(g).max()
    for i in range(t):
        lower = np.eye(t)[i] / t
        w = dual_cone_weights(g, lower)
        gw = g @ w / scale
        assert np.all(w >= lower - 1e-15)
        assert np.all(gw >= -1e-9)
        assert np.all(np.abs(gw[w > lower + 1e-9]) <= 1e-9)


@pytest.mark.parametrize(("kind", "t"), [c for c in CASES if c[0] in ("well", "conflicting")])
def test_upgrad_at_torchjd_defaults_is_within_its_regularisation(kind, t):
    """At torchjd's defaults (ridge 1e-4 on G/tr G) the two agree to 5e-3 on well-conditioned
    Jacobians; on ill-conditioned or singular ones the ridge changes the answer (up to 60 %
    here), which is why ours solves the unregularised problem."""
    jac = jacobian(kind, t)
    theirs = jd.UPGrad()(jac)
    assert_update_close(ours(jac, upgrad_coefficients(gram_of(jac))), theirs, 5e-3)


@pytest.mark.parametrize(("kind", "t"), CASES)
def test_dualproj(kind, t):
    """Same method, torchjd's ridge turned down as for UPGrad; uniform and a non-uniform
    preference (ours normalises it to sum 1, torchjd uses it as given: passed normalised)."""
    jac = jacobian(kind, t)
    reg = 1e-9 if kind == "rank_deficient" else 1e-12
    rtol = 1e-3 if kind == "ill" else 1e-5
    for p in (np.full(t, 1.0 / t), np.arange(1.0, t + 1) / np.arange(1.0, t + 1).sum()):
        theirs = jd.DualProj(pref_vector=torch.as_tensor(p),
                             projector=QuadprogProjector(norm_eps=0.0, reg_eps=reg))(jac)
        assert_update_close(ours(jac, dual_cone_weights(gram_of(jac), p)), theirs, rtol, jac)


@pytest.mark.parametrize(("kind", "t"), CASES)
def test_mgda(kind, t):
    """torchjd runs Frank–Wolfe (it stops on a step-size test or after max_iters); ours is
    exact. Relation: our ‖d‖² is never above theirs and theirs converges to it."""
    jac = jacobian(kind, t)
    mine = ours(jac, solvers.min_norm_coefficients(gram_of(jac)))
    theirs = jd.MGDA(epsilon=1e-12, max_iters=2_000)(jac)
    mine_sq, theirs_sq = float(mine @ mine), float(theirs @ theirs)
    scale = float(jac.pow(2).sum(1).max())
    assert mine_sq <= theirs_sq + 1e-12 * scale
    assert theirs_sq - mine_sq <= 1e-3 * scale  # Frank–Wolfe: O(1/k) after 2000 steps


@pytest.mark.parametrize(("kind", "t"), CASES)
def test_pcgrad_same_projection_orders(kind, t):
    """Both draw one permutation of all T tasks per task (torchjd from the global RNG, skipping
    j = i): with the same draws the updates agree."""
    jac = jacobian(kind, t)
    torch.manual_seed(7)
    orders = np.stack([torch.randperm(t).numpy() for _ in range(t)])
    torch.manual_seed(7)
    theirs = jd.PCGrad()(jac)
    assert_update_close(ours(jac, solvers.pcgrad_coefficients(gram_of(jac), orders)), theirs,
                        1e-10)


@pytest.mark.parametrize(("kind", "t"), CASES)
def test_imtl_g(kind, t):
    """Full rank: the same update. torchjd's generalisation to dependent rows (pinv) and ours
    (least squares on the equal-projection system) may pick different coefficients, but both
    updates must have equal projections onto every unit task gradient."""
    jac = jacobian(kind, t)
    mine = ours(jac, solvers.imtl_coefficients(gram_of(jac)))
    theirs = jd.IMTLG()(jac)
    if kind != "rank_deficient":
        assert_update_close(mine, theirs, 1e-6 if kind == "ill" else 1e-9)
    units = jac / jac.norm(dim=1, keepdim=True)
    projections = units @ mine
    assert float(projections.max() - projections.min()) <= 1e-8 * float(jac.norm(dim=1).max())
    # (with two opposite dependent rows the only equal-projection update in the span is 0,
    # which ours returns; torchjd's pseudo-inverse generalisation returns another vector)


@pytest.mark.parametrize(("kind", "t"), CASES)
@pytest.mark.parametrize("scale", ["min", "median", "rmse"])
def test_aligned_mtl(kind, t, scale):
    """Conventions: torchjd weights the aligned gradients by the mean (1/T), the paper and ours
    sum them (unit pre-weights): ours = T × torchjd's. ``median`` with an even rank: ours is
    the mean of the two middle singular values (numpy), torchjd's the square root of the lower
    middle eigenvalue (torch.median), so ours = T · s_ours / s_torchjd × torchjd's."""
    jac = jacobian(kind, t)
    theirs = jd.AlignedMTL(scale_mode=scale)(jac)
    g = gram_of(jac)
    mine = ours(jac, solvers.aligned_mtl_coefficients(g, scale))
    factor = 1.0
    if scale == "median":
        lam = np.linalg.eigvalsh(g)
        lam = np.sort(lam[lam > lam.max() * t * np.finfo(np.float64).eps])
        factor = np.median(np.sqrt(lam)) / np.sqrt(lam[(len(lam) - 1) // 2])
    assert_update_close(mine, t * factor * theirs, 1e-7)


@pytest.mark.parametrize(("kind", "t"), CASES)
def test_cagrad(kind, t):
    """Convention: torchjd returns the unrescaled update g0 + c‖g0‖ g_w/‖g_w‖; ours divides by
    1 + c² by default (the reference code): rescale="none" matches, the default is it / 1.16."""
    jac = jacobian(kind, t)
    theirs = jd.CAGrad(c=0.4, norm_eps=0.0)(jac)
    plain = ours(jac, solvers.cagrad_coefficients(gram_of(jac), 0.4, "none"))
    assert_update_close(plain, theirs, 1e-4, jac)  # cvxpy (CLARABEL) accuracy ~4e-5 here
    default = ours(jac, solvers.cagrad_coefficients(gram_of(jac), 0.4))
    torch.testing.assert_close(default * (1 + 0.4**2), plain, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("kind", "t"), [c for c in CASES if c[0] in ("well", "conflicting")])
def test_nash_mtl(kind, t):
    """torchjd solves the Nash system by sequential convex steps (cvxpy/ECOS, 200 here); ours
    meets α ⊙ Gα = 1 to 1e-10. Clipping (max_norm 1): both scale the update to norm 1
    (‖Σα g‖ = √T > 1 at the solution), ours from G without forming the update."""
    jac = jacobian(kind, t)
    g = gram_of(jac)
    alpha = solvers.nash_mtl_coefficients(g)
    np.testing.assert_allclose(alpha * (g @ alpha), 1.0, atol=1e-9)
    mine = ours(jac, alpha)
    theirs = jd.NashMTL(n_tasks=t, max_norm=0.0, optim_niter=200)(jac)
    assert_update_close(mine, theirs, 1e-5)  # their solver stops within ~1e-6
    assert float(mine.norm()) == pytest.approx(np.sqrt(t), rel=1e-9)
    clipped = jd.NashMTL(n_tasks=t, max_norm=1.0, optim_niter=200)(jac)
    strategy = NashMTL(list("abcdefgh"[:t]), max_norm=1.0)
    shared = strategy.shared_coefficients(alpha, g)
    assert_update_close(ours(jac, shared), clipped, 1e-5)


@pytest.mark.parametrize(("kind", "t"), CASES)
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_fairgrad(kind, t, alpha):
    """torchjd solves Gw = w^{-1/α} with scipy's least_squares (default tolerances)."""
    if kind in ("ill", "rank_deficient"):
        pytest.skip("no α-fair solution: some positive combination of the gradients is ~0")
    jac = jacobian(kind, t)
    theirs = jd.FairGrad(alpha=alpha)(jac)
    assert_update_close(ours(jac, solvers.alpha_fair_coefficients(gram_of(jac), alpha)), theirs,
                        1e-5)


@pytest.mark.parametrize(("kind", "t"), CASES)
def test_graddrop_per_element(kind, t):
    """Same U (torchjd draws it from the global RNG): the same masked sum, no leak and leak."""
    jac = jacobian(kind, t)
    for leak in (0.0, 0.3):
        torch.manual_seed(3)
        uniform = torch.rand(P, dtype=torch.float64)
        kept = jac * (leak + (1 - leak) * graddrop_masks(jac, uniform))
        torch.manual_seed(3)
        theirs = jd.GradDrop(leak=torch.full((t,), leak, dtype=torch.float64))(jac)
        torch.testing.assert_close(kept.sum(0), theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("kind", "t"), CASES)
def test_gradvac_three_steps(kind, t):
    """Same orders (both shuffle the other tasks per task) and EMA targets over three steps;
    torchjd's eps set to 0 (ours divides exactly)."""
    theirs_agg = jd.GradVac(beta=0.5, eps=0.0)
    targets = np.zeros((t, t))
    for step in range(3):
        jac = jacobian(kind, t, seed=step)
        torch.manual_seed(11 + step)
        orders = []
        for i in range(t):
            others = [j for j in range(t) if j != i]
            orders.append([others[k] for k in torch.randperm(t - 1).tolist()])
        coef, targets = gradvac_coefficients(gram_of(jac), targets, orders, 0.5)
        torch.manual_seed(11 + step)
        assert_update_close(ours(jac, coef), theirs_agg(jac), 1e-9)


@pytest.mark.parametrize(("kind", "t"), CASES)
def test_modo_three_steps(kind, t):
    """λ sequences from the same cross Gram matrices A = J₁J₂ᵀ."""
    theirs = jd.MoDoWeighting(gamma=0.1, rho=0.1)
    lam = np.full(t, 1.0 / t)
    for step in range(3):
        cross = jacobian(kind, t, seed=step) @ jacobian(kind, t, seed=step + 10).T
        cross = cross / cross.diagonal().abs().max()
        lam = modo_step(lam, cross.numpy(), 0.1, 0.1)
        np.testing.assert_allclose(lam, theirs(cross).numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("kind", "t"), CASES)
def test_sdmgrad_three_steps(kind, t):
    """Coefficients (w + λw̃)/(1 + λ) from the same cross Gram matrices, w carried over."""
    theirs = jd.SDMGradWeighting(lr=10.0, momentum=0.5, n_iter=20, lambda_=0.3)
    w = np.full(t, 1.0 / t)
    for step in range(3):
        cross = jacobian(kind, t, seed=step) @ jacobian(kind, t, seed=step + 10).T
        w, coef = sdmgrad_step(w, cross.numpy(), 0.3, 10.0, 0.5, 20)
        np.testing.assert_allclose(coef, theirs(cross).numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(("kind", "t"), CASES)
def test_excess_mtl_three_steps(kind, t):
    """Conventions: torchjd's weights live on the simplex (start 1/T) and its first call already
    moves them by exp(η r₁) with the raw r₁; ours (official code) sum to T and the first step
    only records r₁. Relation: ours_k = T · normalise(torchjd_k · exp(−η r₁))."""
    eta = 0.5
    theirs = jd.ExcessMTLWeighting(robust_step_size=eta)
    # torchjd divides r by (r₁ + 1e-7), ours by r₁ (official): with unit-norm task gradients
    # (r₁ ~ 5) that changes the weights by ~1e-8
    squared = torch.zeros(t, P, dtype=torch.float64)
    weights, initial, first = torch.ones(t, dtype=torch.float64), None, None
    for step in range(4):
        jac = jacobian(kind, t, seed=step)
        jac = jac / jac.norm(dim=1, keepdim=True)
        squared = squared + jac**2
        risks = excess_risks(jac, squared)
        if initial is None:
            initial = first = risks
        else:
            weights = weights * torch.exp(eta * risks / initial)
            weights = t * weights / weights.sum()
        reference = theirs(jac) * torch.exp(-eta * first)
        torch.testing.assert_close(weights, t * reference / reference.sum(), rtol=1e-6,
                                   atol=1e-9)
