"""Isoperimetric inputs, noisy labels and data sets.

BS21's law needs covariates with c = O(1) isoperimetry, i.e. ||x|| ~ 1: uniform on S^{d-1},
N(0, I_d / d), the solid cube scaled to diameter 1, mixtures of many such components, or data on
a low-dimensional manifold (whose effective dimension is what the law sees). Labels are
y = g(x) + noise with E Var(y|x) = sigma^2; random signs are sigma^2 = 1.

Stored data sets (:class:`StoredData`): scikit-learn's bundled 8x8 ``digits`` and a user's ``file``
(.npy, .npz, .csv), centred and scaled over the whole set (:data:`SCALINGS`), n points drawn per run,
with their own labels (``labels = "data"``, a fraction ``flip`` flipped) or labels generated as above.

Everything is a pure function of its seed: the same spec and seed give the same data.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass, field
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.spatial.distance import pdist

from robustlaw.effdim import load_array, real_array
from robustlaw.errors import RobustlawError, SpecError, require
from robustlaw.registry import Registry, build_variant, settle_options
from robustlaw.seeding import stream

Array = np.ndarray


# ----------------------------------------------------------------------------- inputs


def sphere(n: int, d: int, rng: np.random.Generator) -> Array:
    """Uniform on the unit sphere S^{d-1} (c-isoperimetric with c = O(1/d) in BS21's scaling)."""
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def gaussian(n: int, d: int, rng: np.random.Generator) -> Array:
    """N(0, I_d / d): E||x||^2 = 1."""
    return rng.standard_normal((n, d)) / np.sqrt(d)


def cube(n: int, d: int, rng: np.random.Generator) -> Array:
    """Uniform on the solid cube [-1/(2 sqrt d), 1/(2 sqrt d)]^d, whose diameter is exactly 1."""
    return rng.uniform(-0.5, 0.5, size=(n, d)) / np.sqrt(d)


def mixture(n: int, d: int, rng: np.random.Generator, components: int = 10, spread: float = 0.3) -> Array:
    """A mixture of ``components`` equal-weight Gaussians N(mu_l, spread^2 I_d / d), mu_l on S^{d-1}.

    Each component is isoperimetric with constant ~ spread^2 / d; BS21 Theorem 3 allows up to
    ~ n eps^2 / (1e4 log k) components (condition (8)).
    """
    MixtureOptions(components, spread)  # one line naming the field if either is impossible
    centres = sphere(components, d, rng)
    which = rng.integers(components, size=n)
    return centres[which] + spread * rng.standard_normal((n, d)) / np.sqrt(d)


def manifold(n: int, d: int, rng: np.random.Generator, intrinsic_dim: int = 5) -> Array:
    """Uniform on a random great m-sphere S^m of S^{d-1}: an m-dimensional manifold isometrically in R^d.

    S^m spans m + 1 linear dimensions but is m-dimensional; its effective (intrinsic) dimension
    m = ``intrinsic_dim`` is the d that enters the law.
    """
    ManifoldOptions(intrinsic_dim).check_dims(d)
    z = sphere(n, intrinsic_dim + 1, rng)
    basis, _ = np.linalg.qr(rng.standard_normal((d, intrinsic_dim + 1)))
    return z @ basis.T


@dataclass(frozen=True)
class NoOptions:
    """A distribution without fields of its own; the base of every distribution's options, which own the
    facts the rest of robustlaw needs about them."""

    def check_dims(self, d: int) -> None:
        """Raise a :class:`SpecError` if these options cannot be drawn in dimension ``d``."""

    @property
    def mixture_components(self) -> int:
        """k in BS21's mixture condition (arXiv:2105.12806, Theorem 3): 1 unless the source is a mixture."""
        return 1


@dataclass(frozen=True)
class MixtureOptions(NoOptions):
    """``components`` equal-weight Gaussians of width ``spread`` (see :func:`mixture`)."""

    components: int = 10
    spread: float = 0.3

    def __post_init__(self):
        require(_is_int(self.components) and self.components >= 1, "data.components",
                f"must be an integer >= 1, got {self.components!r}")
        require(np.isfinite(self.spread) and self.spread > 0, "data.spread", f"must be > 0, got {self.spread}")

    @property
    def mixture_components(self) -> int:
        return self.components


@dataclass(frozen=True)
class ManifoldOptions(NoOptions):
    """A great sphere of dimension ``intrinsic_dim`` (see :func:`manifold`)."""

    intrinsic_dim: int = 5

    def __post_init__(self):
        require(_is_int(self.intrinsic_dim) and self.intrinsic_dim >= 1, "data.intrinsic_dim",
                f"must be an integer >= 1, got {self.intrinsic_dim!r}")

    def check_dims(self, d: int) -> None:
        require(self.intrinsic_dim < d, "data.intrinsic_dim", f"must be below d = {d}, got {self.intrinsic_dim}")


@dataclass(frozen=True)
class Points:
    """One draw of a data source: inputs ``X`` (n, d), the source's own labels (None for a synthetic
    source) and how X was centred and scaled (None: drawn at ||x|| ~ 1 already)."""

    X: Array
    labels: Array | None = None
    scaling: str | None = None


@dataclass(frozen=True)
class Distribution:
    """A data source: ``sample(n, d, rng, options) -> X`` (n, d), with its own ``options`` fields (a frozen
    dataclass subclassing :class:`NoOptions`, validated on construction, which owns the facts the rest of
    robustlaw needs about the source: the dimensions it can be drawn in, its mixture components).

    Every source answers ``draw(n, d, rng, options) -> Points``, ``check(n, d, options)`` and
    ``labelled(options)``; a stored data set (:class:`StoredData`) answers the same with its own points."""

    name: str
    sampler: Callable[..., Array]
    options: type = NoOptions

    def sample(self, n: int, d: int, rng: np.random.Generator, options) -> Array:
        return self.sampler(n, d, rng, **dataclasses.asdict(options))

    def draw(self, n: int, d: int, rng: np.random.Generator, options) -> Points:
        return Points(self.sample(n, d, rng, options))

    def check(self, n: int, d: int, options) -> None:
        """Raise a :class:`SpecError` for sizes this source cannot draw (before any run starts)."""
        options.check_dims(d)

    def labelled(self, options) -> bool:
        """Whether the source has labels of its own (``labels = "data"``)."""
        return False



# ----------------------------------------------------------------------------- stored data sets


def centre_rms(X: Array) -> tuple[Array, str]:
    """x -> (x - mean) / s with s^2 the mean squared norm of the centred points: E||x||^2 = 1 over the set."""
    centred = X - X.mean(axis=0)
    scale = float(np.sqrt((centred**2).sum(axis=1).mean()))
    return centred / (scale or 1.0), f"centre_rms: (x - mean) / {scale:.6g}, mean ||x||^2 = 1 over all {len(X)} points"


def centre_max(X: Array) -> tuple[Array, str]:
    """x -> (x - mean) / max ||x - mean||: every point of the set in the unit ball, the farthest on the sphere."""
    centred = X - X.mean(axis=0)
    scale = float(np.linalg.norm(centred, axis=1).max())
    return centred / (scale or 1.0), f"centre_max: (x - mean) / {scale:.6g}, max ||x|| = 1 over all {len(X)} points"


def unscaled(X: Array) -> tuple[Array, str]:
    """The points as stored."""
    return X, "none: as stored"


#: how a stored data set is brought to ||x|| ~ 1 (BS21's isoperimetric scaling), computed over the whole set
#: (not the run's subsample), so that every n of one data set sees the same map.
SCALINGS: dict[str, Callable[[Array], tuple[Array, str]]] = {
    "centre_rms": centre_rms, "centre_max": centre_max, "none": unscaled}


@dataclass(frozen=True)
class StoredOptions(NoOptions):
    """The fields every stored data set has: ``scaling``, one of :data:`SCALINGS`."""

    scaling: str = "centre_rms"

    def __post_init__(self):
        require(self.scaling in SCALINGS, "data.scaling",
                f"unknown scaling {self.scaling!r} (known: {', '.join(SCALINGS)})")


@dataclass(frozen=True)
class DigitsOptions(StoredOptions):
    """scikit-learn's 8x8 digits; with ``labels = "data"`` the digits in ``positive`` are labelled +1 and
    the others -1 (default: even against odd)."""

    positive: tuple[int, ...] = (0, 2, 4, 6, 8)

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "positive", tuple(self.positive))
        ok = all(_is_int(c) and 0 <= c <= 9 for c in self.positive) and 1 <= len(set(self.positive)) <= 9
        require(ok and len(set(self.positive)) == len(self.positive), "data.positive",
                f"must be 1 to 9 distinct digits in 0..9, got {list(self.positive)!r}")


