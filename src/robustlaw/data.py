"""Isoperimetric inputs, noisy labels and data sets.

BS21's law needs covariates with c = O(1) isoperimetry, i.e. ||x|| ~ 1: uniform on S^{d-1},
N(0, I_d / d), the solid cube scaled to diameter 1, mixtures of many such components, or data on
a low-dimensional manifold (whose effective dimension is what the law sees). Labels are
y = g(x) + noise with E Var(y|x) = sigma^2; random signs are sigma^2 = 1.

Everything is a pure function of its seed: the same spec and seed give the same data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from collections.abc import Callable

import numpy as np

from robustlaw.errors import RobustlawError, require

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
    require(components >= 1, "data.components", f"must be >= 1, got {components}")
    require(spread > 0, "data.spread", f"must be > 0, got {spread}")
    centres = sphere(components, d, rng)
    which = rng.integers(components, size=n)
    return centres[which] + spread * rng.standard_normal((n, d)) / np.sqrt(d)


def manifold(n: int, d: int, rng: np.random.Generator, intrinsic_dim: int = 5) -> Array:
    """Uniform on a random great m-sphere S^m of S^{d-1}: an m-dimensional manifold isometrically in R^d.

    S^m spans m + 1 linear dimensions but is m-dimensional; its effective (intrinsic) dimension
    m = ``intrinsic_dim`` is the d that enters the law.
    """
    require(1 <= intrinsic_dim < d, "data.intrinsic_dim", f"must be in [1, d - 1 = {d - 1}], got {intrinsic_dim}")
    z = sphere(n, intrinsic_dim + 1, rng)
    basis, _ = np.linalg.qr(rng.standard_normal((d, intrinsic_dim + 1)))
    return z @ basis.T


DISTRIBUTIONS: dict[str, Callable[..., Array]] = {
    "sphere": sphere,
    "gaussian": gaussian,
    "cube": cube,
    "mixture": mixture,
    "manifold": manifold,
}


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
    components: int = 10
    spread: float = 0.3
    intrinsic_dim: int = 5

    def __post_init__(self):
        require(self.distribution in DISTRIBUTIONS, "data.distribution",
                f"unknown distribution {self.distribution!r} (known: {', '.join(DISTRIBUTIONS)})")
        require(isinstance(self.n, int) and self.n >= 2, "data.n", f"must be an integer >= 2, got {self.n!r}")
        require(isinstance(self.d, int) and self.d >= 1, "data.d", f"must be an integer >= 1, got {self.d!r}")
        require(self.labels in ("signs", "teacher"), "data.labels",
                f"unknown labels {self.labels!r} (known: signs, teacher)")
        require(self.noise in ("gaussian", "rademacher"), "data.noise",
                f"unknown noise {self.noise!r} (known: gaussian, rademacher)")
        require(np.isfinite(self.sigma) and self.sigma > 0, "data.sigma", f"must be > 0, got {self.sigma}")
        require(np.isfinite(self.signal) and self.signal >= 0, "data.signal", f"must be >= 0, got {self.signal}")


@dataclass(frozen=True)
class Dataset:
    """Inputs ``X`` (n x d, float64), labels ``y`` (n,), and the noise level sigma = sqrt(E Var(y|x))."""

    X: Array
    y: Array
    sigma: float
    name: str = "custom"
    meta: dict = field(default_factory=dict)

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
    """Draw the data set described by ``spec`` with ``seed`` (inputs, then labels, from one stream)."""
    rng = np.random.default_rng([seed, 0x5EED])
    sampler = DISTRIBUTIONS[spec.distribution]
    options = {"mixture": dict(components=spec.components, spread=spec.spread),
               "manifold": dict(intrinsic_dim=spec.intrinsic_dim)}.get(spec.distribution, {})
    X = sampler(spec.n, spec.d, rng, **options)
    if spec.labels == "signs":
        y = rng.choice([-1.0, 1.0], size=spec.n)
        sigma = 1.0
    else:
        g = teacher(X, rng, spec.signal)
        s = noise_scale(X, rng, spec.sigma, spec.heteroscedastic)
        draw = (lambda size: rng.standard_normal(size)) if spec.noise == "gaussian" else (
            lambda size: rng.choice([-1.0, 1.0], size=size))
        y = g + s * draw(spec.n)
        sigma = spec.sigma
        if spec.clip:
            y = np.clip(y, -1.0, 1.0)
            samples = np.clip(g[:, None] + s[:, None] * draw((spec.n, 256)), -1.0, 1.0)
            sigma = float(np.sqrt(samples.var(axis=1).mean()))
    meta = dataclasses.asdict(spec)
    return Dataset(X=X, y=y, sigma=sigma, name=spec.distribution, meta=meta)
