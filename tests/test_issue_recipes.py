"""The soundness faults found by the audit, each as its recipe: they must stay fixed."""

import numpy as np
import pytest
import torch
from torch import nn

from robustlaw.errors import RobustlawError
from robustlaw.lipschitz import Ball, Global, Net, certify
from robustlaw.testing import Case, steepest_found


def leaky_net(slope: float, seed: int = 4) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 16), nn.LeakyReLU(slope), nn.Linear(16, 16), nn.LeakyReLU(slope),
                         nn.Linear(16, 1)).double()


@pytest.mark.parametrize("slope", [3.0, -0.5, 1.5])
def test_leaky_relu_with_any_slope_is_sound(slope):
    """Slope 3.0 once gave upper 0.692 against a sampled gradient of 1.225 (its slope box was inverted)."""
    net = leaky_net(slope)
    b = certify(net, Global(), time_limit=5)
    found, point = steepest_found(Case(f"leaky({slope})", net, Global()))
    assert b.lower <= b.upper and found <= b.upper * (1 + 1e-9), (found, point, b.upper)
    if slope == 3.0:
        assert b.upper >= 1.225


def test_huge_weights_are_rescaled_exactly():
    """x1e160 once gave [0, 0] "exact" on R^d (and [0, nan] on a ball); x1e100 a LinAlgError traceback."""
    from robustlaw.activations import ReLU

    rng = np.random.default_rng(0)
    W, b, a = rng.standard_normal((8, 3)), rng.standard_normal(8), rng.standard_normal((1, 8))
    net = Net((W, a), (b, np.zeros(1)), (ReLU(),))
    for factor in (1e100, 1e160):
        huge = Net((W * factor, a), (b * factor, np.zeros(1)), net.acts)  # f_huge = factor * f exactly
        for domain in (Global(), Ball(1.0)):
            small, big = certify(net, domain, time_limit=None), certify(huge, domain, time_limit=None)
            assert big.exact and small.exact
            assert big.lower == pytest.approx(factor * small.lower, rel=1e-12)
    deep = Net((W, rng.standard_normal((8, 8)), a), (b, np.zeros(8), np.zeros(1)), (ReLU(), ReLU()))
    every = Net(tuple(w * 1e160 for w in deep.weights), deep.biases, deep.acts)  # Lip ~ 1e480: not a float
    with pytest.raises(RobustlawError, match="float64"):
        certify(every, Global(), time_limit=5)
