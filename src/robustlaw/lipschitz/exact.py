"""Exact Lipschitz constants of two-layer piecewise-linear networks by covering activation patterns.

For f(x) = sum_j a_j act(<w_j, x> + b_j) + c with act = ReLU or LeakyReLU(alpha), the gradient on
the cell with activation pattern s in {0,1}^k is g(s) = g0 + D^T s, g0 = alpha sum_j a_j w_j,
D_j = (1 - alpha) a_j w_j. Lip(f on a convex domain) = max over the cells meeting the domain's
interior of ||g(s)||. Two exact methods, each sound when it finishes:

- :func:`flat_enumeration` (few dimensions): every cell of an arrangement whose normals span
  R^r has a vertex, so on R^d the patterns of all cells appear around the C(k, r) vertices; on a ball,
  every cell meeting the ball touches it at a vertex inside, or at the projection of the centre onto
  some flat of fewer than r hyperplanes (the minimal face of the cell that meets the ball).
- :func:`sorted_patterns` (few neurons, any dimension): all 2^k patterns in decreasing order of
  ||g(s)||; the first one whose cell is not proven empty by a linear programme is the maximum.
  An empty cell's LP dual names a small infeasible subset of its sign constraints, which removes every
  pattern sharing those signs at once.

Neurons that are stable on a bounded domain are folded into g0 first, neurons on one hyperplane
(copies, positive multiples, negations) become one binary variable (:func:`hyperplane_groups`; without
this, the sign choices where copies disagree are cells of no point and make the bound loose), and the
input is reduced to the row space of W, so both methods see only what can change. When every
hyperplane passes through one point inside the domain (a net without biases), all vertices coincide:
:func:`exact_two_layer` then covers the cones at that point on two affine slices (:func:`central_slices`);
where only some hyperplanes meet beyond the flat's own, :func:`flat_enumeration` solves the cones at
that point the same way (:func:`_cones_at`).
Hyperplanes are identified, and cells resolved, to a relative 1e-12 (``MERGE_TOL``).

A result is called exact (method ``"exact:..."``) only when its sound ``upper`` equals the gradient
norm at its witness to a relative 1e-6; see :class:`ExactResult`.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linprog, nnls

from robustlaw.lipschitz.network import Net

Array = np.ndarray


#: Two neurons lie on the same hyperplane when their (w, b) / ||w|| agree, up to sign, to this relative tolerance.
MERGE_TOL = 1e-12


@dataclass
class Problem:
    """A two-layer PWL net on a domain, reduced: y = V^T x, one binary variable per free hyperplane.

    ||grad f|| = sqrt(perp2 + ||g0 + D^T s||^2) for the pattern s of the free hyperplanes, whose
    pre-activations are W y + b (W: (k, r)). ``center``/``radius`` describe the domain in y
    (radius None: all of R^r). D and g0 usually share y's coordinates; in the sub-problems of
    :func:`central_slices` and :func:`_cones_at` they keep their parent's (D: (k, r_parent)).

    Row i stands for the group of original neurons ``groups[i]`` sharing one hyperplane; ``free[i]``
    is the group's representative (its first member), whose (w, b) is row i, and ``sides[i]`` says
    for each member whether it is on when the representative is (+1) or when it is off (-1). Groups whose
    members' contributions cancel (D_group = 0) are dropped like neurons with a = 0.
    """

    W: Array
    b: Array
    D: Array
    g0: Array
    perp2: float
    V: Array
    x_offset: Array  # x = V y + x_offset maps a reduced point back into the input space
    center: Array
    radius: float | None
    free: Array  # the representative neuron of each free hyperplane (index in the original layer)
    groups: list = field(default_factory=list)  # groups[i]: every neuron on hyperplane i
    sides: list = field(default_factory=list)  # sides[i][m] = +1 / -1: member m on with / against row i
    merged: int = 0  # free neurons absorbed into another's hyperplane (including groups that cancel out)

    @property
    def k(self) -> int:
        return self.W.shape[0]

    @property
    def r(self) -> int:
        return self.W.shape[1]

    def norms(self, patterns: Array) -> Array:
        """||grad|| for rows of 0/1 patterns (n, k)."""
        g = self.g0 + patterns @ self.D
        return np.sqrt(self.perp2 + np.einsum("ij,ij->i", g, g))

    def to_x(self, y: Array) -> Array:
        return self.V @ y + self.x_offset


def hyperplane_groups(W: Array, b: Array, tol: float = MERGE_TOL) -> list[tuple[Array, Array]]:
    """Group the rows of (W, b) (nonzero rows of W) that define the same hyperplane.

    Returns [(members, sides)]: ``members`` are row indices, the first one the representative, and
    ``sides[m]`` is +1 when member m is a positive multiple of the representative (on together) and -1
    when it is a negative one (on exactly when the representative is off). Rows are compared after
    dividing by ||w|| and fixing the sign of their largest weight, coordinatewise to ``tol`` times
    max(1, |b| / ||w||).
    """
    k = W.shape[0]
    if k == 0:
        return []
    n = np.linalg.norm(W, axis=1)
    Z = np.hstack([W, b[:, None]]) / n[:, None]
    sign = np.where(W[np.arange(k), np.argmax(np.abs(W), axis=1)] >= 0, 1.0, -1.0)
    Z *= sign[:, None]
    scale = np.maximum(1.0, np.abs(Z[:, -1]))
    # near-equal rows have near-equal projections: sort by one and compare only within runs of small gaps
    v = 1.0 + np.sqrt(np.arange(Z.shape[1]) + 2.0) % 1.0
    proj = Z @ v
    order = np.argsort(proj, kind="stable")
    gap = tol * float(scale.max()) * float(v.sum())
    run = np.empty(k, dtype=np.int64)
    run[order] = np.concatenate([[0], np.cumsum(np.diff(proj[order]) > gap)])
    alone = np.bincount(run)[run] == 1
    groups = [(np.array([i]), np.ones(1)) for i in np.flatnonzero(alone)]
    for rows in np.split(order[~alone[order]], np.flatnonzero(np.diff(run[order[~alone[order]]])) + 1):
        left = np.sort(rows)
        while len(left):
            rep, rest = left[0], left[1:]
            close = np.max(np.abs(Z[rest] - Z[rep]), axis=1, initial=0.0) <= tol * np.maximum(scale[rest], scale[rep])
            members = np.concatenate([[rep], rest[close]])
            groups.append((members, sign[members] * sign[rep]))
            left = rest[~close]
    groups.sort(key=lambda g: g[0][0])
    return groups


def two_layer_problem(net: Net, center: Array | None = None, radius: float | None = None) -> Problem:
    """Reduce a two-layer ReLU/LeakyReLU ``net`` on the ball (center, radius) (radius None: R^d).

    Neurons with a = 0 or w = 0 have a constant (zero) gradient contribution and are dropped; on a ball,
    neurons stable on it are folded into g0. The remaining neurons are merged by hyperplane
    (:func:`hyperplane_groups`): neurons on one hyperplane are in the same or opposite states
    everywhere off it, so one binary variable per hyperplane leaves the arrangement's cells, and the
    maximum, unchanged. A group with representative state s contributes base + s * D_group, where a
    member on the representative's side adds its D_j to D_group, and one on the other side adds D_j to
    the base (it is on when s = 0) and -D_j to D_group.
    """
    assert net.is_two_layer_pwl
    W, b = net.weights[0], net.biases[0]
    a = net.weights[1][0]
    alpha = net.acts[0].low_slope
    d = net.d
    c = np.zeros(d) if center is None else np.asarray(center, dtype=float)
    G = a[:, None] * W
    g0 = alpha * G.sum(axis=0)
    D = (1 - alpha) * G
    active = (np.abs(D).sum(axis=1) > 0) & (np.abs(W).sum(axis=1) > 0)
    if radius is not None:
        h = W @ c + b
        spread = radius * np.linalg.norm(W, axis=1)
        on = active & (h - spread > 0)
        g0 = g0 + D[on].sum(axis=0)
        active &= (h + spread > 0) & ~on
    cand = np.flatnonzero(active)
    groups, sides, rows = [], [], []
    hyperplanes = hyperplane_groups(W[cand], b[cand])
    for members, side in hyperplanes:
        idx = cand[members]
        g0 = g0 + D[idx[side < 0]].sum(axis=0)
        Dg = side @ D[idx]
        if np.any(Dg != 0):
            groups.append(idx)
            sides.append(side)
            rows.append(Dg)
    free = np.array([g[0] for g in groups], dtype=np.int64)
    Wf, bf = W[free], b[free]
    Df = np.array(rows).reshape(len(free), d)
    if len(free):
        _, s, Vt = np.linalg.svd(Wf, full_matrices=False)
        rank = int(np.sum(s > s[0] * 1e-10)) if s.size else 0
        V = Vt[:rank].T
    else:
        V = np.zeros((d, 0))
    g_in = V.T @ g0
    perp2 = float(max(g0 @ g0 - g_in @ g_in, 0.0))
    x_offset = c - V @ (V.T @ c) if radius is not None else np.zeros(d)
    return Problem(W=Wf @ V, b=bf, D=Df @ V, g0=g_in, perp2=perp2, V=V, x_offset=x_offset,
                   center=V.T @ c, radius=radius, free=free, groups=groups, sides=sides,
                   merged=len(cand) - len(hyperplanes))


#: upper <= lower * (1 + EXACT_RTOL) is what makes a bracket exact (as in :class:`robustlaw.lipschitz.Bracket`).
EXACT_RTOL = 1e-6


@dataclass
class ExactResult:
    """What a covering method proved about Lip(f) on the domain.

    - ``complete``: ``upper`` is a sound bound on the whole domain: the covering finished, or an
      anytime search stopped with every pattern above ``upper`` proven empty. When False, ``upper``
      certifies nothing.
    - ``lower`` is the gradient norm at ``witness`` (input space), a point of the domain; with no
      witness, ``lower`` is 0.
    - ``exact`` (complete, a witness, and upper <= lower (1 + EXACT_RTOL)) is the only case whose
      ``method`` starts with ``"exact:"``; a sound but loose result is renamed ``"cover:..."`` on
      construction, so a method name never claims more than the numbers show.
    """

    upper: float
    lower: float
    witness: Array | None
    complete: bool
    method: str
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.method.startswith("exact:") and not self.exact:
            self.method = "cover:" + self.method[len("exact:"):]

    @property
    def exact(self) -> bool:
        return self.complete and self.witness is not None and self.upper <= self.lower * (1 + EXACT_RTOL)


def _bits(m: int) -> Array:
    return ((np.arange(2**m)[:, None] >> np.arange(m)) & 1).astype(float)


def flat_cost(k: int, r: int, bounded: bool) -> int:
    sizes = range(min(k, r) + 1) if bounded else [min(k, r)]
    return int(sum(math.comb(k, m) * 2**m for m in sizes))


def _verify_pattern(P: Problem, y: Array, pattern: Array) -> bool:
    h = P.W @ y + P.b
    if not np.all(np.where(pattern > 0, h > 0, h < 0)):
        return False
    if P.radius is not None and np.linalg.norm(y - P.center) > P.radius:
        return False
    return True


def flat_enumeration(P: Problem, budget: int = 30_000_000, deadline: float = math.inf, top: int = 64) -> ExactResult | None:
    """Exact max over all cells meeting the domain via vertices / projections onto flats (see module doc).

    For each flat of m hyperplanes (m = r on R^r, every m <= r on a ball) its candidate point is the
    vertex (or the centre's projection, if inside the ball); the cells around it are the 2^m sign
    choices on the flat's hyperplanes. Their maximum is ``upper``; the best candidates are then
    realised by nearby points, the first one realised giving ``lower`` and the witness.
    Returns None when the work exceeds ``budget`` patterns or the deadline passes first.
    """
    k, r = P.k, P.r
    bounded = P.radius is not None
    if r == 0 or k == 0:
        value = math.sqrt(P.perp2 + P.g0 @ P.g0)
        return ExactResult(value, value, P.to_x(P.center), True, "exact:constant")
    if flat_cost(k, r, bounded) > budget:
        return None
    name = "exact:flats" if bounded else "exact:vertices"
    best, cache = _TopCandidates(top), {}
    upper2 = -1.0
    degenerate = 0
    for m in range(r + 1) if bounded else [r]:
        B = _bits(m)
        for S in _flat_subsets(k, r, m):
            if time.perf_counter() > deadline:
                return None
            pts, S = _flat_points(P, S)
            if len(S) == 0:
                continue
            vals2, sig, amb = _flat_values(P, pts, S, B)
            special = _degenerate_points(P, S, sig, amb, vals2, pts, best, cache, budget, deadline)
            if special is None:
                return None
            degenerate += special[1]
            upper2 = max(upper2, special[0], float(vals2.max()))
            best.add(vals2, pts, S, B)
    upper = math.sqrt(max(upper2, 0.0))
    info = {"degenerate_points": degenerate}
    found = _first_witness(P, best.items)
    if found is None:
        return ExactResult(upper, 0.0, None, True, name, info)
    y, value = found
    return ExactResult(upper, value, P.to_x(y), True, name, info)


def _flat_subsets(k: int, r: int, m: int):
    """All m-subsets of the k hyperplanes, as (C, m) index arrays in chunks of bounded work."""
    chunk = max(1, 2_000_000 // (2**m * max(r, k)))
    combos = itertools.combinations(range(k), m)
    while True:
        S = np.array(list(itertools.islice(combos, chunk)), dtype=np.int64)
        if len(S) == 0:
            return
        yield S.reshape(len(S), m)


def _flat_points(P: Problem, S: Array) -> tuple[Array, Array]:
    """The candidate point of each flat S[c]: its vertex on R^r, the centre's projection onto it on a ball.

    Returns (points, subsets) for the flats whose point exists: well conditioned and, on a ball, inside it.
    """
    m = S.shape[1]
    if m == 0:
        return P.center[None, :], S
    WS, bS = P.W[S], P.b[S]  # (C, m, r), (C, m)
    if P.radius is not None:
        gram = WS @ WS.transpose(0, 2, 1)
        ok = np.linalg.cond(gram) < 1e12
        gram[~ok] = np.eye(m)
        rhs = np.einsum("cmr,r->cm", WS, P.center) + bS
        lam = np.linalg.solve(gram, rhs[..., None])[..., 0]
        pts = P.center - np.einsum("cmr,cm->cr", WS, lam)
        ok &= np.linalg.norm(pts - P.center, axis=1) <= P.radius * (1 + 1e-12)
    else:
        ok = np.linalg.cond(WS) < 1e12
        WS = WS.copy()
        WS[~ok] = np.eye(m)
        pts = np.linalg.solve(WS, -bS[..., None])[..., 0]
    return pts[ok], S[ok]


def _flat_values(P: Problem, pts: Array, S: Array, B: Array) -> tuple[Array, Array, Array]:
    """Squared gradient norms (C, 2^m) of the 2^m sign choices ``B`` on each flat's hyperplanes at its point.

    Also returns the signs of every hyperplane at the points (the flat's own set to 0) and ``amb``: the
    other hyperplanes passing through the point (to a relative 1e-9), whose signs are not determined.
    """
    m = S.shape[1]
    wn = np.linalg.norm(P.W, axis=1)
    h = pts @ P.W.T + P.b  # (C, k)
    tol = 1e-9 * (wn * (1 + np.linalg.norm(pts, axis=1, keepdims=True)) + np.abs(P.b))
    amb = np.abs(h) <= tol
    sig = (h > 0).astype(float)
    if m:
        rows = np.arange(len(S))[:, None]
        amb[rows, S] = False
        sig[rows, S] = 0.0
    base = P.g0 + sig @ P.D  # (C, r)
    add = np.einsum("bm,cmr->cbr", B, P.D[S]) if m else np.zeros((len(S), 1, P.D.shape[1]))
    g = base[:, None, :] + add
    return P.perp2 + np.einsum("cbr,cbr->cb", g, g), sig, amb


def _degenerate_points(P: Problem, S: Array, sig: Array, amb: Array, vals2: Array, pts: Array,
                       best: _TopCandidates, cache: dict, budget: int, deadline: float) -> tuple[float, int] | None:
    """Points where hyperplanes beyond the flat's own pass. Their squared values in ``vals2`` are replaced
    by -1 (those sign choices need not be cells) and the point is bounded instead by the exact maximum
    over the cones there (:func:`_cones_at`, when all these hyperplanes meet in one point to ``MERGE_TOL``),
    whose best cone joins the witness candidates, or else by every sign choice (a superset). ``cache``
    keeps each point's answer: without biases, every flat has the same point.

    Returns (max squared value over these points, their number), or None if one is too degenerate to bound.
    """
    upper2, bad = -1.0, np.flatnonzero(amb.any(axis=1))
    wn = np.linalg.norm(P.W, axis=1)
    for i in bad:
        T = np.sort(np.concatenate([S[i], np.flatnonzero(amb[i])]))
        key = (T.tobytes(), sig[i].tobytes())
        if key not in cache:
            # the nearest point to pts[i] where T meet: least squares keeps residuals small even when ill-conditioned
            p = pts[i] - np.linalg.lstsq(P.W[T], P.W[T] @ pts[i] + P.b[T], rcond=None)[0]
            h = P.W[T] @ p + P.b[T]
            through = np.all(np.abs(h) <= MERGE_TOL * (wn[T] * (1 + np.linalg.norm(p)) + np.abs(P.b[T])))
            cones = _cones_at(P, p, T, sig[i] * ~amb[i], budget, deadline) if through else None
            if cones is not None and cones[1] is not None:
                best.push(math.sqrt(cones[0]), p, tuple(T), cones[1], cones[2])
            cache[key] = cones[0] if cones is not None else _superset_value(P, T, sig[i], amb[i])
        if cache[key] is None:
            return None
        upper2 = max(upper2, cache[key])
        vals2[i] = -1.0
    return upper2, len(bad)


def _cones_at(P: Problem, p: Array, T: Array, sig: Array, budget: int, deadline: float):
    """The largest squared gradient norm over the cells around p, where exactly the hyperplanes T pass
    (the others with signs ``sig``): the cones of a central arrangement, solved in the directions y - p.

    Returns (value2, signs on T of the best cone, a direction into it) or (value2, None, None) when no
    cone was realised; None when the work does not fit.
    """
    WT = P.W[T]
    _, sv, Vt = np.linalg.svd(WT, full_matrices=False)
    V = Vt[: int(np.sum(sv > sv[0] * 1e-10))].T  # the cones are products with the lineality space V's complement
    Q = Problem(W=WT @ V, b=np.zeros(len(T)), D=P.D[T], g0=P.g0 + sig @ P.D, perp2=P.perp2, V=V,
                x_offset=np.zeros(P.r), center=np.zeros(V.shape[1]), radius=None, free=T)
    if Q.k <= Q.r:  # independent normals: every sign choice is a cone
        B = _bits(Q.k)
        values = Q.norms(B)
        j = int(np.argmax(values))
        return float(values[j]) ** 2, B[j], V @ np.linalg.lstsq(Q.W, 2 * B[j] - 1, rcond=None)[0]
    if Q.r < 2:  # parallel normals through one point: not merged, but too close to tell apart
        return None
    res = _solve_central(Q, np.zeros(Q.r), budget, deadline)
    if res is None or not res.complete:
        return None
    if res.witness is None:
        return res.upper**2, None, None
    delta = res.witness  # Q.to_x: a direction in P's coordinates
    return res.upper**2, (WT @ delta > 0).astype(float), delta


def _superset_value(P: Problem, T: Array, sig: Array, amb: Array, max_free: int = 18) -> float | None:
    """Max squared norm over every sign of the hyperplanes T through a point (the others with signs ``sig``
    where not ``amb``): a superset of the cells around it; None if more than ``max_free`` meet there."""
    if len(T) > max_free:
        return None
    base = P.g0 + (sig * ~amb) @ P.D
    g = base + _bits(len(T)) @ P.D[T]
    return float(np.max(P.perp2 + np.einsum("ij,ij->i", g, g)))


class _TopCandidates:
    """The ``top`` largest (value, point, hyperplanes, signs, direction or None) seen so far, largest first."""

    def __init__(self, top: int):
        self.top = top
        self.items: list[tuple[float, Array, tuple, Array, Array | None]] = []

    def add(self, vals2: Array, pts: Array, S: Array, B: Array) -> None:
        flat = vals2.reshape(-1)
        n_top = min(self.top, flat.size)
        idx = np.argpartition(-flat, n_top - 1)[:n_top]
        per_point = B.shape[0]
        for j in idx:
            if flat[j] < 0:
                continue
            c, bi = divmod(int(j), per_point)
            self.items.append((math.sqrt(flat[j]), pts[c], tuple(S[c]), B[bi], None))
        self._trim()

    def push(self, value: float, p: Array, T: tuple, beta: Array, delta: Array) -> None:
        self.items.append((value, p, T, beta, delta))
        self._trim()

    def _trim(self) -> None:
        self.items.sort(key=lambda t: -t[0])
        del self.items[self.top:]


def _first_witness(P: Problem, candidates) -> tuple[Array, float] | None:
    """The first candidate realised by a nearby point of its cell: (point y, its gradient norm)."""
    for _value, p, S, beta, delta in candidates:
        y = _witness_near(P, p, list(S), beta, delta)
        if y is None:
            continue
        pattern = (P.W @ y + P.b > 0).astype(float)
        return y, float(P.norms(pattern[None])[0])
    return None


def _witness_near(P: Problem, p: Array, S: list[int], beta: Array, delta: Array | None = None) -> Array | None:
    """A point of the open cell with signs ``beta`` on the hyperplanes S through p (others as at p),
    tried along ``delta`` (default: the least-squares direction giving S the signs beta), else by an LP."""
    target = np.where(P.W @ p + P.b > 0, 1.0, 0.0)
    if S:
        target[S] = beta
        if delta is None:
            delta = np.linalg.lstsq(P.W[S], 2 * beta - 1, rcond=None)[0]
    else:
        delta = np.zeros(P.r)
    h = P.W @ p + P.b
    others = np.ones(P.k, dtype=bool)
    others[S] = False
    slope = P.W @ delta
    with np.errstate(divide="ignore", invalid="ignore"):
        limits = np.abs(h[others]) / np.abs(slope[others])
    eps = 0.5 * float(np.min(limits, initial=np.inf))
    scale = 1.0 + np.linalg.norm(p)
    nd = float(np.linalg.norm(delta))
    if nd > 0:
        eps = min(eps, scale / nd)
        if P.radius is not None:
            room = P.radius - np.linalg.norm(p - P.center)
            eps = min(eps, 0.5 * room / nd) if room > 0 else 0.0
    if not np.isfinite(eps):
        eps = 0.0
    for shrink in (1.0, 0.1, 0.01):
        y = p + shrink * eps * delta
        if _verify_pattern(P, y, target):
            return y
    return _lp_point(P, target)


def _cell_lp(P: Problem, pattern: Array, rows: Array | None = None):
    """max t s.t. every sign constraint of ``pattern`` holds with margin t (box around a ball domain).

    Returns (t*, y*, core): core = the constraint rows with nonzero duals (an infeasible subsystem if t* < 0).
    """
    rows = np.arange(P.k) if rows is None else rows
    s = np.where(pattern[rows] > 0, 1.0, -1.0)
    Wr = P.W[rows]
    wn = np.linalg.norm(Wr, axis=1)
    A = np.hstack([-s[:, None] * Wr / wn[:, None], np.ones((len(rows), 1))])
    ub = s * P.b[rows] / wn
    scale = 1.0 + float(np.max(np.abs(P.b / np.linalg.norm(P.W, axis=1)), initial=0.0))
    if P.radius is not None:
        bounds = [(ci - P.radius, ci + P.radius) for ci in P.center] + [(None, P.radius)]
    else:
        bounds = [(None, None)] * P.r + [(None, scale)]
    c = np.zeros(P.r + 1)
    c[-1] = -1.0
    res = linprog(c, A_ub=A, b_ub=ub, bounds=bounds, method="highs")
    if res.status != 0:
        return None, None, None
    marg = np.abs(res.ineqlin.marginals)
    core = rows[marg > 1e-9 * max(marg.max(initial=0.0), 1e-300)]
    return -res.fun, res.x[:-1], core


def _ldp(P: Problem, pattern: Array, margin: float):
    """Nearest point to the centre of {y: sign constraints hold with ``margin``} (Lawson-Hanson LDP via NNLS).

    Returns (distance, point, support) or (inf, None, support) when infeasible.
    """
    s = np.where(pattern > 0, 1.0, -1.0)
    wn = np.linalg.norm(P.W, axis=1)
    G = s[:, None] * P.W / wn[:, None]
    h = margin - s * (P.W @ P.center + P.b) / wn
    E = np.vstack([G.T, h[None, :]])
    f = np.zeros(P.r + 1)
    f[-1] = 1.0
    u, _ = nnls(E, f, maxiter=50 * (P.k + P.r + 10))
    resid = E @ u - f
    support = np.flatnonzero(u > 1e-12)
    if abs(resid[-1]) < 1e-12:
        return math.inf, None, support
    z = -resid[:-1] / resid[-1]
    return float(np.linalg.norm(z)), P.center + z, support


def _lp_point(P: Problem, pattern: Array) -> Array | None:
    t, y, _ = _cell_lp(P, pattern)
    if t is None or t <= 0:
        return None
    if P.radius is not None:
        dist, y2, _ = _ldp(P, pattern, min(t / 2, 1e-6 * (1 + P.radius)))
        if y2 is None or dist > P.radius * (1 - 1e-12):
            return None
        y = y2
    return y if _verify_pattern(P, y, pattern) else None


def classify_cell(P: Problem, pattern: Array, tol: float = 1e-9):
    """('realizable', y) | ('empty', core) | ('unknown', None) for the open cell of ``pattern`` in the domain."""
    t, y, core = _cell_lp(P, pattern)
    if t is None:
        return "unknown", None
    scale = 1.0 + (P.radius or 0.0) + float(np.linalg.norm(P.center))
    if t < -tol * scale:
        # re-check the subsystem the duals name before using it to discard other patterns
        if len(core) < P.k:
            t2, _, _ = _cell_lp(P, pattern, core)
            if t2 is None or t2 >= -tol * scale:
                core = np.arange(P.k)
        return "empty", core
    if t <= tol * scale:
        return "unknown", None
    if P.radius is None:
        return ("realizable", y) if _verify_pattern(P, y, pattern) else ("unknown", None)
    dist, y2, _ = _ldp(P, pattern, min(t / 2, 1e-6 * scale))
    if y2 is not None and dist <= P.radius * (1 - 1e-12) and _verify_pattern(P, y2, pattern):
        return "realizable", y2
    dist0, _, support = _ldp(P, pattern, 0.0)
    if dist0 > P.radius * (1 + 1e-9):
        return "empty", support if len(support) else np.arange(P.k)
    return "unknown", None


def pattern_values(P: Problem, codes: Array) -> Array:
    """||grad|| for patterns given as integer bit codes (bit j = neuron j)."""
    Q = P.D @ P.D.T
    lin = 2 * (P.D @ P.g0)
    const = P.perp2 + P.g0 @ P.g0
    out = np.empty(len(codes))
    shifts = np.arange(P.k, dtype=np.uint32)
    for s in range(0, len(codes), 1 << 16):
        bits = ((codes[s:s + (1 << 16), None] >> shifts) & 1).astype(float)
        out[s:s + len(bits)] = const + bits @ lin + np.einsum("ij,ij->i", bits @ Q, bits)
    return np.sqrt(np.maximum(out, 0.0))


def sorted_patterns(P: Problem, deadline: float = math.inf, max_k: int = 22) -> ExactResult | None:
    """All 2^k patterns by decreasing gradient norm; the first whose cell is not proven empty is the max.

    Anytime: when the deadline passes, every pattern above the first one not yet proven empty is
    empty, so that pattern's value is a sound ``upper`` (``complete`` True, method "patterns:partial",
    lower the best witnessed value so far, 0 without a witness). Patterns whose cells the LPs can
    neither prove empty nor realise stay in ``upper``, so the result is exact only when the first
    pattern not proven empty was realised.
    """
    k = P.k
    if k > max_k:
        return None
    if k == 0 or P.r == 0:
        value = math.sqrt(P.perp2 + P.g0 @ P.g0)
        return ExactResult(value, value, P.to_x(P.center), True, "exact:constant")
    codes = np.arange(2**k, dtype=np.uint32)
    values = pattern_values(P, codes)
    order = np.argsort(-values, kind="stable")
    codes_s, values_s = codes[order], values[order]
    del codes, values, order
    alive = np.ones(len(codes_s), dtype=bool)
    shifts = np.arange(k, dtype=np.uint32)
    upper = None
    pos, lps = 0, 0
    witness, lower = None, 0.0
    while pos < len(codes_s):
        nxt = int(np.argmax(alive[pos:]))
        if not alive[pos + nxt]:
            break
        pos += nxt
        if time.perf_counter() > deadline:
            upper = upper if upper is not None else float(values_s[pos])
            return ExactResult(upper, lower, witness, True, "patterns:partial", {"lps": lps})
        pattern = ((codes_s[pos] >> shifts) & 1).astype(float)
        status, obj = classify_cell(P, pattern)
        lps += 1
        if status == "empty":
            mask = np.uint32(np.bitwise_or.reduce(np.uint32(1) << obj.astype(np.uint32)))
            bits = np.uint32(np.bitwise_or.reduce(np.uint32(codes_s[pos]) & (np.uint32(1) << obj.astype(np.uint32))))
            alive[pos:] &= (codes_s[pos:] & mask) != bits
            alive[pos] = False
            continue
        if upper is None:
            upper = float(values_s[pos])
        if status == "realizable":
            witness, lower = P.to_x(obj), float(values_s[pos])
            break
        pos += 1
    if upper is None:  # every cell empty: cannot happen for a nonempty domain; be safe
        return None
    return ExactResult(upper * (1 + 1e-12), lower, witness, True, "exact:patterns", {"lps": lps})


def common_point(P: Problem, tol: float = MERGE_TOL) -> Array | None:
    """The point every free hyperplane passes through (to ``tol`` relative), if there is one and more
    hyperplanes than dimensions meet there (a central arrangement, e.g. a net without biases)."""
    if P.k <= P.r or P.r < 2:
        return None
    p0 = np.linalg.lstsq(P.W, -P.b, rcond=None)[0]
    slack = np.abs(P.W @ p0 + P.b)
    if np.all(slack <= tol * (np.linalg.norm(P.W, axis=1) * (1 + np.linalg.norm(p0)) + np.abs(P.b))):
        return p0
    return None


def central_slices(P: Problem, p0: Array) -> list[Problem]:
    """The cells of an arrangement through p0 are cones at p0, and every open cone meets one of the two
    parallel affine planes {<v, y - p0> = +1} and {= -1}: the problems on those two planes (r - 1
    dimensions, general position again, gradients unchanged) have between them every cell's pattern.
    Their ``to_x`` returns points of P's reduced space (not input points)."""
    v = np.random.default_rng(0).standard_normal(P.r)
    v /= np.linalg.norm(v)
    U = np.linalg.svd(np.eye(P.r) - np.outer(v, v))[0][:, : P.r - 1]  # orthonormal basis of v's complement
    out = []
    for side in (1.0, -1.0):
        origin = p0 + side * v
        out.append(Problem(W=P.W @ U, b=side * (P.W @ v), D=P.D, g0=P.g0, perp2=P.perp2, V=U, x_offset=origin,
                           center=np.zeros(P.r - 1), radius=None, free=P.free, groups=P.groups, sides=P.sides,
                           merged=P.merged))
    return out


def _solve(P: Problem, budget: int, deadline: float) -> ExactResult | None:
    """The cheaper covering method for P (flats or sorted patterns) that is exact, else the tightest
    sound result of those that fit; None if neither fits."""
    choices = []
    cost = flat_cost(P.k, P.r, P.radius is not None)
    if cost <= budget:
        choices.append((cost, "flats"))
    if P.k <= 22:
        # expected LP count is small when most patterns are realizable; the enumeration itself is 2^k
        frac = sum(math.comb(P.k, i) for i in range(min(P.r, P.k) + 1)) / 2**P.k
        choices.append((2**P.k * 4 + 2000 / max(frac, 1e-6), "patterns"))
    found = []
    for _, how in sorted(choices):
        result = flat_enumeration(P, budget, deadline) if how == "flats" else sorted_patterns(P, deadline)
        if result is not None and result.exact:
            return result
        if result is not None and result.complete:
            found.append(result)
    return min(found, key=lambda res: res.upper, default=None)


def _solve_central(P: Problem, p0: Array, budget: int, deadline: float) -> ExactResult | None:
    """The maximum over the cones at p0 (p0 inside the domain, so every cone meets it), from the two
    slices; the best slice witness is pulled towards p0 along its ray until it lies in the domain."""
    results = [_solve(Q, budget, deadline) for Q in central_slices(P, p0)]
    if any(res is None for res in results):
        return None
    upper = max(res.upper for res in results)
    info = {"central": True, "slices": [res.method for res in results]}
    best = max(results, key=lambda res: res.lower if res.witness is not None else -1.0)
    complete = all(res.complete for res in results)
    name = "exact:central-" + best.method.split(":")[-1]
    if best.witness is not None:
        y = best.witness
        room = math.inf if P.radius is None else 0.5 * (P.radius - np.linalg.norm(p0 - P.center))
        step = y - p0
        y = p0 + min(1.0, room / np.linalg.norm(step)) * step
        pattern = (P.W @ y + P.b > 0).astype(float)
        if _verify_pattern(P, y, pattern):
            return ExactResult(upper, float(P.norms(pattern[None])[0]), P.to_x(y), complete, name, info)
    return ExactResult(upper, 0.0, None, complete, name, info)


def exact_two_layer(net: Net, center: Array | None = None, radius: float | None = None,
                    deadline: float = math.inf, budget: int = 30_000_000) -> ExactResult | None:
    """The exact Lipschitz constant of a two-layer ReLU/LeakyReLU net on R^d (radius None) or a ball,
    by whichever covering method is cheaper; None if neither fits the budget.

    When every hyperplane passes through one point of the domain's interior (e.g. no biases), the
    vertices are all that point: the cones there are covered on two slices instead (:func:`central_slices`).
    """
    P = two_layer_problem(net, center, radius)
    p0 = common_point(P)
    if p0 is not None and (radius is None or np.linalg.norm(p0 - P.center) < radius * (1 - 1e-9)):
        result = _solve_central(P, p0, budget, deadline)
    else:
        result = _solve(P, budget, deadline)
    if result is not None:
        result.info.update(free=P.k, rank=P.r, merged=P.merged)
    return result


def may_cover(net: Net, budget: int = 30_000_000) -> bool:
    """Whether the patterns of ``net`` may be coverable at all, judged without reducing the problem: few
    neurons (sorted patterns), or few enough flats even at the largest possible rank min(k, d)."""
    k = net.widths[0]
    return k <= 22 or flat_cost(k, min(k, net.d), False) <= budget
