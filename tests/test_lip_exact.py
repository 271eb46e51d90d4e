"""Exact brackets for two-layer ReLU nets where the activation patterns can be covered."""

from robustlaw.activations import LeakyReLU
import itertools
import time

import numpy as np
import pytest
from conftest import random_net

from robustlaw.lipschitz import Ball, Global, LocalBalls, certify, witness_norm
from robustlaw.lipschitz.exact import exact_two_layer, flat_enumeration, sorted_patterns, two_layer_problem


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
    from robustlaw.lipschitz.network import Net
    dup = Net((W2, a2), (b2, net.biases[1]), net.acts)
    bracket = certify(dup, Global(), time_limit=30)
    assert sampled_max(dup, rng) <= bracket.upper
    assert bracket.lower <= bracket.upper
