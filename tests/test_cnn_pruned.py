"""Issue 11 B: CNNs (robustlaw.conv), pruned nets (robustlaw.pruning), PyTorch conv models in certify."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from click.testing import CliRunner

from robustlaw.cli import main
from robustlaw.conv import cnn
from robustlaw.data import DataSpec
from robustlaw.errors import RobustlawError, SpecError
from robustlaw.experiment import RunSpec, run
from robustlaw.families import ModelSpec, parametrisation_constant
from robustlaw.fitting import FitSpec, fit_many, fit_module
from robustlaw.lipschitz import Ball, Global, certify, load_model, upper_bound
from robustlaw.lipschitz.network import MAX_DENSE, from_torch
from robustlaw.models import mlp
from robustlaw.pruning import MASKS, Pruning, nonzero_count, prunable
from robustlaw.testing.lipschitz import Case, check_upper_bound

torch.set_num_threads(1)  # as every run does (experiment.run_group): batches are bitwise batch-independent


def _sphere(n, d, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True), rng.choice([-1.0, 1.0], size=n)


# ----------------------------------------------------------------------------- counts against hand counts


def test_cnn_P_Q_D_and_J_match_hand_counts():
    two_d = cnn(64, [5], image=(8, 8), pool=2, seed=0)
    # conv: 5 kernels of 3x3 + 5 biases; head: 5 channels x 4x4 pooled positions, no bias
    assert two_d.param_count() == 5 * 9 + 5 + 5 * 16 == 130
    assert two_d.weight_sharing == 64 and two_d.depth == 2  # a kernel weight acts at all 8x8 positions
    one_d = cnn(10, [2, 3], image=(), kernel=3, pool=2, seed=1, dtype=torch.float64)
    assert one_d.param_count() == (2 * 3 + 2) + (3 * 2 * 3 + 3) + 3 * 5 == 44
    assert one_d.weight_sharing == 10 and one_d.depth == 3
    data = SimpleNamespace(radius=2.0)
    w = max(float(p.detach().abs().max()) for p in one_d.parameters())
    W, J = parametrisation_constant(one_d, data)
    assert W == pytest.approx(2 * w * math.sqrt(44))
    assert J == pytest.approx(2.0 * (w * 10 * 44) ** 3)  # BS21 Lemma 3.1: R (W Q P)^D


@pytest.mark.parametrize("source", ["random", "magnitude", "snip", "imp"])
def test_pruned_P_counts_all_weights_and_nonzero_the_mask(source):
    X, y = _sphere(30, 5)
    model = mlp(5, [10], seed=2)
    MASKS.get(source)().prune([model], [X], [y], FitSpec(max_steps=200), [1.0], [2], Pruning(0.2, 2))
    # hidden 10 x 5 weights keep round(0.2 * 50) = 10; biases (10) and head (10) are never pruned
    assert model.param_count() == 10 * 5 + 10 + 10 == 70
    assert nonzero_count(model) == 10 + 10 + 10 == 30
    mask = prunable(model)[0].prune_mask
    assert int(mask.sum()) == 10 and bool((model[0].weight[mask == 0] == 0).all())
    w = max(float(p.detach().abs().max()) for p in model.parameters())
    assert parametrisation_constant(model, SimpleNamespace(radius=1.5))[1] == pytest.approx(1.5 * (w * 70) ** 2)


# ----------------------------------------------------------------------------- masks


def test_mask_sources_differ_where_they_should():
    X, y = _sphere(40, 6)
    masks = {}
    for source in ("random", "magnitude", "snip", "imp"):
        model = mlp(6, [12], seed=3)
        MASKS.get(source)().prune([model], [X], [y], FitSpec(max_steps=300), [1.0], [3], Pruning(0.25, 2))
        masks[source] = prunable(model)[0].prune_mask.clone()
        if source == "magnitude":  # the largest |w| at init: every kept |w| >= every pruned one
            init = mlp(6, [12], seed=3)[0].weight.abs()
            assert float(init[masks[source] == 1].min()) >= float(init[masks[source] == 0].max())
    assert all(int(m.sum()) == 18 for m in masks.values())  # equal non-zero counts
    assert not torch.equal(masks["imp"], masks["magnitude"])  # trained magnitudes are not initial ones
    assert not torch.equal(masks["snip"], masks["magnitude"])
    other = mlp(6, [12], seed=3)
    MASKS.get("random")().prune([other], [X], [y], FitSpec(), [1.0], [4], Pruning(0.25, 2))
    assert not torch.equal(prunable(other)[0].prune_mask, masks["random"])  # the seed draws the mask


def test_imp_rewinds_survivors_to_their_initial_values():
    X, y = _sphere(30, 4)
    model, init = mlp(4, [8], seed=5), mlp(4, [8], seed=5)
    MASKS.get("imp")().prune([model], [X], [y], FitSpec(max_steps=300), [1.0], [5], Pruning(0.5, 2))
    mask = model[0].prune_mask
    assert torch.equal(model[0].weight, init[0].weight * mask)
    assert torch.equal(model[2].weight, init[2].weight) and torch.equal(model[0].bias, init[0].bias)


def test_training_keeps_pruned_weights_at_zero_batched_or_alone():
    X, y = _sphere(40, 5)
    models = [mlp(5, [16], seed=s) for s in (0, 1)] + [mlp(5, [16], seed=2)]
    for m, s in zip(models[:2], (0, 1)):
        MASKS.get("random")().prune([m], [X], [y], FitSpec(), [1.0], [s], Pruning(0.3, 1))
    alone = mlp(5, [16], seed=1)
    MASKS.get("random")().prune([alone], [X], [y], FitSpec(), [1.0], [1], Pruning(0.3, 1))
    spec = FitSpec(max_steps=500)
    fit_many(models, [X] * 3, [y] * 3, spec, [1.0] * 3, [0, 1, 2])  # an unpruned net in the same batch
    fit_many([alone], [X], [y], spec, [1.0], [1])
    for m in models[:2]:
        assert bool((m[0].weight[m[0].prune_mask == 0] == 0).all())
        assert int((m[0].weight != 0).sum()) == int(m[0].prune_mask.sum())
    assert int((models[2][0].weight == 0).sum()) == 0
    assert torch.equal(alone[0].weight, models[1][0].weight)  # batch-independent, masks included


# ----------------------------------------------------------------------------- dense expansion and certification


def _user_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Dropout(0.3),
                          nn.Conv2d(3, 2, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2, 3)).double()
    with torch.no_grad():
        bn = model[1]
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    return model.eval()


def test_a_user_cnn_reads_as_its_dense_layers_with_batchnorm_folded():
    model = _user_cnn()
    net = from_torch(model, input_shape=(1, 4, 4), margin=(0, 2))
    assert net.describe() == "16-48-8-1 relu"  # 3x4x4 after the first conv, 2x2x2 after the second
    X = torch.randn(6, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    out = model(X.reshape(6, 1, 4, 4))
    f = out[:, 0] - out[:, 2]
    (g,) = torch.autograd.grad(f.sum(), X)
    np.testing.assert_allclose(net.forward(X.detach().numpy()), f.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.gradients(X.detach().numpy()), g.numpy(), rtol=1e-12, atol=1e-12)
    one = from_torch(model, input_shape=(1, 4, 4), output=1)
    np.testing.assert_allclose(one.forward(X.detach().numpy()), out[:, 1].detach().numpy(), rtol=1e-12, atol=1e-12)


def test_conv_models_are_refused_with_one_line():
    model = _user_cnn()
    with pytest.raises(RobustlawError, match="starts with Conv2d: give its input shape"):
        from_torch(model)
    with pytest.raises(RobustlawError, match="one output"):
        from_torch(model, input_shape=(1, 4, 4))
    with pytest.raises(RobustlawError, match="output 3 does not exist"):
        from_torch(model, input_shape=(1, 4, 4), output=3)
    per_row = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.Linear(4, 1))  # Linear on the last axis
    with pytest.raises(RobustlawError, match="one output, got 4"):
        from_torch(per_row, input_shape=(1, 4))
    big = nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 4096, 1))
    with pytest.raises(RobustlawError, match="MAX_DENSE"):
        from_torch(big, input_shape=(1, 64, 64))
    with pytest.raises(SpecError, match="model.channels"):
        RunSpec(model=ModelSpec.of(family="cnn", channels=[int(MAX_DENSE**0.5) // 64 + 1], image=[8, 8]),
                data=DataSpec(n=10, d=64))
    with pytest.raises(SpecError, match="model.image"):
        RunSpec(model=ModelSpec.of(family="cnn", channels=[2], image=[4, 4]))  # d = 20 is not 4 x 4
    with pytest.raises(SpecError, match="model.pool: pooling 4 leaves nothing"):  # at spec time, not in the driver
        RunSpec(model=ModelSpec.of(family="cnn", channels=[2], image=[2, 2], pool=4), data=DataSpec(n=10, d=4))


def _conv_cases() -> list[Case]:
    two_d = cnn(16, [3, 2], image=(4, 4), pool=2, seed=7, dtype=torch.float64)
    one_d = cnn(6, [2], image=(), pool=1, seed=8, dtype=torch.float64)
    X, y = _sphere(24, 5, seed=9)
    pruned = mlp(5, [12, 8], seed=9, dtype=torch.float64)
    MASKS.get("snip")().prune([pruned], [X], [y], FitSpec(), [1.0], [9], Pruning(0.3, 1))
    return [Case("cnn 4x4 [3, 2] on R^d", two_d, Global()), Case("cnn 4x4 [3, 2] on ball", two_d, Ball(1.0)),
            Case("cnn 1-D [2] on ball", one_d, Ball(1.0)), Case("pruned snip 5-12-8-1 on ball", pruned, Ball(1.0))]


def test_every_new_family_passes_the_conformance_check():
    cases = _conv_cases()
    check_upper_bound(lambda model, domain: upper_bound(model, domain).value, cases)
    case = cases[1]
    X = case.domain.sample(np.random.default_rng(0), 8, case.model.input_dim)
    bracket = certify(case.model, case.domain, X, seed=0, time_limit=None)  # searches run on the dense Net
    assert 0 < bracket.lower <= bracket.upper


def test_lip_cli_certifies_a_margin_of_a_saved_cnn(tmp_path):
    torch.save(_user_cnn(), tmp_path / "cnn.pt")
    with pytest.raises(RobustlawError, match=r"cnn.pt: the model starts with Conv2d: .*--input-shape"):
        load_model(tmp_path / "cnn.pt")
    out = CliRunner().invoke(main, ["lip", str(tmp_path / "cnn.pt"), "--time-limit", "2", "--input-shape", "1,4,4",
                                    "--margin", "0,2", "--json"])
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout)  # progress may go to stderr
    assert payload["network"] == "16-48-8-1 relu" and payload["lower"] <= payload["upper"]
    own = cnn(16, [3], image=(4, 4), seed=4, dtype=torch.float64)  # robustlaw's CNN, saved whole
    torch.save(own, tmp_path / "own.pt")
    X = np.random.default_rng(4).standard_normal((5, 16))
    np.testing.assert_allclose(load_model(tmp_path / "own.pt").forward(X), own(torch.as_tensor(X)).detach().numpy(),
                               rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- fitting and runs


def test_fit_module_meets_the_target_and_refuses_smooth():
    X, y = _sphere(20, 16, seed=3)
    model = cnn(16, [4], image=(4, 4), pool=1, seed=3)
    result = fit_module(model, X, y, FitSpec(max_steps=2000, tol=0.1))
    assert result.reached and result.flops > 0
    with torch.no_grad():
        assert float((model(torch.as_tensor(X, dtype=torch.float32)) - torch.as_tensor(y)).abs().max()) <= 0.1
    with pytest.raises(SpecError, match="fit.mode"):
        fit_module(model, X, y, FitSpec(mode="smooth"))
    with pytest.raises(SpecError, match="fit.mode: family cnn is fitted in train mode only"):  # at spec time
        RunSpec(data=DataSpec(n=10, d=16), model=ModelSpec.of(family="cnn", image=[4, 4]), fit=FitSpec(mode="smooth"))


def test_records_fill_P_nonzero_and_mask_source():
    data, fit = DataSpec(n=24, d=16), FitSpec(max_steps=300)
    pruned = run(RunSpec(data=data, fit=fit, model=ModelSpec.of(family="pruned", widths=(8,), mask="magnitude",
                                                                density=0.5)))
    assert pruned["status"] == "ok", pruned["error"]
    assert (pruned["P"], pruned["nonzero"], pruned["mask_source"]) == (8 * 16 + 8 + 8, 64 + 8 + 8, "magnitude")
    conv = run(RunSpec(data=data, fit=fit, model=ModelSpec.of(family="cnn", channels=(2,), image=(4, 4))))
    assert conv["status"] == "ok", conv["error"]
    assert conv["P"] == conv["nonzero"] == 2 * 9 + 2 + 2 * 4 and conv["mask_source"] is None
    assert conv["lip_lower"] <= conv["lip_upper"]
