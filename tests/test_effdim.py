"""The estimators recover known intrinsic dimensions; loaders read the supported formats and
reject malformed input with one line."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from robustlaw import effdim
from robustlaw.cli import main
from robustlaw.data import manifold
from robustlaw.errors import RobustlawError


@pytest.mark.parametrize("method", ["twonn", "mle"])
def test_recovers_the_dimension_of_manifold_data(method):
    # data.manifold(m) is uniform on a great m-sphere: an m-dimensional manifold in R^d
    X = manifold(2000, 30, np.random.default_rng(0), intrinsic_dim=5)
    assert effdim.estimate(X, method).value == pytest.approx(5.0, rel=0.12)


@pytest.mark.parametrize("method", ["twonn", "mle"])
def test_recovers_the_dimension_of_a_flat_subspace(method):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2000, 8)) @ np.linalg.qr(rng.standard_normal((40, 8)))[0].T
    assert effdim.estimate(X, method).value == pytest.approx(8.0, rel=0.15)
    assert effdim.estimate(X, method).ambient_dim == 40


def test_duplicates_are_removed_and_counted():
    X = manifold(800, 20, np.random.default_rng(2), intrinsic_dim=4)
    doubled = np.vstack([X, X[:100], X[:5]])
    for method in ("twonn", "mle"):
        clean, dup = effdim.estimate(X, method), effdim.estimate(doubled, method)
        assert dup.duplicates_removed == 105 and dup.n_used == 800
        assert dup.value == pytest.approx(clean.value)


def test_digits_is_bundled_and_low_dimensional():
    X, name = effdim.load_points("digits")
    assert X.shape == (1797, 64) and name == "digits"
    value = effdim.twonn(X).value
    assert 5 < value < 15  # far below the 64 pixels


def test_loaders(tmp_path):
    X = manifold(300, 10, np.random.default_rng(3), intrinsic_dim=3)
    np.save(tmp_path / "a.npy", X)
    np.savez(tmp_path / "one.npz", X)
    np.savez(tmp_path / "many.npz", X=X, labels=np.arange(300))
    np.savez(tmp_path / "pick.npz", feats=X, other=X[:10])
    np.savetxt(tmp_path / "plain.csv", X, delimiter=",")
    np.savetxt(tmp_path / "header.csv", X, delimiter=",", header=",".join(f"f{i}" for i in range(10)), comments="")
    for source in ("a.npy", "one.npz", "many.npz", "pick.npz:feats", "plain.csv", "header.csv"):
        loaded, _ = effdim.load_points(str(tmp_path / source))
        assert np.allclose(loaded, X)


@pytest.mark.parametrize("setup, message", [
    (lambda p: np.save(p / "bad.npy", np.arange(5.0)), "2-d"),
    (lambda p: np.savez(p / "bad.npz", a=np.ones((3, 2)), b=np.ones((3, 2))), "several arrays"),
    (lambda p: (p / "bad.csv").write_text("1,2\n3,x\n"), "comma-separated"),
    (lambda p: (p / "bad.txt").write_text("1 2\n"), "unsupported"),
    (lambda p: (p / "bad.npy").write_bytes(b"not numpy"), "cannot read"),
])
def test_malformed_files_raise_one_line(tmp_path, setup, message):
    setup(tmp_path)
    name = next(f.name for f in tmp_path.iterdir())
    with pytest.raises(RobustlawError, match=message) as info:
        effdim.estimate(effdim.load_points(str(tmp_path / name))[0])
    assert "\n" not in str(info.value)


def test_bad_arrays_raise():
    with pytest.raises(RobustlawError, match="non-finite"):
        effdim.twonn(np.array([[0.0, 1.0], [np.nan, 2.0], [3.0, 4.0]]))
    with pytest.raises(RobustlawError, match="at least 3 distinct"):
        effdim.twonn(np.ones((10, 3)))
    with pytest.raises(RobustlawError, match="more than 20"):
        effdim.levina_bickel(np.random.default_rng(0).standard_normal((15, 3)))
    with pytest.raises(RobustlawError, match="no such data file"):
        effdim.load_points("/nonexistent/x.npy")
    with pytest.raises(RobustlawError, match="unknown effective-dimension method"):
        effdim.estimate(np.eye(5), "pca")


def test_effdim_command(tmp_path):
    result = CliRunner().invoke(main, ["effdim", "digits", "--method", "mle", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["method"] == "mle" and out["ambient_dim"] == 64 and 5 < out["effective_dim"] < 15
    X = manifold(500, 12, np.random.default_rng(4), intrinsic_dim=3)
    np.save(tmp_path / "m.npy", X)
    out = json.loads(CliRunner().invoke(main, ["effdim", str(tmp_path / "m.npy"), "--json"]).output)
    assert out["effective_dim"] == pytest.approx(3.0, rel=0.2)
    predicted = json.loads(CliRunner().invoke(main, ["predict", "--data", str(tmp_path / "m.npy"), "--target-lip", "1",
                                                     "--json"]).output)
    assert predicted["n"] == 500 and predicted["params_law"] == pytest.approx(500 * predicted["effective_dim"])


def test_blocked_neighbour_search_matches_the_kd_tree():
    from scipy.spatial import cKDTree

    X = np.random.default_rng(6).standard_normal((1200, 40))  # d > KDTREE_MAX_DIM, more rows than one block
    expected = cKDTree(X).query(X, k=6)[0][:, 1:]
    assert np.allclose(effdim._neighbour_distances(X, 5), expected, rtol=1e-12)


@pytest.mark.parametrize("method", ["twonn", "mle"])
def test_estimates_are_scale_invariant_down_to_the_float_range(method):
    X = manifold(600, 10, np.random.default_rng(5), intrinsic_dim=3)
    base = effdim.estimate(X, method).value
    assert np.isfinite(base)
    for scale in (1e200, 1e-200):
        assert effdim.estimate(X * scale, method).value == pytest.approx(base, rel=1e-9)
    assert effdim.estimate(np.ldexp(X, 700), method).value == base  # a power of two: exactly the same
