"""The bounds match hand-computed values, invert correctly, and the CLI reports them."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from robustlaw import theory
from robustlaw.cli import main
from robustlaw.errors import RobustlawError, SpecError


def test_law_scale_and_its_inverse():
    assert theory.law_scale(100, 10, 1000) == pytest.approx(1.0)
    P = theory.law_params_for_lip(1e4, 50, lip=2.0, sigma=0.5)
    assert P == pytest.approx(1e4 * 50 * 0.25 / 4)
    assert 0.5 * theory.law_scale(1e4, 50, P) == pytest.approx(2.0)


def test_slides_back_of_the_envelope():
    # the authors' estimate: MNIST n ~ 1e5, d_eff ~ d / 100 = 10 -> P ~ 1e6; ImageNet n ~ 1e7, d ~ 1e5 -> 1e10 .. 1e11
    assert theory.law_params_for_lip(1e5, 1e3 / 100, lip=1.0) == pytest.approx(1e6)
    assert theory.law_params_for_lip(1e7, 1e5 / 100, lip=1.0) == pytest.approx(1e10)
    assert theory.law_params_for_lip(1e7, 1e5 / 10, lip=1.0) == pytest.approx(1e11)


def test_bs21_eq10_matches_hand_computation():
    n, d, P, sigma, eps, delta = 1e4, 100, 1e3, 1.0, 0.5, 0.01
    # log term: 1000 log(1 + 60 * 1 * 1 / 0.5) + log(4 / 0.01) = 1000 log 121 + log 400
    log_term = 1000 * 4.795790545596741 + 5.991464547107982
    expected = 0.5 * math.sqrt(1e6 / log_term)
    bound = theory.bs21_lip_lower(n, d, P, sigma, eps, delta=delta)
    assert bound.lip_lower == pytest.approx(expected, rel=1e-12)
    assert bound.lip_lower == pytest.approx(7.21554, abs=1e-5)
    assert bound.log_term == pytest.approx(log_term)
    assert bound.formula == "BS21 eq. (10)"


def test_bs21_eq11_sparse_and_constants():
    sparse = theory.bs21_lip_lower(1e4, 100, 1e3, 1.0, 0.5, sparsity=10)
    log_term = 10 * (math.log(1e3) + math.log(121)) + math.log(400)
    assert sparse.lip_lower == pytest.approx(0.5 * math.sqrt(1e6 / log_term))
    assert sparse.formula == "BS21 eq. (11)"
    # C2 and c enter as 1 / sqrt(C2 c); sigma as 1 / sigma
    base = theory.bs21_lip_lower(1e4, 100, 1e3, 1.0, 0.5).lip_lower
    scaled = theory.bs21_lip_lower(1e4, 100, 1e3, 0.5, 0.5, c=2.0,
                                   constants=theory.BS21Constants(C2=8.0)).lip_lower
    assert scaled == pytest.approx(base * 2 / 4)
    neurips = theory.bs21_lip_lower(1e4, 100, 1e3, 1.0, 0.5, constants=theory.BS21Constants(variant="neurips"))
    assert neurips.lip_lower == pytest.approx(0.5 / 512 * math.sqrt(1e6 / (1000 * math.log(120) + math.log(400))))


def test_bs21_conditions():
    # (8): 1e4 k log(8k/delta) <= n eps^2; with k = 1, delta = 0.01: 1e4 log 800 = 66846.4
    assert not theory.bs21_mixture_condition(1e4, 0.5, 0.01)
    assert theory.bs21_mixture_condition(66847 / 0.25, 0.5, 0.01)
    assert not theory.bs21_mixture_condition(66846 / 0.25, 0.5, 0.01)
    assert not theory.bs21_mixture_condition(1e6, 0.5, 0.01, k_mixture=10)
    # (9): d >= C1 c L^2 sigma^2 / eps^2 = 25 / 0.25 = 100 at L = 5
    assert theory.bs21_dimension_condition(100, 5.0, 1.0, 0.5)
    assert not theory.bs21_dimension_condition(100, 5.01, 1.0, 0.5)
    bound = theory.bs21_lip_lower(1e6, 100, 10, 1.0, 0.5, lip=5.0)
    assert bound.mixture_condition and bound.dimension_condition and bound.lip_checked == 5.0
    assert theory.bs21_lip_lower(1e6, 100, 10, 1.0, 0.5).dimension_condition is None


def test_finite_class_form_is_what_eq10_instantiates():
    log_size = 500 * math.log1p(60 * 2.0 * 3.0 / 0.25)
    finite = theory.bs21_finite_class_lip_lower(1e5, 30, log_size, 0.8, 0.25)
    assert finite == pytest.approx(theory.bs21_lip_lower(1e5, 30, 500, 0.8, 0.25, W=2.0, J=3.0).lip_lower)


def test_bs21_inverse_round_trip():
    P = theory.bs21_params_for_lip(1e6, 100, lip=2.0, sigma=1.0, eps=0.5)
    assert P > 0
    assert theory.bs21_lip_lower(1e6, 100, P, 1.0, 0.5).lip_lower == pytest.approx(2.0)
    assert theory.bs21_params_for_lip(10, 2, lip=100.0, sigma=1.0, eps=0.5) == 0.0  # eq. (10) never binds


def test_other_bounds_hand_values():
    assert theory.rademacher_bound(100, 10, 1000) == pytest.approx(1.0)
    assert theory.rademacher_bound(1e4, 100, 1e4) == pytest.approx(0.1)
    assert theory.poincare_scale(100, 100, 1000) == pytest.approx(1.0)
    assert theory.no_free_prune_p_eff(1000, 50) == 1050
    assert theory.law_scale(1e4, 10, theory.no_free_prune_p_eff(900, 100)) == pytest.approx(10.0)
    assert theory.bln20_lip(100, 4) == pytest.approx(5.0)
    assert theory.bln20_spectral_proxy([3.0, 4.0], np.diag([2.0, 1.0])) == pytest.approx(10.0)
    assert theory.deep_net_J(R=2.0, W=0.5, P=10, depth=3) == pytest.approx(250.0)


def test_spectral_proxy_bounds_the_network_lipschitz_constant():
    from robustlaw.lipschitz import upper_bound
    from robustlaw.models import two_layer

    net = two_layer(d=8, k=5, seed=3)
    W, a = net[0].weight.detach().numpy(), net[2].weight.detach().numpy()[0]
    assert upper_bound(net).value <= theory.bln20_spectral_proxy(a, W) * (1 + 1e-6)


@pytest.mark.parametrize("call", [
    lambda: theory.bs21_lip_lower(0, 10, 10, 1.0, 0.5),
    lambda: theory.bs21_lip_lower(10, 10, 10, 1.0, 1.5),
    lambda: theory.bs21_lip_lower(10, 10, 10, -1.0, 0.5),
    lambda: theory.bs21_lip_lower(10, 10, 10, 1.0, 0.5, sparsity=20),
    lambda: theory.law_params_for_lip(10, 10, 0.0),
    lambda: theory.no_free_prune_p_eff(-1, 0),
    lambda: theory.BS21Constants(variant="arxiv"),
])
def test_bad_inputs_raise_one_line(call):
    with pytest.raises(SpecError) as info:
        call()
    assert "\n" not in str(info.value)


def _json(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_bound_command_json():
    out = _json(["bound", "--n", "1e4", "--d", "100", "--params", "1e3", "--sigma", "1", "--eps", "0.5", "--json"])
    assert out["bs21_lip_lower"] == pytest.approx(7.21554, abs=1e-5)
    assert out["bs21_formula"] == "BS21 eq. (10)"
    assert out["bs21_mixture_condition"] is False
    assert out["law_scale"] == pytest.approx(math.sqrt(1e3))
    sparse = _json(["bound", "--n", "1e4", "--d", "100", "--params", "1e3", "--eps", "0.5", "--sparsity", "10",
                    "--json"])
    assert sparse["bs21_formula"] == "BS21 eq. (11)"
    assert sparse["bs21_lip_lower"] > out["bs21_lip_lower"]
    deep = _json(["bound", "--n", "1e4", "--d", "100", "--params", "1e3", "--eps", "0.5", "--depth", "2", "--W", "0.5",
                  "--json"])
    assert deep["inputs"]["J"] == pytest.approx((0.5 * 1e3) ** 2)


def test_bound_command_rejects_conflicting_options():
    result = CliRunner().invoke(main, ["bound", "--n", "10", "--d", "10", "--params", "10", "--J", "2", "--depth", "2"])
    assert isinstance(result.exception, RobustlawError)


def test_predict_command_reproduces_slides():
    mnist = _json(["predict", "--n", "1e5", "--d", "1e3", "--effective-dim", "10", "--target-lip", "1", "--json"])
    assert mnist["params_law"] == pytest.approx(1e6)
    assert mnist["params_law_ambient"] == pytest.approx(1e8)
    imagenet = _json(["predict", "--n", "1e7", "--d", "1e5", "--effective-dim", "1e3", "--target-lip", "1", "--json"])
    assert imagenet["params_law"] == pytest.approx(1e10)
    assert 0 < imagenet["params_bs21"] < imagenet["params_law"]
    bad = CliRunner().invoke(main, ["predict", "--n", "10", "--d", "5", "--effective-dim", "9", "--target-lip", "1"])
    assert isinstance(bad.exception, RobustlawError)


def test_sources_cite_the_papers_not_private_notes():
    import inspect

    from robustlaw import cli, effdim

    for module in (theory, cli, effdim):
        assert "seed 00" not in inspect.getsource(module), module.__name__
    text = inspect.getsource(theory)
    for arxiv in ("2105.12806", "2009.14444", "2402.01089"):
        assert f"arXiv:{arxiv}" in text
    help_text = CliRunner().invoke(main, ["bound", "--help"]).output
    assert "seed 004" not in help_text and "2105.12806" in help_text
