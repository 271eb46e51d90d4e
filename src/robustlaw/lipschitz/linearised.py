"""The exact Lipschitz constant of a linearised (NTK) two-layer net (robustlaw.linearised) on a ball.

``ntk-exact``, ReLU (on a ball or on R^d): f(x) = sum_j 1[w0_j . x + b0_j > 0] (u_j . x + c_j)
(robustlaw.linearised.LinearisedTwoLayer) jumps by
u_j . p + c_j at a point p of initial hyperplane j. Where the domain holds such a point with a jump
that float64 rounding cannot explain, f is discontinuous there and its Lipschitz constant on the
domain is infinite: the method returns lower = upper = inf, with p as the witness (a jump point, not
a gradient: :func:`robustlaw.testing.check_lower_bound` verifies that the chord slopes at an infinite
witness grow like 1 / length). Where every hyperplane crossing the domain belongs to an unmoved neuron
(w_j = w0_j, b_j = b0_j: only a_j trained, as at initialisation or for random features), f equals on
the domain the two-layer ReLU net with those neurons (output weights a_j) plus the affine part of the
neurons active on the whole domain (written exactly as relu(t) - relu(-t)); that net is certified by
the whole fold (:func:`robustlaw.certify`), the exact two-layer engine first. Otherwise (jumps too small
to tell from rounding) the method claims nothing.

``ntk-quadratic``, t^2: f is a quadratic polynomial, grad f(x) = A x + g with A symmetric, so on the
ball B(c, R) Lip = max_{||y|| <= R} ||h + A y|| with h = A c + g: a trust-region problem solved in
A's eigenbasis (A = V diag(mu) V^T, h~ = V^T h). Every lambda > max mu^2 gives the Lagrangian upper
bound max ||h + A y||^2 <= lambda R^2 + sum_i h~_i^2 lambda / (lambda - mu_i^2) (each coordinate
maximised separately), minimised over lambda; the maximiser it points to (completed along the top
eigenvector in the hard case) is the witness. On R^d the constant is infinite unless A = 0.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.optimize

from robustlaw.activations import RELU
from robustlaw.linearised import LinearisedTwoLayer
from robustlaw.lipschitz.domain import Ball, Domain, Global
from robustlaw.lipschitz.methods import EXACT, METHODS, Bound, Budget, Problem
from robustlaw.lipschitz.network import Net

#: a jump is certified when it exceeds this multiple of the size of the terms it is computed from
JUMP_TOLERANCE = 1e-8


def crossing(W0: np.ndarray, b0: np.ndarray, domain: Domain, strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Which initial hyperplanes meet the domain (a closed ball or R^d; ``strict``: cut through its
    interior, so that both sides hold points of the domain), and each one's point nearest the ball's
    centre (the foot of the perpendicular, in the domain when the hyperplane meets it)."""
    d = W0.shape[1]
    centre, radius = domain.bounding_ball(d) or (np.zeros(d), math.inf)
    norms = np.linalg.norm(W0, axis=1)
    level = W0 @ centre + b0
    meets = (norms > 0) & ((np.abs(level) < radius * norms) if strict else (np.abs(level) <= radius * norms))
    feet = centre - (level / np.where(norms > 0, norms**2, 1.0))[:, None] * W0
    return meets, feet


def rewrite(model: LinearisedTwoLayer, domain: Domain) -> Net | None:
    """The two-layer ReLU net equal to ``model`` on ``domain`` (module docstring), or None if a moved
    neuron's hyperplane meets the domain."""
    W0, b0, a0, W, b, a = (t.detach().numpy() for t in (model.W0, model.b0, model.a0, model.W, model.b, model.a))
    meets, _ = crossing(W0, b0, domain)
    moved = (W != W0).any(axis=1) | (b != b0)
    if (meets & moved).any():
        return None
    U, c = (t.detach().numpy() for t in model.pieces())
    centre = (domain.bounding_ball(W0.shape[1]) or (np.zeros(W0.shape[1]), 0))[0]
    always = ~meets & (W0 @ centre + b0 > 0)
    v, s = U[always].sum(axis=0), float(c[always].sum())
    hidden = np.vstack([W0[meets], v, -v])
    bias = np.concatenate([b0[meets], [s, -s]])
    out = np.concatenate([a[meets], [1.0, -1.0]])[None]
    return Net((hidden, out), (bias, np.zeros(1)), (RELU,))


def largest_jump(model: LinearisedTwoLayer, domain: Domain) -> tuple[float, np.ndarray] | None:
    """(jump, point) for the certified jump of largest size on the domain, or None if there is none."""
    W0, b0 = model.W0.numpy(), model.b0.numpy()
    meets, feet = crossing(W0, b0, domain, strict=True)  # a hyperplane only touching the ball may not jump
    U, c = (t.detach().numpy() for t in model.pieces())
    jumps = np.einsum("jd,jd->j", U, feet) + c
    scale = np.abs(U * feet).sum(axis=1) + np.abs(c)
    certified = meets & (np.abs(jumps) > JUMP_TOLERANCE * scale) & (np.abs(jumps) > 0)
    if not certified.any():
        return None
    j = int(np.argmax(np.where(certified, np.abs(jumps), -1.0)))
    return float(abs(jumps[j])), feet[j]


