"""Random features and the linearised (NTK) two-layer net: honest P and J, exact fits, sound certificates."""

import math

import numpy as np
import pytest
import torch

from robustlaw.data import DataSpec, Dataset, sphere
from robustlaw.errors import SpecError
from robustlaw.experiment import RunSpec, run
from robustlaw.families import ModelSpec, parametrisation_constant
from robustlaw.fitting import FitSpec
from robustlaw.linearised import LinearisedTwoLayer, gradient_descent, min_norm, random_features
from robustlaw.lipschitz import Ball, certify
from robustlaw.models import mlp
from robustlaw.testing.lipschitz import Case, check_method, check_upper_bound, jumps_at, linearised_cases


def data(n=12, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return sphere(n, d, rng), rng.choice([-1.0, 1.0], size=n)


def hand_net():
    """d = 1, k = 2: w0 = (1, -2), b0 = (0.5, 0), a0 = (1, -1)."""
    net = mlp(1, [2], seed=0, dtype=torch.float64)
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [-2.0]]))
        net[0].bias.copy_(torch.tensor([0.5, 0.0]))
        net[2].weight.copy_(torch.tensor([[1.0, -1.0]]))
    return net


def test_parameter_counts_are_the_trained_scalars_only():
    assert random_features(5, 7).param_count() == 7
    assert random_features(5, 7, output_bias=True).param_count() == 8
    assert LinearisedTwoLayer(mlp(5, [7], dtype=torch.float64)).param_count() == 7 * (5 + 2)
    X, y = data(n=10, d=5)
    spec = RunSpec(data=DataSpec(n=10, d=5), model=ModelSpec.of(family="random_features", width=7, output_bias=True))
    assert spec.model.kind.params(spec.model, 5) == 8 and ModelSpec.of(family="ntk", width=7).kind.params(
        ModelSpec.of(family="ntk", width=7), 5) == 49


def test_J_matches_the_hand_count():
    radius_one = Dataset(np.array([[1.0], [-0.5]]), np.zeros(2), 1.0)  # R = 1
    rf = random_features(1, 2)
    with torch.no_grad():
        rf[0].weight.copy_(torch.tensor([[1.0], [-2.0]]))
        rf[0].bias.copy_(torch.tensor([0.5, 0.0]))
        rf[2].weight.copy_(torch.tensor([[0.25, -0.5]]))
    # J = sqrt(max relu over [-0.5, 1.5]^2 + max relu over [-2, 2]^2) = sqrt(1.5^2 + 2^2); W = 2 * 0.5 * sqrt(2)
    assert parametrisation_constant(rf, radius_one) == pytest.approx((math.sqrt(2), 2.5))
    ntk = LinearisedTwoLayer(hand_net())
    # J^2 = relu(0.5 + 1)^2 + relu(0 + 2)^2 + (1^2 + 1^2) (R^2 + 1) = 2.25 + 4 + 4; w = 2 (the weight -2), P = 6
    assert parametrisation_constant(ntk, radius_one) == pytest.approx((2 * 2 * math.sqrt(6), math.sqrt(10.25)))


@pytest.mark.parametrize("make", [lambda: random_features(3, 9, output_bias=True),
                                  lambda: LinearisedTwoLayer(mlp(3, [9], seed=4, dtype=torch.float64)),
                                  lambda: LinearisedTwoLayer(mlp(3, [9], activation="poly", seed=4, dtype=torch.float64))])
def test_J_bounds_the_change_of_f_with_the_parameters(make):
    model, (X, _) = make(), data(n=200, d=3, seed=1)
    X *= np.random.default_rng(2).uniform(size=(200, 1))  # inside the unit ball
    J = model.parametrisation_J(1.0)
    Phi = model.features(X)
    assert np.linalg.norm(Phi, axis=1).max() <= J * (1 + 1e-12)
    rng = np.random.default_rng(3)
    theta = model.theta()
    before = model(torch.as_tensor(X)).detach().numpy()
    step = rng.standard_normal(len(theta))
    model.set_theta(theta + step)
    after = model(torch.as_tensor(X)).detach().numpy()
    assert np.abs(after - before).max() <= J * np.linalg.norm(step) * (1 + 1e-12)
    np.testing.assert_allclose(after, Phi @ (theta + step) + model.offset(X), atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "poly"])
