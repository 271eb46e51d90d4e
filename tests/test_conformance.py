"""robustlaw's own Lipschitz methods pass the shipped conformance suite (robustlaw.testing), and the
suite fails a method that is wrong."""

import numpy as np
import pytest
import torch

from robustlaw.lipschitz import METHODS, certify, upper_bound
from robustlaw.testing import cases, check_deterministic, check_lower_bound, check_method, check_upper_bound

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def family():
    return cases()


def test_robustlaws_certificate_passes(family):
    check_upper_bound(lambda model, domain: upper_bound(model, domain).value, family)


def test_a_certificate_of_half_the_constant_fails(family):
    with pytest.raises(AssertionError, match="unsound upper bound on .* the gradient norm at x ="):
        check_upper_bound(lambda model, domain: 0.5 * upper_bound(model, domain).value, family)


def test_a_witness_that_does_not_attain_its_value_fails(family):
    def inflated(model, domain):
        b = certify(model, domain, X=domain.sample(np.random.default_rng(0), 8, model.input_dim), time_limit=2)
        return 1.01 * b.lower, b.witness

    with pytest.raises(AssertionError, match="claims"):
        check_lower_bound(inflated, family)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_registered_method_passes_alone(name, family):
    assert check_method(name, family, time_limit=2) >= 1  # every method meets at least one case


def test_certify_without_time_limit_is_deterministic(family):
    def bracket(model, domain):
        b = certify(model, domain, X=domain.sample(np.random.default_rng(0), 8, model.input_dim), time_limit=None)
        return b.lower, b.upper, b.witness

    check_deterministic(bracket, family[::5])


def test_a_random_method_is_not_deterministic(family):
    counter = iter(range(10**6))
    with pytest.raises(AssertionError, match="not deterministic"):
        check_deterministic(lambda model, domain: next(counter), family[:1])


def test_a_time_limit_skips_what_it_cannot_afford_and_a_fixed_effort_skips_nothing():
    from robustlaw.lipschitz import Budget

    assert Budget(None).affords(1e30)
    assert Budget(10.0).affords(1e6) and not Budget(10.0).affords(1e15)
    big = torch.nn.Sequential(torch.nn.Linear(600, 600), torch.nn.ReLU(), torch.nn.Linear(600, 1)).double()
    b = certify(big, time_limit=0.3)
    # the Shor eigen-problems did not fit (cap-overlap is the path norm on R^d, and runs first: structure stage)
    assert b.upper_method in ("spectral", "path", "cap-overlap") and b.lower <= b.upper
