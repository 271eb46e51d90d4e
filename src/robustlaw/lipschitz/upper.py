"""Certified upper bounds on the Lipschitz constant of a feed-forward network on a domain.

For f = W_L act(... act(W_1 x + b_1) ...), grad f(x) = W_1^T D_1 W_2^T ... D_{L-1} W_L^T with
D_i = diag(act'(pre-activations)). Every bound here comes from a box [lo, hi] that provably
contains each neuron's slope on the domain:
- slope boxes: the activation's global slope range, narrowed on bounded domains by bounds on the
  pre-activations (interval propagation, and for piecewise-linear nets linear bounds back-substituted
  to the input, CROWN-style); a ReLU neuron that is stably on or off has slope 1 or 0;
- ``spectral``: ||W_L|| prod_i ||diag(m_i) W_i||, m_i = max(|lo|, |hi|) (for ReLU on R^d this
  is the product of spectral norms; for two layers BLN20's proxy ||a|| ||W||);
- ``path``: two-layer only, sum_j |a_j| m_j ||w_j||;
- ``shor``: two-layer only, the Shor (max-cut SDP) dual bound of the all-pattern problem
  max_{s in box vertices} ||g0 + D^T s||, certified for the multipliers found by a few quasi-Newton
  steps: any multipliers give a valid bound, checked with an exact eigenvalue in float64;
- ``lipsdp``: deep nets, LipSDP-Neuron's bound for multipliers tuned by L-BFGS (no SDP solver),
  certified the same way, with stable neurons substituted out; ``spectral+shor-tail`` (spectral head
  times Shor on the last two layers) where LipSDP fails.
Each is registered as a Lipschitz method in :mod:`.methods`, which also takes them ball by ball on a
local domain (``per-ball ...``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.optimize import minimize

from robustlaw.lipschitz.domain import Domain
from robustlaw.lipschitz.network import Net


def preactivation_bounds(net: Net, domain: Domain) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per hidden layer, bounds on the pre-activations over the domain (infinite on R^d): exact for the first
    layer on a ball, then the tighter of interval propagation and, for piecewise-linear nets, linear
    (CROWN-style) bounds back-substituted to the input. A neuron both bounds place on one side is stable."""
    ball = domain.bounding_ball(net.d)
    if ball is None:
        return [(np.full(w, -np.inf), np.full(w, np.inf)) for w in net.widths]
    c, r = ball
    W, b = net.weights[0], net.biases[0]
    mid, rad = W @ c + b, r * np.linalg.norm(W, axis=1)
    out = [(mid - rad, mid + rad)]
    linear = all(act.piecewise_linear for act in net.acts)
    relax = []  # the linear relaxation of each layer below, once its bounds are final
    for i in range(1, len(net.acts)):
        lo, hi = out[-1]
        olo, ohi = net.acts[i - 1].value_range(lo, hi)
        W, b = net.weights[i], net.biases[i]
        mid, rad = (olo + ohi) / 2, (ohi - olo) / 2
        lo, hi = W @ mid + b - np.abs(W) @ rad, W @ mid + b + np.abs(W) @ rad
        if linear:
            relax.append(net.acts[i - 1].relaxation(*out[-1]))
            lo = np.maximum(lo, -_backsubstituted_upper(net, i, -1.0, relax, c, r))
            hi = np.minimum(hi, _backsubstituted_upper(net, i, 1.0, relax, c, r))
        out.append((lo, hi))
    return out


def _backsubstituted_upper(net: Net, layer: int, sign: float, relax, c: np.ndarray, r: float) -> np.ndarray:
    """An upper bound on sign * (pre-activations of hidden ``layer``) over the ball (c, r): the linear
    relaxations of the layers below turn it into a linear function of the input, maximised exactly."""
    lam = sign * net.weights[layer]
    const = sign * net.biases[layer]
    for i in range(layer - 1, -1, -1):
        (ls, lb), (us, ub) = relax[i]
        pos, neg = np.maximum(lam, 0.0), np.minimum(lam, 0.0)
        through = pos * us + neg * ls  # coefficient on this layer's pre-activations
        const = const + pos @ ub + neg @ lb + through @ net.biases[i]
        lam = through @ net.weights[i]
    return lam @ c + r * np.linalg.norm(lam, axis=1) + const


