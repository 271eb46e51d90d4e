"""`robustlaw lip`: one JSON object with the bracket; one-line errors for bad files."""

import json
import subprocess
import sys

import numpy as np
import torch
from conftest import random_net

from robustlaw.lipschitz.network import Net


def run(*args):
    return subprocess.run([sys.executable, "-m", "robustlaw.cli", "lip", *args], capture_output=True, text=True,
                          timeout=120)


def test_json_bracket(tmp_path, rng):
    net = random_net(rng, 3, [10])
    net.save_npz(tmp_path / "n.npz")
    out = run(str(tmp_path / "n.npz"), "--json", "--time-limit", "20")
    assert out.returncode == 0, out.stderr
    obj = json.loads(out.stdout)
    assert {"lower", "upper", "exact", "witness", "seconds"} <= set(obj)
    assert obj["exact"] is True
    g = net.gradients(np.array(obj["witness"])[None])[0]
    assert abs(np.linalg.norm(g) - obj["lower"]) <= 1e-12 * obj["lower"]


def test_ball_domain_and_text_output(tmp_path, rng):
    random_net(rng, 4, [30, 20]).save_npz(tmp_path / "deep.npz")
    out = run(str(tmp_path / "deep.npz"), "--domain", "ball:0.5", "--time-limit", "5")
    assert out.returncode == 0, out.stderr
    assert "Lipschitz constant in [" in out.stdout and "upper/lower" in out.stdout


def test_torch_file(tmp_path, rng):
    torch.save(random_net(rng, 2, [6]).to_torch(), tmp_path / "m.pt")
    out = run(str(tmp_path / "m.pt"), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["exact"] is True


def test_malformed_file_is_one_line(tmp_path):
    np.savez(tmp_path / "bad.npz", W1=np.ones((3, 2)), b1=np.ones(3), W2=np.ones((1, 4)), b2=np.zeros(1))
    out = run(str(tmp_path / "bad.npz"))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "shape mismatch" in out.stderr
    out = run(str(tmp_path / "bad.npz"), "--domain", "cube")
    assert out.returncode == 2 and "unknown domain" in out.stderr


def test_python_api_on_any_model(rng):
    import robustlaw

    model = robustlaw.two_layer(5, 12, seed=0)
    b = robustlaw.certify(model, robustlaw.Ball(1.0), time_limit=10)
    assert b.exact
    assert isinstance(Net, type)
