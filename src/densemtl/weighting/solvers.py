"""Gram matrix -> combination coefficients, for every gradient method.

Each gradient-balancing method ends in a shared update ``d = Σ_t c_t g_t`` whose coefficients c
depend only on the T×T Gram matrix ``G = J Jᵀ`` of the task gradients (and, for some, on the
losses or a random order). These are plain float64 numpy functions of G, so they are exact,
cheap (T is small), and testable without a network. Solvers are exact where a closed form
exists and otherwise run to a tight tolerance, raising if they do not get there; G is first
divided by its largest diagonal entry, which leaves every coefficient vector below unchanged
(Nash-MTL's rescales by ``1/sqrt(scale)``, handled inside).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: a task whose squared gradient norm is below this fraction of the largest one counts as zero.
ZERO_GRADIENT = 1e-14


def _as_gram(gram: np.ndarray) -> np.ndarray:
    """A float64 square symmetric copy of ``gram`` (raises on a wrong shape)."""
    g = np.array(gram, dtype=np.float64)
    if g.ndim != 2 or g.shape[0] != g.shape[1] or g.shape[0] == 0:
        raise ValueError(f"Gram matrix must be square T×T with T >= 1, got shape {g.shape}")
    return 0.5 * (g + g.T)


def _nonzero(g: np.ndarray) -> np.ndarray:
    """Boolean mask of the tasks whose gradient is not (numerically) zero."""
    diag = np.diag(g)
    return diag > ZERO_GRADIENT * max(diag.max(), 0.0)


# -- MGDA: min-norm point of the convex hull -------------------------------------------------------


def _on_active_tasks(gram: np.ndarray, solve: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``solve`` on the Gram matrix of the tasks with a non-zero gradient; the others get 0
    (every task 1/T when all gradients are zero)."""
    g = _as_gram(gram)
    active = np.flatnonzero(_nonzero(g))
    if len(active) == 0:
        return np.full(len(g), 1.0 / len(g))
    out = np.zeros(len(g))
    out[active] = solve(g[np.ix_(active, active)])
    return out


def min_norm_coefficients(gram: np.ndarray, tol: float = 1e-12, max_iter: int = 1000) -> np.ndarray:
    """α on the simplex minimising ‖Σ α_t g_t‖² = αᵀGα (the MGDA direction).

    Two tasks: the closed form γ = clip((g2−g1)·g2 / ‖g1−g2‖², 0, 1), unclipped otherwise (public
    code clips to [0.001, 0.999]). More tasks: Wolfe's (1976) nearest-point algorithm, an exact
    active-set method that works on inner products only; it stops when the Frank-Wolfe duality
    gap 2(αᵀGα − min_j (Gα)_j) is below ``2·tol`` times the largest squared gradient norm.
    """
    g = _as_gram(gram)
    t = len(g)
    if t == 1:
        return np.ones(1)
    scale = np.diag(g).max()
    if scale <= 0:
        return np.full(t, 1.0 / t)
    g = g / scale
    if t == 2:
        denom = g[0, 0] + g[1, 1] - 2 * g[0, 1]
        gamma = 0.5 if denom <= 0 else float(np.clip((g[1, 1] - g[0, 1]) / denom, 0.0, 1.0))
        return np.array([gamma, 1.0 - gamma])
    return _wolfe_min_norm(g, tol, max_iter)


def _affine_min_norm(g: np.ndarray) -> np.ndarray:
    """μ with Σμ = 1 minimising μᵀGμ (the min-norm point of the affine hull)."""
    n = len(g)
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, :n] = g
    kkt[:n, n] = kkt[n, :n] = 1.0
    rhs = np.zeros(n + 1)
    rhs[n] = 1.0
    return np.linalg.lstsq(kkt, rhs, rcond=None)[0][:n]


def _wolfe_min_norm(g: np.ndarray, tol: float, max_iter: int) -> np.ndarray:
    """Wolfe's nearest-point algorithm on a normalised Gram matrix (max diagonal 1)."""
    t = len(g)
    first = int(np.argmin(np.diag(g)))
    support = [first]
    lam = np.zeros(t)
    lam[first] = 1.0
    for _ in range(max_iter):
        gl = g @ lam
        j = int(np.argmin(gl))
        if lam @ gl - gl[j] <= tol or j in support:
            return lam
        support.append(j)
        while True:  # minor cycle: move toward the affine min-norm point, dropping points
            mu = _affine_min_norm(g[np.ix_(support, support)])
            cur = lam[support]
            if np.all(mu > 0):
                lam[:] = 0.0
                lam[support] = mu
                break
            neg = np.flatnonzero(mu <= 0)
            ratios = cur[neg] / (cur[neg] - mu[neg])
            k = int(np.argmin(ratios))
            cur = cur + ratios[k] * (mu - cur)
            cur[neg[k]] = 0.0
            lam[:] = 0.0
            lam[support] = np.maximum(cur, 0.0)
            support = [s for s in support if lam[s] > 0]
            lam /= lam.sum()
    raise RuntimeError(f"min-norm solver did not converge in {max_iter} iterations")