class LinearisedExact:
    """See the module docstring."""

    name, side, stage = "ntk-exact", "exact", EXACT

    def applies(self, problem: Problem) -> bool:
        model = problem.model
        return isinstance(model, LinearisedTwoLayer) and model.q == 1 and isinstance(problem.domain, (Ball, Global))

    def run(self, problem: Problem, budget: Budget) -> list[Bound]:
        from robustlaw.lipschitz.bracket import certify

        jump = largest_jump(problem.model, problem.domain)
        if jump is not None:
            problem.details["ntk_jump"] = jump[0]
            return [Bound("lower", math.inf, "ntk-jump", witness=jump[1]), Bound("upper", math.inf, "ntk-jump")]
        net = rewrite(problem.model, problem.domain)
        if net is None:
            return []
        methods = [m for m in problem.enabled if m != self.name] or None
        inner = certify(net, problem.domain, problem.X, problem.y, seed=problem.seed, threads=None, methods=methods,
                        time_limit=None if budget.fixed else max(budget.left(), 0.1))
        return [Bound("lower", inner.lower, f"ntk-exact:{inner.lower_method}", witness=inner.witness),
                Bound("upper", inner.upper, f"ntk-exact:{inner.upper_method}")]


def gradient_map(model: LinearisedTwoLayer) -> tuple[np.ndarray, np.ndarray]:
    """(A, g) with grad f(x) = A x + g for a t^2 model: A = 2 (W0^T diag(a) W0 + W0^T diag(a0) dW + dW^T diag(a0) W0),
    g = 2 (W0^T (a b0 + a0 db) + dW^T (a0 b0))."""
    W0, b0, a0, W, b, a = (t.detach().numpy() for t in (model.W0, model.b0, model.a0, model.W, model.b, model.a))
    dW, db = W - W0, b - b0
    cross = W0.T @ (a0[:, None] * dW)
    A = 2 * (W0.T @ (a[:, None] * W0) + cross + cross.T)
    g = 2 * (W0.T @ (a * b0 + a0 * db) + dW.T @ (a0 * b0))
    return (A + A.T) / 2, g


def quadratic_bracket(A: np.ndarray, g: np.ndarray, centre: np.ndarray, radius: float) -> tuple[float, float, np.ndarray]:
    """(lower, upper, witness) for max_{||x - centre|| <= radius} ||A x + g|| (module docstring)."""
    mu, V = np.linalg.eigh(A)
    h = V.T @ (A @ centre + g)
    top = float(np.max(mu**2))
    if top == 0:
        return float(np.linalg.norm(h)), float(np.linalg.norm(h)) * (1 + 1e-9), centre

    def dual(log_gap: float) -> float:
        lam = top + math.exp(log_gap)
        return lam * radius**2 + float((h**2 * lam / (lam - mu**2)).sum())

    scale = top + float(h @ h) / radius**2
    best = scipy.optimize.minimize_scalar(dual, bounds=(math.log(scale * 1e-14), math.log(scale * 1e8)),
                                          method="bounded", options={"xatol": 1e-10})
    lam = top + math.exp(best.x)
    upper = math.sqrt(min(dual(best.x), dual(math.log(scale * 1e8)))) * (1 + 1e-9)
    y = mu * h / (lam - mu**2)
    norm = np.linalg.norm(y)
    lead = np.argmax(mu**2)
    along = np.zeros_like(h)
    along[lead] = 1.0
    candidates = [y * radius / norm if norm > 0 else y, radius * along, -radius * along]
    if norm < radius:  # the hard case: complete y along the top eigenvector to the sphere (||y + t e|| = R)
        root = math.sqrt(y[lead] ** 2 + radius**2 - norm**2)
        candidates += [y + (root - y[lead]) * along, y - (root + y[lead]) * along]
    values = [float(np.linalg.norm(h + mu * c)) for c in candidates]
    i = int(np.argmax(values))
    return values[i], max(upper, values[i]), centre + V @ candidates[i]


class LinearisedQuadratic:
    """See the module docstring."""

    name, side, stage = "ntk-quadratic", "exact", EXACT

    def applies(self, problem: Problem) -> bool:
        model = problem.model
        return isinstance(model, LinearisedTwoLayer) and model.q == 2 and isinstance(problem.domain, (Ball, Global))

    def run(self, problem: Problem, budget: Budget) -> list[Bound]:
        A, g = gradient_map(problem.model)
        d = len(g)
        ball = problem.domain.bounding_ball(d)
        if ball is None:
            if np.any(A != 0):
                return []  # unbounded on R^d; the searches report what they find
            return [Bound("lower", float(np.linalg.norm(g)), self.name, witness=np.zeros(d)),
                    Bound("upper", float(np.linalg.norm(g)) * (1 + 1e-9), self.name)]
        low, up, witness = quadratic_bracket(A, g, *ball)
        return [Bound("lower", low, self.name, witness=witness), Bound("upper", up, self.name)]


METHODS.register(LinearisedExact.name, LinearisedExact())
METHODS.register(LinearisedQuadratic.name, LinearisedQuadratic())
