"""Issue 14: retirement, the closed-form smoothing gradient, and the fit device."""

import dataclasses

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from robustlaw import fitting
from robustlaw.data import DataSpec, make_dataset
from robustlaw.errors import SpecError
from robustlaw.experiment import RunSpec, run
from robustlaw.fitting import FitSpec, Stack, Target, fit_many, step_flops
from robustlaw.models import two_layer


def _rows_per_step(monkeypatch):
    """Patch AdamW.step to log how many models each step moved."""
    rows, step = [], fitting.AdamW.step

    def logged(self, params, grads, lr):
        rows.append(params[0].shape[0])
        return step(self, params, grads, lr)

    monkeypatch.setattr(fitting.AdamW, "step", logged)
    return rows


@pytest.mark.parametrize("mode", ["train", "smooth"])
def test_a_model_that_meets_its_target_stops_stepping_and_nobody_waits(monkeypatch, mode):
    ds = make_dataset(DataSpec(n=40, d=8), 0)
    spec = FitSpec(tol=0.1, max_steps=400, lr=0.03, mode=mode, smooth_steps=30, smooth_probes=16)
    alone = fit_many([two_layer(8, 16, seed=0)], [ds.X], [ds.y], spec, seeds=[0])[0]
    rows = _rows_per_step(monkeypatch)
    # width 1 pads to 16 too (same stack) and can never interpolate 40 random signs
    easy, hard = fit_many([two_layer(8, 16, seed=0), two_layer(8, 1, seed=1)], [ds.X] * 2, [ds.y] * 2, spec,
                          seeds=[0, 1])
    # the smooth mode's first phase is the train mode's fit
    fit_steps = fit_many([two_layer(8, 16, seed=0)], [ds.X], [ds.y], dataclasses.replace(spec, mode="train"))[0].steps
    rows.clear()
    easy, hard = fit_many([two_layer(8, 16, seed=0), two_layer(8, 1, seed=1)], [ds.X] * 2, [ds.y] * 2, spec,
                          seeds=[0, 1])
    assert easy.reached and not hard.reached and 0 < fit_steps < spec.max_steps
    assert fit_steps <= easy.steps <= fit_steps + spec.smooth_steps
    assert (easy.steps, easy.train_max_err, easy.smooth_surrogate) == (alone.steps, alone.train_max_err,
                                                                       alone.smooth_surrogate)
    assert rows[:fit_steps] == [2] * fit_steps  # both fit until the easy one meets its target ...
    assert rows[fit_steps:spec.max_steps] == [1] * (spec.max_steps - fit_steps)  # ... which then leaves
    smoothing = rows[spec.max_steps:]
    assert smoothing == ([1] * spec.smooth_steps if mode == "smooth" else [])  # exactly its smoothing steps
    n = 40
    expected = step_flops(n, two_layer(8, 16)) * (alone.steps if mode == "train" else
                                                  fit_steps + spec.smooth_steps * (1 + 2 * (n + 16) / n))
    assert easy.flops == pytest.approx(expected)


def test_smoothing_models_all_start_together_and_finish_together(monkeypatch):
    sets = [make_dataset(DataSpec(n=40, d=8), s) for s in (0, 1)]
    spec = FitSpec(tol=0.1, max_steps=600, lr=0.03, mode="smooth", smooth_steps=25, smooth_probes=16)
    rows = _rows_per_step(monkeypatch)
    a, b = fit_many([two_layer(8, 20, seed=0), two_layer(8, 30, seed=1)], [s.X for s in sets], [s.y for s in sets],
                    spec, seeds=[0, 1])
    assert a.reached and b.reached and a.steps != b.steps  # they met the fit target at different steps
    assert rows[-spec.smooth_steps:] == [2] * spec.smooth_steps and rows.count(2) > spec.smooth_steps


