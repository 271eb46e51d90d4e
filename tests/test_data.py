import numpy as np
import pytest

from robustlaw.data import DataSpec, Dataset, cube, gaussian, make_dataset, manifold, mixture, noise_scale, sphere
from robustlaw.errors import RobustlawError, SpecError


def rng(seed=0):
    return np.random.default_rng(seed)


def test_sphere_points_have_unit_norm():
    X = sphere(500, 17, rng())
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-12)


def test_sphere_is_centred_and_isotropic():
    X = sphere(20000, 5, rng())
    np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=0.02)
    np.testing.assert_allclose(np.cov(X.T), np.eye(5) / 5, atol=0.01)


def test_gaussian_has_unit_mean_squared_norm():
    X = gaussian(20000, 30, rng())
    assert abs((X**2).sum(axis=1).mean() - 1.0) < 0.01


def test_cube_lies_in_the_cube_of_diameter_one():
    d = 12
    X = cube(5000, d, rng())
    assert np.abs(X).max() <= 0.5 / np.sqrt(d)
    # the corners are 1 apart: the diameter of [-1/(2 sqrt d), 1/(2 sqrt d)]^d is exactly 1
    corner = np.full(d, 0.5 / np.sqrt(d))
    assert np.isclose(np.linalg.norm(2 * corner), 1.0)


def test_mixture_clusters_around_its_components():
    X = mixture(3000, 50, rng(), components=4, spread=0.1)
    norms = np.linalg.norm(X, axis=1)
    assert abs(norms.mean() - 1.0) < 0.05  # centres on the sphere, small spread
    # four clusters: the Gram matrix of normalised points takes ~4 distinct block values
    from scipy.cluster.vq import kmeans2

    _, labels = kmeans2(X, 4, seed=1, minit="++")
    assert len(np.unique(labels)) == 4


def test_manifold_is_an_m_sphere_spanning_m_plus_one_dimensions():
    X = manifold(400, 30, rng(), intrinsic_dim=4)
    s = np.linalg.svd(X, compute_uv=False)
    assert (s > 1e-8).sum() == 5
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-12)


def test_random_signs_are_balanced_and_sigma_one():
    data = make_dataset(DataSpec(n=4000, d=3), seed=0)
    assert set(np.unique(data.y)) == {-1.0, 1.0}
    assert abs(data.y.mean()) < 0.05
    assert data.sigma == 1.0


def test_teacher_noise_has_the_stated_variance():
    spec = DataSpec(n=20000, d=10, labels="teacher", sigma=0.3, signal=0.5)
    data = make_dataset(spec, seed=1)
    # the residual around the noiseless teacher has variance sigma^2
    clean = make_dataset(DataSpec(n=20000, d=10, labels="teacher", sigma=1e-12, signal=0.5), seed=1)
    np.testing.assert_allclose(data.X, clean.X)
    assert abs(np.var(data.y - clean.y) - 0.09) < 0.005


def test_heteroscedastic_noise_has_mean_variance_sigma_squared_and_varies():
    X = sphere(5000, 8, rng())
    s = noise_scale(X, rng(1), 0.4, heteroscedastic=True)
    assert np.isclose((s**2).mean(), 0.16)
    assert s.std() > 0.05


def test_clipping_keeps_labels_in_range_and_reports_reduced_sigma():
    spec = DataSpec(n=3000, d=5, labels="teacher", sigma=0.8, signal=0.5, clip=True)
    data = make_dataset(spec, seed=0)
    assert np.abs(data.y).max() <= 1.0
    assert 0.3 < data.sigma < 0.8


def test_rademacher_noise_stays_in_range_without_clipping():
    data = make_dataset(DataSpec(n=2000, d=5, labels="teacher", sigma=0.4, signal=0.6, noise="rademacher"), seed=0)
    assert np.abs(data.y).max() <= 1.0 + 1e-12


def test_same_seed_same_data_other_seed_other_data():
    spec = DataSpec(distribution="mixture", n=50, d=4)
    a, b, c = make_dataset(spec, 3), make_dataset(spec, 3), make_dataset(spec, 4)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.allclose(a.X, c.X)


@pytest.mark.parametrize("field, kwargs", [
    ("data.n", dict(n=0)), ("data.d", dict(d=0)), ("data.distribution", dict(distribution="torus")),
    ("data.sigma", dict(sigma=float("nan"))), ("data.labels", dict(labels="parity")),
])
def test_impossible_specs_name_their_field(field, kwargs):
    with pytest.raises(SpecError) as info:
        DataSpec(**kwargs)
    assert info.value.field == field


def test_nan_data_is_refused_with_its_location():
    X = np.ones((5, 3))
    X[2, 1] = np.nan
    with pytest.raises(RobustlawError, match=r"NaN.*\(2, 1\)"):
        Dataset(X, np.ones(5), 1.0)


def test_mismatched_labels_are_refused():
    with pytest.raises(RobustlawError, match="y must have shape"):
        Dataset(np.ones((5, 3)), np.ones(4), 1.0)


# ----------------------------------------------------------------------------- stored data sets: digits


def digits_spec(**fields):
    return DataSpec.of(**{"distribution": "digits", "n": 200, "d": 64, "labels": "data", **fields})


