"""The effective (intrinsic) dimension of a data set: the d that the law of robustness sees.

The slides' MNIST / ImageNet prediction hinges on d_eff, not the pixel count. Two standard
nearest-neighbour estimators:
- ``twonn``: Facco, d'Errico, Rodriguez & Laio (2017), "Estimating the intrinsic dimension of
  datasets by a minimal neighborhood information". mu = r2 / r1 (second over first neighbour
  distance) is Pareto(d): -log(1 - F(mu)) = d log(mu); d is the least-squares slope through the
  origin after discarding the largest 10% of mu (the paper's choice, ``TWONN_DISCARD``).
- ``mle``: Levina & Bickel (2004), "Maximum likelihood estimation of intrinsic dimension", with
  the correction of MacKay & Ghahramani (2005): per point the inverse estimate
  (1/(k-1)) sum_{j<k} log(T_k / T_j) is averaged over points, inverted, and the result averaged
  over k = k1..k2 (Levina & Bickel's default 10..20, ``MLE_K``).
Exact duplicate points (zero neighbour distance) are removed first and counted. Both estimators
depend only on distance ratios, so the data are first scaled by a power of two to a largest absolute
value in [1/2, 1): an exact scaling that changes no estimate, and keeps squared distances of data
scaled like 1e200 or 1e-200 from overflowing or underflowing.

Data: ``digits`` (scikit-learn's bundled 8x8 digits, 1797 x 64, no download) or a path to a
.npy, .npz (``file.npz:key`` picks an array) or .csv (comma-separated numbers, optional header) file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from robustlaw.errors import RobustlawError

#: Facco et al. (2017) fit the TwoNN line after discarding the largest 10% of mu.
TWONN_DISCARD = 0.1
#: Levina & Bickel (2004) average their estimator over neighbourhood sizes k = 10..20.
MLE_K = (10, 20)
METHODS = ("twonn", "mle")
#: Nearest neighbours by k-d tree up to this dimension, by blocked matrix products above it.
KDTREE_MAX_DIM = 16
#: Rows per block of the matrix-product neighbour search (a block x n float64 distance matrix).
NEIGHBOUR_BLOCK = 512
#: The command line estimates on a uniform subsample of at most this many points (kNN cost ~ n log n).
DEFAULT_MAX_POINTS = 5000
BUILTIN = {"digits": "scikit-learn's bundled 8x8 handwritten digits (1797 x 64)"}


@dataclass(frozen=True)
class EffDim:
    """An intrinsic-dimension estimate over ``n_used`` distinct points of ambient dimension ``ambient_dim``."""

    value: float
    method: str
    n_used: int
    ambient_dim: int
    duplicates_removed: int
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"effective_dim": self.value, "method": self.method, "n_used": self.n_used,
                "ambient_dim": self.ambient_dim, "duplicates_removed": self.duplicates_removed, **self.details}


def _points(X) -> tuple[np.ndarray, int]:
    """Check X (n x d, finite) and drop exact duplicate rows; return the distinct points and the count dropped."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise RobustlawError(f"data must be a 2-d array (n points x d features), got shape {X.shape}")
    X = real_array(X, "data")
    unique = np.unique(X, axis=0)
    return _unit_scale(unique), len(X) - len(unique)