def slope_boxes(net: Net, domain: Domain) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per hidden layer, a box containing every neuron's slope on ``domain``."""
    return [act.slope_range(lo, hi) for act, (lo, hi) in zip(net.acts, preactivation_bounds(net, domain))]


def operator_norm(A: np.ndarray, exact: bool = True) -> float:
    """||A||_op, or (``exact=False``, for matrices too large for an SVD in the time left) the cheaper sound
    bound min(||A||_F, sqrt(||A||_1 ||A||_inf))."""
    if exact:
        return float(np.linalg.norm(A, 2))
    return float(min(np.linalg.norm(A), math.sqrt(np.abs(A).sum(axis=0).max() * np.abs(A).sum(axis=1).max())))


def svd_flops(net: Net) -> float:
    """About the floating-point operations of the SVDs of every layer (for deciding what a time limit affords)."""
    return sum(10.0 * W.shape[0] * W.shape[1] * min(W.shape) for W in net.weights)


def spectral_bound(net: Net, boxes, exact: bool = True) -> float:
    """||W_L|| prod_i ||diag(m_i) W_i||_op with m_i the largest |slope| per neuron (``exact=False``: each
    operator norm replaced by the cheaper bound of :func:`operator_norm`)."""
    value = operator_norm(net.weights[-1], exact)
    for W, (lo, hi) in zip(net.weights[:-1], boxes):
        m = np.maximum(np.abs(lo), np.abs(hi))
        if not np.isfinite(m).all():
            return math.inf
        value *= operator_norm(m[:, None] * W, exact)
    return float(value)


def path_bound(net: Net, boxes) -> float:
    """Two-layer: sum_j |a_j| m_j ||w_j||."""
    W, a = net.weights[0], net.weights[1][0]
    lo, hi = boxes[0]
    m = np.maximum(np.abs(lo), np.abs(hi))
    return float(np.sum(np.abs(a) * m * np.linalg.norm(W, axis=1)))


def all_pattern_parts(net: Net, boxes) -> tuple[np.ndarray, np.ndarray]:
    """Two-layer: grad = g0 + D^T s over s in {0,1}^m (the free neurons), from the slope boxes."""
    W, a = net.weights[0], net.weights[1][0]
    lo, hi = boxes[0]
    G = a[:, None] * W
    with np.errstate(invalid="ignore"):  # unbounded slopes (power activation on R^d) give inf/nan: callers check
        g0 = G.T @ lo
    free = np.flatnonzero((hi - lo) * np.abs(a) * np.linalg.norm(W, axis=1) > 0)
    D = G[free] * (hi - lo)[free, None]
    return g0, D


def _shor_matrix(g0: np.ndarray, D: np.ndarray) -> np.ndarray:
    h = g0 + D.sum(axis=0) / 2
    B = np.vstack([h[None, :], D / 2])
    return B[np.einsum("ij,ij->i", B, B) > 0]


def _shor_weights(theta: np.ndarray) -> np.ndarray:
    """exp(theta) up to scale (the bound is scale-free), floored so that 1 / w stays finite."""
    return np.exp(np.maximum(theta - theta.max(), -600.0))


def _shor_value(B: np.ndarray, theta: np.ndarray) -> float:
    w = _shor_weights(theta)
    return float(np.sum(1 / w) * np.linalg.eigvalsh((B * w[:, None]).T @ B)[-1])


class _Timeout(Exception):
    pass


