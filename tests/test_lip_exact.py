"""Exact brackets for two-layer ReLU nets where the activation patterns can be covered."""

from robustlaw.activations import LeakyReLU
import itertools
import time

import numpy as np
import pytest
from conftest import random_net

from robustlaw.lipschitz import Ball, Global, LocalBalls, certify, witness_norm
from robustlaw.lipschitz.exact import (ExactResult, exact_two_layer, flat_enumeration, hyperplane_groups, sorted_patterns,
                                       two_layer_problem)
from robustlaw.lipschitz.network import RELU, Net


def all_patterns_max(net):
    """Max over all 2^k patterns: the exact answer when every pattern is realizable (k <= d, full rank)."""
    W, a = net.weights[0], net.weights[1][0]
    S = np.array(list(itertools.product([0.0, 1.0], repeat=W.shape[0])))
    return np.linalg.norm(S @ (a[:, None] * W), axis=1).max()


def sampled_max(net, rng, radius=None, n=200_000):
    X = rng.standard_normal((n, net.d))
    if radius is None:
        X *= rng.choice([0.3, 1, 3, 10], size=(n, 1))
    else:
        X = radius * X / np.linalg.norm(X, axis=1, keepdims=True) * rng.uniform(size=(n, 1)) ** (1 / net.d)
    return np.linalg.norm(net.gradients(X), axis=1).max()


@pytest.mark.parametrize("d, k", [(2, 100), (3, 30), (4, 40), (6, 20), (12, 20), (20, 20), (25, 12)])
def test_exact_in_seconds(d, k, rng):
    net = random_net(rng, d, [k])
    start = time.perf_counter()
    b = certify(net, Global(), time_limit=60)
    assert b.exact, (b.lower, b.upper, b.upper_method)
    assert time.perf_counter() - start < 20
    assert witness_norm(net, b.witness, Global()) == pytest.approx(b.lower, rel=1e-12)
    assert sampled_max(net, rng, n=20_000) <= b.upper


def test_all_patterns_when_k_le_d(rng):
    net = random_net(rng, 12, [10])
    b = certify(net, Global(), time_limit=30)
    assert b.exact and b.upper == pytest.approx(all_patterns_max(net), rel=1e-8)


@pytest.mark.parametrize("radius", [None, 0.3, 1.0, 3.0])
def test_methods_agree(radius, rng):
    for _ in range(3):
        net = random_net(rng, 3, [14])
        P = two_layer_problem(net, None, radius)
        a, b = flat_enumeration(P), sorted_patterns(P)
        assert a.exact and b.exact
        assert a.upper == pytest.approx(b.upper, rel=1e-9)
        sample = sampled_max(net, rng, radius, n=50_000)
        assert sample <= a.upper * (1 + 1e-9)
        if radius is not None:
            assert np.linalg.norm(a.witness) <= radius * (1 + 1e-9)


def test_leaky_relu_and_offset_ball(rng):
    net = random_net(rng, 2, [30], act=LeakyReLU(0.1))
    dom = Ball(0.5, center=np.array([0.3, -0.2]))
    b = certify(net, dom, time_limit=30)
    assert b.exact and dom.contains(b.witness)
    X = dom.center + 0.5 * rng.uniform(size=(100_000, 1)) ** 0.5 * (lambda v: v / np.linalg.norm(v, axis=1, keepdims=True))(
        rng.standard_normal((100_000, 2)))
    assert np.linalg.norm(net.gradients(X), axis=1).max() <= b.upper


def test_local_domain_is_max_over_balls(rng):
    net = random_net(rng, 3, [12])
    pts = rng.standard_normal((4, 3))
    b = certify(net, LocalBalls(0.2, pts), time_limit=30)
    each = [exact_two_layer(net, p, 0.2).upper for p in pts]
    assert b.exact and b.upper == pytest.approx(max(each), rel=1e-8)


def test_degenerate_duplicate_neurons_stay_sound(rng):
    net = random_net(rng, 2, [8])
    W, b = net.weights[0], net.biases[0]
    W2, b2 = np.vstack([W, W[:3]]), np.concatenate([b, b[:3]])
    a2 = np.concatenate([net.weights[1][0], -0.5 * net.weights[1][0][:3]])[None]
    dup = Net((W2, a2), (b2, net.biases[1]), net.acts)
    bracket = certify(dup, Global(), time_limit=30)
    assert sampled_max(dup, rng) <= bracket.upper
    assert bracket.lower <= bracket.upper
    assert bracket.exact and bracket.upper_method.startswith("exact:")  # the copies share their originals' variables