def test_closed_form_smoothing_gradient_matches_double_backprop():
    sets = [make_dataset(DataSpec(n=30, d=6), s) for s in (0, 1, 2)]
    stack = Stack([two_layer(6, k, seed=s) for k, s in ((5, 0), (12, 1), (16, 2))])
    assert stack.closed_form
    probes = torch.randn(3, 50, 6, generator=torch.Generator().manual_seed(0))
    top = 4
    value, grads = stack.surrogate_grads(stack.augment(probes), top)
    params = [p.requires_grad_(True) for p in stack.params]
    points = probes.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(stack.forward(stack.augment(points), stack.masks()).sum(), points, create_graph=True)
    expected = (g.pow(2).sum(-1) + 1e-12).sqrt().topk(top, dim=1).values.mean(dim=1)
    assert torch.allclose(value, expected.detach(), rtol=1e-5)
    for a, b in zip(grads, torch.autograd.grad(expected.sum(), params)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    X = stack.augment(torch.as_tensor(np.stack([s.X for s in sets]), dtype=torch.float32))
    y = torch.as_tensor(np.stack([s.y for s in sets]), dtype=torch.float32)
    sigma = torch.ones(3)
    for target in (Target("interpolate", tol=0.5), Target("memorise", eps=0.1)):
        residual = (stack.forward(X, stack.masks()) - y).detach().requires_grad_(True)
        (auto,) = torch.autograd.grad(target.violation(residual, sigma).sum(), residual)
        assert auto.abs().max() > 0 and torch.allclose(target.violation_grad(residual.detach(), sigma), auto,
                                                       rtol=1e-5, atol=1e-7)


def test_cuda_asked_for_but_absent_is_one_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(SpecError, match="fit.device: cuda asked for"):
        FitSpec(device="cuda")
    assert FitSpec(device="auto").torch_device == torch.device("cpu")
    with pytest.raises(SpecError, match="fit.device: unknown device"):
        FitSpec(device="tpu")


def test_the_fit_device_is_not_part_of_the_record():
    spec = RunSpec(data=DataSpec(n=24, d=6), fit=FitSpec(tol=0.1, max_steps=200, mode="smooth", smooth_steps=20,
                                                         smooth_probes=8))
    on_auto = dataclasses.replace(spec, fit=dataclasses.replace(spec.fit, device="auto"))
    assert on_auto.key() == spec.key() and "device" not in on_auto.as_dict()["fit"]
    timing = {"fit_seconds", "certify_seconds", "seconds"}
    a, b = run(spec), run(on_auto)
    assert a["status"] == "ok" and {k: v for k, v in a.items() if k not in timing} == {
        k: v for k, v in b.items() if k not in timing}


def test_run_with_cuda_absent_stops_with_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    from robustlaw.cli import main

    result = CliRunner().invoke(main, ["run", "--device", "cuda", "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "fit.device: cuda asked for" in str(result.exception or result.output)
    assert not (tmp_path / "out" / "results.db").exists()


def test_a_sweep_certifies_each_fitted_run_as_its_own_task_largest_first(tmp_path):
    from multiprocessing.reduction import ForkingPickler

    from robustlaw.experiment import Fitted, certify_fitted
    from robustlaw.store import Store
    from robustlaw.sweep import LocalExecutor, SweepSpec, run_sweep, safe_fit_group

    class Logged(LocalExecutor):
        rounds = []

        def map_unordered(self, fn, tasks):
            self.rounds.append((fn, tasks))
            # every task crosses a process boundary in a real pool: so does it here
            return super().map_unordered(fn, [ForkingPickler.loads(bytes(ForkingPickler.dumps(t))) for t in tasks])

    sweep = SweepSpec.from_dict({"name": "t", "seeds": [0, 1], "data": {"n": 24, "d": 6},
                                 "model": {"width": [4, 20, 40]}, "fit": {"tol": 0.1, "max_steps": 300}})
    with Store(tmp_path / "r.db") as store:
        records = run_sweep(sweep, store, Logged(1))
    (fit_fn, batches), (certify_fn, items) = Logged.rounds
    assert fit_fn is safe_fit_group and certify_fn is certify_fitted
    assert sum(len(b) for b in batches) == 6 and len(batches) < 6  # fitted in batches ...
    assert len(items) == 6 and all(isinstance(i, Fitted) for i in items)  # ... certified one run per task
    assert [i.cost() for i in items] == sorted((i.cost() for i in items), reverse=True)
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)