def _shor_tune(B: np.ndarray, theta: np.ndarray, deadline: float, schedule=(10, 30, 100, 300, 1000, 3000),
               iters: int = 200) -> np.ndarray:
    """Quasi-Newton on a soft maximum of the eigenvalues, sharpened step by step; every evaluation
    also yields the exact bound at its point, and the best point seen is returned (anytime)."""
    best = {"theta": theta, "value": _shor_value(B, theta)}

    def fg(th, beta0):
        if time.perf_counter() > deadline:
            raise _Timeout
        w = _shor_weights(th)
        lam, vec = np.linalg.eigh((B * w[:, None]).T @ B)
        top = lam[-1]
        s = np.sum(1 / w)
        if np.isfinite(top) and s * top < best["value"]:
            best["theta"], best["value"] = th.copy(), s * top
        beta = beta0 / max(top, 1e-300)
        p = np.exp(beta * (lam - top))
        soft = top + np.log(p.sum()) / beta
        p /= p.sum()
        proj = ((B @ vec) ** 2) @ p
        return math.log(s) + math.log(soft), -(1 / w) / s + w * proj / soft

    for beta0 in schedule:
        try:
            minimize(fg, best["theta"], args=(beta0,), jac=True, method="L-BFGS-B", options={"maxiter": iters})
        except _Timeout:
            break
        except (np.linalg.LinAlgError, ValueError, FloatingPointError):
            break
    return best["theta"]


def shor_bound(g0: np.ndarray, D: np.ndarray, deadline: float = math.inf, split: int = 0) -> float:
    """A certified bound on max_{s in {0,1}^m} ||g0 + D^T s|| (equivalently over the box [0,1]^m).

    With s = (1 + e)/2, e in {-1,1}^m, and a homogenising sign e0, the square is ||B^T z||^2 over
    z in {-1,1}^{m+1}, B = [g0 + D^T 1/2 ; D/2]. The Shor (max-cut SDP) dual: for any w > 0,
    diag(1/w) / lambda_max(B^T diag(w) B) dominates B B^T (Schur complement), so
    ||B^T z||^2 <= sum_i (1/w_i) * lambda_max(B^T diag(w) B). This works in the r x r space of the
    gradient, not the (m+1) x (m+1) space of the neurons; any w gives a valid bound (it reaches the
    value of LipSDP-Neuron, the same relaxation), and w is tuned by quasi-Newton steps on log w.
    ``split`` > 0 branches on that many of the largest neurons (each on or off) and takes the max
    over the branches, which can only lower the bound.
    """
    m = D.shape[0]
    if m == 0:
        return float(np.linalg.norm(g0))
    B = _shor_matrix(g0, D)
    if len(B) == 0:
        return 0.0
    theta = _shor_tune(B, -np.log(np.linalg.norm(B, axis=1)), deadline)
    best = _shor_value(B, theta)
    if split > 0 and m > split and time.perf_counter() < deadline:
        order = np.argsort(-np.linalg.norm(D, axis=1))
        fixed, rest = order[:split], order[split:]
        Dr = D[rest]
        branch_max = 0.0
        for bits in range(2**split):
            on = fixed[[(bits >> i) & 1 == 1 for i in range(split)]]
            Bb = _shor_matrix(g0 + D[on].sum(axis=0), Dr)
            th = _shor_tune(Bb, -np.log(np.linalg.norm(Bb, axis=1)), deadline, schedule=(30, 300, 3000), iters=100)
            branch_max = max(branch_max, _shor_value(Bb, th))
            if time.perf_counter() > deadline or branch_max >= best:
                branch_max = math.inf
                break
        best = min(best, branch_max)
    # certify in float64: eigvalsh's absolute error is about r eps ||M||; 1e-9 relative covers it
    return float(math.sqrt(max(best, 0.0)) * (1 + 1e-9))


def tail_shor_bound(net: Net, boxes, deadline: float = math.inf, split: int = 0) -> float:
    """Deep nets: grad = W_1^T D_1 ... W_{L-2}^T D_{L-2} v with v = W_{L-1}^T D_{L-1} w_L, so
    ||grad|| <= prod_{i <= L-2} ||diag(m_i) W_i|| * max_{D_{L-1}} ||v||, the last factor a two-layer
    all-pattern problem bounded by :func:`shor_bound`."""
    head = 1.0
    for W, (lo, hi) in zip(net.weights[:-2], boxes[:-1]):
        m = np.maximum(np.abs(lo), np.abs(hi))
        if not np.isfinite(m).all():
            return math.inf
        head *= np.linalg.norm(m[:, None] * W, 2)
    lo, hi = boxes[-1]
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        return math.inf
    W, a = net.weights[-2], net.weights[-1][0]
    G = a[:, None] * W
    free = np.flatnonzero(hi > lo)
    return float(head * shor_bound(G.T @ lo, G[free] * (hi - lo)[free, None], deadline, split=split))


