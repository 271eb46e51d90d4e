"""Brackets where the law lives (issue 13): nets whose steep regions are thin caps of the data's ball or
sphere. The lower search must find them without the data, and a structural certificate that settles the
bracket must not wait for the general relaxations."""

import math

import numpy as np
import pytest
import torch

from robustlaw.lipschitz import Ball, Sphere, certify, search_lower, upper_bound
from robustlaw.lipschitz.lower import neuron_caps
from robustlaw.lipschitz.network import RELU, Net


def caps_net(n, d, offset, rng):
    """BLN20 3.2 (arXiv:2009.14444) written by hand: cap i is relu(<x_i, x> - (1 - offset)) / offset, height
    y_i = +-1; on the unit ball its exact Lipschitz constant is max|y_i| / offset (disjoint caps)."""
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = rng.choice([-1.0, 1.0], size=n)
    return Net((X / offset, y[None, :]), (np.full(n, -(1 - offset) / offset), np.zeros(1)), (RELU,))


def trap_net(rng, d=12, k=20, eps=2e-3, steep=50.0, height=20.0):
    """A small random two-layer net plus one steep neuron active only on a thin cap of the unit sphere
    around v: h = steep (<v, x> - (1 - eps)), output weight ``height``. Returns the net, v, and the
    tangential slope the trap neuron alone has at the cap's rim, height * steep * sin(theta), cos(theta) = 1 - eps."""
    W = rng.standard_normal((k, d)) / math.sqrt(d)
    b = 0.1 * rng.standard_normal(k)
    a = rng.standard_normal(k) / math.sqrt(k)
    v = rng.standard_normal(d)
    v /= np.linalg.norm(v)
    net = Net((np.vstack([W, steep * v]), np.append(a, height)[None, :]),
              (np.append(b, -steep * (1 - eps)), np.zeros(1)), (RELU,))
    background = float(np.abs(a).sum() * np.linalg.norm(W, axis=1).max())  # >= the other neurons' slope
    return net, v, height * steep * math.sin(math.acos(1 - eps)), background


def test_plain_caps_file_is_certified_within_its_exact_value_without_data(tmp_path):
    rng = np.random.default_rng(0)
    net = caps_net(40, 300, 0.2, rng)
    net.save_npz(tmp_path / "caps.npz")
    b = certify(str(tmp_path / "caps.npz"), Ball(1.0), time_limit=None)
    exact = 1 / 0.2
    assert b.upper <= 1.2 * exact
    # no data given: the steep caps are found from the first layer alone (random points miss them)
    assert b.lower >= exact * (1 - 1e-9)
    # the structural certificate settled the bracket: the relaxations after it did not run
    assert b.details["seconds_by_method"].get("shor", 0.0) < 0.05


def test_neuron_cap_points_lie_in_the_domain_and_in_their_caps():
    rng = np.random.default_rng(1)
    net, v, _, _ = trap_net(rng)
    W, b = net.weights[0], net.biases[0]
    for domain in (Ball(1.0), Sphere(1.0), Ball(0.5, center=np.full(12, 0.1))):
        c, r = domain.bounding_ball(12)
        pts = neuron_caps(W, b, domain, rng, count=100)
        reach = np.flatnonzero(W @ c + b + r * np.linalg.norm(W, axis=1) > 0)
        order = reach[np.argsort(-np.linalg.norm(W[reach], axis=1))]
        assert len(pts) == 2 * len(order)
        centres, rims = pts[: len(order)], pts[len(order):]
        for points in (centres, rims):
            h = np.einsum("ij,ij->i", points, W[order]) + b[order]
            assert (h > 0).all()  # each point switches its neuron on
            assert np.allclose(np.linalg.norm(points - c, axis=1), r)  # on the bounding sphere
        # the rim point is within 1% (of the way to the centre) of where the neuron switches off
        depth = (W[order] @ c + b[order]) / np.linalg.norm(W[order], axis=1)
        cos_rim = -depth / r
        cos_in = ((rims - c) @ (W[order] / np.linalg.norm(W[order], axis=1, keepdims=True)).T).diagonal() / r
        assert np.all(cos_in - cos_rim <= 0.01 * (1 - cos_rim) + 1e-9)