def load_digits_set(options: DigitsOptions) -> tuple[Array, Array]:
    """The 1797 x 64 digits (pixel values 0..16, bundled with scikit-learn, no download) and +-1 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.float64), np.where(np.isin(bunch.target, options.positive), 1.0, -1.0)


@dataclass(frozen=True)
class FileOptions(StoredOptions):
    """A user's points: ``path`` a .npy, .npz (``file.npz:key`` picks an array) or .csv file (n x d numbers,
    read without executing code), relative to the working directory. Labels for ``labels = "data"``: a
    ``labels_path`` (n values; .npy, .npz[:key] or a one-column .csv), or ``label_column`` (a column of a
    .csv by its header name or 0-based index, taken out of the inputs). ``sha256`` is filled with a hash of
    the files' contents, so a changed file gives new run keys; if given, the files must match it."""

    path: str = ""
    labels_path: str = ""
    label_column: str = ""
    sha256: str = ""

    def __post_init__(self):
        super().__post_init__()
        require(bool(self.path), "data.path", "name the data file (.npy, .npz or .csv)")
        require(not (self.labels_path and self.label_column), "data.label_column",
                "give labels_path or label_column, not both")
        digest = _file_digest(self.path, self.labels_path)
        require(not self.sha256 or self.sha256 == digest, "data.sha256",
                f"{self.path} has changed: its contents hash to {digest}, the spec says {self.sha256}")
        object.__setattr__(self, "sha256", digest)
        load_file_set(self)  # every fault of the files, as one line, before any run


