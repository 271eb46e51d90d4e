"""The papers' explicit interpolators and the floor every interpolator is measured against."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import pdist


def mcshane_constant(X: np.ndarray, y: np.ndarray) -> float:
    """max_{i != j} |y_i - y_j| / ||x_i - x_j||: the smallest Lipschitz constant of any interpolator
    (attained by the McShane extension), hence a floor for every fitted model. O(n^2 d)."""
    dist = pdist(X)
    diff = pdist(y[:, None], metric="cityblock")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(dist > 0, diff / dist, np.where(diff > 0, np.inf, 0.0))
    return float(ratio.max()) if len(ratio) else 0.0