def mgda_coefficients(
    gram: np.ndarray,
    losses: np.ndarray,
    normalization: str = "none",
    normalised_update: bool = True,
) -> np.ndarray:
    """MGDA coefficients with gradient normalisation ``none | l2 | loss | loss+`` (Sener & Koltun).

    Gradients are divided by n_t (1, ‖g_t‖, L_t or L_t·‖g_t‖) before the min-norm solve. With
    ``normalised_update`` the update is that min-norm point itself (c = α/n); otherwise α is
    applied to the raw gradients, as the public MGDA-UB code does.
    """
    g = _as_gram(gram)
    losses = np.asarray(losses, dtype=np.float64)
    norms = np.sqrt(np.maximum(np.diag(g), 0.0))
    n = {"none": np.ones(len(g)), "l2": norms, "loss": losses, "loss+": losses * norms}.get(
        normalization
    )
    if n is None:
        raise ValueError(f"MGDA normalization must be one of none, l2, loss, loss+; "
                         f"got {normalization!r}")
    n = np.where(n > 0, n, 1.0)
    alpha = min_norm_coefficients(g / np.outer(n, n))
    return alpha / n if normalised_update else alpha


# -- PCGrad ----------------------------------------------------------------------------------------


def pcgrad_coefficients(gram: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """c with Σ c_t g_t = Σ_i PCGrad(g_i) for the projection orders ``orders[i]`` (Yu et al.).

    PCGrad(g_i) starts at g_i and, for j in ``orders[i]``, removes the component along g_j when
    the current vector conflicts with g_j (negative inner product). Every intermediate vector is
    Σ_k C_ik g_k, so the inner product with g_j is (C G)_ij and the projection subtracts
    (C G)_ij / G_jj from C_ij; the update is Σ_i C_i.
    """
    g = _as_gram(gram)
    t = len(g)
    orders = np.asarray(orders)
    if orders.shape != (t, t) or any(sorted(row) != list(range(t)) for row in orders.tolist()):
        raise ValueError(f"orders must be {t} permutations of range({t}), got {orders.tolist()}")
    coef = np.eye(t)
    for i in range(t):
        for j in orders[i]:
            if j == i:  # the paper projects g_i' off the other tasks' gradients only
                continue
            dot = coef[i] @ g[:, j]
            if dot < 0 and g[j, j] > 0:
                coef[i, j] -= dot / g[j, j]
    return coef.sum(axis=0)


# -- CAGrad ----------------------------------------------------------------------------------------


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the probability simplex (sort-based, exact)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.arange(1, len(v) + 1)
    rho = k[u - css / k > 0][-1]
    return np.maximum(v - css[rho - 1] / rho, 0.0)


def _cagrad_dual(g: np.ndarray, c: float, tol: float, max_iter: int) -> np.ndarray:
    """w on the simplex minimising F(w) = g_wᵀg0 + c‖g0‖·‖g_w‖ (CAGrad's dual).

    Accelerated projected gradient with backtracking and adaptive restart, stopped on the
    Frank-Wolfe duality gap ⟨∇F(w), w⟩ − min_j ∇F_j(w) <= ``tol`` (an upper bound on F(w) − F*).
    """
    t = len(g)
    b = np.full(t, 1.0 / t)
    a = g @ b
    r = c * np.sqrt(max(b @ a, 0.0))

    def value(w: np.ndarray) -> float:
        return float(a @ w + r * np.sqrt(max(w @ g @ w, 0.0)))

    def grad(w: np.ndarray) -> np.ndarray:
        rho = np.sqrt(max(w @ g @ w, 0.0))
        return a + r * (g @ w) / max(rho, 1e-300)

    def prox_step(y: np.ndarray, lip: float) -> tuple[np.ndarray, float]:
        gy, fy = grad(y), value(y)
        while True:
            w_new = project_simplex(y - gy / lip)
            step = w_new - y
            if value(w_new) <= fy + gy @ step + 0.5 * lip * step @ step + 1e-15:
                return w_new, lip
            lip *= 2.0

    w = b.copy()
    y, momentum, lip = w.copy(), 1.0, 1.0
    for _ in range(max_iter):
        gw = grad(w)
        if gw @ w - gw.min() <= tol:
            return w
        w_new, lip = prox_step(y, lip)
        if value(w_new) > value(w):  # adaptive restart: drop the momentum, plain step from w
            w_new, lip = prox_step(w, lip)
            y, momentum = w_new.copy(), 1.0
        else:
            nxt = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * momentum**2))
            y = w_new + ((momentum - 1.0) / nxt) * (w_new - w)
            momentum = nxt
        w, lip = w_new, lip * 0.9
    raise RuntimeError(f"CAGrad dual did not reach duality gap {tol} in {max_iter} iterations")


