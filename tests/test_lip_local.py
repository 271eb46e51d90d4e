"""Bounded domains fix neurons: linear pre-activation bounds, stable neurons substituted out of LipSDP,
per-ball certificates on local domains."""

from robustlaw.activations import ReLU, LeakyReLU
import numpy as np
import pytest
from conftest import random_net
from hypothesis import given, settings
from hypothesis import strategies as st

from robustlaw.errors import RobustlawError
from robustlaw.lipschitz import Ball, LocalBalls, certify
from robustlaw.lipschitz import upper_bound
from robustlaw.lipschitz.upper import preactivation_bounds


def _ball_points(rng, c, r, count):
    u = rng.standard_normal((count, len(c)))
    u *= r * rng.uniform(size=(count, 1)) ** (1 / len(c)) / np.linalg.norm(u, axis=1, keepdims=True)
    return c + u


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), d=st.integers(1, 8), widths=st.lists(st.integers(1, 16), min_size=1, max_size=4),
       act=st.sampled_from(["relu", "leaky", "tanh"]), radius=st.sampled_from([0.05, 0.3, 1.0, 3.0]))
def test_preactivation_bounds_contain_every_preactivation(seed, d, widths, act, radius):
    """Sampled points of the ball, and its boundary, never leave the bounds (linear and interval alike)."""
    rng = np.random.default_rng(seed)
    net = random_net(rng, d, widths, act=LeakyReLU(0.1) if act == "leaky" else ReLU(), bias=1.0)
    c = rng.standard_normal(d)
    pts = _ball_points(rng, c, radius, 4000)
    edge = rng.standard_normal((1000, d))
    pts = np.vstack([pts, c + radius * edge / np.linalg.norm(edge, axis=1, keepdims=True)])
    for (lo, hi), h in zip(preactivation_bounds(net, Ball(radius, center=c)), net.preactivations(pts)):
        slack = 1e-9 * (1 + np.abs(h).max())
        assert (h >= lo - slack).all() and (h <= hi + slack).all()


def test_linear_bounds_fix_more_neurons_than_intervals(rng):
    """On a deep net and a mid-sized ball the back-substituted bounds decide neurons interval bounds cannot."""
    net = random_net(rng, 10, [32, 32, 32], bias=0.5)
    domain = Ball(0.3, center=rng.standard_normal(10))
    bounds = preactivation_bounds(net, domain)
    stable = [int(((lo >= 0) | (hi <= 0)).sum()) for lo, hi in bounds]
    # interval propagation alone, from the same (exact) first layer
    lo, hi = bounds[0]
    interval = [stable[0]]
    for W, b in zip(net.weights[1:-1], net.biases[1:-1]):
        mid, rad = (np.maximum(lo, 0) + np.maximum(hi, 0)) / 2, (np.maximum(hi, 0) - np.maximum(lo, 0)) / 2
        lo, hi = W @ mid + b - np.abs(W) @ rad, W @ mid + b + np.abs(W) @ rad
        interval.append(int(((lo >= 0) | (hi <= 0)).sum()))
    assert sum(stable[1:]) > sum(interval[1:])


def test_a_small_ball_makes_a_deep_bracket_exact(rng):
    """Every neuron stable on the ball: the gradient is one matrix product and LipSDP returns its norm."""
    net = random_net(rng, 12, [40, 40, 40], bias=0.5)
    domain = Ball(1e-4, center=rng.standard_normal(12))
    bracket = certify(net, domain, time_limit=20)
    assert bracket.exact
    assert bracket.upper >= np.linalg.norm(net.gradients(_ball_points(rng, domain.center, 1e-4, 500)), axis=1).max()


def test_local_domain_bound_is_per_ball_and_sound(rng):
    """On balls around points the certificate is the largest per-ball bound: above every sampled gradient in
    every ball, far below the bound of the one ball holding them all, and found again by the search."""
    net = random_net(rng, 8, [24, 24], bias=0.5)
    points = rng.standard_normal((6, 8))
    domain = LocalBalls(0.02, points)
    up = upper_bound(net, domain)
    sampled = max(np.linalg.norm(net.gradients(_ball_points(rng, p, 0.02, 2000)), axis=1).max() for p in points)
    assert up.value >= sampled * (1 - 1e-9)
    assert up.method.startswith("per-ball")
    c, r = domain.bounding_ball(8)
    assert up.value < 0.8 * upper_bound(net, Ball(r, center=c)).value
    assert len(up.steepest) == 6 and up.steepest[0].contains(up.steepest[0].center)
    bracket = certify(net, domain, time_limit=20)
    assert bracket.ratio < 1.05 and domain.contains(bracket.witness)


def test_a_local_domain_rejects_broken_centres():
    for points, message in [(np.full((3, 4), np.nan), "NaN or Inf"), (np.zeros((0, 4)), "non-empty"),
                            (np.zeros(4), "2-d array")]:
        with pytest.raises(RobustlawError, match=message):
            LocalBalls(0.1, points)
    with pytest.raises(RobustlawError, match="centre contains NaN"):
        Ball(1.0, center=np.array([0.0, np.inf]))
