"""Certificates that see the structure of a network or of a construction, registered as Lipschitz methods.

They come with the papers' explicit interpolators (robustlaw.constructions) but apply to any model of the
right shape, found through the registry (:data:`robustlaw.lipschitz.methods.METHODS`):

- ``cap-overlap`` and ``active-count``: two-layer ReLU nets on a bounded domain whose neurons are
  rarely active together (BLN20's caps, arXiv:2009.14444, Sections 3.2-3.3);
- ``quadratic-form`` / ``polynomial``: two-layer nets with activation t^q and no hidden bias (BLN20
  Section 3.4's tensor interpolation);
- ``disjoint-bumps``: sums of disjoint cone bumps after a fixed linear map (one radial function per
  point, and BS21's projection construction, arXiv:2105.12806);
- ``mcshane``: the McShane extension, whose constant is exactly the interpolation floor.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from robustlaw.activations import Poly, ReLU
from robustlaw.constructions import BumpSum, McShane
from robustlaw.lipschitz.domain import Domain
from robustlaw.lipschitz.methods import METHODS, STRUCTURE, Bound, Budget, Effort, Problem, UpperCertificate
from robustlaw.lipschitz.network import Net

#: Certificates are computed in float64: multiply by (1 + this) so rounding cannot make them unsound.
CERT_SLACK = 1e-9
#: Grid of lambda in [0, 1] for the pairwise cap-overlap test (any grid is sound; finer is tighter).
OVERLAP_GRID = 129
#: The pairwise cap-overlap test is O(k^2 OVERLAP_GRID): skipped above this many neurons.
OVERLAP_MAX_NEURONS = 2000


def overlap_bound(W: np.ndarray, b: np.ndarray, a: np.ndarray, domain: Domain) -> float:
    """A sound Lipschitz bound for x -> a . relu(W x + b) on ``domain`` that sees disjoint caps.

    At any point the active neurons S pairwise co-activate inside the domain's bounding ball B, so
    S lies in the closed neighbourhood N[j] of any j in S of the graph "j, l both active somewhere
    in B", and ||sum_S a_l w_l|| <= max_j sum_{l in N[j]} |a_l| ||w_l||. Two half-spaces
    {g_j > 0}, {g_l > 0} (g = signed distance) meet in B only if min_lambda [lambda g_j(c) +
    (1 - lambda) g_l(c) + r ||lambda u_j + (1 - lambda) u_l||] > 0 (minimax over the ball); a grid
    value <= 0 proves them disjoint, so the test errs only towards "overlap" (sound). On R^d it
    is the path norm sum_j |a_j| ||w_j||. Disjoint caps give max_j |a_j| ||w_j||, the exact value.
    On a sphere each ||w_l|| is replaced by the bound on its tangential part where the neuron is on
    (:meth:`Domain.active_tangent_factor`), so a thin cap counts its rim's slope, not its normal's.
    """
    norms = np.linalg.norm(W, axis=1)
    weight = np.abs(a) * norms * domain.active_tangent_factor(W, b)  # on a sphere: the tangential part only
    ball = domain.bounding_ball(W.shape[1])
    if ball is None:
        return float(weight.sum())
    c, r = ball
    live = (norms > 0) & (weight > 0)
    u = W[live] / norms[live, None]
    g = (W[live] @ c + b[live]) / norms[live]
    live_idx = np.flatnonzero(live)
    reach = g + r > 0  # the neuron is active somewhere in the ball
    u, g, live_idx = u[reach], g[reach], live_idx[reach]
    if len(live_idx) == 0:
        return 0.0
    rho = np.clip(u @ u.T, -1.0, 1.0)
    smallest = np.full(rho.shape, np.inf)
    tol = CERT_SLACK * (1.0 + r + np.abs(g).max())
    for lam in np.linspace(0.0, 1.0, OVERLAP_GRID):
        norm = np.sqrt(np.clip(lam**2 + (1 - lam) ** 2 + 2 * lam * (1 - lam) * rho, 0.0, None))
        np.minimum(smallest, lam * g[:, None] + (1 - lam) * g[None, :] + r * norm, out=smallest)
    overlap = smallest > -tol
    np.fill_diagonal(overlap, True)
    w = weight[live_idx]
    return float((overlap @ w).max())


def active_count_bound(W: np.ndarray, b: np.ndarray, a: np.ndarray, domain: Domain) -> float:
    """A sound Lipschitz bound for x -> a . relu(W x + b) on ``domain`` that counts how many caps
    can be active at once.

    On the bounding ball B(c, r), write t_j = -(w_j . c + b_j) (how far c is outside cap j). If the
    neurons S are all active at some x in B, summing their pre-activations gives
    r ||sum_S w_j|| > sum_S t_j, and ||sum_S w_j||^2 <= lambda |S| with lambda = lambda_max(W W^T)
    (interlacing), so |S| < r^2 lambda / t_min^2 =: s when every t_j >= t_min > 0. Then
    ||grad|| = ||W_S^T a_S|| <= sqrt(lambda) ||a_S|| <= sqrt(lambda) (sum of the s largest a_j^2)^(1/2);
    the same argument with Gershgorin's bound (largest diagonal and off-diagonal Gram entries) in
    place of lambda gives a second count, and the smaller result is kept. Neurons with t_j <= 0
    (c inside their cap) are added by the triangle inequality. For caps of m nearly orthogonal
    points (BLN20 3.3) this is O(m) times the per-cap slope. inf on R^d.
    """
    ball = domain.bounding_ball(W.shape[1])
    if ball is None:
        return float("inf")
    c, r = ball
    norms = np.linalg.norm(W, axis=1)
    t = -(W @ c + b)
    live = (np.abs(a) > 0) & (norms > 0) & (t < r * norms)  # neurons that can be active in the ball
    inside = live & (t <= 0)
    outside = live & (t > 0)
    value = float(np.sum(np.abs(a[inside]) * norms[inside]))
    if outside.any():
        value += _outside_caps_bound(W[outside], a[outside], t[outside], r)
    return value


def _outside_caps_bound(W: np.ndarray, a: np.ndarray, t: np.ndarray, r: float) -> float:
    """max ||W_S^T a_S|| over sets S of caps co-active in a ball of radius r, all caps at distance
    t_j > 0 outside its centre: the min of a spectral and a Gershgorin (diagonal + off-diagonal) count."""
    G = W @ W.T
    t2 = float(t.min()) ** 2
    lam = float(np.linalg.eigvalsh(G)[-1])
    count = min(len(a), math.floor(r**2 * lam / t2))
    spectral = math.sqrt(lam * float(np.sort(a**2)[::-1][:max(count, 1)].sum()))
    # ||sum_S w_j||^2 <= |S| g_diag + |S| (|S| - 1) g_off, so |S| (t^2 - r^2 g_off) < r^2 (g_diag - g_off)
    off = np.abs(G - np.diag(np.diag(G)))
    g_diag, g_off = float(np.diag(G).max()), float(off.max()) if len(a) > 1 else 0.0
    if t2 <= r**2 * g_off:
        return spectral
    count = min(len(a), math.floor(r**2 * (g_diag - g_off) / (t2 - r**2 * g_off)))
    count = max(count, 1)
    A = np.abs(a[:, None] * a[None, :]) * np.abs(G)
    a_off = float((A - np.diag(np.diag(A))).max()) if len(a) > 1 else 0.0
    gershgorin = math.sqrt(count * float(np.diag(A).max()) + count * (count - 1) * a_off)
    return min(spectral, gershgorin)


def _relu_two_layer(net: Net) -> bool:
    return net.depth == 2 and isinstance(net.acts[0], ReLU)


def _caps_on(bound, limit: int | None = None):
    """An UpperCertificate function from a (W, b, a, domain) cap bound."""
    def fn(net: Net, domain: Domain, effort: Effort) -> float:
        if limit is not None and net.widths[0] > limit:
            return math.inf
        return bound(net.weights[0], net.biases[0], net.weights[1][0], domain)
    return fn


def polynomial_bound(net: Net, domain: Domain) -> float:
    """Lip of f(x) = sum_j a_j <w_j, x>^q (no hidden bias) on the bounding ball ||x|| <= R of the domain:
    q = 2: exactly 2 R ||M||_op with M = sum_j a_j w_j w_j^T (grad f = 2 M x); q = 1: ||W^T a||;
    q > 2: q ||W||_op ||(a_j (R ||w_j||)^{q-1})_j||_2 (Cauchy-Schwarz); inf on R^d for q >= 2."""
    W, a, q = net.weights[0], net.weights[1][0], net.acts[0].q
    if q == 1:
        return float(np.linalg.norm(W.T @ a))
    ball = domain.bounding_ball(W.shape[1])
    if ball is None:
        return math.inf
    R = float(np.linalg.norm(ball[0]) + ball[1])
    if q == 2:
        return 2 * R * float(np.linalg.norm((W.T * a) @ W, 2))
    t = R * np.linalg.norm(W, axis=1)
    return q * float(np.linalg.norm(W, 2)) * float(np.linalg.norm(a * t ** (q - 1)))


def _polynomial_net(net: Net) -> bool:
    return net.depth == 2 and isinstance(net.acts[0], Poly) and not np.any(net.biases[0])


class ModelCertificate:
    """A certificate for one class of model that is not a plain network: ``fn(model) -> float``,
    valid on all of R^d (hence on every domain)."""

    side, stage = "upper", STRUCTURE

    def __init__(self, name: str, model_type: type, fn):
        self.name, self.model_type, self.fn = name, model_type, fn

    def applies(self, problem: Problem) -> bool:
        return isinstance(problem.model, self.model_type)

    def run(self, problem: Problem, budget: Budget) -> list[Bound]:
        return [Bound("upper", self.fn(problem.model) * (1 + CERT_SLACK), self.name)]


def bumps_bound(model: BumpSum) -> float:
    """||A||_op max|h_i| / r: disjoint bumps of radius r after the map A (BumpSum's docstring has the proof)."""
    op = 1.0 if model.A is None else float(torch.linalg.matrix_norm(model.A, ord=2))
    return op * float(model.heights.abs().max()) / float(model.radius)


METHODS.register("cap-overlap", UpperCertificate("cap-overlap", _caps_on(overlap_bound, OVERLAP_MAX_NEURONS), _relu_two_layer,
                                                     stage=STRUCTURE))
METHODS.register("active-count", UpperCertificate("active-count", _caps_on(active_count_bound), _relu_two_layer,
                                                       stage=STRUCTURE))
METHODS.register("quadratic-form", UpperCertificate(
    "quadratic-form", lambda net, domain, effort: polynomial_bound(net, domain), _polynomial_net, stage=STRUCTURE))
METHODS.register("disjoint-bumps", ModelCertificate("disjoint-bumps", BumpSum, bumps_bound))
METHODS.register("mcshane", ModelCertificate("mcshane", McShane, lambda model: float(model.lip)))
