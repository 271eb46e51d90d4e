"""The worked examples of docs/ARCHITECTURE.md: each extension is one class or function plus its
registration, and then works everywhere (spec validation, sweeps, certify, the conformance suite)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from robustlaw.activations import ACTIVATIONS, Activation
from robustlaw.data import DISTRIBUTIONS, DataSpec, Distribution, NoOptions, make_dataset
from robustlaw.experiment import run
from robustlaw.lipschitz import METHODS, Ball, UpperCertificate, certify, upper_bound
from robustlaw.sweep import SweepSpec
from robustlaw.testing import cases, check_method


@pytest.fixture(scope="module")
def family():
    return cases()


@pytest.fixture
def registered():
    """Register plug-ins for one test and remove them afterwards."""
    added = []

    def add(registry, name, item):
        registry.register(name, item)
        added.append((registry, name))
        return item

    yield add
    for registry, name in added:
        registry.remove(name)


def frobenius(net, domain, effort):
    """||W_L|| prod ||diag(m_i)||_2 ||W_i||_F: a product of Frobenius norms (>= the spectral product)."""
    value = np.linalg.norm(net.weights[-1])
    for W, (lo, hi) in zip(net.weights[:-1], effort.boxes):
        value *= np.max(np.maximum(np.abs(lo), np.abs(hi))) * np.linalg.norm(W)
    return float(value)


def test_a_new_upper_bound_method(registered, family):
    registered(METHODS, "frobenius", UpperCertificate("frobenius", frobenius))
    assert check_method("frobenius", family) >= 1  # sound on the shipped family
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 1))
    assert certify(net, Ball(1.0), time_limit=2, methods=["frobenius", "gradient-search"]).upper_method == "frobenius"


def test_an_unsound_new_method_is_caught(registered, family):
    registered(METHODS, "too-small", UpperCertificate("too-small", lambda net, domain, effort: 0.5 * frobenius(
        net, domain, effort) * 0.01))
    with pytest.raises(AssertionError, match="unsound upper bound"):
        check_method("too-small", family)


class Swish(Activation):
    """t sigmoid(t): smooth, slope in [-0.1, 1.1] (a loose but valid box)."""

    name = "swish"
    torch_types = (nn.SiLU,)

    def __call__(self, t):
        return t / (1 + np.exp(-t))

    def slope(self, t):
        s = 1 / (1 + np.exp(-t))
        return s + t * s * (1 - s)

    def slope_range(self, lo, hi):
        return np.full(np.shape(lo), -0.1), np.full(np.shape(lo), 1.1)

    def value_range(self, lo, hi):
        return np.minimum(self(lo), -0.28), np.maximum(self(hi), self(lo))

    def to_torch(self):
        return nn.SiLU()


def test_a_new_activation(registered):
    registered(ACTIVATIONS, "swish", Swish)
    net = nn.Sequential(nn.Linear(3, 6), nn.SiLU(), nn.Linear(6, 1)).double()
    bound = upper_bound(net, Ball(1.0)).value
    x = torch.randn(4000, 3, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True) * torch.rand(4000, 1, dtype=torch.float64) ** (1 / 3)
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(net(x).sum(), x)
    assert float(g.norm(dim=1).max()) <= bound
    sweep = SweepSpec.from_dict({"data": {"n": 12, "d": 3}, "model": {"width": 4, "activation": "swish"},
                                 "fit": {"max_steps": 20, "target": "budget"}})
    record = run(sweep.runs[0])
    assert record["status"] == "ok" and record["activation"] == "swish"
    assert record["lip_lower"] <= record["lip_upper"]


def shell(n, d, rng, thickness=0.1):
    """Uniform directions, radii uniform in [1 - thickness, 1]."""
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True) * rng.uniform(1 - thickness, 1, size=(n, 1))


def test_a_new_data_distribution(registered):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class ShellOptions(NoOptions):
        thickness: float = 0.1

    registered(DISTRIBUTIONS, "shell", Distribution("shell", shell, ShellOptions))
    data = make_dataset(DataSpec.of(distribution="shell", n=50, d=4, thickness=0.3), seed=0)
    norms = np.linalg.norm(data.X, axis=1)
    assert norms.min() >= 0.7 - 1e-12 and norms.max() <= 1 + 1e-12
    sweep = SweepSpec.from_dict({"data": {"distribution": "shell", "n": 12, "d": 3, "thickness": [0.1, 0.5]},
                                 "model": {"width": 4}, "fit": {"max_steps": 20, "target": "budget"}})
    assert len(sweep.runs) == 2 and {r.data.options.thickness for r in sweep.runs} == {0.1, 0.5}
    with pytest.raises(Exception, match="data.thickness: only for distribution shell"):
        SweepSpec.from_dict({"data": {"distribution": "sphere", "thickness": 0.2}})
    assert math.isfinite(run(sweep.runs[0])["lip_upper"])