def _file_digest(*paths: str) -> str:
    """sha256 of the named files' bytes (an npz key after ':' names an array of the file before it)."""
    digest = hashlib.sha256()
    for text in filter(None, paths):
        path = Path(text.split(".npz:")[0] + ".npz" if ".npz:" in text else text)
        require(path.is_file(), "data.path" if text == paths[0] else "data.labels_path", f"no such file {text!r}")
        stat = path.stat()
        digest.update(_content_hash(str(path.resolve()), stat.st_mtime_ns, stat.st_size).encode())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=64)
def _content_hash(path: str, mtime_ns: int, size: int) -> str:
    """sha256 of one file's bytes, read once per (path, modification time, size)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@functools.lru_cache(maxsize=8)
def load_file_set(options: FileOptions) -> tuple[Array, Array | None]:
    """The inputs and labels (None without labels_path or label_column) that ``options`` name, checked:
    numbers, X 2-d and finite, labels one per point and finite; a fault is one :class:`SpecError` line."""
    X = _numbers(options.path, "data.path")
    labels = None
    if options.label_column:
        X, labels = _split_column(X, options.path, options.label_column)
    elif options.labels_path:
        labels = _numbers(options.labels_path, "data.labels_path")
        labels = labels.reshape(-1) if labels.ndim == 2 and 1 in labels.shape else labels
        require(labels.ndim == 1, "data.labels_path", f"labels must be one value per point, got shape {labels.shape}")
        require(len(labels) == len(X), "data.labels_path",
                f"{len(labels)} labels for {len(X)} points in {options.path}")
    require(X.ndim == 2 and min(X.shape) >= 1, "data.path",
            f"{options.path}: expected a 2-d array (n points x d features), got shape {X.shape}")
    return X, labels


def _numbers(source: str, where: str) -> Array:
    """The real, finite numbers in ``source`` (:func:`robustlaw.effdim.real_array`); one SpecError line else."""
    try:
        return real_array(load_array(source)[0], source)
    except RobustlawError as error:
        raise SpecError(where, str(error)) from None


def _split_column(X: Array, path: str, column: str) -> tuple[Array, Array]:
    """X without ``column`` (a .csv header name or a 0-based index), and that column."""
    header = []
    if path.lower().endswith(".csv"):
        with open(path, encoding="utf-8", errors="replace") as handle:
            header = [h.strip().strip('"') for h in handle.readline().split(",")]
    if column in header:
        index = header.index(column)
    else:
        require(column.lstrip("-").isdigit(), "data.label_column",
                f"{path} has no column {column!r} (header: {', '.join(header) or 'none'})")
        index = int(column)
    require(X.ndim == 2 and -X.shape[1] <= index < X.shape[1], "data.label_column",
            f"column {column!r} is outside {path}'s {X.shape[-1] if X.ndim else 0} columns")
    return np.delete(X, index, axis=1), X[:, index]


@dataclass(frozen=True)
class StoredData:
    """A stored data set as a source: ``loader(options) -> (X, labels or None)`` reads all its points
    (once per process), :data:`SCALINGS` centres and scales them over the whole set, and a run draws n
    of them without replacement: the first n of a permutation from the run's data stream, so with one
    seed a smaller n is a subset of a larger one. Its dimension is the set's: ``d`` must equal it."""

    name: str
    loader: Callable[..., tuple[Array, Array | None]]
    options: type = StoredOptions

    def points(self, options) -> Points:
        """Every point of the set, scaled, with its labels (None if the set has none)."""
        return _stored_points(self.loader, options)

    def draw(self, n: int, d: int, rng: np.random.Generator, options) -> Points:
        every = self.points(options)
        take = rng.permutation(len(every.X))[:n]
        labels = None if every.labels is None else every.labels[take]
        return Points(every.X[take], labels, every.scaling)

    def check(self, n: int, d: int, options) -> None:
        X = self.points(options).X
        require(d == X.shape[1], "data.d", f"{self.name} has {X.shape[1]} features: set d = {X.shape[1]}, got {d}")
        require(n <= len(X), "data.n", f"{self.name} has {len(X)} points, got n = {n}")

    def labelled(self, options) -> bool:
        return self.points(options).labels is not None