def cagrad_coefficients(
    gram: np.ndarray,
    c: float = 0.4,
    rescale: str = "1+c^2",
    tol: float = 1e-10,
    max_iter: int = 200_000,
) -> np.ndarray:
    """CAGrad (Liu et al. 2021): d = g0 + c‖g0‖ g_w/‖g_w‖, g0 the mean gradient, w the dual optimum.

    Coefficients 1/T + c‖g0‖ w_t/‖g_w‖, divided by 1 + c² (``"1+c^2"``, the reference code's
    default), 1 + c (``"1+c"``) or not at all (``"none"``).
    """
    divisor = {"none": 1.0, "1+c^2": 1.0 + c * c, "1+c": 1.0 + c}.get(rescale)
    if divisor is None:
        raise ValueError(f"CAGrad rescale must be one of none, 1+c^2, 1+c; got {rescale!r}")
    if c < 0:
        raise ValueError(f"CAGrad c must be >= 0, got {c}")
    g = _as_gram(gram)
    t = len(g)
    b = np.full(t, 1.0 / t)
    scale = np.diag(g).max()
    if scale <= 0 or c == 0:
        return b / divisor
    g = g / scale
    w = _cagrad_dual(g, c, tol, max_iter)
    gw_norm = np.sqrt(max(w @ g @ w, 0.0))
    lam = c * np.sqrt(max(b @ g @ b, 0.0)) / gw_norm if gw_norm > 0 else 0.0
    return (b + lam * w) / divisor


# -- IMTL ------------------------------------------------------------------------------------------


def imtl_coefficients(gram: np.ndarray) -> np.ndarray:
    """IMTL-G (Liu et al. 2021): α with Σα = 1 whose Σ α_t g_t projects equally on every unit g_t.

    α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹ with D_k = g_1 − g_k, U_k = u_1 − u_k, u = g/‖g‖; every inner
    product is read off G (⟨g_a, u_b⟩ = G_ab/‖g_b‖). Zero-gradient tasks get 0.
    """
    return _on_active_tasks(gram, _imtl_active)


def _imtl_active(g: np.ndarray) -> np.ndarray:
    """IMTL-G on a Gram matrix without zero-gradient tasks."""
    gu = g / np.sqrt(np.diag(g))[None, :]
    rhs = gu[0, 0] - gu[0, 1:]
    m = gu[0, 0] - gu[0, 1:][None, :] - gu[1:, 0][:, None] + gu[1:, 1:]
    rest = np.linalg.lstsq(m.T, rhs, rcond=None)[0]
    return np.concatenate([[1.0 - rest.sum()], rest])


# -- Nash-MTL --------------------------------------------------------------------------------------


def nash_mtl_coefficients(
    gram: np.ndarray, tol: float = 1e-10, accept: float = 1e-8, max_iter: int = 100
) -> np.ndarray:
    """Nash-MTL (Navon et al. 2022): α > 0 solving α_i (Gα)_i = 1 for every task.

    That system is the stationarity condition of the strictly convex ½αᵀGα − Σ log α_i, so a
    damped Newton method converges to it (quadratically near the end); stops when
    ‖α ⊙ Gα − 1‖ < ``tol``, or after ``max_iter`` steps if it is below ``accept`` (the
    rounding floor of an ill-conditioned G can sit just above ``tol``). Zero-gradient tasks
    get 0. No solution exists when some positive combination of the gradients is zero (e.g.
    two exactly opposite gradients): that raises.
    """
    return alpha_fair_coefficients(gram, 1.0, tol, accept, max_iter)


