"""Lower bounds on the Lipschitz constant: gradient norms attained at points of the domain.

Random points miss the action (a random sphere point lies outside every cap of BLN20's
construction) and ReLU gradients are piecewise constant (plain ascent on ||grad f|| stalls), so
the search looks where the function must change: at and around the data, on segments between
points of opposite labels, and by ascent on a smoothed copy of the network whose candidate
points are then scored with the exact gradient. Every value returned is the norm of the true
gradient at a returned point of the domain, so it is a lower bound on the Lipschitz constant.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robustlaw.activations import activation_of
from robustlaw.lipschitz.domain import Domain, Global
from robustlaw.lipschitz.network import Net
from robustlaw.seeding import stream


GLOBAL = Global()


@dataclass(frozen=True)
class LowerBound:
    value: float
    witness: np.ndarray
    method: str


def gradient_norms(model: nn.Module, points: torch.Tensor, domain: Domain = GLOBAL) -> torch.Tensor:
    """||grad f(x)|| (tangential on a sphere domain) at each row of ``points``; autograd, no smoothing."""
    x = points.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    return domain.tangential(x.detach(), grad).norm(dim=-1)


def smoothed(model: nn.Module, beta: float) -> nn.Module:
    """A copy of ``model`` with every piecewise-linear activation replaced by its smooth surrogate
    (softplus(beta t) / beta for a ReLU)."""
    clone = copy.deepcopy(model)
    for name, module in clone.named_children():
        act = activation_of(module)
        if act is not None and act.piecewise_linear:
            setattr(clone, name, act.smoothed(beta))
    return clone


def _candidates(X: np.ndarray | None, y: np.ndarray | None, domain: Domain, d: int, rng: np.random.Generator,
                count: int, dtype: torch.dtype, layer: tuple[np.ndarray, np.ndarray] | None = None
                ) -> dict[str, torch.Tensor]:
    """Starting points by provenance: data, jittered data, segments between data, random domain points, and
    (given the first ``layer``'s weights and biases, on a bounded domain) the neurons' caps."""
    groups: dict[str, np.ndarray] = {}
    scale = domain.search_scale(d)
    if X is not None and len(X):
        n = len(X)
        groups["data"] = X
        jitter = X[rng.integers(n, size=count)]
        radii = scale * rng.choice([0.01, 0.03, 0.1, 0.3], size=(count, 1))
        groups["near-data"] = jitter + radii * rng.standard_normal((count, d)) / np.sqrt(d)
        i, j = rng.integers(n, size=count), rng.integers(n, size=count)
        if y is not None:
            # prefer pairs whose labels differ: the function must change between them
            differ = y[i] != y[j]
            j = np.where(differ, j, rng.integers(n, size=count))
        t = rng.uniform(size=(count, 1))
        groups["between-data"] = t * X[i] + (1 - t) * X[j]
    groups["random"] = domain.random_points(rng, count, d)
    caps = neuron_caps(*layer, domain, rng, count) if layer is not None and domain.bounding_ball(d) is not None else []
    if len(caps):
        groups["neuron-caps"] = caps
    return {name: domain.project(torch.as_tensor(v, dtype=dtype)) for name, v in groups.items()}


def neuron_caps(W: np.ndarray, b: np.ndarray, domain: Domain, rng: np.random.Generator, count: int) -> np.ndarray:
    """Points where first-layer neurons switch on, however thin their region of the domain: for the ``count``
    steepest neurons (largest ||w_j||) that are active somewhere in the domain's bounding ball B(c, r), the
    point of its boundary sphere deepest in the neuron's cap (c + r u_j, u_j = w_j / ||w_j||), and a point
    of that sphere just inside the cap's rim (where a tangential gradient is largest on a sphere domain).
    A random point misses a cap of angular radius phi with probability ~ 1 - sin(phi)^(d-1) (BLN20's caps)."""
    c, r = domain.bounding_ball(W.shape[1])
    norms = np.linalg.norm(W, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = (W @ c + b) / norms  # signed distance of the centre into each cap
    live = np.flatnonzero((norms > 0) & (depth > -r))
    live = live[np.argsort(-norms[live])][:count]
    if not len(live):
        return np.zeros((0, W.shape[1]))
    u = W[live] / norms[live, None]
    p = rng.standard_normal(u.shape)
    p -= np.einsum("ij,ij->i", p, u)[:, None] * u
    p /= np.linalg.norm(p, axis=1, keepdims=True) + 1e-300
    cos_rim = np.clip(-depth[live] / r, -1.0, 1.0)
    cos_in = np.minimum(1.0, cos_rim + 0.01 * (1.0 - cos_rim))  # 1% of the way from the rim to the centre
    rim = c + r * (cos_in[:, None] * u + np.sqrt(1.0 - cos_in**2)[:, None] * p)
    return np.vstack([c + r * u, rim])


def ascend(model: nn.Module, starts: torch.Tensor, domain: Domain, steps: int = 100, betas=(5.0, 20.0, 100.0),
           lr: float = 0.02, deadline: float = math.inf) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected gradient ascent on ||grad f_beta(x)||^2 of smoothed copies, beta annealed upwards.

    Returns the best point found per start and its exact gradient norm (of the unsmoothed model).
    """
    best_points = starts.detach().clone()
    best_norms = gradient_norms(model, best_points, domain)
    x = starts.detach().clone()
    for beta in betas:
        surrogate = smoothed(model, beta)
        x = x.detach().requires_grad_(True)
        optimiser = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            if time.perf_counter() > deadline:
                break
            (grad,) = torch.autograd.grad(surrogate(x).sum(), x, create_graph=True)
            objective = domain.tangential(x, grad).pow(2).sum()
            optimiser.zero_grad()
            (-objective).backward()
            optimiser.step()
            with torch.no_grad():
                x.copy_(domain.project(x))
        exact = gradient_norms(model, x, domain)
        better = exact > best_norms
        best_points[better] = x.detach()[better]
        best_norms[better] = exact[better]
    return best_points, best_norms


def search_lower(model: nn.Module, domain: Domain = GLOBAL, X: np.ndarray | None = None,
                 y: np.ndarray | None = None, seed: int = 0, count: int = 512, ascent_starts: int = 32,
                 ascent_steps: int = 100, deadline: float = math.inf) -> LowerBound:
    """The largest exact gradient norm found in the domain, with its point and the method that found it."""
    dtype = next(model.parameters()).dtype
    d = model[0].in_features if isinstance(model, nn.Sequential) else X.shape[1]
    rng = stream(seed, "ascent")
    first = model[0] if isinstance(model, nn.Sequential) and isinstance(model[0], nn.Linear) else None
    layer = None if first is None else (first.weight.detach().double().numpy(), np.zeros(first.out_features)
                                        if first.bias is None else first.bias.detach().double().numpy())
    groups = _candidates(X, y, domain, d, rng, count, dtype, layer)
    scored = {name: gradient_norms(model, pts, domain) for name, pts in groups.items()}
    # ascend from the best starting points of every provenance except pure random ones
    pool = torch.cat([groups[k] for k in groups if k != "random"] or [groups["random"]])
    pool_norms = torch.cat([scored[k] for k in groups if k != "random"] or [scored["random"]])
    top = pool_norms.argsort(descending=True)[:ascent_starts]
    points, norms = ascend(model, pool[top], domain, steps=ascent_steps, deadline=deadline)
    groups["ascent"], scored["ascent"] = points, norms
    method, value, witness = "none", -1.0, None
    for name, vals in scored.items():
        i = int(vals.argmax())
        if float(vals[i]) > value:
            method, value, witness = name, float(vals[i]), groups[name][i].detach().numpy().astype(float)
    return LowerBound(value=value, witness=witness, method=f"search:{method}")


def mean_gradient_norm(model: nn.Module, points: np.ndarray, domain: Domain = GLOBAL) -> float:
    """The average gradient norm over ``points``: a Sobolev-type quantity, *not* the Lipschitz constant."""
    dtype = next(model.parameters()).dtype
    return float(gradient_norms(model, torch.as_tensor(points, dtype=dtype), domain).mean())


# ----------------------------------------------------------------------------- exact line walks


def _chords(domain: Domain, x: np.ndarray, directions, span: float):
    """For each non-zero direction, the unit vector v and the parameter range [t0, t1] of the
    domain's part of the line x + t v (|t| <= span); directions whose line misses the domain are skipped."""
    for v in directions:
        nv = np.linalg.norm(v)
        if nv == 0:
            continue
        v = v / nv
        t0, t1 = domain.chord(x, v, span)
        if t1 > t0:
            yield v, t0, t1


def _line_best(net: Net, x: np.ndarray, v: np.ndarray, t0: float, t1: float) -> tuple[float, np.ndarray]:
    """The exact max of ||grad f|| over the cells the segment x + t v, t in [t0, t1], crosses (two-layer PWL);
    returns the value and the midpoint of the best piece."""
    W, b = net.weights[0], net.biases[0]
    a = net.weights[1][0]
    alpha = net.acts[0].low_slope
    G = a[:, None] * W
    h0, slope = W @ x + b, W @ v
    with np.errstate(divide="ignore", invalid="ignore"):
        tb = -h0 / slope
    inside = np.flatnonzero(np.isfinite(tb) & (tb > t0) & (tb < t1))
    order = inside[np.argsort(tb[inside])]
    ts = np.concatenate([[t0], tb[order], [t1]])
    start = h0 + t0 * slope
    s0 = np.where(start > 0, 1.0, alpha)
    s0 = np.where(start == 0, np.where(slope > 0, 1.0, alpha), s0)
    g_start = G.T @ s0
    # crossing neuron j flips its slope: upward (slope > 0) alpha -> 1, downward 1 -> alpha
    flips = np.where(slope[order] > 0, 1 - alpha, alpha - 1)[:, None] * G[order]
    gs = np.vstack([g_start[None, :], g_start + np.cumsum(flips, axis=0)])
    norms = np.linalg.norm(gs, axis=1)
    lengths = np.diff(ts)
    norms[lengths <= 1e-12 * max(1.0, abs(t1 - t0))] = -1.0  # too thin to place a witness robustly
    i = int(np.argmax(norms))
    return float(norms[i]), x + 0.5 * (ts[i] + ts[i + 1]) * v


def _climb(net: Net, domain: Domain, starts: np.ndarray, rounds: int, deadline: float, directions, line_best,
           span) -> tuple[float, np.ndarray | None]:
    """Hill-climb shared by the region walks: from each start, scan the lines along
    ``directions(x)`` with the exact line maximiser ``line_best`` (within ``span(x)``), jump to the
    best point, repeat until no line improves. Returns the best exact gradient norm and its point."""
    best_value, best_x = -1.0, None
    for x in np.asarray(starts, dtype=float):
        x = np.array(x)
        value = float(np.linalg.norm(net.gradients(x[None])[0]))
        for _ in range(rounds):
            if time.perf_counter() > deadline:
                break
            improved = False
            for v, t0, t1 in _chords(domain, x, directions(x), span(x)):
                val, xn = line_best(net, x, v, t0, t1)
                if val > value * (1 + 1e-12):
                    value, x, improved = val, xn, True
            if not improved:
                break
        if value > best_value:
            best_value, best_x = value, x
    return best_value, best_x


def line_walk(net: Net, domain: Domain, starts: np.ndarray, rng: np.random.Generator, rounds: int = 30,
              directions: int = 4, deadline: float = math.inf) -> tuple[float, np.ndarray | None]:
    """Hill-climb over activation regions along exact line scans (two-layer ReLU/LeakyReLU nets).

    From each start: scan the line along the direction that turns on the neurons that would raise the
    gradient norm (and off the ones that lower it), along the gradient and along random directions;
    jump to the best piece; repeat. Every value is the exact gradient norm at a returned point.
    """
    W = net.weights[0]
    a = net.weights[1][0]
    alpha = net.acts[0].low_slope
    D = (1 - alpha) * a[:, None] * W
    wn = np.linalg.norm(W, axis=1) + 1e-300
    scale = 1.0 + float(np.max(np.abs(net.biases[0]) / wn))

    def candidates(x):
        g = net.gradients(x[None])[0]
        benefit = D @ (g / (np.linalg.norm(g) + 1e-300))
        h = W @ x + net.biases[0]
        want = np.where((benefit > 0) & (h <= 0), 1.0, np.where((benefit < 0) & (h > 0), -1.0, 0.0))
        weight = np.abs(benefit) / (np.abs(h) / wn + 1e-3 * scale)
        return [(want * weight / wn) @ W, g] + [rng.standard_normal(net.d) for _ in range(max(0, directions - 2))]

    return _climb(net, domain, starts, rounds, deadline, candidates, _line_best,
                  lambda x: 10 * (scale + float(np.linalg.norm(x))))


def grid_walk(net: Net, domain: Domain, starts: np.ndarray, rng: np.random.Generator, rounds: int = 20,
              directions: int = 6, samples: int = 256, deadline: float = math.inf) -> tuple[float, np.ndarray | None]:
    """Any network: hill-climb along lines (the gradient direction and random ones), scoring ``samples``
    points per line with the exact float64 gradient; moves to the best point seen."""
    best_value, best_x = -1.0, None
    for x in np.asarray(starts, dtype=float):
        x = np.array(x)
        value = float(np.linalg.norm(net.gradients(x[None])[0]))
        span = 3.0 * (1.0 + float(np.linalg.norm(x)))
        for _ in range(rounds):
            if time.perf_counter() > deadline:
                break
            g = net.gradients(x[None])[0]
            improved = False
            for v, t0, t1 in _chords(domain, x, [g] + [rng.standard_normal(net.d) for _ in range(directions - 1)], span):
                ts = np.concatenate([np.linspace(t0, t1, samples), rng.uniform(t0, t1, samples // 4)])
                pts = x + ts[:, None] * v
                pts = domain.on_domain(pts)
                G = domain.tangential_np(pts, net.gradients(pts))
                norms = np.linalg.norm(G, axis=1)
                i = int(np.argmax(norms))
                if norms[i] > value * (1 + 1e-12):
                    value, x, improved = float(norms[i]), pts[i], True
            if not improved:
                span *= 0.5
                if span < 1e-3:
                    break
        if value > best_value:
            best_value, best_x = value, x
    return best_value, best_x


def _deep_line_best(net: Net, x: np.ndarray, v: np.ndarray, t0: float, t1: float) -> tuple[float, np.ndarray]:
    """The exact max of ||grad f|| over the activation regions the segment x + t v, t in [t0, t1], crosses
    (piecewise-linear nets of any depth). Layer by layer: between consecutive breakpoints found so far the
    earlier layers are affine in t, so this layer's pre-activations are too and their zeros are exact
    breakpoints; after the last layer every piece has one pattern, scored at its midpoint."""
    ts = np.array([t0, t1])
    for i in range(net.depth - 1):
        h = net.preactivations(x + ts[:, None] * v)[i]
        ha, hb = h[:-1], h[1:]
        cross = (ha * hb < 0)
        a_idx, _ = np.nonzero(cross)
        frac = ha[cross] / (ha[cross] - hb[cross])
        new = ts[a_idx] + frac * (ts[a_idx + 1] - ts[a_idx])
        ts = np.unique(np.concatenate([ts, new]))
    mids = 0.5 * (ts[:-1] + ts[1:])
    norms = np.linalg.norm(net.gradients(x + mids[:, None] * v), axis=1)
    norms[np.diff(ts) <= 1e-12 * max(1.0, abs(t1 - t0))] = -1.0  # too thin to place a witness robustly
    i = int(np.argmax(norms))
    return float(norms[i]), x + mids[i] * v


def _flip_direction(net: Net, x: np.ndarray) -> np.ndarray:
    """The direction that crosses towards the neurons whose flip raises ||grad f|| (any PWL depth).

    With the pattern fixed, flipping neuron j changes the gradient by +-(1 - alpha) c_j grad h_j, where
    h_j is its pre-activation and c_j = df/d(act_j); move along grad h_j (on) or -grad h_j (off) for the
    neurons whose change aligns with the gradient, weighted by the gain over the distance to the boundary."""
    pre = net.preactivations(x[None])
    slopes = [act.slope(h[0]) for act, h in zip(net.acts, pre)]
    jac, jacs = np.eye(net.d), []  # d h_i / dx, layer by layer
    for i in range(net.depth - 1):
        jac = net.weights[i] @ jac
        jacs.append(jac)
        jac = slopes[i][:, None] * jac
    back, backs = net.weights[-1][0], []  # df / d(act_i)
    for i in range(net.depth - 2, -1, -1):
        backs.append(back)
        back = (back * slopes[i]) @ net.weights[i]
    backs = backs[::-1]
    g = back
    u = g / (np.linalg.norm(g) + 1e-300)
    v = np.zeros(net.d)
    for i in range(net.depth - 1):
        alpha = net.acts[i].low_slope
        Jn = np.linalg.norm(jacs[i], axis=1) + 1e-300
        h = pre[i][0]
        on = h > 0
        change = np.where(on, alpha - 1, 1 - alpha) * backs[i] * (jacs[i] @ u)  # d<grad, u> if j flips
        gain = np.where(change > 0, change, 0.0)
        dist = np.abs(h) / Jn
        v += ((gain / (dist + 1e-3 * (1 + dist.mean()))) * np.where(on, -1.0, 1.0) / Jn) @ jacs[i]
    return v


def region_walk(net: Net, domain: Domain, starts: np.ndarray, rng: np.random.Generator, rounds: int = 30,
                directions: int = 4, deadline: float = math.inf) -> tuple[float, np.ndarray | None]:
    """Hill-climb over activation regions of a deep piecewise-linear net along exact line scans
    (:func:`_deep_line_best`): along the neuron-flipping direction, the gradient and random directions."""
    def candidates(x):
        return [_flip_direction(net, x), net.gradients(x[None])[0]] + [
            rng.standard_normal(net.d) for _ in range(max(0, directions - 2))]

    return _climb(net, domain, starts, rounds, deadline, candidates, _deep_line_best,
                  lambda x: 10 * (1.0 + float(np.linalg.norm(x))))


def witness_norm(net: Net, x: np.ndarray, domain: Domain) -> float:
    """The gradient norm at ``x`` that a lower bound claims (tangential on a sphere), in float64."""
    x = np.asarray(x, dtype=float)
    return float(np.linalg.norm(domain.tangential_np(x, net.gradients(x[None])[0])))


def _ball_of(domain: Domain, d: int) -> tuple[np.ndarray, float]:
    ball = domain.bounding_ball(d)
    return (np.zeros(d), 1.0) if ball is None else ball


def _projected(domain: Domain, points) -> np.ndarray:
    return np.array([domain.project(torch.as_tensor(np.asarray(s)[None])).numpy()[0] for s in points])


def walk_regions(net: Net, domain: Domain, X: np.ndarray | None, best: list[np.ndarray], rng: np.random.Generator,
                 deadline: float, max_rounds: int = 50) -> tuple[list[tuple[np.ndarray, str]], int]:
    """Rounds of :func:`line_walk` (two-layer ReLU nets) from the best points so far, the steepest data
    points and random domain points, then around the best found, until a quarter of the time left (at
    most 3 s) is spent, or ``max_rounds`` rounds without a deadline. On R^d it also walks inside
    balls of radius R and 3R, where other regions lie.
    Returns the points found (with their method) and the number of rounds."""
    starts = list(best)
    if X is not None and len(X):
        grads = np.linalg.norm(net.gradients(X), axis=1)
        starts += list(np.asarray(X, dtype=float)[np.argsort(-grads)[:8]])
    c, R = _ball_of(domain, net.d)
    # anytime with a deadline; with none, a fixed number of rounds, so the same seed gives the same bracket
    walk_end = time.perf_counter() + min(0.25 * (deadline - time.perf_counter()), 3.0) if math.isfinite(deadline) else math.inf
    found, rounds = [], 0
    while True:
        rand = rng.standard_normal((8, net.d))
        radii = domain.start_radii(rng, R, 8)
        starts = _projected(domain, starts + list(c + radii * rand / np.linalg.norm(rand, axis=1, keepdims=True)))
        _, x = line_walk(net, domain, starts, rng, deadline=walk_end)
        found.append((x, "search:line-walk"))
        for outer in domain.outer_balls(rng, R):
            _, x = line_walk(net, outer, _projected(outer, starts), rng, deadline=walk_end)
            found.append((x, "search:line-walk"))
        rounds += 1
        if time.perf_counter() > walk_end or rounds >= max_rounds:
            return found, rounds
        pool = list(best) + [x for x, _ in found if x is not None] or [starts[0]]
        best_x = max(pool, key=lambda x: witness_norm(net, x, domain))
        starts = list(best_x + 0.05 * R * rng.standard_normal((4, net.d)) / math.sqrt(net.d))


def walk_grids(net: Net, domain: Domain, best: list[np.ndarray], rng: np.random.Generator,
               deadline: float, max_rounds: int = 20) -> list[tuple[np.ndarray, str]]:
    """Rounds of :func:`region_walk` (deep piecewise-linear nets off the sphere) or :func:`grid_walk`
    (smooth or sphere-domain nets) from the best point so far and random domain points (on R^d at
    radii R, 3R and 10R: far regions count there), until 40% of the time left (at most 10 s) is
    spent, or ``max_rounds`` rounds without a deadline."""
    c, R = _ball_of(domain, net.d)
    exact = net.piecewise_linear and domain.solid
    walker, method = (region_walk, "search:region-walk") if exact else (grid_walk, "search:grid-walk")
    walk_end = time.perf_counter() + min(0.4 * (deadline - time.perf_counter()), 10.0) if math.isfinite(deadline) else math.inf
    found = []
    best_x = best[0] if best else c
    for _ in range(max_rounds):
        if time.perf_counter() > walk_end:
            break
        rand = rng.standard_normal((6, net.d))
        radii = domain.start_radii(rng, R, 6)
        starts = [best_x] + list(c + radii * rand / np.linalg.norm(rand, axis=1, keepdims=True))
        _, x = walker(net, domain, _projected(domain, starts), rng, deadline=walk_end)
        if x is not None:
            found.append((x, method))
            if witness_norm(net, x, domain) > witness_norm(net, best_x, domain):
                best_x = x
    return found
