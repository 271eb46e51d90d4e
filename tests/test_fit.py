"""fit / fit_many: targets met or recorded as missed, the smooth mode, batch-independence."""

import numpy as np
import pytest
import torch

from robustlaw.data import DataSpec, make_dataset
from robustlaw.errors import RobustlawError, SpecError
from robustlaw.fitting import FitSpec, fit, fit_many, padding_groups
from robustlaw.lipschitz import gradient_norms
from robustlaw.models import mlp, two_layer


def data(seed, n=40, d=8):
    return make_dataset(DataSpec(n=n, d=d), seed)


def predict(model, X):
    with torch.no_grad():
        return model(torch.as_tensor(X, dtype=torch.float32)).numpy()


def test_interpolation_meets_tol_on_the_returned_model():
    ds = data(0)
    model = two_layer(8, 64, seed=0)
    result = fit(model, ds.X, ds.y, FitSpec(tol=0.05, max_steps=3000))
    err = np.abs(predict(model, ds.X) - ds.y).max()
    assert result.reached and result.mode == "train"
    assert err <= 0.05 and err == pytest.approx(result.train_max_err, abs=1e-6)
    assert 0 < result.steps < 3000 and result.flops > 0


def test_missed_target_is_recorded_as_missed():
    ds = data(1)
    model = two_layer(8, 1, seed=1)  # one unit cannot fit 40 random signs
    result = fit(model, ds.X, ds.y, FitSpec(tol=0.1, max_steps=50))
    assert not result.reached and result.steps == 50
    assert np.abs(predict(model, ds.X) - ds.y).max() > 0.1


def test_memorise_target_reaches_mse_budget():
    ds = data(2)
    model = two_layer(8, 32, seed=2)
    result = fit(model, ds.X, ds.y, FitSpec(target="memorise", eps=0.5, max_steps=3000))
    mse = np.mean((predict(model, ds.X) - ds.y) ** 2)
    assert result.reached and mse <= ds.sigma**2 - 0.5 + 1e-6


def test_budget_trains_to_the_end_and_never_claims_a_target():
    ds = data(3)
    result = fit(two_layer(8, 16, seed=3), ds.X, ds.y, FitSpec(target="budget", max_steps=30))
    assert not result.reached and result.steps == 30


def _fit_all(spec, configs, batched, activation="relu"):
    sets = [data(s) for _, s in configs]
    models = [two_layer(8, k, seed=s, activation=activation) for k, s in configs]
    args = ([d.X for d in sets], [d.y for d in sets], spec, [1.0] * len(sets), [s for _, s in configs])
    if batched:
        results = fit_many(models, *args)
    else:
        results = [fit_many([m], [X], [y], spec, [1.0], [s])[0] for m, X, y, s in zip(models, *args[:2], args[4])]
    return models, results


@pytest.mark.parametrize("mode, activation, steps", [("train", "relu", 400), ("smooth", "relu", 400),
                                                     ("train", "softplus", 2000)])
def test_batched_equals_unbatched_bitwise(mode, activation, steps):
    spec = FitSpec(tol=0.1, max_steps=steps, mode=mode, smooth_steps=60, smooth_probes=32, lr=0.03)
    configs = [(3, 0), (24, 1), (70, 2), (40, 0), (9, 1)]  # mixed widths (padded) and seeds
    batched_models, batched = _fit_all(spec, configs, True, activation)
    single_models, single = _fit_all(spec, configs, False, activation)
    assert [r.reached for r in batched] == [r.reached for r in single]
    assert any(r.reached for r in batched) and not all(r.reached for r in batched)
    for a, b, ra, rb in zip(batched_models, single_models, batched, single):
        assert (ra.reached, ra.steps, ra.train_mse, ra.train_max_err, ra.smooth_surrogate) == (
            rb.reached, rb.steps, rb.train_mse, rb.train_max_err, rb.smooth_surrogate)
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_deep_nets_batch_across_seeds_bitwise():
    spec = FitSpec(tol=0.1, max_steps=300)
    sets = [data(s) for s in (0, 1)]
    models = [mlp(8, [12, 10], seed=s) for s in (0, 1)]
    fit_many(models, [d.X for d in sets], [d.y for d in sets], spec, seeds=[0, 1])
    for s, model in zip((0, 1), models):
        alone = mlp(8, [12, 10], seed=s)
        fit(alone, sets[s].X, sets[s].y, spec, seed=s)
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), alone.parameters()))


def test_smooth_mode_keeps_the_fit_and_lowers_the_gradient_at_the_data():
    ds = make_dataset(DataSpec(n=100, d=10), 0)
    plain, smooth = two_layer(10, 60, seed=0), two_layer(10, 60, seed=0)
    fit(plain, ds.X, ds.y, FitSpec(tol=0.1, max_steps=3000))
    result = fit(smooth, ds.X, ds.y, FitSpec(tol=0.1, max_steps=3000, mode="smooth", smooth_steps=600))
    assert result.reached and result.mode == "smooth" and result.smooth_surrogate is not None
    assert np.abs(predict(smooth, ds.X) - ds.y).max() <= 0.1
    points = torch.as_tensor(ds.X, dtype=torch.float32)
    assert float(gradient_norms(smooth, points).max()) < 0.8 * float(gradient_norms(plain, points).max())