def test_the_ntk_model_is_the_first_order_taylor_expansion_of_the_net(activation):
    net = mlp(3, [6], activation=activation, seed=5, dtype=torch.float64)
    model = LinearisedTwoLayer(net)
    rng = np.random.default_rng(4)
    moves = [torch.as_tensor(0.1 * rng.standard_normal(p.shape)) for p in (model.W, model.b, model.a)]
    with torch.no_grad():
        for p, m in zip((model.W, model.b, model.a), moves):
            p.add_(m)
    X = torch.as_tensor(data(n=20, d=3)[0])
    params = (net[0].weight, net[0].bias, net[2].weight)
    tangent = (moves[0], moves[1], moves[2][None])

    def f(W, b, a):
        return torch.func.functional_call(net, {"0.weight": W, "0.bias": b, "2.weight": a}, (X,))

    f0, directional = torch.func.jvp(f, tuple(p.detach() for p in params), tangent)
    np.testing.assert_allclose(model(X).detach().numpy(), (f0 + directional).numpy(), atol=1e-12)


def test_min_norm_is_the_pseudo_inverse_solution_and_interpolates_when_wide():
    X, y = data(n=12, d=3)
    rf = random_features(3, 40, seed=1)
    min_norm(rf, X, y)
    np.testing.assert_allclose(rf.theta(), np.linalg.pinv(rf.features(X)) @ y, atol=1e-9)
    np.testing.assert_allclose(rf(torch.as_tensor(X)).detach().numpy(), y, atol=1e-9)
    ntk = LinearisedTwoLayer(mlp(3, [5], seed=2, dtype=torch.float64))
    theta0, Phi, f0 = ntk.theta(), ntk.features(X), ntk(torch.as_tensor(X)).detach().numpy()
    min_norm(ntk, X, y)
    np.testing.assert_allclose(ntk.theta(), theta0 + np.linalg.pinv(Phi) @ (y - f0), atol=1e-9)
    narrow = random_features(3, 4, seed=1)  # k < n: the least-squares fit, not an interpolator
    min_norm(narrow, X, y)
    np.testing.assert_allclose(narrow.theta(), np.linalg.lstsq(narrow.features(X), y, rcond=None)[0], atol=1e-9)


def test_gradient_descent_converges_to_the_interpolator_nearest_the_start():
    X, y = data(n=8, d=3)
    ntk = LinearisedTwoLayer(mlp(3, [6], seed=3, dtype=torch.float64))
    target = ntk.theta() + np.linalg.pinv(ntk.features(X)) @ (y - ntk(torch.as_tensor(X)).detach().numpy())
    steps = gradient_descent(ntk, X, y, lambda p: np.abs(p - y).max() < 1e-10, 200_000, 10)
    assert steps < 200_000
    np.testing.assert_allclose(ntk.theta(), target, atol=1e-6)


def test_the_ntk_certificates_pass_the_conformance_suite():
    assert check_method("ntk-exact", family=linearised_cases()) == 7
    assert check_method("ntk-quadratic", family=linearised_cases()) == 9


def test_the_quadratic_bracket_matches_a_hand_computed_maximum():
    from robustlaw.lipschitz.linearised import quadratic_bracket

    # max over the unit disc of ||(2 x1 + 1, -3 x2)||^2 = -5 x1^2 + 4 x1 + 10 on the circle: 10.8 at x1 = 0.4
    low, up, x = quadratic_bracket(np.diag([2.0, -3.0]), np.array([1.0, 0.0]), np.zeros(2), 1.0)
    assert low == pytest.approx(math.sqrt(10.8), rel=1e-9) and low <= up <= low * (1 + 1e-8)
    np.testing.assert_allclose(np.abs(x), [0.4, math.sqrt(0.84)], atol=1e-6)
    # the hard case (h = 0): the top eigenvalue times the radius
    low, up, x = quadratic_bracket(np.diag([3.0, 1.0]), np.zeros(2), np.zeros(2), 2.0)
    assert low == pytest.approx(6.0) and up == pytest.approx(6.0) and np.linalg.norm(x) == pytest.approx(2.0)


