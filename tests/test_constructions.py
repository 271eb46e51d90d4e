"""Each construction interpolates as its paper claims, its certificate is sound (no point found by
search exceeds it) and meets the proven bound, and failed preconditions raise one line."""

import math

import numpy as np
import pytest
import torch

from robustlaw import constructions as C
from robustlaw.data import DataSpec, lip_floor, sphere
from robustlaw.errors import RobustlawError
from robustlaw.experiment import CertifySpec, RunSpec
from robustlaw.experiment import run as run_spec
from robustlaw.families import ModelSpec
from robustlaw.lipschitz import Ball, Global, certify, upper_bound
from robustlaw.lipschitz.certificates import active_count_bound, overlap_bound
from robustlaw.lipschitz.lower import gradient_norms, search_lower
from robustlaw.models import Network
from robustlaw.theory import law_scale

torch.set_num_threads(1)
BALL = Ball(1.0)
GLOBAL = Global()


def signs_on_sphere(n, d, seed=0):
    rng = np.random.default_rng(seed)
    return sphere(n, d, rng), rng.choice([-1.0, 1.0], size=n)


def predictions(model, X):
    with torch.no_grad():
        return model(torch.as_tensor(X, dtype=torch.float64)).numpy()


def bracket(model, domain, X, y):
    """(certified upper, search lower) with the lower bound's point checked to be in the domain."""
    upper = upper_bound(model, domain).value
    low = search_lower(model, domain, X, y, seed=0, count=128, ascent_starts=8, ascent_steps=20)
    assert domain.contains(low.witness)
    return upper, low.value


def check_common(model, X, y, domain, tol=1e-9):
    """Interpolation, soundness of the certificate, and the floor: every interpolant has Lip >= McShane's."""
    assert np.abs(predictions(model, X) - y).max() <= tol
    upper, lower = bracket(model, domain, X, y)
    assert lower <= upper
    assert lower >= lip_floor(X, y) * (1 - 1e-9)  # the domain is convex and holds the data
    return upper, lower


def test_single_neuron_min_norm_hyperplane_has_lip_sqrt_n():
    X, y = signs_on_sphere(12, 600)
    net = C.single_neuron(X, y)
    assert isinstance(net, Network) and net.param_count() == 600 + 3
    upper, lower = check_common(net, X, y, GLOBAL)
    w_norm = net.meta["w_norm"]
    assert upper == pytest.approx(w_norm, rel=1e-6) and lower == pytest.approx(w_norm, rel=1e-6)
    assert 0.6 * math.sqrt(12) <= w_norm <= 1.4 * math.sqrt(12)  # BLN20 3.1: Lip ~ sqrt(n) for d >> n
    with pytest.raises(RobustlawError, match="n <= d"):
        C.single_neuron(*signs_on_sphere(12, 5))


def test_caps_are_one_over_offset_lipschitz_on_the_unit_ball():
    X, y = signs_on_sphere(40, 80, seed=1)
    net = C.caps(X, y, offset=0.1)
    assert net.param_count() == 40 * (80 + 2)
    upper, lower = check_common(net, X, y, BALL)
    assert upper == pytest.approx(10.0, rel=1e-6)  # BLN20 3.2: max|y| / offset
    assert lower == pytest.approx(10.0, rel=1e-6)  # attained at every data point
    assert upper_bound(net, BALL).method == "cap-overlap"


def test_caps_refuse_overlapping_caps_and_off_sphere_data():
    X, y = signs_on_sphere(3, 10)
    X[1] = 0.95 * X[0] + 0.05 * X[1]
    X[1] /= np.linalg.norm(X[1])
    with pytest.raises(RobustlawError, match="caps overlap"):
        C.caps(X, y)
    X, y = signs_on_sphere(5, 10)
    with pytest.raises(RobustlawError, match="unit sphere"):
        C.caps(2 * X, y)


def test_compromise_caps_interpolate_and_meet_bln20_bound():
    X, y = signs_on_sphere(60, 120, seed=2)
    one_each = C.compromise_caps(X, y, k=60, offset=C.CAP_OFFSET)
    points = sphere(50, 120, np.random.default_rng(9))
    assert np.allclose(predictions(one_each, points), predictions(C.caps(X, y), points))
    for k in (30, 20, 10):
        net = C.compromise_caps(X, y, k=k)
        assert net.meta["caps"] <= k and net.param_count() == net.meta["caps"] * (120 + 2)
        upper, _ = check_common(net, X, y, BALL, tol=1e-9)
        # BLN20 3.3: Lip = O(n log(d) / k); certified here with constant <= 2 (measured 0.5-1.75)
        assert upper <= 2.0 * 60 * math.log(120) / net.meta["caps"]


def test_compromise_caps_preconditions():
    X, y = signs_on_sphere(30, 4)
    with pytest.raises(RobustlawError, match="linearly dependent"):
        C.compromise_caps(X, y, k=2)
    with pytest.raises(RobustlawError, match="k in"):
        C.compromise_caps(X, y, k=0)