@functools.lru_cache(maxsize=8)
def _stored_points(loader, options) -> Points:
    X, labels = loader(options)
    scaled, how = SCALINGS[options.scaling](X)
    return Points(scaled, labels, how)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


DISTRIBUTIONS: Registry[Distribution] = Registry("distribution", "data.distribution")
for _source in (Distribution("sphere", sphere), Distribution("gaussian", gaussian), Distribution("cube", cube),
                Distribution("mixture", mixture, MixtureOptions), Distribution("manifold", manifold, ManifoldOptions),
                StoredData("digits", load_digits_set, DigitsOptions), StoredData("file", load_file_set, FileOptions)):
    DISTRIBUTIONS.register(_source.name, _source)


# ----------------------------------------------------------------------------- labels


def teacher(X: Array, rng: np.random.Generator, amplitude: float) -> Array:
    """A smooth signal g(x) = amplitude * tanh(sqrt(d) <v, x>) for a random unit v; |g| <= amplitude."""
    v = sphere(1, X.shape[1], rng)[0]
    return amplitude * np.tanh(np.sqrt(X.shape[1]) * (X @ v))


def noise_scale(X: Array, rng: np.random.Generator, sigma: float, heteroscedastic: bool) -> Array:
    """Per-point noise standard deviation s(x) with empirical mean of s(x)^2 equal to sigma^2.

    Heteroscedastic noise varies smoothly with x: s(x)^2 proportional to d <u, x>^2 + 1/2.
    """
    if not heteroscedastic:
        return np.full(len(X), sigma)
    u = sphere(1, X.shape[1], rng)[0]
    h = X.shape[1] * (X @ u) ** 2 + 0.5
    return sigma * np.sqrt(h / h.mean())


# ----------------------------------------------------------------------------- data sets


