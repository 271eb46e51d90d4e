"""The float64 network view: gradients agree with torch autograd; the .npz format round-trips and
malformed files get one line naming the problem."""

from robustlaw.activations import ReLU
import numpy as np
import pytest
import torch
from conftest import random_net
from torch import nn

from robustlaw.errors import RobustlawError
from robustlaw.lipschitz.files import load_npz
from robustlaw.lipschitz.network import from_torch
from robustlaw.models import mlp, two_layer


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "softplus", "poly"])
def test_gradients_match_autograd(activation):
    model = mlp(5, [7, 6], activation=activation, seed=3, dtype=torch.float64)
    net = from_torch(model)
    X = torch.randn(20, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    (g,) = torch.autograd.grad(model(X).sum(), X)
    np.testing.assert_allclose(net.gradients(X.detach().numpy()), g.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(net.forward(X.detach().numpy()), model(X).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_plain_sequential_with_merged_linears():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 5), nn.ReLU(), nn.Sequential(nn.Linear(5, 1))).double()
    net = from_torch(model)
    assert net.widths == [5]
    X = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(model(X).sum(), X)
    np.testing.assert_allclose(net.gradients(X.detach().numpy()), g.numpy(), rtol=1e-10, atol=1e-12)


def test_unsupported_layers_and_outputs():
    with pytest.raises(RobustlawError, match="unsupported layer"):
        from_torch(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1)))
    with pytest.raises(RobustlawError, match="one output"):
        from_torch(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    with pytest.raises(RobustlawError, match="Sequential"):
        from_torch(nn.Linear(3, 1))


def test_npz_round_trip(tmp_path, rng):
    net = random_net(rng, 4, [6, 5])
    net.save_npz(tmp_path / "n.npz")
    back = load_npz(tmp_path / "n.npz")
    X = rng.standard_normal((10, 4))
    np.testing.assert_array_equal(back.gradients(X), net.gradients(X))
    assert back.acts[0] == ReLU()


@pytest.mark.parametrize("arrays, message", [
    ({"W1": np.ones((3, 2)), "W2": np.ones((1, 3)), "b2": np.zeros(1)}, "missing b1"),
    ({"W1": np.ones((3, 2)), "b1": np.ones(4), "W2": np.ones((1, 3)), "b2": np.zeros(1)}, "shape mismatch: b1"),
    ({"W1": np.ones((3, 2)), "b1": np.ones(3), "W2": np.ones((1, 4)), "b2": np.zeros(1)}, "shape mismatch: W2"),
    ({"W1": np.full((3, 2), np.nan), "b1": np.ones(3), "W2": np.ones((1, 3)), "b2": np.zeros(1)}, "W1 contains NaN"),
    ({"W1": np.ones((3, 2)), "b1": np.ones(3), "W2": np.ones((1, 3)), "b2": np.array([np.inf])}, "b2 contains NaN"),
    ({"W1": np.ones((3, 2)), "b1": np.ones(3), "W2": np.ones((2, 3)), "b2": np.zeros(2)}, "one output"),
    ({"weights": np.ones(3)}, "no layers found"),
    ({"W1": np.ones((3, 2)), "b1": np.ones(3), "W2": np.ones((1, 3)), "b2": np.zeros(1), "x": np.ones(1)},
     "unexpected arrays x"),
])
def test_malformed_npz(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(RobustlawError, match=message) as info:
        load_npz(path)
    assert "\n" not in str(info.value)


def test_not_an_npz(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_text("hello")
    with pytest.raises(RobustlawError, match="not a readable .npz"):
        load_npz(path)
    with pytest.raises(RobustlawError, match="no such file"):
        load_npz(tmp_path / "absent.npz")


def test_robustlaw_models_are_read():
    net = from_torch(two_layer(6, 9, seed=0))
    assert (net.d, net.widths, net.is_two_layer_pwl) == (6, [9], True)