@pytest.mark.parametrize("fields, where", [
    ({"mode": "fast"}, "fit.mode"),
    ({"mode": "smooth", "target": "budget"}, "fit.mode"),
    ({"lr": 0.0}, "fit.lr"),
    ({"smooth_steps": 0}, "fit.smooth_steps"),
    ({"smooth_top": 9, "smooth_probes": 8}, "fit.smooth_top"),
    ({"max_steps": 2.5}, "fit.max_steps"),
])
def test_bad_fit_spec_names_the_field(fields, where):
    with pytest.raises(SpecError, match=where):
        FitSpec(**fields)


def test_closed_form_gradient_matches_autograd():
    from robustlaw.fitting import Stack

    sets = [data(s) for s in (0, 1)]
    stack = Stack([two_layer(8, 5, seed=0), two_layer(8, 20, seed=1)])
    assert stack.closed_form
    X = stack.augment(torch.as_tensor(np.stack([d.X for d in sets]), dtype=torch.float32))
    y = torch.as_tensor(np.stack([d.y for d in sets]), dtype=torch.float32)
    residual, grads = stack.mse_grads(X, y)
    params = [p.requires_grad_(True) for p in stack.params]
    loss = ((stack.forward(X, stack.masks()) - y) ** 2).mean(dim=1).sum()
    for a, b in zip(grads, torch.autograd.grad(loss, params)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert torch.allclose(residual, stack.forward(X, stack.masks()).detach() - y)


def test_smooth_mode_keeps_a_memorise_target():
    ds = data(4)
    model = two_layer(8, 32, seed=4)
    result = fit(model, ds.X, ds.y, FitSpec(target="memorise", eps=0.5, max_steps=3000, mode="smooth",
                                            smooth_steps=300), seed=4)
    mse = np.mean((predict(model, ds.X) - ds.y) ** 2)
    assert result.reached and result.mode == "smooth" and mse <= ds.sigma**2 - 0.5 + 1e-6


# 16 models of mixed widths (paddings 16 to 144) and seeds: batches of 8 or more take vectorised
# kernels that a batch of fewer models does not, and wide and narrow models share batches
TWO_LAYER = [(w, s) for s in range(2) for w in (3, 9, 24, 40, 70, 130, 17, 5)]
DEEP = [(ws, s) for s in range(2) for ws in ((5, 12), (20, 20), (12, 40), (7, 7), (33, 9), (16, 16), (3, 30), (24, 8))]


def _fit_in_batches(spec, configs, size, deep, order):
    sets = {s: data(s) for _, s in configs}
    models = [mlp(8, list(k), seed=s) if deep else two_layer(8, k, seed=s) for k, s in configs]
    results = [None] * len(configs)
    for start in range(0, len(order), size):
        rows = order[start:start + size]
        fitted = fit_many([models[i] for i in rows], [sets[configs[i][1]].X for i in rows],
                          [sets[configs[i][1]].y for i in rows], spec, [1.0] * len(rows), [configs[i][1] for i in rows])
        for i, result in zip(rows, fitted):
            results[i] = result
    return models, results


@pytest.mark.parametrize("mode", ["train", "smooth"])
@pytest.mark.parametrize("deep", [False, True])
def test_every_model_is_bitwise_the_same_alone_or_in_batches_of_3_or_32(mode, deep):
    spec = FitSpec(tol=0.1, max_steps=300, mode=mode, smooth_steps=40, smooth_probes=16, lr=0.03)
    configs = DEEP if deep else TWO_LAYER
    alone_models, alone = _fit_in_batches(spec, configs, 1, deep, list(range(len(configs))))
    assert any(r.reached for r in alone) and not all(r.reached for r in alone)
    shuffled = [int(i) for i in np.random.default_rng(0).permutation(len(configs))]
    for size, order in ((3, shuffled), (32, shuffled)):  # 32: all 16 models in one call
        models, results = _fit_in_batches(spec, configs, size, deep, order)
        for a, b, ra, rb in zip(models, alone_models, results, alone):
            assert (ra.reached, ra.steps, ra.train_mse, ra.train_max_err, ra.smooth_surrogate, ra.flops) == (
                rb.reached, rb.steps, rb.train_mse, rb.train_max_err, rb.smooth_surrogate, rb.flops), (size, a)
            assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters())), (size, a)


def test_only_models_of_equal_padded_widths_share_a_stack():
    models = [two_layer(8, k) for k in (3, 130, 16, 17, 120, 1)] + [mlp(8, [20, 5]), mlp(8, [30, 16])]
    assert padding_groups(models[:6]) == [[0, 2, 5], [1], [3], [4]]
    assert padding_groups(models[6:]) == [[0, 1]]


def test_models_of_another_depth_or_input_dimension_are_refused():
    ds = data(0)
    with pytest.raises(RobustlawError, match="one depth"):
        fit_many([two_layer(8, 4), mlp(8, [4, 4])], [ds.X] * 2, [ds.y] * 2)
    with pytest.raises(RobustlawError, match="input dimension"):
        fit_many([two_layer(8, 4), two_layer(9, 40)], [ds.X] * 2, [ds.y] * 2)