@pytest.mark.parametrize("domain", [Sphere(1.0), Ball(1.0)], ids=["sphere", "ball"])
def test_lower_search_finds_a_thin_cap_trap(domain):
    rng = np.random.default_rng(2)
    net, v, rim_slope, background = trap_net(rng)
    assert background < 0.1 * rim_slope  # the trap dominates: missing it leaves the lower bound tiny
    low = search_lower(net.to_torch(torch.float64), domain, seed=0, count=64, ascent_starts=8, ascent_steps=20)
    # the sphere sees the tangential slope (largest at the rim); the ball the full one (50 x 20 at the centre)
    target = rim_slope if isinstance(domain, Sphere) else 20.0 * 50.0
    assert low.value >= 0.9 * target - background
    assert domain.contains(low.witness)


def test_a_thin_cap_on_the_sphere_is_certified_by_its_tangential_slope():
    rng = np.random.default_rng(3)
    net, v, rim_slope, background = trap_net(rng)
    sphere = Sphere(1.0)
    b = upper_bound(net, sphere, methods=["cap-overlap", "spectral", "path"])
    assert b.method == "cap-overlap"
    assert b.value <= rim_slope + background  # the ball's bound is ~20 x 50 = 1000
    # brute force: tangential slopes at many points of the cap (and on its rim), none above the certificate
    p = rng.standard_normal((20000, 12))
    p -= (p @ v)[:, None] * v
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    cos = 1 - 2e-3 * rng.uniform(0, 1, (20000, 1)) ** 0.1
    x = cos * v + np.sqrt(1 - cos**2) * p
    slopes = np.linalg.norm(sphere.tangential_np(x, net.gradients(x)), axis=1)
    assert slopes.max() <= b.value
    assert slopes.max() >= 0.95 * rim_slope - background
    assert b.value <= 1.2 * slopes.max()


@pytest.mark.parametrize("seed", range(3))
def test_tangential_cap_overlap_bound_is_sound_on_dense_samples_of_a_sphere(seed):
    from robustlaw.lipschitz.certificates import overlap_bound

    rng = np.random.default_rng(seed)
    d, k, R = 3, 12, rng.choice([0.5, 1.0, 2.0])
    W = rng.standard_normal((k, d)) * rng.uniform(1, 20, (k, 1))
    depth = rng.uniform(0.0, 0.99, k) * R  # each cap's plane at distance depth from the origin: thin to wide
    b = -depth * np.linalg.norm(W, axis=1)
    a = rng.standard_normal(k)
    net, sphere = Net((W, a[None, :]), (b, np.zeros(1)), (RELU,)), Sphere(R)
    x = sphere.sample(rng, 100_000, d)
    found = np.linalg.norm(sphere.tangential_np(x, net.gradients(x)), axis=1).max()
    bound = overlap_bound(W, b, a, sphere)
    assert found <= bound * (1 + 1e-9)
    assert bound < overlap_bound(W, b, a, Ball(R))  # the tangential factor bites


def test_the_sphere_slope_bound_covers_every_point_the_sphere_accepts():
    """On a small sphere (R = 0.1) a witness may lie 1e-6 off it (Sphere.contains); a neuron whose cap
    starts just inside must still be bounded by cap-overlap's tangential factor there."""
    from robustlaw.lipschitz import Sphere
    from robustlaw.lipschitz.certificates import overlap_bound

    W, b, a, sphere = np.array([[1.0, 0.0]]), np.array([-0.0999]), np.array([1.0]), Sphere(0.1)
    first = 0.0999 + 1e-7
    x = np.array([first, np.sqrt((0.1 + 0.9e-6) ** 2 - first**2)])
    assert sphere.contains(x) and W[0] @ x + b[0] > 0
    u = x / np.linalg.norm(x)
    tangential = a[0] * W[0] - (a[0] * W[0] @ u) * u
    assert np.linalg.norm(tangential) <= overlap_bound(W, b, a, sphere)