@dataclass(frozen=True)
class _LipSDPParts:
    """LipSDP-Neuron's matrix M(rho, T) = -rho E_0 + out + sum_j T_j Q_j over z = (x_0, free hidden units),
    with the neurons whose slope is fixed (stable ReLUs) substituted out: such a unit equals s_j times its
    pre-activation exactly, so it is a linear function of earlier coordinates, not a variable (a huge T_j
    would only approximate that equality, and ruin the float64 check). ``A`` maps z to the free units'
    pre-activations, ``out`` is the output term, (alpha, beta) the free units' slope bounds, ``free`` their
    indices among all hidden units, ``layer`` their layer."""

    A: np.ndarray
    out: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    free: np.ndarray
    layer: np.ndarray


def _lipsdp_parts(net: Net, boxes) -> _LipSDPParts | None:
    """The reduced LipSDP pieces from the slope boxes; None when a slope box is unbounded."""
    alpha = np.concatenate([lo for lo, _ in boxes])
    beta = np.concatenate([hi for _, hi in boxes])
    if not (np.isfinite(alpha).all() and np.isfinite(beta).all()):
        return None
    free = np.flatnonzero(beta > alpha)
    N = net.d + len(free)
    rows, A_rows, offset, col = np.eye(net.d, N), [], 0, net.d  # rows: the current layer's units in z
    for W, w in zip(net.weights[:-1], net.widths):
        pre = W @ rows
        units = alpha[offset:offset + w, None] * pre  # fixed slope: x_j = s_j v_j
        is_free = beta[offset:offset + w] > alpha[offset:offset + w]
        k = int(is_free.sum())
        units[is_free] = np.eye(k, N, col)
        A_rows.append(pre[is_free])
        rows, offset, col = units, offset + w, col + k
    head = net.weights[-1] @ rows
    layer = np.repeat(np.arange(net.depth - 1), net.widths)[free]
    return _LipSDPParts(np.vstack(A_rows), head.T @ head, alpha[free], beta[free], free, layer)


def _lipsdp_matrix(parts, T: np.ndarray) -> np.ndarray:
    """M(0, T): the output term plus sum_j T_j Q_j, where z^T Q_j z = 2 (x_j - alpha_j v_j)(beta_j v_j - x_j) is
    >= 0 whenever x_j = s_j v_j with s_j in [alpha_j, beta_j]: for differences of two points (incremental
    form) and for a gradient pushed through the layers (s_j the neuron's slope at a point) alike."""
    A, out, alpha, beta = parts.A, parts.out, parts.alpha, parts.beta
    H, N = A.shape
    d = N - H
    ab = alpha * beta
    M = out + A.T @ ((-2 * ab * T)[:, None] * A) if ab.any() else out.copy()
    cross = ((alpha + beta) * T)[:, None] * A  # B^T diag((a+b) T) A, B = [0, I]
    M[d:, :] += cross
    M[:, d:] += cross.T
    M[d:, d:] -= np.diag(2 * T)
    return M


def _lipsdp_rho(parts, T: np.ndarray):
    """The least rho with M(rho, T) <= 0 (rho = lambda_max(M_00 + P^T (-Q)^{-1} P), Schur complement over
    the hidden block Q, which must be negative definite), with d rho / dT by the envelope theorem; None if Q is not."""
    A, alpha, beta = parts.A, parts.alpha, parts.beta
    H, N = A.shape
    d = N - H
    if not np.isfinite(T).all():
        return None
    M = _lipsdp_matrix(parts, T)
    try:
        L = np.linalg.cholesky(-M[d:, d:])
    except np.linalg.LinAlgError:
        return None
    Y = scipy.linalg.solve_triangular(L, M[d:, :d], lower=True)
    lam, vec = np.linalg.eigh(M[:d, :d] + Y.T @ Y)
    u = vec[:, -1]
    # the null vector z = (u, y) of M(rho, T): y = (-Q)^{-1} P u
    y = scipy.linalg.solve_triangular(L.T, Y @ u, lower=False)
    z = np.concatenate([u, y])
    v, x = A @ z, z[d:]
    grad = 2 * (x - alpha * v) * (beta * v - x)
    return float(lam[-1]), grad