def test_tensor_interpolation_quadratic():
    X, y = signs_on_sphere(60, 30, seed=3)
    net = C.tensor(X, y, q=2)
    assert net.param_count() == 30 * 30 + 30  # width d with activation t^2 (BLN20's k ~ d^{q-1})
    upper, _ = check_common(net, X, y, BALL, tol=1e-8)
    M = (X.T * np.linalg.solve((X @ X.T) ** 2, y)) @ X
    eigvals, eigvecs = np.linalg.eigh(M)
    top = eigvecs[:, np.argmax(np.abs(eigvals))]
    exact = 2 * np.abs(eigvals).max()  # Lip on the unit ball = 2 ||M||_op, attained at the top eigenvector
    assert upper == pytest.approx(exact, rel=1e-6)
    assert float(gradient_norms(net, torch.as_tensor(top[None, :]), BALL)[0]) == pytest.approx(exact, rel=1e-9)
    coef = np.linalg.solve((X @ X.T) ** 2, y)
    assert upper <= 2 * np.abs(coef).max() * np.linalg.norm(X, 2) ** 2 * (1 + 1e-9)
    assert upper_bound(net, GLOBAL).value == math.inf  # a polynomial is not Lipschitz on R^d


def test_tensor_cubic_ridge_and_singular_kernel():
    X, y = signs_on_sphere(30, 8, seed=4)
    cubic = C.tensor(X, y, q=3)
    check_common(cubic, X, y, BALL, tol=1e-7)
    approx = C.tensor(X, y, q=3, ridge=0.5)
    err = np.abs(predictions(approx, X) - y).max()
    assert 0 < err < 1
    assert upper_bound(approx, BALL).value < upper_bound(cubic, BALL).value
    with pytest.raises(RobustlawError, match="invertible"):
        C.tensor(*signs_on_sphere(40, 4), q=2)  # 40 points > 10 quadratic forms in d = 4


@pytest.mark.parametrize("real_labels", [False, True])
def test_baum_fits_with_few_neurons_but_is_not_robust(real_labels):
    X, y = signs_on_sphere(40, 10, seed=5)
    if real_labels:
        y = np.random.default_rng(5).uniform(-1, 1, size=40)
    net = C.baum(X, y)
    assert net.meta["groups"] == 4 and net.param_count() == 4 * 4 * (10 + 2)  # 4 neurons per d points
    _, lower = check_common(net, X, y, BALL, tol=1e-8)
    # across each group's slab the slope is ~ 1 / width: scan the normal line through the group's first point
    for g, (width, delta) in enumerate(zip(net.meta["slab_widths"], net.meta["deltas"])):
        normal = net[0].weight[4 * g + 1].detach().numpy() * width  # the unit normal u
        offsets = np.linspace(-2 * delta, 2 * delta, 20001)[:, None]
        steepest = float(gradient_norms(net, torch.as_tensor(X[10 * g] + offsets * normal)).max())
        assert steepest >= 0.9 / width
    assert lower <= upper_bound(net, BALL).value
    assert steepest > 10 * lip_floor(X, y)  # fits, but far above the floor: not robust
    X[15] = X[0]  # a point of the first group on the second group's hyperplane
    with pytest.raises(RobustlawError, match="general position"):
        C.baum(X, y)


def test_rbf_bumps_are_order_one_lipschitz():
    X, y = signs_on_sphere(50, 60, seed=6)
    model = C.rbf(X, y)
    assert model.param_count() == 50 * 61
    upper, lower = check_common(model, X, y, GLOBAL)
    assert upper == pytest.approx(1 / model.meta["radius"], rel=1e-6)
    assert lower == pytest.approx(upper, rel=1e-6)
    assert upper <= 2.0  # O(1): separation ~ sqrt(2) on a high-dimensional sphere
    X[7] = X[2]
    with pytest.raises(RobustlawError, match="coincide"):
        C.rbf(X, y)


def test_projected_rbf_follows_the_law():
    X, y = signs_on_sphere(60, 200, seed=7)
    ratios = []
    for d_proj in (16, 32):
        model = C.projected_rbf(X, y, d_proj, seed=0)
        P = model.param_count()
        assert P == 60 * (d_proj + 1)
        upper, lower = check_common(model, X, y, GLOBAL)
        assert upper == pytest.approx(model.meta["A_op"] / model.meta["radius"], rel=1e-6)
        assert lower >= 0.8 * upper
        ratios.append(upper / law_scale(60, 200, P))
    # BS21: Lip ~ sqrt(n d / P) once d' >~ log n (measured constant 3-5)
    assert all(r <= 6.0 for r in ratios)


