"""The exact Lipschitz constant of a linearised (NTK) two-layer ReLU net on a ball or on R^d.

f(x) = sum_j 1[w0_j . x + b0_j > 0] (u_j . x + c_j) (robustlaw.linearised.LinearisedTwoLayer) jumps by
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
"""

from __future__ import annotations

import math

import numpy as np

from robustlaw.activations import RELU
from robustlaw.linearised import LinearisedTwoLayer
from robustlaw.lipschitz.domain import Ball, Domain, Global
from robustlaw.lipschitz.methods import EXACT, METHODS, Bound, Budget, Problem
from robustlaw.lipschitz.network import Net

#: a jump is certified when it exceeds this multiple of the size of the terms it is computed from
JUMP_TOLERANCE = 1e-8


def crossing(W0: np.ndarray, b0: np.ndarray, domain: Domain) -> tuple[np.ndarray, np.ndarray]:
    """Which initial hyperplanes meet the domain (a closed ball or R^d), and each one's point nearest the
    ball's centre (the foot of the perpendicular, inside the domain when the hyperplane meets it)."""
    d = W0.shape[1]
    centre, radius = domain.bounding_ball(d) or (np.zeros(d), math.inf)
    norms = np.linalg.norm(W0, axis=1)
    level = W0 @ centre + b0
    meets = (norms > 0) & (np.abs(level) <= radius * norms)
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
    meets, feet = crossing(W0, b0, domain)
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
        return isinstance(problem.model, LinearisedTwoLayer) and isinstance(problem.domain, (Ball, Global))

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


METHODS.register(LinearisedExact.name, LinearisedExact())