def _lipsdp_certified(parts, T: np.ndarray, rho: float) -> float:
    """A rho' >= rho with M(rho', T) <= 0 checked by one float64 eigenvalue computation of the full matrix
    (margin: 100 N eps ||M||_F covers the rounding of building M and of eigvalsh); inf if none is found."""
    H, N = parts.A.shape
    M = _lipsdp_matrix(parts, T)
    E0 = np.zeros(N)
    E0[: N - H] = 1.0
    for slack in (1e-8, 1e-6, 1e-4, 1e-2):
        r = rho * (1 + slack) + 1e-300
        Mr = M - r * np.diag(E0)
        err = 100 * N * np.finfo(float).eps * np.linalg.norm(Mr)
        if np.linalg.eigvalsh(Mr)[-1] <= -err:
            return r
    return math.inf


def lipsdp_bound(net: Net, boxes, deadline: float = math.inf, iters: int = 1000) -> float:
    """See :func:`_lipsdp`."""
    return _lipsdp(net, boxes, deadline, iters)[0]


def _lipsdp(net: Net, boxes, deadline: float = math.inf, iters: int = 1000,
            warm: np.ndarray | None = None) -> tuple[float, np.ndarray | None]:
    """LipSDP-Neuron (Fazlyab et al. 2019) for any depth, without an SDP solver: for any multipliers T >= 0
    the least rho with M(rho, T) <= 0 gives Lip <= sqrt(rho). T = exp(theta) is tuned by L-BFGS on
    log rho(T) (the gradient from the null vector of M) until it stalls or ``deadline``; the best T seen is
    certified by an eigenvalue check.
    Slope boxes narrower than the activation's range tighten it; neurons with one slope (stable ReLUs on a
    bounded domain) are substituted out, so the matrix only has the free ones.
    ``warm``: log-multipliers to start from (a parent branch's). Log-multipliers, taken and returned, have one
    entry per hidden unit (entries of fixed units unused). Returns the bound and its log-multipliers."""
    parts = _lipsdp_parts(net, boxes)
    if parts is None:
        return math.inf, None
    full = np.zeros(sum(net.widths))
    if not len(parts.free):  # every slope fixed: one linear map, its norm is the answer
        return float(math.sqrt(parts.out.trace()) * (1 + 1e-12)), full
    if warm is not None and _lipsdp_rho(parts, np.exp(warm[parts.free])) is not None:
        theta0, layer_phase = warm[parts.free], False
    else:
        # start: per layer T_i = c_i, c_i / c_{i+1} = ||W_i||^2 (a chain of 2 x 2 blocks that is negative definite)
        norms = [np.linalg.norm(W, 2) ** 2 + 1e-12 for W in net.weights]
        c, scales = norms[-1], np.zeros(net.depth - 1)
        for i in range(net.depth - 2, -1, -1):
            scales[i] = 4 * c
            c = 4 * c * norms[i]
        theta0, layer_phase = np.log(scales[parts.layer]), True
        for _ in range(60):
            if _lipsdp_rho(parts, np.exp(theta0)) is not None:
                break
            theta0[parts.layer < net.depth - 2] += 1.0
        else:
            return math.inf, None
    value, theta = _lipsdp_tune(net, parts, theta0, deadline, iters, layer_phase)
    if theta is None:
        return value, None
    full[parts.free] = theta
    return value, full


