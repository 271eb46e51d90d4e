"""`robustlaw lip`: one JSON object with the bracket; one-line errors for bad files."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import random_net

from robustlaw.errors import RobustlawError
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


# ----------------------------------------------------------------------------- domains from files, effort, -q / -v

def lip_cli(*args):
    """`robustlaw lip` in this process: (exit code, stdout, stderr, exception)."""
    from click.testing import CliRunner

    from robustlaw.cli import main

    result = CliRunner().invoke(main, ["lip", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr, result.exception


def sampled_max_gradient(net, domain, rng, count=4000):
    return float(np.linalg.norm(net.gradients(domain.sample(rng, count, net.d)), axis=1).max())


def test_local_domain_around_the_points_of_a_file(tmp_path, rng):
    from robustlaw.lipschitz import LocalBalls

    net, X = random_net(rng, 4, [16]), rng.standard_normal((6, 4))
    net.save_npz(tmp_path / "n.npz")
    np.save(tmp_path / "X.npy", X)
    code, out, err, _ = lip_cli(tmp_path / "n.npz", "--domain", "local:0.2", "--data", tmp_path / "X.npy",
                                "--effort", 1, "--json")
    assert code == 0, err
    obj, domain = json.loads(out), LocalBalls(0.2, X)
    witness = np.array(obj["witness"])
    assert domain.contains(witness) and obj["domain"] == domain.describe()
    assert abs(np.linalg.norm(net.gradients(witness[None])[0]) - obj["lower"]) <= 1e-12 * obj["lower"]
    assert obj["upper"] >= sampled_max_gradient(net, domain, rng)


def test_ball_around_a_centre_from_a_file(tmp_path, rng):
    from robustlaw.lipschitz import Ball

    net, centre = random_net(rng, 3, [8, 8]), 3.0 * rng.standard_normal(3)
    net.save_npz(tmp_path / "n.npz")
    np.save(tmp_path / "c.npy", centre[None])  # one row (1, d) reads as the point
    code, out, err, _ = lip_cli(tmp_path / "n.npz", "--domain", "ball:0.5", "--center", tmp_path / "c.npy",
                                "--time-limit", 2, "--json")
    assert code == 0, err
    obj, domain = json.loads(out), Ball(0.5, centre)
    assert np.linalg.norm(np.array(obj["witness"]) - centre) <= 0.5 * (1 + 1e-6)
    assert obj["lower"] <= obj["upper"] and obj["upper"] >= sampled_max_gradient(net, domain, rng)


def test_the_same_file_seed_and_effort_give_the_same_bracket(tmp_path, rng):
    """No clock: two runs agree to the bit (deep net, so searches and walks run, not just the exact solver),
    and more effort keeps every point found with less: its bracket lies inside."""
    random_net(rng, 3, [5, 5]).save_npz(tmp_path / "deep.npz")
    one, again, two = (json.loads(lip_cli(tmp_path / "deep.npz", "--domain", "ball:1", "--effort", effort, "--seed", 7,
                                          "--json")[1]) for effort in (1, 1, 2))
    for key in ("lower", "upper", "witness", "lower_method", "upper_method"):
        assert one[key] == again[key], key
    assert (one["seed"], one["effort"], one["time_limit"], two["effort"]) == (7, 1, None, 2)
    assert two["lower"] >= one["lower"] and two["upper"] <= one["upper"]


@pytest.mark.parametrize("write, args, message", [
    (lambda p: np.save(p, np.array([[1.0, np.nan, 0.0]])), ("--domain", "ball:1", "--center"), "contains NaN or Inf"),
    (lambda p: np.save(p, np.array(["a", "b", "c"])), ("--domain", "ball:1", "--center"), "not an array of real numbers"),
    (lambda p: np.save(p, np.ones((2, 3))), ("--domain", "ball:1", "--center"), "expected one point, got 2 rows"),
    (lambda p: np.save(p, np.ones(4)), ("--domain", "ball:1", "--center"), "centre has shape (4,), the network takes 3"),
    (lambda p: np.save(p, np.ones(3)), ("--domain", "local:1", "--data"), "expected a non-empty array of 2 dimension"),
    (lambda p: np.save(p, np.ones((2, 5))), ("--domain", "local:1", "--data"), "have 5 coordinates, the network takes 3"),
    (lambda p: p.write_bytes(b"not numpy"), ("--domain", "local:1", "--data"), "cannot read it as a .npy array"),
    (lambda p: np.save(p, np.array([object()])), ("--domain", "local:1", "--data"), "cannot read it as a .npy array"),
    (lambda p: np.save(p, np.ones(3)), ("--domain", "sphere", "--center"), "a sphere domain takes no centre"),
    (lambda p: None, ("--domain", "local:1", "--effort", "1"), "a local domain needs centre points"),
])
def test_bad_domain_files_are_one_line(tmp_path, rng, write, args, message):
    random_net(rng, 3, [4]).save_npz(tmp_path / "n.npz")
    path = tmp_path / "x.npy"
    write(path)
    code, _, _, error = lip_cli(tmp_path / "n.npz", *args, *([path] if args[-1].startswith("--") else []))
    assert code != 0 and isinstance(error, RobustlawError) and message in str(error), error
    assert "\n" not in str(error)


def test_progress_on_stderr_quiet_and_verbose(tmp_path, rng):
    random_net(rng, 3, [6]).save_npz(tmp_path / "n.npz")
    normal, quiet, verbose = (lip_cli(tmp_path / "n.npz", "--effort", "1", "--json", *flag) for flag in ((), ("-q",), ("-v",)))
    assert json.loads(normal[1]) and json.loads(quiet[1]) and json.loads(verbose[1])  # stdout: the JSON object only
    assert "exact" in normal[2] and "Lip in [" in normal[2]
    assert quiet[2] == ""
    assert set(normal[2].splitlines()) < set(verbose[2].splitlines()) and re.search(r"exact: [\d.]+ s", verbose[2])
    code, _, _, error = lip_cli(tmp_path / "n.npz", "-q", "-v")
    assert code != 0 and "give -q or -v, not both" in str(error)
    code, _, _, error = lip_cli(tmp_path / "n.npz", "--effort", "2", "--time-limit", "3")
    assert code != 0 and "not both" in str(error)
