"""Model files cannot attack: torch files load without running code, .npz files are validated from their
headers before any array is read, and every refusal is one short line. Huge finite weights are rescaled
exactly (ReLU-type nets) or refused."""

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from conftest import random_net
from torch import nn

import robustlaw.lipschitz
from robustlaw.errors import RobustlawError
from robustlaw.lipschitz import files
from robustlaw.lipschitz.files import load_model, load_npz
from robustlaw.activations import LeakyReLU, ReLU, Tanh
from robustlaw.lipschitz.network import Net, check_scale, from_torch
from robustlaw.models import Power, mlp


def run_lip(*args):
    return subprocess.run([sys.executable, "-m", "robustlaw.cli", "lip", *args], capture_output=True, text=True,
                          timeout=120)


class Payload:
    """Unpickling this writes ``marker`` (what a hostile model file would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def _hostile_files(tmp_path, marker):
    plain = tmp_path / "payload.pt"
    torch.save(Payload(marker), plain)
    silent = tmp_path / "silent.pt"  # a working network that also carries the payload
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    model.extra = Payload(marker)
    torch.save(model, silent)
    raw = tmp_path / "raw.pth"
    import pickle

    raw.write_bytes(pickle.dumps(Payload(marker)))
    return [plain, silent, raw]


def test_payload_is_real(tmp_path):
    """The payload used below does write its marker when loaded the unsafe way."""
    marker = tmp_path / "control"
    (plain, *_) = _hostile_files(tmp_path, marker)
    torch.load(plain, weights_only=False)
    assert marker.exists()


def test_hostile_torch_files_run_nothing(tmp_path):
    marker = tmp_path / "marker"
    for path in _hostile_files(tmp_path, marker):
        out = run_lip(str(path), "--json", "--time-limit", "2")
        assert out.returncode == 2, out.stderr
        assert out.stdout == ""
        assert out.stderr.strip().count("\n") == 0 and "refused to load" in out.stderr, out.stderr
        assert len(out.stderr) < 300
        assert not marker.exists()
    with pytest.raises(RobustlawError, match=r"needs the global (builtins\.)?exec, "):
        load_model(tmp_path / "silent.pt")
    assert not marker.exists()


def test_unlisted_module_is_refused(tmp_path):
    torch.save(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1)), tmp_path / "bn.pt")
    with pytest.raises(RobustlawError, match=r"bn.pt: refused to load: it needs the global .*LayerNorm"):
        load_model(tmp_path / "bn.pt")


def test_standard_modules_load_and_certify(tmp_path, rng):
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 5), nn.LeakyReLU(0.1), nn.Dropout(), nn.Linear(5, 4), nn.Tanh(),
                          nn.Linear(4, 4), nn.Softplus(beta=2.0), nn.Linear(4, 3), nn.Sigmoid(), nn.Identity(),
                          nn.Linear(3, 2), Power(2), nn.Linear(2, 1)).double()
    torch.save(model, tmp_path / "all.pt")
    net, direct = load_model(tmp_path / "all.pt"), from_torch(model)
    X = rng.standard_normal((5, 3))
    np.testing.assert_array_equal(net.gradients(X), direct.gradients(X))
    assert net.describe() == direct.describe()
    torch.save(mlp(4, [6, 5], seed=1), tmp_path / "mlp.pth")
    assert load_model(tmp_path / "mlp.pth").widths == [6, 5]
    torch.save(mlp(3, [8], seed=2), tmp_path / "two.pt")
    out = run_lip(str(tmp_path / "two.pt"), "--json", "--time-limit", "10")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["exact"] is True


def test_state_dict_reads_as_relu(tmp_path, rng):
    model = mlp(4, [6, 5], seed=3, dtype=torch.float64)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    net = load_model(tmp_path / "sd.pt")
    X = rng.standard_normal((7, 4))
    np.testing.assert_array_equal(net.gradients(X), from_torch(model).gradients(X))
    assert all(a == ReLU() for a in net.acts)
    torch.save({"0.weight": torch.ones(3, 2), "0.bias": torch.ones(4), "2.weight": torch.ones(1, 3)}, tmp_path / "x.pt")
    with pytest.raises(RobustlawError, match="shape mismatch: b1"):
        load_model(tmp_path / "x.pt")
    torch.save({"0.weight": torch.ones(3, 2), "optimizer": torch.ones(1)}, tmp_path / "y.pt")
    with pytest.raises(RobustlawError, match="unexpected entry optimizer"):
        load_model(tmp_path / "y.pt")


def test_complex_weights_are_refused(tmp_path):
    torch.save({"0.weight": torch.ones(4, 3, dtype=torch.complex64), "0.bias": torch.ones(4)}, tmp_path / "c.pt")
    with pytest.raises(RobustlawError, match="W1 holds complex numbers; robustlaw certifies real networks"):
        load_model(tmp_path / "c.pt")
    layer = nn.Linear(2, 1)
    layer.weight = nn.Parameter(torch.ones(1, 2, dtype=torch.complex128))
    with pytest.raises(RobustlawError, match="complex numbers"):
        from_torch(nn.Sequential(layer))
    np.savez(tmp_path / "c.npz", W1=np.ones((3, 2)), b1=np.ones(3), W2=np.ones((1, 3)) * 1j, b2=np.zeros(1))
    with pytest.raises(RobustlawError, match="W2 holds complex numbers; robustlaw certifies real networks"):
        load_npz(tmp_path / "c.npz")


def _npy_header(shape, descr="<f8"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _no_reading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an array was read before validation")

    monkeypatch.setattr(np.lib.format, "read_array", refuse)


@pytest.mark.parametrize("arrays, message", [
    ({"W99999999999999999999": np.ones(2)}, "no layers found.*got W99999999999999999999$"),
    ({"W10000000": np.ones(2)}, "no layers found"),
    ({f"junk_{'x' * 300}{i}": np.ones(1) for i in range(60)}, r"junk_x.*x0, .* and 55 more$"),
    ({"a\nb": np.ones(1)}, r"got a\\nb"),
    ({"W9999": np.ones((1, 1)), "b9999": np.ones(1)}, "missing W1, b1, W2, b2, W3 and 19991 more"),
    ({"W1": np.ones((3, 2)), "b1": np.ones(3), "W2": np.ones((1, 3)), "b2": np.zeros(1), "W1x": np.ones(1)},
     "unexpected arrays W1x"),
    ({"W1": np.ones((3, 2), dtype=bool), "b1": np.ones(3), "W2": np.ones((1, 3)), "b2": np.zeros(1)},
     "W1 must be a real numeric array"),
    ({"W1": np.ones(3), "b1": np.ones(3), "W2": np.ones((1, 3)), "b2": np.zeros(1)}, "W1 must be a matrix"),
])
def test_names_and_headers_checked_before_reading(tmp_path, monkeypatch, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    _no_reading(monkeypatch)
    with pytest.raises(RobustlawError, match=message) as info:
        load_npz(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_declared_shape_must_match_stored_size(tmp_path, monkeypatch):
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("W1.npy", _npy_header((100_000_000, 10)) + bytes(80))
        zf.writestr("b1.npy", _npy_header((100_000_000,)) + bytes(80))
    _no_reading(monkeypatch)
    with pytest.raises(RobustlawError, match=r"W1 declares shape \(100000000, 10\) but stores 80 bytes"):
        load_npz(path)


def test_declared_size_limit(tmp_path, monkeypatch):
    np.savez(tmp_path / "n.npz", W1=np.ones((30, 4)), b1=np.ones(30), W2=np.ones((1, 30)), b2=np.zeros(1))
    monkeypatch.setattr(files, "MAX_ELEMENTS", 100)
    _no_reading(monkeypatch)
    with pytest.raises(RobustlawError, match="declares 181 numbers in all; robustlaw reads at most 100"):
        load_npz(tmp_path / "n.npz")


def test_row_and_column_biases_and_api(tmp_path, rng):
    net = random_net(rng, 3, [4])
    np.savez(tmp_path / "r.npz", W1=net.weights[0], b1=net.biases[0][None], W2=net.weights[1], b2=net.biases[1][:, None])
    back = robustlaw.lipschitz.load_npz(tmp_path / "r.npz")
    X = rng.standard_normal((5, 3))
    np.testing.assert_array_equal(back.gradients(X), net.gradients(X))
    assert robustlaw.lipschitz.as_net(str(tmp_path / "r.npz")).widths == [4]
    with pytest.raises(RobustlawError, match="unknown model format"):
        load_model(tmp_path / "r.onnx")


def _scaled(net: Net, k: float, layers) -> Net:
    """f scaled by k in each of ``layers``: weights of those layers times k, biases times k per layer so far,
    so that the result is k^len(layers) f."""
    weights, biases, factor = [], [], 1.0
    for i, (W, b) in enumerate(zip(net.weights, net.biases)):
        factor *= k if i in layers else 1.0
        weights.append(W * k if i in layers else W)
        biases.append(b * factor)
    return Net(tuple(weights), tuple(biases), net.acts)


def test_balanced_is_an_exact_rescaling(rng):
    net = random_net(rng, 4, [6, 5], act=LeakyReLU(0.1))
    big = _scaled(net, 1e3, {0, 1, 2})
    bal, c = big.balanced()
    X = rng.standard_normal((30, 4))
    # powers of two: the same float64 computation divided by c, bit for bit
    np.testing.assert_array_equal(bal.gradients(X) * c, big.gradients(X))
    np.testing.assert_array_equal(bal.forward(X) * c, big.forward(X))
    assert all(0.5 <= np.abs(W).max() < 1 for W in bal.weights)
    assert [np.sign(z).tolist() for z in bal.preactivations(X)] == [np.sign(z).tolist() for z in big.preactivations(X)]


def test_huge_weights_rescale_or_refuse(rng):
    net = random_net(rng, 4, [6, 5])
    X = rng.standard_normal((30, 4))
    huge = _scaled(net, 1e100, {0, 1, 2})  # f * 1e300: squares overflow, the answer does not
    bal, c = check_scale(huge)
    assert np.isfinite(c) and 1e299 < c < 1e302
    assert all(0.5 <= np.abs(W).max() < 1 for W in bal.weights) and all(np.isfinite(b).all() for b in bal.biases)
    np.testing.assert_allclose(bal.gradients(X) * (c / 1e300), net.gradients(X), rtol=1e-12, atol=1e-300)
    one = _scaled(net, 1e160, {0})
    bal, c = check_scale(one)
    assert 1e159 < c < 1e162
    np.testing.assert_allclose(bal.gradients(X) * (c / 1e160), net.gradients(X), rtol=1e-12)
    # every weight and bias times 1e160 (all finite): Lip ~ 1e480 is no float64
    every = Net(tuple(W * 1e160 for W in net.weights), tuple(b * 1e160 for b in net.biases), net.acts)
    assert every.balanced()[1] == np.inf
    with pytest.raises(RobustlawError, match="beyond float64's largest number") as info:
        check_scale(every)
    assert "\n" not in str(info.value)


def test_unscalable_activations(rng):
    net = random_net(rng, 3, [4], act=Tanh())
    assert net.balanced() == (net, 1.0)
    huge = Net((net.weights[0] * 1e160, net.weights[1]), net.biases, net.acts)
    with pytest.raises(RobustlawError, match="weights up to 1.*e\\+160 are too large to certify in float64"):
        huge.balanced()


@pytest.mark.parametrize("module, message", [
    (nn.Softplus(beta=0.0), "Softplus beta must be positive"),
    (nn.LeakyReLU(float("nan")), "LeakyReLU slope nan is not finite"),
    (Power(2), "Power q must be an integer >= 1, got -1"),
])
def test_crafted_activation_parameters(tmp_path, module, message):
    if isinstance(module, Power):
        module.q = -1
    torch.save(nn.Sequential(nn.Linear(2, 3), module, nn.Linear(3, 1)), tmp_path / "m.pt")
    with pytest.raises(RobustlawError, match=message):
        load_model(tmp_path / "m.pt")
