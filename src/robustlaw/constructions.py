"""The papers' explicit interpolators (BLN20 = Bubeck, Li & Nagaraj, arXiv:2009.14444, Section 3;
BS21 = Bubeck & Sellke, arXiv:2105.12806).

Each builder takes data (X: n x d, y: n) and returns a fitted model in float64:
- a ReLU (or power-activation) two-layer net is a :class:`ConstructedNetwork` (a
  :class:`robustlaw.models.Network`, so every tool that handles networks handles it);
- anything else is an :class:`Interpolant` (an ``nn.Module`` mapping (..., d) -> (...)).
Both have ``param_count()`` and a ``meta`` dict with the construction's choices (offsets, radii,
thresholds). Their certificates are Lipschitz methods registered in robustlaw.lipschitz.certificates
(cap overlap, active caps, quadratic form, disjoint bumps, McShane). A failed precondition (caps overlap, points not in general
position, duplicate points...) raises :class:`RobustlawError` with one line instead of returning
a wrong model.

| builder | source | P | Lip claimed |
| --- | --- | --- | --- |
| single_neuron | BLN20 3.1, d >= n | d + 3 | ~ sqrt(n) (min-norm hyperplane) |
| caps | BLN20 3.2, k = n | n (d + 2) | max|y| / offset on the unit ball |
| compromise_caps | BLN20 3.3, m = n / k points per cap | k (d + 2) | O(n log d / k) |
| tensor | BLN20 3.4, activation t^q | d^2 + d (q = 2), n (d + 1) | O(sqrt(n / k)) |
| baum | Baum 1988 / BELM20, 4 ReLUs per d points | 4 ceil(n / d) (d + 2) | ~ 1 / slab width: fits, not robust |
| rbf | slides: one bump per point | n (d + 1) | max|y| / radius = O(1) |
| projected_rbf | BS21 tightness: project to d' = P / n | n (d' + 1) | ~ sqrt(n d / P) |
| mcshane | McShane extension | n (d + 1) + 1 | the floor max |y_i - y_j| / ||x_i - x_j|| |
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.spatial.distance import pdist, squareform
from torch import nn

from robustlaw.data import check_dataset, lip_floor
from robustlaw.errors import RobustlawError
from robustlaw.models import Network, Power
from robustlaw.registry import Registry
from robustlaw.seeding import stream

#: BLN20 3.2: each cap is offset by 1/10 from the top of the sphere (BLN20 Section 3.2),
#: which makes the one-cap-per-point net 10-Lipschitz on the unit ball.
CAP_OFFSET = 0.1
#: compromise_caps: the default cap offset. It trades a cap's slope (~ 1 / offset) against its
#: width; on sphere data (n = 100, d = 100) 0.5 gave certified bounds ~ 2.3 n log(d) / k against
#: 5-6 n log(d) / k for BLN20 3.2's 0.1 (docs/bounds.md).
COMPROMISE_OFFSET = 0.5
#: compromise_caps: when the default threshold would let a cap reach another data point, the
#: threshold is raised to this factor times the smallest one that excludes every other point.
CAP_EXCLUSION_MARGIN = 1.1
#: compromise_caps: how many seeded random partitions of the points into caps are tried.
CAP_PARTITION_ATTEMPTS = 20
#: The slides' one-bump-per-point construction: bump radius = this fraction of the smallest
#: distance between two data points (1/2 is the largest with disjoint supports).
RBF_RADIUS_FRACTION = 0.5
#: single_neuron: the pre-activation at every data point is at least this margin above 0.
NEURON_MARGIN = 1.0
#: Points closer than this (relative to the data scale) count as linearly dependent / duplicate.
RANK_TOL = 1e-9
#: Data for the caps must lie on the unit sphere up to this tolerance on ||x_i||.
UNIT_NORM_TOL = 1e-6
#: A fitted affine / linear system counts as exact when its residual is below this (relative to max|y|).
FIT_TOL = 1e-8
#: Distances to bump / cone centres are computed from exact differences while the (points x centres
#: x d) intermediate has at most this many elements (128 MB in float64), by Gram expansion above.
DIRECT_DISTANCE_ELEMENTS = 2**24


class ConstructedNetwork(Network):
    """A two-layer :class:`Network` built by a construction; ``meta`` holds the construction's choices.
    Its certificates (cap overlap, active-cap count, quadratic form) are registered Lipschitz methods
    (robustlaw.lipschitz.certificates) that apply to any network of its shape."""

    meta: dict


def _network(W: np.ndarray, b: np.ndarray | None, a: np.ndarray, meta: dict, activation: nn.Module | None = None,
             out_bias: float | None = None) -> ConstructedNetwork:
    """x -> a . act(W x + b) (+ out_bias) as a float64 ConstructedNetwork."""
    k, d = W.shape
    hidden = nn.Linear(d, k, bias=b is not None, dtype=torch.float64)
    head = nn.Linear(k, 1, bias=out_bias is not None, dtype=torch.float64)
    with torch.no_grad():
        hidden.weight.copy_(torch.as_tensor(W))
        if b is not None:
            hidden.bias.copy_(torch.as_tensor(b))
        head.weight.copy_(torch.as_tensor(a, dtype=torch.float64)[None, :])
        if out_bias is not None:
            head.bias.fill_(out_bias)
    net = ConstructedNetwork(hidden, activation or nn.ReLU(), head)
    net.meta = meta
    return net


class Interpolant(nn.Module):
    """A non-network construction: (..., d) -> (...), with P, a certificate and its choices in ``meta``."""

    meta: dict

    def param_count(self) -> int:
        """P: the number of scalars that specify the function within its class."""
        return sum(p.numel() for p in self.parameters())

    @property
    def depth(self) -> int:
        """2: a layer of radial units (bumps, cones) and a combining output, for BS21 Lemma 3.1's J."""
        return 2

    @property
    def input_dim(self) -> int:
        return int(self.meta["d"])