# ----------------------------------------------------------------------------- shared hyperplanes


def _pattern_norm(net, s):
    W, a, alpha = net.weights[0], net.weights[1][0], net.acts[0].low_slope
    return float(np.linalg.norm(((alpha + (1 - alpha) * s) * a) @ W))


def _cell_meets_domain(net, s, center, radius, tol=1e-9):
    """Whether the open cell of pattern s (over ALL neurons, copies included) meets the open domain:
    an LP for the largest margin on every sign constraint, then for a ball the cell's distance to the centre."""
    from scipy.optimize import linprog, minimize

    W, b = net.weights[0], net.biases[0]
    d, n = W.shape[1], np.linalg.norm(W, axis=1)
    sg = np.where(s > 0, 1.0, -1.0)
    zero = n == 0
    if np.any(sg[zero] * b[zero] <= 0):  # a zero row's state is fixed by its bias
        return False
    U, c, sg = W[~zero] / n[~zero, None], b[~zero] / n[~zero], sg[~zero]
    x0 = np.zeros(d) if center is None else center
    box = 1e3 if radius is None else radius
    res = linprog(np.r_[np.zeros(d), -1.0], A_ub=np.hstack([-sg[:, None] * U, np.ones((len(c), 1))]), b_ub=sg * c,
                  bounds=[(v - box, v + box) for v in x0] + [(None, 1.0)], method="highs")
    if res.status != 0 or -res.fun <= tol:
        return False
    if radius is None:
        return True
    cons = {"type": "ineq", "fun": lambda y: sg * (U @ y + c), "jac": lambda y: sg[:, None] * U}
    near = minimize(lambda y: ((y - x0) ** 2).sum(), res.x[:-1], jac=lambda y: 2 * (y - x0), constraints=[cons],
                    method="SLSQP", options={"ftol": 1e-15, "maxiter": 500})
    return np.sqrt(max(near.fun, 0.0)) < radius * (1 - 1e-9)


def brute_force_max(net, center=None, radius=None):
    """Lip of a small two-layer PWL net on R^d or a ball: all 2^k patterns of its neurons by decreasing
    gradient norm; the first whose cell meets the domain is the maximum. Knows nothing of hyperplane groups."""
    k = net.weights[0].shape[0]
    pats = np.array(list(itertools.product([0.0, 1.0], repeat=k)))
    vals = np.array([_pattern_norm(net, s) for s in pats])
    for i in np.argsort(-vals, kind="stable"):
        if _cell_meets_domain(net, pats[i], center, radius):
            return vals[i]
    raise AssertionError("no cell meets the domain")


def copied_net(rng, d, k, act):
    """k neurons: a few distinct ones, the rest copies at a positive scale, negations (-t (w, b)),
    copies cancelling their original (output -a/t) and negations with output -a/t; now and then a zero row."""
    k0 = int(rng.integers(1, k))
    W = rng.standard_normal((k0, d)) / np.sqrt(d)
    b, a = 0.5 * rng.standard_normal(k0), rng.standard_normal(k0)
    rows, biases, outs = list(W), list(b), list(a)
    while len(rows) < k:
        j, t = int(rng.integers(k0)), float(rng.choice([1.0, 2.0, 0.5, 1.7, 3.1]))
        kind = rng.choice(["copy", "negation", "cancel", "negated-cancel", "zero"], p=[0.28, 0.28, 0.2, 0.2, 0.04])
        sign = -1.0 if kind in ("negation", "negated-cancel") else 1.0
        out = -a[j] / t if "cancel" in kind else rng.standard_normal()
        if kind == "zero":
            rows.append(np.zeros(d)), biases.append(rng.standard_normal()), outs.append(out)
        else:
            rows.append(sign * t * W[j]), biases.append(sign * t * b[j]), outs.append(out)
    perm = rng.permutation(k)
    return Net((np.array(rows)[perm], np.array(outs)[perm][None]), (np.array(biases)[perm], np.array([0.1])), (act,))