def _lipsdp_tune(net: Net, parts: _LipSDPParts, theta0: np.ndarray, deadline: float, iters: int,
                 layer_phase: bool) -> tuple[float, np.ndarray | None]:
    """L-BFGS on log rho over the log-multipliers from a feasible ``theta0``; the certified bound and theta."""
    best = {"theta": theta0, "rho": math.inf, "calls": 0, "mark": (0, math.inf)}

    def fg(theta):
        if time.perf_counter() > deadline:
            raise _Timeout
        # stop once 100 evaluations have gained less than 0.01%: the last digits cost seconds
        best["calls"] += 1
        if best["calls"] - best["mark"][0] >= 100:
            if best["rho"] > best["mark"][1] * (1 - 1e-4):
                raise _Timeout
            best["mark"] = (best["calls"], best["rho"])
        with np.errstate(over="ignore"):
            res = _lipsdp_rho(parts, np.exp(theta))
        if res is None or not res[0] > 0:
            return 1e3 + float(best["rho"] if math.isfinite(best["rho"]) else 0), np.zeros_like(theta)
        rho, g = res
        if rho < best["rho"]:
            best["theta"], best["rho"] = theta.copy(), rho
        return math.log(rho), g * np.exp(theta) / rho

    # first one scale per layer (a few evaluations take the start near the optimum), then every neuron
    P = np.eye(net.depth - 1)[parts.layer]
    try:
        if not layer_phase:
            raise _Timeout
        minimize(lambda sc: (lambda f, g: (f, P.T @ g))(*fg(theta0 + P @ sc)), np.zeros(net.depth - 1), jac=True,
                 method="L-BFGS-B", bounds=[(-20, 20)] * (net.depth - 1), options={"maxiter": 50})
    except (_Timeout, np.linalg.LinAlgError, ValueError, FloatingPointError):
        pass
    start = best["theta"]
    best["mark"] = (best["calls"], best["rho"])
    try:
        # box the log-multipliers around the start: no overflow, and no denormals (which slow LAPACK 100x)
        bounds = list(zip(start - 40, start + 40))
        minimize(fg, start, jac=True, method="L-BFGS-B", bounds=bounds,
                 options={"maxiter": iters, "ftol": 1e-12, "gtol": 1e-10})
    except (_Timeout, np.linalg.LinAlgError, ValueError, FloatingPointError):
        pass
    if not math.isfinite(best["rho"]):
        return math.inf, None
    return float(math.sqrt(_lipsdp_certified(parts, np.exp(best["theta"]), best["rho"]))), best["theta"]


def lipsdp_branch_bound(net: Net, boxes, deadline: float = math.inf, branches: int = 4, iters: int = 1000) -> float:
    """LipSDP-Neuron with branching on last-hidden-layer neurons of piecewise-linear activations (largest
    output weight first): at any point where f is differentiable each such neuron's slope is one of its two
    values, so the max over the two branches (slope fixed low, slope fixed high) bounds the gradient; the
    worst leaf is split next, ``branches`` times at most, each child warm-started from its parent."""
    value, theta = _lipsdp(net, boxes, deadline, iters)
    last = len(boxes) - 1
    lo, hi = boxes[last]
    if not (net.acts[last].piecewise_linear and math.isfinite(value)):
        return value
    order = [j for j in np.argsort(-np.abs(net.weights[-1][0])) if hi[j] > lo[j]]
    leaves = [(value, theta, boxes, 0)]  # (bound, log-multipliers, boxes, neurons of ``order`` fixed)
    for _ in range(branches):
        worst = max(range(len(leaves)), key=lambda i: leaves[i][0])
        bound, theta, bx, depth = leaves[worst]
        if depth >= len(order) or time.perf_counter() > deadline:
            break
        j = order[depth]
        children = []
        for s in (bx[last][0][j], bx[last][1][j]):
            child = [(a.copy(), b.copy()) for a, b in bx]
            child[last][0][j] = child[last][1][j] = s
            v, th = _lipsdp(net, child, deadline, iters=150, warm=theta)
            # a child's points are its parent's: the parent's bound holds there too
            children.append((min(v, bound), th if th is not None else theta, child, depth + 1))
        leaves[worst:worst + 1] = children
    return max(leaf[0] for leaf in leaves)