@dataclass(frozen=True)
class DataSpec:
    """How to draw a data set: ``n`` points in ``d`` dimensions from ``distribution``, labelled.

    labels = "signs": y uniform in {-1, +1} independent of x (sigma^2 = 1).
    labels = "teacher": y = g(x) + s(x) xi with g a smooth teacher of amplitude ``signal``,
    E s(x)^2 = ``sigma``^2, xi standard normal (``noise="gaussian"``) or a random sign
    (``noise="rademacher"``, which keeps y in [-1, 1] without clipping when signal + sigma <= 1).
    ``clip`` clips y to [-1, 1] as BS21 Theorem 3 requires; the recorded sigma is then the exact
    conditional standard deviation after clipping, estimated by Monte Carlo.
    labels = "data": the source's own labels (a stored data set's, e.g. digits' +-1 classes), with a
    fraction ``flip`` of them (round(flip n), chosen from the data stream) multiplied by -1. The recorded
    sigma is then 2 sqrt(flip (1 - flip)), the conditional standard deviation of a +-1 label flipped with
    probability flip; with flip = 0 it is the stated ``sigma`` (the noise the stored labels carry).
    """

    distribution: str = "sphere"
    n: int = 200
    d: int = 20
    labels: str = "signs"
    sigma: float = 1.0
    signal: float = 0.5
    noise: str = "gaussian"
    heteroscedastic: bool = False
    clip: bool = False
    flip: float = 0.0
    #: the distribution's own fields (:class:`MixtureOptions`, :class:`ManifoldOptions`, ...); its defaults if None
    options: object = None

    @classmethod
    def of(cls, **fields) -> DataSpec:
        """A spec from flat fields, the distribution's own ones included (``DataSpec.of(distribution=..., ...)``)."""
        return build_variant(cls, "distribution", DISTRIBUTIONS, fields)

    def __post_init__(self):
        source = settle_options(self, self.distribution, DISTRIBUTIONS)
        require(_is_int(self.n) and 2 <= self.n <= MAX_POINTS, "data.n",
                f"must be an integer in [2, {MAX_POINTS:.0e}], got {self.n!r}")
        require(_is_int(self.d) and 1 <= self.d, "data.d", f"must be an integer >= 1, got {self.d!r}")
        require(self.n * self.d <= MAX_ELEMENTS, "data.n",
                f"n d = {self.n * self.d:.3g} values exceed the {MAX_ELEMENTS:.0e} a data set may hold in memory here")
        require(self.labels in ("signs", "teacher", "data"), "data.labels",
                f"unknown labels {self.labels!r} (known: signs, teacher, data)")
        require(self.labels != "data" or source.labelled(self.options), "data.labels",
                f"{self.distribution} has no labels of its own (use signs or teacher)")
        require(np.isfinite(self.flip) and 0 <= self.flip <= 0.5, "data.flip", f"must be in [0, 0.5], got {self.flip}")
        require(self.flip == 0 or self.labels == "data", "data.flip",
                f"flips the source's own labels: only with labels = \"data\", not {self.labels!r}")
        require(self.noise in ("gaussian", "rademacher"), "data.noise",
                f"unknown noise {self.noise!r} (known: gaussian, rademacher)")
        require(np.isfinite(self.sigma) and self.sigma > 0, "data.sigma", f"must be > 0, got {self.sigma}")
        require(np.isfinite(self.signal) and self.signal >= 0, "data.signal", f"must be >= 0, got {self.signal}")
        source.check(self.n, self.d, self.options)

    @property
    def source(self) -> Distribution:
        return DISTRIBUTIONS.get(self.distribution)


#: the largest data set a spec may ask for: points, and values (n d, 8 bytes each)
MAX_POINTS = 10**7
MAX_ELEMENTS = 2 * 10**8