def test_mcshane_attains_the_floor():
    X, y = signs_on_sphere(40, 20, seed=8)
    y = y + 0.3 * np.random.default_rng(0).standard_normal(40)
    model = C.mcshane(X, y)
    floor = lip_floor(X, y)
    upper, lower = check_common(model, X, y, GLOBAL, tol=0.0)
    assert upper == pytest.approx(floor, rel=1e-6) and lower == pytest.approx(floor, rel=1e-6)
    X[1] = X[0]
    with pytest.raises(RobustlawError, match="identical points"):
        C.mcshane(X, np.arange(40.0))


def test_overlap_bound_hand_cases():
    a = np.array([2.0, 3.0])
    far = np.array([[1.0, 0.0], [-1.0, 0.0]]) * 10
    b = np.array([-9.0, -9.0])  # caps {x1 > 0.9} and {x1 < -0.9}: disjoint in the unit ball
    assert overlap_bound(far, b, a, BALL) == pytest.approx(30.0)
    near = np.array([[1.0, 0.0], [0.9, np.sqrt(1 - 0.81)]]) * 10  # both contain the point (1, 0.2)/norm
    assert overlap_bound(near, b, a, BALL) == pytest.approx(50.0)
    assert overlap_bound(far, b, a, GLOBAL) == pytest.approx(50.0)  # the path norm on R^d


def test_active_count_bound_hand_cases():
    W, a = np.array([[10.0, 0.0], [0.0, 10.0]]), np.ones(2)
    # caps {x1 > 0.9}, {x2 > 0.9}: never both active in the unit ball (count 100 / 81 -> 1)
    assert active_count_bound(W, np.full(2, -9.0), a, BALL) == pytest.approx(10.0)
    # caps {x1 > 0.5}, {x2 > 0.5}: both active at (0.7, 0.7), gradient (10, 10)
    assert active_count_bound(W, np.full(2, -5.0), a, BALL) == pytest.approx(math.sqrt(200))
    assert active_count_bound(W, np.full(2, -5.0), a, GLOBAL) == math.inf


@pytest.mark.parametrize("seed", range(4))
def test_cap_certificates_are_sound_on_random_nets(seed):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((7, 3)) * 4
    b = -np.abs(rng.standard_normal(7)) * 3
    a = rng.standard_normal(7)
    net = C._network(W, b, a, meta={})
    x = rng.standard_normal((40000, 3))
    x *= rng.uniform(size=(40000, 1)) ** (1 / 3) / np.linalg.norm(x, axis=1, keepdims=True)  # uniform in the ball
    found = float(gradient_norms(net, torch.as_tensor(x)).max())
    for bound in (overlap_bound, active_count_bound):
        assert found <= bound(W, b, a, BALL) * (1 + 1e-9)
    assert found <= upper_bound(net, BALL).value


def test_certify_uses_the_construction_certificate():
    X, y = signs_on_sphere(30, 60, seed=10)
    result = certify(C.caps(X, y), BALL, X, y)
    assert result.upper == pytest.approx(10.0, rel=1e-6) and result.upper_method == "cap-overlap"


def test_constructions_as_sweep_points():
    data = DataSpec(distribution="sphere", n=30, d=40)
    ok = run_spec(RunSpec(data=data, model=ModelSpec.of(family="construction", construction="rbf"),
                          certify=CertifySpec()))
    assert ok["status"] == "ok" and ok["mode"] == "construction" and ok["reached"]
    assert ok["P"] == 30 * 41 and ok["lip_lower"] <= ok["lip_upper"]
    failed = run_spec(RunSpec(data=DataSpec(distribution="sphere", n=30, d=3),
                              model=ModelSpec.of(family="construction", construction="caps")))
    assert failed["status"] == "error" and "caps overlap" in failed["error"]
    with pytest.raises(RobustlawError):
        ModelSpec(family="construction")


def test_large_inputs_use_the_gram_distances_and_still_interpolate(monkeypatch):
    X, y = signs_on_sphere(60, 30, seed=11)
    points = np.vstack([X, sphere(40, 30, np.random.default_rng(12))])
    models = (C.rbf(X, y), C.mcshane(X, y), C.projected_rbf(X, y, 10))
    direct = [predictions(m, points) for m in models]
    monkeypatch.setattr(C, "DIRECT_DISTANCE_ELEMENTS", 0)
    for model, expected in zip(models, direct):
        got = predictions(model, points)
        assert np.abs(got - expected).max() <= 1e-9
        assert np.abs(got[:60] - y).max() <= 1e-12  # the nearest centre is recomputed exactly


def test_each_run_of_a_construction_batch_is_built_with_its_own_size():
    from robustlaw.experiment import run_group

    data = DataSpec(distribution="sphere", n=20, d=12)
    specs = [RunSpec(data=data, model=ModelSpec.of(family="construction", construction="projected_rbf", size=size))
             for size in (4, 6)]
    records = run_group(specs)
    assert [r["P"] for r in records] == [20 * 5, 20 * 7]  # P = n (d' + 1)