def test_digits_are_centred_and_scaled_over_the_whole_set():
    from sklearn.datasets import load_digits

    from robustlaw.data import DISTRIBUTIONS

    spec = digits_spec()
    every = DISTRIBUTIONS.get("digits").points(spec.options)
    raw = load_digits().data
    np.testing.assert_allclose(every.X.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose((every.X**2).sum(axis=1).mean(), 1.0)
    # the map is affine: (x - mean) / s with the s the record names
    scale = float(every.scaling.split("/ ")[1].split(",")[0])
    np.testing.assert_allclose(every.X, (raw - raw.mean(axis=0)) / scale, rtol=1e-5)
    data = make_dataset(spec, seed=0)
    assert data.scaling == every.scaling and data.X.shape == (200, 64)


def test_digits_labels_are_the_chosen_classes_and_flips_are_exact():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    clean = make_dataset(digits_spec(positive=[3]), seed=5)
    # each drawn point's label is +1 exactly when it is a 3 (found by matching the rows back)
    scale = (bunch.data - bunch.data.mean(axis=0))
    scale = scale / np.sqrt((scale**2).sum(axis=1).mean())
    rows = [int(np.argmin(np.abs(scale - x).sum(axis=1))) for x in clean.X]
    np.testing.assert_array_equal(clean.y, np.where(bunch.target[rows] == 3, 1.0, -1.0))
    noisy = make_dataset(digits_spec(positive=[3], flip=0.1), seed=5)
    np.testing.assert_array_equal(noisy.X, clean.X)  # the flips come after the draw of the points
    assert (noisy.y != clean.y).sum() == 20
    assert noisy.sigma == pytest.approx(2 * np.sqrt(0.1 * 0.9))


def test_digits_subsamples_are_seeded_and_nested():
    small, large = make_dataset(digits_spec(n=50), seed=2), make_dataset(digits_spec(n=300), seed=2)
    np.testing.assert_array_equal(small.X, large.X[:50])
    assert len(np.unique(large.X, axis=0)) == 300  # without replacement
    assert not np.allclose(make_dataset(digits_spec(n=50), seed=3).X, small.X)


@pytest.mark.parametrize("field, fields", [
    ("data.d", dict(d=20)), ("data.n", dict(n=1798)), ("data.flip", dict(flip=0.6)),
    ("data.positive", dict(positive=[1, 10])), ("data.positive", dict(positive=list(range(10)))),
    ("data.scaling", dict(scaling="zscore")), ("data.flip", dict(labels="signs", flip=0.1)),
])
def test_impossible_digits_specs_name_their_field(field, fields):
    with pytest.raises(SpecError) as info:
        digits_spec(**fields)
    assert info.value.field == field


def test_synthetic_sources_have_no_labels_of_their_own():
    with pytest.raises(SpecError, match="sphere has no labels of its own"):
        DataSpec(labels="data")


# ----------------------------------------------------------------------------- stored data sets: a user's file


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 5)) * 3 + 1, np.sign(rng.normal(size=50))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    np.savetxt(tmp_path / "t.csv", np.c_[X, y], delimiter=",", header="a,b,c,d,e,label", comments="")
    return tmp_path, X, y


@pytest.mark.parametrize("where", [dict(path="X.npy", labels_path="y.npy"), dict(path="d.npz:X", labels_path="d.npz:y"),
                                   dict(path="t.csv", label_column="label"), dict(path="t.csv", label_column="5")])
def test_a_file_gives_its_points_scaled_and_its_labels(files, where):
    root, X, y = files
    fields = {k: str(root / v) if k.endswith("path") else v for k, v in where.items()}
    spec = DataSpec.of(distribution="file", n=50, d=5, labels="data", **fields)
    data = make_dataset(spec, seed=0)
    centred = X - X.mean(axis=0)
    scaled = centred / np.sqrt((centred**2).sum(axis=1).mean())
    order = [int(np.argmin(np.abs(scaled - x).sum(axis=1))) for x in data.X]
    np.testing.assert_allclose(data.X, scaled[order], atol=1e-12)
    np.testing.assert_array_equal(data.y, y[order])
    assert sorted(order) == list(range(50)) and data.sigma == 1.0  # the stated sigma without flips


def test_a_changed_file_changes_the_run_key(files):
    from robustlaw.experiment import RunSpec

    root, X, _ = files
    spec = lambda: RunSpec(data=DataSpec.of(distribution="file", n=20, d=5, path=str(root / "X.npy")))  # noqa: E731
    before = spec().key()
    np.save(root / "X.npy", X + 1)
    assert spec().key() != before
    with pytest.raises(SpecError, match="has changed"):
        DataSpec.of(distribution="file", n=20, d=5, path=str(root / "X.npy"), sha256="0123456789abcdef")


def test_bad_files_fail_with_one_line_naming_the_field(files):
    root, X, y = files
    X[3, 2] = np.nan
    np.save(root / "nan.npy", X)
    np.save(root / "short.npy", y[:40])
    np.save(root / "objects.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    cases = [("data.path", dict(path="missing.npy"), "no such file"),
             ("data.path", dict(path="nan.npy"), r"non-finite.*\(3, 2\)"),
             ("data.labels_path", dict(path="d.npz:X", labels_path="short.npy"), "40 labels for 50 points"),
             ("data.path", dict(path="objects.npy"), "Object arrays"),
             ("data.path", dict(path="d.npz:Z"), "has no array 'Z'"),
             ("data.path", dict(path="y.npy"), "expected a 2-d array"),
             ("data.label_column", dict(path="t.csv", label_column="price"), "no column 'price'"),
             ("data.label_column", dict(path="t.csv", label_column="9"), "outside")]
    for field, where, message in cases:
        fields = {k: str(root / v) if k.endswith("path") else v for k, v in where.items()}
        with pytest.raises(SpecError, match=message) as info:
            DataSpec.of(distribution="file", n=20, d=5, **fields)
        assert info.value.field == field and "\n" not in str(info.value)