@dataclass(frozen=True)
class Dataset:
    """Inputs ``X`` (n x d, float64), labels ``y`` (n,), and the noise level sigma = sqrt(E Var(y|x))."""

    X: Array
    y: Array
    sigma: float
    name: str = "custom"
    meta: dict = field(default_factory=dict)
    #: how the inputs were centred and scaled (None: drawn at ||x|| ~ 1 already)
    scaling: str | None = None

    def __post_init__(self):
        check_dataset(self.X, self.y)

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def radius(self) -> float:
        """max_i ||x_i||: the radius of the smallest origin-centred ball holding the data."""
        return float(np.linalg.norm(self.X, axis=1).max())


def check_dataset(X: Array, y: Array) -> None:
    """Raise a one-line :class:`RobustlawError` if X, y are not a finite (n x d, n) pair."""
    if not isinstance(X, np.ndarray) or X.ndim != 2:
        raise RobustlawError(f"X must be a 2-d array (n x d), got shape {np.shape(X)}")
    if not isinstance(y, np.ndarray) or y.shape != (X.shape[0],):
        raise RobustlawError(f"y must have shape ({X.shape[0]},) to match X, got {np.shape(y)}")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise RobustlawError(f"X must have at least one point and one dimension, got shape {X.shape}")
    for name, a in (("X", X), ("y", y)):
        bad = ~np.isfinite(a)
        if bad.any():
            first = np.argwhere(bad)[0]
            where = tuple(int(i) for i in first)
            raise RobustlawError(f"{name} has {int(bad.sum())} non-finite value(s) (NaN or Inf), first at index {where}")


def make_dataset(spec: DataSpec, seed: int) -> Dataset:
    """Draw the data set described by ``spec`` with ``seed`` (inputs, then labels, from its ``data`` stream)."""
    rng = stream(seed, "data")
    points = spec.source.draw(spec.n, spec.d, rng, spec.options)
    y, sigma = _labels(spec, points, rng)
    return Dataset(X=points.X, y=y, sigma=sigma, name=spec.distribution, meta=dataclasses.asdict(spec),
                   scaling=points.scaling)


def flip_labels(y: Array, fraction: float, rng: np.random.Generator) -> Array:
    """y with round(fraction n) of its +-1 labels, chosen uniformly, multiplied by -1."""
    if not np.isin(y, (-1.0, 1.0)).all():
        raise RobustlawError(f"flip needs +-1 labels, got values such as {y[~np.isin(y, (-1.0, 1.0))][0]!r}")
    flipped = y.astype(np.float64).copy()
    flipped[rng.choice(len(y), int(round(fraction * len(y))), replace=False)] *= -1
    return flipped


def _labels(spec: DataSpec, points: Points, rng: np.random.Generator) -> tuple[Array, float]:
    """Labels for the drawn points and the noise level sigma they carry (see :class:`DataSpec`)."""
    X = points.X
    if spec.labels == "data":
        if spec.flip == 0:
            return points.labels.astype(np.float64), spec.sigma
        return flip_labels(points.labels, spec.flip, rng), 2 * float(np.sqrt(spec.flip * (1 - spec.flip)))
    if spec.labels == "signs":
        return rng.choice([-1.0, 1.0], size=spec.n), 1.0
    g = teacher(X, rng, spec.signal)
    s = noise_scale(X, rng, spec.sigma, spec.heteroscedastic)
    draw = (lambda size: rng.standard_normal(size)) if spec.noise == "gaussian" else (
        lambda size: rng.choice([-1.0, 1.0], size=size))
    y = g + s * draw(spec.n)
    if not spec.clip:
        return y, spec.sigma
    samples = np.clip(g[:, None] + s[:, None] * draw((spec.n, 256)), -1.0, 1.0)
    return np.clip(y, -1.0, 1.0), float(np.sqrt(samples.var(axis=1).mean()))


def lip_floor(X: Array, y: Array) -> float:
    """max_{i != j} |y_i - y_j| / ||x_i - x_j||: the smallest Lipschitz constant of any interpolator of
    (X, y) (the McShane extension attains it), hence a floor for every fitted model; a measurement of the
    data, not of a model. O(n^2 d)."""
    dist = pdist(X)
    diff = pdist(y[:, None], metric="cityblock")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(dist > 0, diff / dist, np.where(diff > 0, np.inf, 0.0))
    return float(ratio.max()) if len(ratio) else 0.0
