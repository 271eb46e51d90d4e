import json

import numpy as np
import pytest
import torch

from robustlaw.data import DataSpec
from robustlaw.experiment import CertifySpec, RunSpec, run
from robustlaw.fitting import FitSpec
from robustlaw.families import ModelSpec
from robustlaw.theory import law_scale

SMALL = RunSpec(data=DataSpec(n=40, d=6), model=ModelSpec.of(width=24), fit=FitSpec(max_steps=1500), seed=1)


@pytest.fixture(scope="module")
def record():
    torch.set_num_threads(1)
    return run(SMALL)


def test_record_interpolates_and_brackets_its_lipschitz_constant(record):
    assert record["status"] == "ok"
    assert record["reached"] and record["train_max_err"] <= 0.1
    assert record["P"] == 24 * (6 + 2)
    assert record["lip_floor"] <= record["lip_lower"] <= record["lip_upper"]
    assert np.isclose(record["law_scale"], law_scale(40, 6, 24 * 8))


def test_record_has_the_effective_dimension_and_the_law_with_it(record):
    from robustlaw.data import make_dataset
    from robustlaw.effdim import twonn

    assert record["d_eff"] == pytest.approx(twonn(make_dataset(SMALL.data, SMALL.seed).X).value)
    assert 2 < record["d_eff"] < 12  # 40 points on S^5: TwoNN sees about 5
    assert record["law_scale_deff"] == pytest.approx(np.sqrt(40 * record["d_eff"] / (24 * 8)))
    assert record["data_scaling"] is None  # drawn at ||x|| ~ 1, not rescaled


def test_a_digits_run_records_how_its_inputs_were_scaled():
    spec = RunSpec(data=DataSpec.of(distribution="digits", n=40, d=64, labels="data", flip=0.1),
                   model=ModelSpec.of(width=4), fit=FitSpec(max_steps=10, target="budget"), seed=0)
    out = run(spec)
    assert out["status"] == "ok", out["error"]
    assert out["data_scaling"].startswith("centre_rms") and out["sigma"] == pytest.approx(0.6)
    assert out["d_eff"] < 64 and out["law_scale_deff"] < out["law_scale"]


def test_witness_lies_in_the_default_domain_the_data_ball(record):
    from robustlaw.data import make_dataset

    witness = np.array(json.loads(record["witness"]))
    data = make_dataset(SMALL.data, SMALL.seed)
    assert record["domain"] == f"ball(r={data.radius:g})"
    assert np.linalg.norm(witness) <= data.radius * (1 + 1e-6)


def test_same_spec_and_seed_give_the_same_record(record):
    again = run(SMALL)
    volatile = {"fit_seconds", "certify_seconds", "seconds"}
    assert {k: v for k, v in again.items() if k not in volatile} == {k: v for k, v in record.items() if k not in volatile}


def test_key_depends_on_the_spec_not_the_sweep_name():
    other_sweep = RunSpec(**{**SMALL.__dict__, "sweep": "other"})
    other_seed = RunSpec(**{**SMALL.__dict__, "seed": 2})
    assert other_sweep.key() == SMALL.key()
    assert other_seed.key() != SMALL.key()


def test_mean_gradient_is_reported_separately_from_the_supremum(record):
    assert 0 < record["grad_mean_train"] <= record["lip_lower"]


def test_local_domain_needs_a_radius():
    from robustlaw.errors import SpecError

    with pytest.raises(SpecError, match="certify.radius"):
        CertifySpec(domain="local")


def test_certify_without_time_limit_is_reproducible_where_the_search_runs():
    from robustlaw import Ball, certify, fit, make_dataset, two_layer

    data = make_dataset(DataSpec(n=60, d=8), seed=0)
    model = two_layer(8, 48, seed=0)  # too wide for the exact covering: the region walk runs
    fit(model, data.X, data.y, FitSpec(max_steps=1500))
    first, second = (certify(model, Ball(1.0), data.X, data.y, seed=3, time_limit=None) for _ in range(2))
    assert not first.exact and first.lower_method.startswith("search")
    assert first.lower == second.lower and np.array_equal(first.witness, second.witness)
    assert first.upper == second.upper