def test_a_jump_witness_is_a_jump_and_a_continuous_model_has_none():
    names = ("ntk 3-12-1 at init on ball(r=1)", "ntk 3-12-1 all moved on ball(r=1)")
    at_init, moved = [c for c in linearised_cases() if c.name in names]
    b = certify(moved.model, moved.domain, X=np.zeros((1, 3)), time_limit=None)
    assert b.lower == b.upper == math.inf and b.lower_method == "ntk-jump" and jumps_at(moved.model, b.witness)
    assert not jumps_at(at_init.model, b.witness)
    assert not jumps_at(at_init.model, certify(at_init.model, at_init.domain, X=np.zeros((1, 3)), time_limit=None).witness)


def test_random_features_certificates_are_sound():
    X, y = data(n=10, d=3)
    rf = random_features(3, 16, seed=2)
    min_norm(rf, X, y)
    check_upper_bound(lambda m, dom: certify(m, dom, X=X, time_limit=None).upper, [Case("rf 3-16-1", rf, Ball(1.0))])


def test_sweep_runs_record_P_mode_and_the_bracket():
    base = dict(data=DataSpec(n=16, d=3), fit=FitSpec(max_steps=400), seed=0)
    rf = run(RunSpec(model=ModelSpec.of(family="random_features", width=24), **base))
    ntk = run(RunSpec(model=ModelSpec.of(family="ntk", width=8, solver="gd"), **base))
    assert rf["status"] == ntk["status"] == "ok"
    assert (rf["P"], rf["mode"], rf["reached"]) == (24, "min_norm", True)
    assert rf["lip_lower"] <= rf["lip_upper"] < math.inf
    assert (ntk["P"], ntk["mode"]) == (8 * 5, "gd") and ntk["lip_upper"] == math.inf
    assert ntk["lip_lower"] == math.inf and ntk["upper_method"] == "ntk-jump" and ntk["grad_mean_train"] < math.inf


def test_impossible_linear_specs_fail_before_any_work():
    with pytest.raises(SpecError, match="model.activation"):
        RunSpec(model=ModelSpec.of(family="ntk", activation="tanh"))
    with pytest.raises(SpecError, match="model.activation"):
        RunSpec(model=ModelSpec.of(family="ntk", activation="poly", q=3))
    with pytest.raises(SpecError, match="model.solver"):
        ModelSpec.of(family="random_features", solver="adam")
    with pytest.raises(SpecError, match="fit.mode: smooth is for trained networks"):
        RunSpec(data=DataSpec(n=8, d=3), model=ModelSpec.of(family="random_features"), fit=FitSpec(mode="smooth"))
    with pytest.raises(SpecError, match="model.width: a closed-form fit forms"):
        RunSpec(data=DataSpec(n=10**5, d=30), model=ModelSpec.of(family="ntk", width=100))


def test_the_shipped_examples_validate_into_their_grids():
    from pathlib import Path

    from robustlaw.sweep import SweepSpec

    root = Path(__file__).parent.parent / "examples"
    digits, rf_ntk = SweepSpec.from_toml(root / "digits_mlp.toml"), SweepSpec.from_toml(root / "rf_vs_ntk.toml")
    assert len(digits.runs) == 16 and {r.data.distribution for r in digits.runs} == {"digits"}
    assert len(rf_ntk.runs) == 56
    assert {(r.model.family, r.model.activation) for r in rf_ntk.runs} == {
        (f, a) for f in ("random_features", "ntk") for a in ("relu", "poly")}


def test_a_hyperplane_that_only_touches_the_ball_is_no_jump():
    # one neuron with z0 = x1 - 1 <= 0 on the unit disc, zero only at (1, 0): f = 0 on the disc, Lip = 0
    model = LinearisedTwoLayer(mlp(2, [1], seed=0, dtype=torch.float64))
    with torch.no_grad():
        model.W0.copy_(torch.tensor([[1.0, 0.0]]))
        model.b0.copy_(torch.tensor([-1.0]))
        model.W.copy_(torch.tensor([[0.5, 2.0]]))
        model.b.copy_(torch.tensor([0.3]))
    b = certify(model, Ball(1.0), X=np.zeros((1, 2)), time_limit=None)
    assert b.lower == 0.0 and b.lower_method != "ntk-jump"
