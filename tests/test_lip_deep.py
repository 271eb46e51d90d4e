"""Deep networks: the exact line scan of the region walk, and the solver-free LipSDP-Neuron bound."""

from robustlaw.activations import ReLU, LeakyReLU
import numpy as np
import pytest
from conftest import random_net
from hypothesis import given, settings
from hypothesis import strategies as st

from robustlaw.lipschitz import Ball, Global, witness_norm
from robustlaw.lipschitz.lower import _deep_line_best, region_walk
from robustlaw.lipschitz.upper import lipsdp_bound, slope_boxes


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), d=st.integers(1, 6), widths=st.lists(st.integers(1, 12), min_size=1, max_size=4),
       leaky=st.booleans())
def test_line_scan_is_the_max_along_the_line(seed, d, widths, leaky):
    """No densely sampled point of the segment has a larger gradient norm, and the value is attained."""
    rng = np.random.default_rng(seed)
    act = LeakyReLU(0.1) if leaky else ReLU()
    net = random_net(rng, d, widths, act=act, bias=1.0)
    x, v = rng.standard_normal(d), rng.standard_normal(d)
    v /= np.linalg.norm(v)
    value, point = _deep_line_best(net, x, v, -5.0, 5.0)
    ts = np.linspace(-5.0, 5.0, 20_001)
    sampled = np.linalg.norm(net.gradients(x + ts[:, None] * v), axis=1).max()
    assert sampled <= value * (1 + 1e-9) + 1e-12
    assert abs(witness_norm(net, point, Global()) - value) <= 1e-12 * max(1.0, value)
    assert np.linalg.norm(point - x - ((point - x) @ v) * v) <= 1e-9 * (1 + np.linalg.norm(point))


def test_region_walk_climbs_and_stays_in_the_ball(rng):
    net = random_net(rng, 5, [16, 16, 16], bias=0.3)
    domain = Ball(2.0)
    starts = rng.standard_normal((4, 5)) * 0.3
    value, x = region_walk(net, domain, starts, rng)
    assert domain.contains(x)
    assert value == pytest.approx(witness_norm(net, x, domain), rel=1e-12)
    assert value >= max(witness_norm(net, s, domain) for s in starts)


def test_lipsdp_bound_matches_the_sdp_solver(rng):
    """Any multipliers give a value >= the SDP optimum; the tuned ones come within 2% of CVXOPT's."""
    cvxpy = pytest.importorskip("cvxpy")
    pytest.importorskip("cvxopt")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import peers

    assert cvxpy is not None
    for widths in ([6, 5], [8, 7, 6], [10, 4, 9]):
        net = random_net(rng, 4, widths)
        ours = lipsdp_bound(net, slope_boxes(net, Global()))
        sdp = peers.lipsdp_neuron(net)
        assert sdp * (1 - 1e-5) <= ours <= sdp * 1.02