def _distances(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """||x - c_i|| for every centre, shape (..., n); gradient 0 (not NaN) exactly at a centre.

    Exact differences while the (..., n, d) intermediate stays below ``DIRECT_DISTANCE_ELEMENTS``;
    above that the Gram expansion ||x||^2 + ||c||^2 - 2 <x, c> (memory (..., n), error ~ 1e-8
    relative) with the nearest centre's distance recomputed exactly, so a centre still maps to 0.
    """
    tiny = torch.finfo(x.dtype).tiny
    if x[..., :1].numel() * centres.numel() <= DIRECT_DISTANCE_ELEMENTS:
        return (x[..., None, :] - centres).pow(2).sum(-1).clamp_min(tiny).sqrt()
    sq = (x.pow(2).sum(-1, keepdim=True) + centres.pow(2).sum(-1) - 2 * x @ centres.T).clamp_min(tiny)
    nearest = sq.detach().argmin(-1, keepdim=True)
    exact = (x - centres[nearest.squeeze(-1)]).pow(2).sum(-1, keepdim=True).clamp_min(tiny)
    return sq.scatter(-1, nearest, exact).sqrt()


class BumpSum(Interpolant):
    """f(x) = sum_i h_i max(0, 1 - ||A x - c_i|| / r): disjoint cone bumps of radius r around the
    centres c_i (= A x_i), after an optional fixed linear map A (the identity if None).

    Supports are disjoint (r <= half the smallest centre distance), so f(c_i) = h_i and
    Lip(f) <= ||A||_op max|h_i| / r on all of R^d: for x, x' in supports i, j,
    |f(x) - f(x')| <= max|h| ((1 - s) + (1 - s')) <= (max|h| / r) ||Ax - Ax'||.
    A is part of the class (fixed before seeing the data), so P = n (d' + 1).
    """

    def __init__(self, centres: np.ndarray, heights: np.ndarray, radius: float, A: np.ndarray | None, meta: dict):
        super().__init__()
        self.centres = nn.Parameter(torch.as_tensor(centres, dtype=torch.float64), requires_grad=False)
        self.heights = nn.Parameter(torch.as_tensor(heights, dtype=torch.float64), requires_grad=False)
        self.register_buffer("radius", torch.tensor(float(radius), dtype=torch.float64))
        self.register_buffer("A", None if A is None else torch.as_tensor(A, dtype=torch.float64))
        self.meta = meta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x if self.A is None else x @ self.A.T
        return (self.heights * torch.relu(1 - _distances(z, self.centres) / self.radius)).sum(-1)

class McShane(Interpolant):
    """f(x) = min_i (y_i + L ||x - x_i||) with L = lip_floor(X, y): an interpolant whose
    Lipschitz constant is exactly the floor L (a minimum of L-Lipschitz cones is L-Lipschitz, and
    no interpolant can do better)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, lip: float):
        super().__init__()
        self.centres = nn.Parameter(torch.as_tensor(X, dtype=torch.float64), requires_grad=False)
        self.values = nn.Parameter(torch.as_tensor(y, dtype=torch.float64), requires_grad=False)
        self.lip = nn.Parameter(torch.tensor(float(lip), dtype=torch.float64), requires_grad=False)
        self.meta = {"construction": "mcshane", "d": X.shape[1], "lip": lip}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.values + self.lip * _distances(x, self.centres)).min(-1).values

# ----------------------------------------------------------------------------- builders


def _data(X, y) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    check_dataset(X, y)
    return X, y


def _min_distance(Z: np.ndarray) -> tuple[float, tuple[int, int]]:
    D = squareform(pdist(Z))
    np.fill_diagonal(D, np.inf)
    i, j = np.unravel_index(np.argmin(D), D.shape)
    return float(D[i, j]), (int(i), int(j))


def _require_unit_norm(X: np.ndarray, name: str) -> None:
    norms = np.linalg.norm(X, axis=1)
    if np.abs(norms - 1).max() > UNIT_NORM_TOL:
        i = int(np.argmax(np.abs(norms - 1)))
        raise RobustlawError(f"{name} needs points on the unit sphere, but ||x_{i}|| = {norms[i]:.6g}")


def single_neuron(X, y, margin: float = NEURON_MARGIN) -> ConstructedNetwork:
    """BLN20 3.1 (d >= n): f(x) = relu(<w, x> + b) + c with the minimum-norm w (b free) such that
    <w, x_i> + b = y_i - c, and c = min y - margin so the neuron is active at every data point.

    Lip(f) = ||w|| on R^d; for random +-1 labels and d >> n, ||w|| ~ sqrt(n) (BLN20 3.1).
    Needs the points affinely independent (n <= d + 1).
    """
    X, y = _data(X, y)
    n, d = X.shape
    if n > d + 1:
        raise RobustlawError(f"single_neuron needs n <= d + 1 (one hyperplane through all points), got n={n}, d={d}")
    c = float(y.min()) - margin
    t = y - c
    Xc = X - X.mean(axis=0)
    if n > 1 and np.linalg.matrix_rank(Xc, tol=RANK_TOL * max(1.0, np.abs(Xc).max())) < n - 1:
        raise RobustlawError("single_neuron needs affinely independent points; these lie in a lower-dimensional affine set")
    w = np.linalg.pinv(Xc) @ (t - t.mean())
    b = float(np.mean(t - X @ w))
    return _network(w[None, :], np.array([b]), np.array([1.0]), out_bias=c,
                    meta={"construction": "single_neuron", "d": d, "w_norm": float(np.linalg.norm(w)),
                          "output_bias": c, "margin": margin})


def caps(X, y, offset: float = CAP_OFFSET) -> ConstructedNetwork:
    """BLN20 3.2 (k = n): f(x) = sum_i y_i relu(<x_i, x> - (1 - offset)) / offset on unit-norm data.

    Cap i has height y_i at x_i and gradient y_i x_i / offset. The caps are disjoint in the unit
    ball iff <x_i, x_j> <= 2 (1 - offset)^2 - 1 for all i != j (two caps of the ball meet at most
    at the bisector, where <x_i, x> = cos(angle / 2)); then f interpolates and Lip(f) on the unit
    ball = max|y_i| / offset. Raises if the caps overlap.
    """
    X, y = _data(X, y)
    _require_unit_norm(X, "caps")
    if not 0 < offset < 1:
        raise RobustlawError(f"caps offset must lie in (0, 1), got {offset}")
    limit = 2 * (1 - offset) ** 2 - 1
    G = X @ X.T
    np.fill_diagonal(G, -np.inf)
    i, j = np.unravel_index(np.argmax(G), G.shape)
    if len(X) > 1 and G[i, j] > limit:
        raise RobustlawError(f"caps overlap: <x_{i}, x_{j}> = {G[i, j]:.4f} > 2 (1 - offset)^2 - 1 = {limit:.4f}; "
                             f"use a smaller offset (now {offset}) or data of higher dimension")
    return _network(X / offset, np.full(len(X), -(1 - offset) / offset), y,
                    meta={"construction": "caps", "d": X.shape[1], "offset": offset, "heights": "y_i",
                          "lip_on_unit_ball": float(np.abs(y).max() / offset)})


def _groups(y: np.ndarray, k: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Split the indices with y != 0 into at most k groups of one label sign, the caps shared
    between the two signs in proportion to their counts (so groups have ~ n / k points); ``rng``
    shuffles the points first (else they are taken in index order)."""
    signs = [s for s in (np.flatnonzero(y > 0), np.flatnonzero(y < 0)) if len(s)]
    if rng is not None:
        signs = [rng.permutation(s) for s in signs]
    total = sum(len(s) for s in signs)
    if len(signs) == 2 and k < 2:
        raise RobustlawError("compromise_caps needs k >= 2 caps when labels of both signs occur")
    if len(signs) == 2:
        first = min(max(1, round(k * len(signs[0]) / total)), k - 1)
        shares = [first, k - first]
    else:
        shares = [k] * len(signs)
    groups = []
    for s, share in zip(signs, shares):
        m = math.ceil(len(s) / share)
        groups += [np.sort(s[i:i + m]) for i in range(0, len(s), m)]
    return groups


class _Trapped(Exception):
    """A data point lies beyond a cap's hyperplane <u, x> = 1: no threshold excludes it."""


def _cap_neuron(X: np.ndarray, y: np.ndarray, S: np.ndarray, offset: float) -> tuple[np.ndarray, float, bool]:
    """The cap neuron of group S: (w, theta, raised) with <w, x_i> - theta = |y_i| on S, <= 0 elsewhere."""
    n, d = X.shape
    XS = X[S]
    if len(S) > d or np.linalg.matrix_rank(XS, tol=RANK_TOL * max(1.0, np.abs(XS).max())) < len(S):
        raise RobustlawError(f"a cap's {len(S)} points are linearly dependent (need <= d={d} independent "
                             "points per cap; use more caps)")
    pinv = np.linalg.pinv(XS)
    u, v = pinv @ np.ones(len(S)), pinv @ np.abs(y[S])
    outside = np.setdiff1d(np.arange(n), S)
    tu, tv = X[outside] @ u, X[outside] @ v
    # the pre-activation at an outside point is theta (tu - 1) + tv: <= 0 iff theta >= tv / (1 - tu), tu < 1
    if (tu >= 1 - RANK_TOL).any():
        raise _Trapped
    theta = float(np.abs(y[S]).max()) * (1 - offset) / offset
    needed = float((tv / (1 - tu)).max()) if len(outside) else 0.0
    raised = needed > theta
    if raised:
        theta = CAP_EXCLUSION_MARGIN * needed
    w = theta * u + v
    if len(outside) and (X[outside] @ w - theta).max() > 0:  # rounding: never return a wrong fit
        raise _Trapped
    return w, theta, raised


def compromise_caps(X, y, k: int, offset: float = COMPROMISE_OFFSET, seed: int = 0) -> ConstructedNetwork:
    """BLN20 3.3: k ReLU caps, each fitting a group S_j of m ~ n / k points of one label sign.

    Neuron j: a_j relu(<w_j, x> - theta_j) with w_j = theta_j u_j + v_j, where u_j, v_j are the
    minimum-norm vectors with <u_j, x_i> = 1 and <v_j, x_i> = |y_i| on S_j, theta_j =
    max_{S_j} |y_i| (1 - offset) / offset and a_j = the group's sign: the pre-activation is |y_i|
    on S_j and <= 0 at every other point. For m = 1, |y_i| = 1 and the same offset this is the
    one-cap-per-point net of :func:`caps`. A partition in which some cap cannot exclude another point (it lies
    beyond <u_j, x> = 1) is redrawn (``CAP_PARTITION_ATTEMPTS`` seeded shuffles); among valid
    partitions the one needing the fewest raised thresholds (theta_j raised to 1.1 x the smallest
    value excluding every other point) is kept. Raises if no valid partition is found or a group
    is linearly dependent (m > d). BLN20 bound the overlap of such caps by O(m log d), so
    Lip = O(n log(d) / k); the cap-overlap certificate (robustlaw.lipschitz.certificates) bounds the actual overlap.
    """
    X, y = _data(X, y)
    n, d = X.shape
    if not (isinstance(k, int) and 1 <= k <= n):
        raise RobustlawError(f"compromise_caps needs an integer number of caps k in [1, n={n}], got {k!r}")
    if not 0 < offset < 1:
        raise RobustlawError(f"cap offset must lie in (0, 1), got {offset}")
    rng = stream(seed, "partition")
    best = None
    for attempt in range(CAP_PARTITION_ATTEMPTS):
        groups = _groups(y, k, None if attempt == 0 else rng)
        try:
            neurons = [_cap_neuron(X, y, S, offset) for S in groups]
        except _Trapped:
            continue
        raised = sum(r for _, _, r in neurons)
        if best is None or raised < best[2]:
            best = (groups, neurons, raised, attempt)
        if raised == 0:
            break
    if best is None:
        raise RobustlawError(f"compromise_caps: in {CAP_PARTITION_ATTEMPTS} partitions into {k} caps some data point "
                             f"always lies beyond a cap's hyperplane; use more caps or data of higher dimension (d={d})")
    groups, neurons, raised, attempt = best
    meta = {"construction": "compromise_caps", "d": d, "caps": len(groups),
            "points_per_cap": max((len(S) for S in groups), default=0), "offset": offset,
            "thresholds_raised": raised, "partition_attempt": attempt,
            "bln20_scale": n * math.log(d) / max(len(groups), 1)}
    if not groups:  # all labels zero: the zero function
        return _network(np.zeros((1, d)), np.zeros(1), np.zeros(1), meta=meta)
    W = np.array([w for w, _, _ in neurons])
    theta = np.array([t for _, t, _ in neurons])
    a = np.array([float(np.sign(y[S[0]])) for S in groups])
    return _network(W, -theta, a, meta=meta)


def tensor(X, y, q: int = 2, ridge: float = 0.0) -> ConstructedNetwork:
    """BLN20 3.4: f(x) = sum_i c_i <x_i, x>^q, the minimum-norm interpolant in the space of degree-q
    forms <T, x^{(x) q}>, c = (K + ridge I)^{-1} y with K_ij = <x_i, x_j>^q (``ridge`` > 0: the
    approximate fit of BLN20). For q = 2 it is stored as its eigen-decomposition
    f(x) = sum_j lambda_j <e_j, x>^2, a width-d net with activation t^2 (BLN20's k ~ d^{q-1}),
    whose Lipschitz constant on the ball of radius R is exactly 2 R ||M||_op, M = sum_i c_i x_i x_i^T.
    Raises if K is singular (n larger than the dimension of degree-q forms, or repeated points).
    """
    X, y = _data(X, y)
    n, d = X.shape
    if not (isinstance(q, int) and q >= 1):
        raise RobustlawError(f"tensor construction needs an integer degree q >= 1, got {q!r}")
    if ridge < 0:
        raise RobustlawError(f"ridge must be >= 0, got {ridge}")
    K = (X @ X.T) ** q
    dim = math.comb(d + q - 1, q)
    if ridge == 0 and (n > dim or np.linalg.cond(K) > 1 / RANK_TOL):
        raise RobustlawError(f"tensor interpolation needs the kernel <x_i, x_j>^{q} invertible (n={n} points, "
                             f"{dim} degree-{q} forms in d={d}); use fewer points, a higher q, or ridge > 0")
    coef = np.linalg.solve(K + ridge * np.eye(n), y)
    meta = {"construction": "tensor", "d": d, "q": q, "ridge": ridge}
    if q == 2:
        M = (X.T * coef) @ X
        lam, E = np.linalg.eigh(M)
        net = _network(E.T, None, lam, meta={**meta, "M_op": float(np.abs(lam).max())}, activation=Power(2))
    else:
        net = _network(X, None, coef, meta=meta, activation=Power(q))
    net.meta["train_max_err"] = float(np.abs(net(torch.as_tensor(X)).detach().numpy() - y).max())
    return net


def baum(X, y) -> ConstructedNetwork:
    """Baum (1988), for ReLU and real labels as in Bubeck, Eldan, Lee & Mikulincer (2020): 4 neurons
    per group of d points, so ~ 4 n / d neurons and P ~ 4 n: it fits, but is far from robust.

    Group S (d consecutive points): the hyperplane t(x) = <u, x> - beta = 0 through S (||u|| = 1),
    delta = half the distance from it to the nearest other data point, and the affine
    a(x) = <v, x> + gamma with a = y on S (minimum norm). With A = max_i |a(x_i)| over all points,
    tau0 = A + 1, K = 2 tau0, delta' = delta / tau0 and tau = t / delta' + tau0, the group adds
    relu(tau + a) - relu(tau) - relu(tau - K + a) + relu(tau - K): y_i on S (tau = tau0), 0 at every
    point with t <= -2 delta (all four off) or t >= 2 delta (all four on, they cancel). Its slope
    across the slab is ~ 1 / delta' = tau0 / delta, huge. Raises if a hyperplane passes through
    another data point or a group's labels cannot be fitted (points not in general position).
    """
    X, y = _data(X, y)
    n, d = X.shape
    W, b, a_out, slab = [], [], [], []
    for start in range(0, n, d):
        S = np.arange(start, min(start + d, n))
        _, _, Vt = np.linalg.svd(np.hstack([X[S], -np.ones((len(S), 1))]))
        u, beta = Vt[-1, :d], Vt[-1, d]
        scale = np.linalg.norm(u)
        if scale < RANK_TOL:
            raise RobustlawError(f"baum: points {S[0]}..{S[-1]} do not span a hyperplane (not in general position)")
        u, beta = u / scale, beta / scale
        others = np.setdiff1d(np.arange(n), S)
        gap = float(np.abs(X[others] @ u - beta).min()) if len(others) else 1.0
        if gap <= RANK_TOL:
            raise RobustlawError(f"baum: the hyperplane through points {S[0]}..{S[-1]} passes through another data "
                                 "point (points not in general position)")
        affine = np.hstack([X[S], np.ones((len(S), 1))])
        coef = np.linalg.lstsq(affine, y[S], rcond=None)[0]
        v, gamma = coef[:d], coef[d]
        if np.abs(affine @ coef - y[S]).max() > FIT_TOL * max(1.0, np.abs(y).max()):
            raise RobustlawError(f"baum: no affine function fits the labels of points {S[0]}..{S[-1]} "
                                 "(points not in general position)")
        tau0 = float(np.abs(X @ v + gamma).max()) + 1.0
        K, width = 2 * tau0, gap / 2 / tau0
        w_tau, b_tau = u / width, -beta / width + tau0
        for w, bias, out in ((w_tau + v, b_tau + gamma, 1.0), (w_tau, b_tau, -1.0),
                             (w_tau + v, b_tau - K + gamma, -1.0), (w_tau, b_tau - K, 1.0)):
            W.append(w)
            b.append(bias)
            a_out.append(out)
        slab.append((width, gap / 2))
    return _network(np.array(W), np.array(b), np.array(a_out),
                    meta={"construction": "baum", "d": d, "groups": len(slab), "slab_widths": [w for w, _ in slab],
                          "deltas": [g for _, g in slab], "min_slab_width": float(min(w for w, _ in slab))})


def _bumps(Z: np.ndarray, y: np.ndarray, A: np.ndarray | None, fraction: float, meta: dict) -> BumpSum:
    if not 0 < fraction <= RBF_RADIUS_FRACTION:
        raise RobustlawError(f"bump radius fraction must lie in (0, {RBF_RADIUS_FRACTION}], got {fraction}")
    sep, (i, j) = _min_distance(Z) if len(Z) > 1 else (2.0, (0, 0))
    if sep <= RANK_TOL * max(1.0, np.abs(Z).max()):
        where = "after projection " if A is not None else ""
        raise RobustlawError(f"points {i} and {j} coincide {where}(distance {sep:.3g}); bumps cannot separate them")
    radius = fraction * sep
    return BumpSum(Z, y, radius, A, meta={**meta, "radius": radius, "separation": sep})


def rbf(X, y, fraction: float = RBF_RADIUS_FRACTION) -> BumpSum:
    """One cone bump per point (the slides' "1 radial basis function on each input"), radius =
    ``fraction`` x the smallest distance between points: P = n (d + 1), Lip = max|y| / radius,
    O(1) for well-separated data (e.g. ~ 1.4 for +-1 labels on a high-dimensional sphere)."""
    X, y = _data(X, y)
    return _bumps(X, y, None, fraction, {"construction": "rbf", "d": X.shape[1]})


def projected_rbf(X, y, d_proj: int, seed: int = 0, fraction: float = RBF_RADIUS_FRACTION) -> BumpSum:
    """BS21's tight construction: a fixed Gaussian map A (d' x d, entries N(0, 1 / d')) to d' = P / n
    dimensions, then one bump per projected point. ||A||_op ~ 1 + sqrt(d / d') and the projected
    points stay O(1) apart while d' >~ log n, so Lip <= ||A||_op max|y| / radius ~ sqrt(n d / P)."""
    X, y = _data(X, y)
    d = X.shape[1]
    if not (isinstance(d_proj, int) and 1 <= d_proj):
        raise RobustlawError(f"projection dimension must be an integer >= 1, got {d_proj!r}")
    A = stream(seed, "projection").standard_normal((d_proj, d)) / math.sqrt(d_proj)
    return _bumps(X @ A.T, y, A, fraction, {"construction": "projected_rbf", "d": d, "d_proj": d_proj,
                                            "A_op": float(np.linalg.norm(A, 2))})


def mcshane(X, y) -> McShane:
    """The McShane extension min_i (y_i + L ||x - x_i||): Lip exactly the floor L = lip_floor."""
    X, y = _data(X, y)
    lip = lip_floor(X, y)
    if not np.isfinite(lip):
        raise RobustlawError("mcshane: two identical points carry different labels; no function interpolates them")
    return McShane(X, y, lip)


# ----------------------------------------------------------------------------- sweep points

#: name -> builder(X, y, size, q, seed); ``size`` is ModelSpec.width: the number of caps k for
#: compromise_caps, the projected dimension d' for projected_rbf, unused otherwise.
CONSTRUCTIONS: Registry[Callable[..., nn.Module]] = Registry("construction", "model.construction")
CONSTRUCTIONS.register("single_neuron", lambda X, y, size, q, seed: single_neuron(X, y))
CONSTRUCTIONS.register("caps", lambda X, y, size, q, seed: caps(X, y))
CONSTRUCTIONS.register("compromise_caps", lambda X, y, size, q, seed: compromise_caps(X, y, size, seed=seed))
CONSTRUCTIONS.register("tensor", lambda X, y, size, q, seed: tensor(X, y, q))
CONSTRUCTIONS.register("baum", lambda X, y, size, q, seed: baum(X, y))
CONSTRUCTIONS.register("rbf", lambda X, y, size, q, seed: rbf(X, y))
CONSTRUCTIONS.register("projected_rbf", lambda X, y, size, q, seed: projected_rbf(X, y, size, seed))
CONSTRUCTIONS.register("mcshane", lambda X, y, size, q, seed: mcshane(X, y))
