import pytest
import torch

from robustlaw.errors import SpecError
from robustlaw.families import ModelSpec
from robustlaw.models import Power, mlp, two_layer


@pytest.mark.parametrize("d, k", [(1, 1), (20, 16), (784, 3)])
def test_two_layer_parameter_count_is_k_times_d_plus_2(d, k):
    model = two_layer(d, k)
    assert model.param_count() == k * (d + 2)


def test_mlp_parameter_count_counts_every_weight_and_bias():
    model = mlp(20, [64, 32])
    assert model.param_count() == (20 * 64 + 64) + (64 * 32 + 32) + 32
    assert model.depth == 3
    assert model.hidden_widths == [64, 32]


def test_network_computes_a_relu_two_layer_function():
    model = two_layer(3, 5, seed=1)
    W, b = model[0].weight, model[0].bias
    a = model[2].weight[0]
    x = torch.randn(7, 3)
    expected = torch.relu(x @ W.T + b) @ a
    torch.testing.assert_close(model(x), expected)


def test_power_activation_raises_to_q():
    t = torch.tensor([-2.0, 0.5, 3.0])
    torch.testing.assert_close(Power(3)(t), t**3)


def test_first_layer_preactivations_are_order_one_on_the_sphere():
    d = 50
    model = two_layer(d, 2000, seed=0)
    x = torch.randn(d)
    x /= x.norm()
    pre = model[0](x)
    assert 0.7 < pre.std().item() < 1.3


def test_initialisation_is_seeded():
    a, b, c = two_layer(4, 8, seed=5), two_layer(4, 8, seed=5), two_layer(4, 8, seed=6)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a[0].weight, c[0].weight)


@pytest.mark.parametrize("kwargs, field", [
    (dict(width=0), "model.width"), (dict(family="resnet"), "model.family"),
    (dict(activation="gelu"), "model.activation"), (dict(family="mlp", widths=()), "model.widths"),
])
def test_bad_model_specs_name_their_field(kwargs, field):
    with pytest.raises(SpecError) as info:
        ModelSpec.of(**kwargs)
    assert info.value.field == field