def alpha_fair_coefficients(
    gram: np.ndarray, alpha: float, tol: float = 1e-10, accept: float = 1e-8,
    max_iter: int = 100,
) -> np.ndarray:
    """w > 0 solving Gw = w^{-1/α} (FairGrad's α-fair allocation; α = 1 is Nash-MTL's system).

    The stationarity condition of the strictly convex ½wᵀGw + Σ φ(w_i) with φ' = −w^{-1/α}
    (φ = −log w for α = 1), solved by damped Newton to ‖w^{1/α} ⊙ Gw − 1‖ < ``tol`` as in
    ``nash_mtl_coefficients``. G is first divided by s = its largest diagonal entry; the
    solution for G is s^{−α/(α+1)} times the one for G/s.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    return _on_active_tasks(gram, lambda g: _alpha_fair_active(g, alpha, tol, accept, max_iter))


def _alpha_fair_active(
    g: np.ndarray, alpha: float, tol: float, accept: float, max_iter: int
) -> np.ndarray:
    """``alpha_fair_coefficients`` on a Gram matrix without zero-gradient tasks."""
    scale = np.diag(g).max()
    g = g / scale
    if alpha == 1.0:
        def barrier(x: np.ndarray) -> float:
            return float(-np.log(x).sum())

        def power(x: np.ndarray) -> np.ndarray:  # x^{-1/α}
            return 1.0 / x

        def curvature(x: np.ndarray) -> np.ndarray:  # φ''(x)
            return 1.0 / x**2

        def balance(x: np.ndarray, gx: np.ndarray) -> np.ndarray:  # x^{1/α} ⊙ Gx
            return x * gx

        w = 1.0 / np.sqrt(np.diag(g))
        rescale = 1.0 / np.sqrt(scale)
    else:
        e = 1.0 / alpha

        def barrier(x: np.ndarray) -> float:
            return float(-(x ** (1.0 - e)).sum() / (1.0 - e))

        def power(x: np.ndarray) -> np.ndarray:
            return x ** (-e)

        def curvature(x: np.ndarray) -> np.ndarray:
            return e * x ** (-e - 1.0)

        def balance(x: np.ndarray, gx: np.ndarray) -> np.ndarray:
            return x**e * gx

        w = np.diag(g) ** (-alpha / (alpha + 1.0))
        rescale = scale ** (-alpha / (alpha + 1.0))

    def objective(x: np.ndarray) -> float:
        return float(0.5 * x @ g @ x) + barrier(x)

    for _ in range(max_iter):
        gw = g @ w
        residual = np.linalg.norm(balance(w, gw) - 1.0)
        if residual < tol:
            return w * rescale
        gradient = gw - power(w)
        try:
            step = np.linalg.solve(g + np.diag(curvature(w)), gradient)
        except np.linalg.LinAlgError:  # w diverged (no solution): the curvature underflowed
            break
        size, f0, decrement = 1.0, objective(w), gradient @ step
        while np.any(w - size * step <= 0):
            size *= 0.5
        # Armijo backtracking while far away; near the solution f changes below rounding, and
        # the full Newton step is taken (the quadratically convergent phase).
        while decrement > 1e-10 and objective(w - size * step) > f0 - 0.25 * size * decrement:
            size *= 0.5
        w = w - size * step
    if residual < accept:
        return w * rescale
    raise RuntimeError(
        f"no solution of Gw = w^(-1/α) (α = {alpha}) after {max_iter} Newton steps (residual "
        f"{residual:.3g}); the task gradients have a positive combination equal to zero"
    )


# -- Aligned-MTL -----------------------------------------------------------------------------------


def aligned_mtl_matrix(gram: np.ndarray, scale: str = "min") -> np.ndarray:
    """B with aligned gradients Ĵ = B J (Senushkin et al. 2023): Ĵ's singular values all equal s.

    G = V Λ Vᵀ; B = s·V Λ^{-1/2} Vᵀ over the non-zero eigenvalues, so Ĵ Ĵᵀ = s²·(projector on
    G's range): condition number 1. s = the smallest singular value (``min``, the paper's
    default), their ``median`` or root-mean-square (``rmse``).
    """
    g = _as_gram(gram)
    lam, vec = np.linalg.eigh(g)
    keep = lam > lam.max() * len(g) * np.finfo(np.float64).eps
    if not keep.any():
        return np.zeros_like(g)
    lam, vec = lam[keep], vec[:, keep]
    sigma = np.sqrt(lam)
    s = {"min": sigma.min(), "median": np.median(sigma), "rmse": np.sqrt(lam.mean())}.get(scale)
    if s is None:
        raise ValueError(f"Aligned-MTL scale must be one of min, median, rmse; got {scale!r}")
    return s * (vec / sigma[None, :]) @ vec.T


def aligned_mtl_coefficients(gram: np.ndarray, scale: str = "min") -> np.ndarray:
    """Coefficients of the sum of aligned gradients, 1ᵀB (unit pre-weights, as the paper)."""
    return aligned_mtl_matrix(gram, scale).sum(axis=0)