@pytest.mark.parametrize("seed", range(48))
def test_shared_hyperplanes_are_exact(seed):
    rng = np.random.default_rng([seed, 7])
    d, k = 1 + seed % 4, 2 + (seed // 4) % 7
    act = RELU if seed % 2 == 0 else LeakyReLU(0.1)
    net = copied_net(rng, d, k, act)
    for center, radius in [(None, None), (0.3 * rng.standard_normal(d), float(rng.choice([0.3, 1.0, 3.0])))]:
        true = brute_force_max(net, center, radius)
        domain = Global() if radius is None else Ball(radius, center=center)
        res = exact_two_layer(net, center, radius)
        assert res.exact and res.method.startswith("exact:"), (res.lower, res.upper, res.method)
        assert res.upper == pytest.approx(true, rel=1e-9, abs=1e-12)
        assert domain.contains(res.witness)
        assert witness_norm(net, res.witness, domain) == pytest.approx(res.lower, rel=1e-9, abs=1e-12)
        P = two_layer_problem(net, center, radius)
        for other in (flat_enumeration(P), sorted_patterns(P)):
            assert other.exact and other.upper == pytest.approx(true, rel=1e-9, abs=1e-12)


def test_copy_with_negated_output_pinned():
    """A neuron copied with its output weight negated (the pair cancels): the covering used to give
    [0.9795, 1.9589] 'exact:vertices' here, the sign choices where the copies disagree counting."""
    net = random_net(np.random.default_rng(3), 2, [4])
    W, b, a = net.weights[0], net.biases[0], net.weights[1][0]
    dup = Net((np.vstack([W, W[:1]]), np.r_[a, -a[0]][None]), (np.r_[b, b[0]], net.biases[1]), net.acts)
    res = exact_two_layer(dup)
    assert res.exact and res.method == "exact:vertices" and res.info["merged"] == 1
    assert res.upper == pytest.approx(brute_force_max(dup), rel=1e-9)
    assert res.upper == pytest.approx(0.9795, abs=1e-4)
    # the pair cancels: the same net without neuron 0
    rest = Net((W[1:], a[None, 1:]), (b[1:], net.biases[1]), net.acts)
    assert res.upper == pytest.approx(exact_two_layer(rest).upper, rel=1e-12)
    b2 = certify(dup, Global(), time_limit=30)
    assert b2.exact and b2.upper_method == "exact:vertices"


@pytest.mark.parametrize("act", [RELU, LeakyReLU(0.1)])
def test_one_hyperplane_is_one_variable(act, rng):
    w, c = rng.standard_normal(3), 0.4
    scales = np.array([1.0, 2.0, -0.5, 1.7, -3.0, 0.25])
    a = rng.standard_normal(6)
    net = Net((scales[:, None] * w, a[None]), (scales * c, np.zeros(1)), (act,))
    P = two_layer_problem(net)
    assert P.k == 1 and P.r == 1 and sorted(P.groups[0]) == list(range(6))
    assert list(P.sides[0]) == list(np.sign(scales) * np.sign(scales[P.free[0]]))
    alpha = act.low_slope
    pos = scales > 0
    up = np.linalg.norm(((np.where(pos, 1.0, alpha)) * a * scales).sum() * w)  # where <w, x> + c > 0
    down = np.linalg.norm(((np.where(pos, alpha, 1.0)) * a * scales).sum() * w)
    res = exact_two_layer(net)
    assert res.exact and res.upper == pytest.approx(max(up, down), rel=1e-12)
    # a ball the hyperplane misses: every copy is stable, nothing is free
    far = -c * w / (w @ w) + 5 * w / np.linalg.norm(w)
    assert two_layer_problem(net, far, 1.0).k == 0
    assert exact_two_layer(net, far, 1.0).method == "exact:constant"


def test_hyperplane_groups():
    W = np.array([[1.0, 2.0], [-2.0, -4.0], [3.0, 6.0], [1.0, 2.0 + 1e-9], [0.0, 1.0]])
    b = np.array([0.5, -1.0, 1.5, 0.5, 0.0])
    groups = {tuple(m): tuple(s) for m, s in hyperplane_groups(W, b)}
    assert groups == {(0, 1, 2): (1.0, -1.0, 1.0), (3,): (1.0,), (4,): (1.0,)}
    # same normal, other offset: a parallel hyperplane, not the same one
    assert len(hyperplane_groups(np.array([[1.0, 0.0], [2.0, 0.0]]), np.array([1.0, 1.0]))) == 2


def test_zero_rows_contribute_nothing(rng):
    net = random_net(rng, 2, [5])
    W, b, a = net.weights[0], net.biases[0], net.weights[1][0]
    padded = Net((np.vstack([W, np.zeros((2, 2))]), np.r_[a, 3.0, -2.0][None]), (np.r_[b, 1.0, -1.0], net.biases[1]),
                 net.acts)
    assert two_layer_problem(padded).k == 5
    assert exact_two_layer(padded).upper == pytest.approx(exact_two_layer(net).upper, rel=1e-12)


def test_only_tight_results_are_named_exact(rng):
    loose = ExactResult(2.0, 1.0, np.zeros(2), True, "exact:vertices")
    assert not loose.exact and loose.method == "cover:vertices"
    assert ExactResult(1.0, 0.0, None, True, "exact:flats").method == "cover:flats"
    assert ExactResult(1.0, 1.0, np.zeros(2), True, "exact:flats").method == "exact:flats"
    # an anytime search stopped at once: upper still sound, nothing exact about it
    net = random_net(rng, 3, [10])
    P = two_layer_problem(net)
    res = sorted_patterns(P, deadline=0.0)
    assert res.complete and not res.exact and "exact" not in res.method
    assert res.upper >= sorted_patterns(P).upper
    # three lines through the origin (zero biases): the covering's degenerate point makes the bound a
    # superset; whatever flat_enumeration returns, it is exact only if upper meets the witness
    W = rng.standard_normal((3, 2))
    net0 = Net((W, rng.standard_normal((1, 3))), (np.zeros(3), np.zeros(1)), (RELU,))
    res0 = flat_enumeration(two_layer_problem(net0))
    assert res0.method.startswith("exact:") == res0.exact
    assert res0.upper >= brute_force_max(net0) * (1 - 1e-12)
    assert exact_two_layer(net0).exact  # solved on slices around the common point instead


@pytest.mark.parametrize("seed", range(8))
def test_hyperplanes_through_one_point_are_exact(seed):
    """Nets whose hyperplanes all pass through one point p0 (without biases: the origin): every vertex is p0,
    so the covering solves the cones at p0 on two slices instead; exact on R^d and on balls around p0."""
    rng = np.random.default_rng([seed, 11])
    d, k = 2 + seed % 3, 4 + seed % 5
    W, p0 = rng.standard_normal((k, d)), 0.3 * rng.standard_normal(d) * (seed % 2)
    act = RELU if seed % 2 else LeakyReLU(0.1)
    net = Net((W, rng.standard_normal((1, k))), (-W @ p0, np.zeros(1)), (act,))
    for center, radius in [(None, None), (p0 + 0.1, 0.5), (p0 + 3.0, 1.0)]:
        res = exact_two_layer(net, center, radius)
        assert res.exact, (res.lower, res.upper, res.method)
        assert res.upper == pytest.approx(brute_force_max(net, center, radius), rel=1e-9)
        domain = Global() if radius is None else Ball(radius, center=center)
        assert domain.contains(res.witness)
        assert witness_norm(net, res.witness, domain) == pytest.approx(res.lower, rel=1e-9)


def test_no_biases_many_neurons(rng):
    net = random_net(rng, 3, [60], bias=0.0)
    res = exact_two_layer(net)
    assert res.exact and res.info["central"]
    X = rng.standard_normal((50_000, 3))
    assert np.linalg.norm(net.gradients(X), axis=1).max() <= res.upper * (1 + 1e-9)
    assert witness_norm(net, res.witness, Global()) == pytest.approx(res.upper, rel=1e-9)


@pytest.mark.parametrize("seed", range(24))
def test_some_hyperplanes_through_one_point_are_exact(seed):
    """Vertices where more than r hyperplanes meet (some neurons through one point, in 3-d some planes
    through one line): the cones there are solved exactly instead of bounded by every sign choice."""
    rng = np.random.default_rng([seed, 3])
    d, k = 2 + seed % 3, 4 + seed % 6
    W, b = rng.standard_normal((k, d)), 0.5 * rng.standard_normal(k)
    nc, p0 = min(k, d + 1 + seed % 3), 0.3 * rng.standard_normal(d)
    if d == 3 and seed % 2:
        line = rng.standard_normal(3)
        W[:3] -= np.outer(W[:3] @ line, line) / (line @ line)
    b[:nc] = -W[:nc] @ p0
    act = RELU if seed % 2 else LeakyReLU(0.1)
    net = Net((W, rng.standard_normal((1, k))), (b, np.zeros(1)), (act,))
    for center, radius in [(None, None), (p0 + 0.2 * rng.standard_normal(d), 1.0), (np.zeros(d), 0.2)]:
        true = brute_force_max(net, center, radius)
        res = flat_enumeration(two_layer_problem(net, center, radius))
        assert res.exact and res.upper == pytest.approx(true, rel=1e-9), (res.lower, res.upper, res.method, true)
        domain = Global() if radius is None else Ball(radius, center=center)
        assert domain.contains(res.witness)
        assert witness_norm(net, res.witness, domain) == pytest.approx(res.lower, rel=1e-9)
        assert exact_two_layer(net, center, radius).upper == pytest.approx(true, rel=1e-9)