def real_array(a, name: str) -> np.ndarray:
    """``a`` in float64 if it holds real, finite numbers; else one RobustlawError line naming ``name``."""
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise RobustlawError(f"{name} must be real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise RobustlawError(f"{name} has {int(bad.sum())} non-finite value(s) (NaN or Inf), first at {first}")
    return a


def _unit_scale(X: np.ndarray) -> np.ndarray:
    """X times the power of two that brings its largest absolute value into [1/2, 1) (exact)."""
    largest = float(np.abs(X).max())
    return X if largest == 0 else np.ldexp(X, -np.frexp(largest)[1])


def _neighbour_distances(X: np.ndarray, k: int) -> np.ndarray:
    """Distances to the k nearest other points, shape (n, k), ascending.

    A k-d tree in low dimension; above ``KDTREE_MAX_DIM`` (where trees degrade to brute force)
    blocked matrix products select the neighbours and their distances are then recomputed exactly.
    """
    n, d = X.shape
    if d <= KDTREE_MAX_DIM:
        dist, _ = cKDTree(X).query(X, k=k + 1)
        return dist[:, 1:]
    sq = np.einsum("ij,ij->i", X, X)
    out = np.empty((n, k))
    for start in range(0, n, NEIGHBOUR_BLOCK):
        rows = slice(start, min(start + NEIGHBOUR_BLOCK, n))
        d2 = sq[rows, None] + sq[None, :] - 2 * X[rows] @ X.T
        d2[np.arange(d2.shape[0]), np.arange(rows.start, rows.stop)] = np.inf  # not its own neighbour
        nearest = np.argpartition(d2, k - 1, axis=1)[:, :k]
        exact = np.linalg.norm(X[rows, None, :] - X[nearest], axis=2)
        out[rows] = np.sort(exact, axis=1)
    return out


def subsample(X: np.ndarray, max_points: int | None, seed: int = 0) -> np.ndarray:
    """At most ``max_points`` rows of X, chosen uniformly without replacement (all if None)."""
    if max_points is None or len(X) <= max_points:
        return X
    if max_points < 3:
        raise RobustlawError(f"max_points must be >= 3, got {max_points}")
    return X[np.sort(np.random.default_rng(seed).choice(len(X), max_points, replace=False))]


def twonn(X, discard: float = TWONN_DISCARD) -> EffDim:
    """Facco et al.'s TwoNN estimate (see the module docstring)."""
    Xu, dup = _points(X)
    n = len(Xu)
    if n < 3:
        raise RobustlawError(f"TwoNN needs at least 3 distinct points, got {n}")
    if not 0 <= discard < 1:
        raise RobustlawError(f"discard fraction must lie in [0, 1), got {discard}")
    r = _neighbour_distances(Xu, 2)
    mu = np.sort(r[:, 1] / r[:, 0])
    keep = max(2, int(np.floor(n * (1 - discard))))
    log_mu = np.log(mu[:keep])
    F = np.arange(1, n + 1)[:keep] / n
    y = -np.log1p(-np.minimum(F, 1 - 1.0 / (2 * n)))
    denom = float(log_mu @ log_mu)
    if denom <= 0:
        raise RobustlawError("TwoNN: every point's two nearest neighbours are equally far; the dimension is undefined")
    value = float(log_mu @ y) / denom
    return EffDim(value, "twonn", n, Xu.shape[1], dup, {"discard": discard,
                                                         "mle_variant": float((n - 1) / np.log(mu).sum())})


def levina_bickel(X, k1: int = MLE_K[0], k2: int = MLE_K[1]) -> EffDim:
    """Levina & Bickel's MLE with MacKay & Ghahramani's averaging (see the module docstring)."""
    Xu, dup = _points(X)
    n = len(Xu)
    if not (isinstance(k1, int) and isinstance(k2, int) and 2 <= k1 <= k2):
        raise RobustlawError(f"need integers 2 <= k1 <= k2, got k1={k1!r}, k2={k2!r}")
    if n <= k2:
        raise RobustlawError(f"the MLE with k2={k2} neighbours needs more than {k2} distinct points, got {n}")
    T = _neighbour_distances(Xu, k2)
    logT = np.log(T)
    estimates = []
    for k in range(k1, k2 + 1):
        inverse = (logT[:, k - 1:k] - logT[:, : k - 1]).sum(axis=1) / (k - 1)  # per point, 1 / m_k(x)
        estimates.append(1.0 / inverse.mean())
    return EffDim(float(np.mean(estimates)), "mle", n, Xu.shape[1], dup,
                  {"k1": k1, "k2": k2, "per_k": [float(e) for e in estimates]})


def estimate(X, method: str = "twonn") -> EffDim:
    """The effective dimension of X by ``method`` (twonn or mle)."""
    if method not in METHODS:
        raise RobustlawError(f"unknown effective-dimension method {method!r} (known: {', '.join(METHODS)})")
    return twonn(X) if method == "twonn" else levina_bickel(X)


def load_points(source: str) -> tuple[np.ndarray, str]:
    """Load a data matrix: ``digits`` (bundled) or a .npy / .npz[:key] / .csv path. Returns (X, name)."""
    X, name = load_array(source)
    if X.ndim != 2:
        raise RobustlawError(f"{name}: expected a 2-d array (n points x d features), got shape {X.shape}")
    return X, name


def load_array(source: str) -> tuple[np.ndarray, str]:
    """Load an array of any shape, without executing code (no pickles): ``digits`` (bundled) or a .npy /
    .npz[:key] / .csv path. Returns (array, name)."""
    if source in BUILTIN:
        from sklearn.datasets import load_digits

        return load_digits().data.astype(np.float64), source
    path_text, _, key = source.partition(".npz:")
    path = Path(path_text + ".npz") if key else Path(source)
    if not path.exists():
        raise RobustlawError(f"no such data file {str(path)!r} (or use a bundled data set: {', '.join(BUILTIN)})")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            X = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.keys())
                if key:
                    if key not in names:
                        raise RobustlawError(f"{path} has no array {key!r} (it has: {', '.join(names)})")
                elif len(names) == 1:
                    key = names[0]
                elif "X" in names:
                    key = "X"
                else:
                    raise RobustlawError(f"{path} holds several arrays ({', '.join(names)}); pick one as {path}:NAME")
                X = archive[key]
        elif suffix == ".csv":
            X = _load_csv(path)
        else:
            raise RobustlawError(f"unsupported data file type {suffix or '(none)'!r} for {path} (use .npy, .npz or .csv)")
    except RobustlawError:
        raise
    except Exception as error:  # a damaged file fails anywhere in numpy's parser (zip, header, data)
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RobustlawError(f"cannot read {path}: {first}") from None
    return np.asarray(X), path.name


def _load_csv(path: Path) -> np.ndarray:
    """Comma-separated numbers; a first line that is not numeric is taken as a header."""
    for skip in (0, 1):
        try:
            return np.loadtxt(path, delimiter=",", ndmin=2, skiprows=skip)
        except ValueError as error:
            last = error
    raise RobustlawError(f"{path}: not a table of comma-separated numbers ({str(last).splitlines()[0]})")
