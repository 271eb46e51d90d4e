"""Soundness, property-based, on random nets beyond the conformance suite's fixed family: no gradient
found by the suite's independent search exceeds upper, and lower is reproduced (by torch autograd,
float64) at its witness, which lies in the domain."""

from robustlaw.activations import ReLU, LeakyReLU, Tanh, Softplus
import numpy as np
import torch
from conftest import random_net
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustlaw.lipschitz import Global, certify, make_domain
from robustlaw.testing import Case, steepest_found
from robustlaw.lipschitz.upper import all_pattern_parts, lipsdp_branch_bound, lipsdp_bound, shor_bound, slope_boxes

ACTS = [ReLU(), LeakyReLU(0.05), Tanh(), Softplus(2.0)]


def independent_max(net, domain, seed=0):
    """The steepest gradient the shipped conformance suite's independent search finds (robustlaw.testing)."""
    return steepest_found(Case("hypothesis net", net.to_torch(torch.float64), domain), seed=seed)[0]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), d=st.integers(1, 8), widths=st.lists(st.integers(1, 24), min_size=1, max_size=3),
       act=st.sampled_from(ACTS), kind=st.sampled_from(["global", "ball", "sphere", "local"]),
       radius=st.sampled_from([0.1, 1.0, 4.0]), bias=st.sampled_from([0.0, 0.5, 3.0]))
def test_bracket_is_sound(seed, d, widths, act, kind, radius, bias):
    rng = np.random.default_rng(seed)
    net = random_net(rng, d, widths, act=act, bias=bias)
    domain = make_domain(kind, radius, points=rng.standard_normal((3, d)) if kind == "local" else None)
    b = certify(net, domain, seed=seed, time_limit=3)
    assert 0 <= b.lower <= b.upper
    assert domain.contains(b.witness)
    model = net.to_torch(torch.float64)
    x = torch.as_tensor(b.witness[None]).requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).sum(), x)
    g = g[0]
    if kind == "sphere":
        u = x.detach()[0] / x.detach()[0].norm()
        g = g - (g @ u) * u
    # float64 on both sides; sums with cancellation (smooth deep nets) differ by rounding only
    assert abs(float(g.norm()) - b.lower) <= 1e-7 * b.lower + 1e-12
    assert independent_max(net, domain, seed) <= b.upper * (1 + 1e-9)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), d=st.integers(1, 6), k=st.integers(1, 12))
def test_shor_bound_dominates_all_patterns(seed, d, k):
    import itertools

    rng = np.random.default_rng(seed)
    net = random_net(rng, d, [k])
    g0, D = all_pattern_parts(net, slope_boxes(net, Global()))
    S = np.array(list(itertools.product([0.0, 1.0], repeat=len(D))))
    exact = np.linalg.norm(g0 + S @ D, axis=1).max() if len(D) else np.linalg.norm(g0)
    assert exact <= shor_bound(g0, D) * (1 + 1e-9) + 1e-12
    assert exact <= shor_bound(g0, D, split=2) * (1 + 1e-9) + 1e-12


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), d=st.integers(1, 6), widths=st.lists(st.integers(1, 16), min_size=2, max_size=3),
       act=st.sampled_from(ACTS), kind=st.sampled_from(["global", "ball"]), radius=st.sampled_from([0.3, 3.0]))
def test_lipsdp_bound_dominates_searched_gradients(seed, d, widths, act, kind, radius):
    """The deep LipSDP bound alone (not hidden by a min with other bounds), and with branching on neurons,
    is above every gradient found by random points and by robustlaw's own search."""
    rng = np.random.default_rng(seed)
    net = random_net(rng, d, widths, act=act, bias=1.0)
    domain = make_domain(kind, radius)
    boxes = slope_boxes(net, domain)
    bound = lipsdp_bound(net, boxes)
    branched = lipsdp_branch_bound(net, boxes, branches=3)
    assert branched <= bound * (1 + 1e-6)
    found = max(independent_max(net, domain, seed), certify(net, domain, seed=seed, time_limit=2).lower)
    assert found <= branched * (1 + 1e-9)
