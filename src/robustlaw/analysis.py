"""Scaling-law fits: log Lip = log C + alpha log(n d / P), with bootstrap confidence intervals.

The law predicts alpha = 1/2 for the smoothest interpolator (Lip >~ sqrt(n d / P)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LAW_EXPONENT = 0.5


@dataclass(frozen=True)
class PowerLawFit:
    """y ~ prefactor * x^exponent, with a percentile-bootstrap interval for the exponent."""

    exponent: float
    ci_low: float
    ci_high: float
    prefactor: float
    points: int
    level: float

    def describe(self) -> str:
        return f"{self.exponent:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}] ({self.level:.0%} CI, {self.points} runs)"


def fit_power_law(x, y, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> PowerLawFit | None:
    """Least-squares fit of log y on log x; None if fewer than 3 usable points or one distinct x.

    The (x, y) pairs are sorted first, so the same points in any order give the same fit and the
    same bootstrap interval (the resampling draws indices)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    order = np.lexsort((y[ok], x[ok]))
    lx, ly = np.log(x[ok][order]), np.log(y[ok][order])
    if len(lx) < 3 or np.ptp(lx) == 0:
        return None
    slope, intercept = np.polyfit(lx, ly, 1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(len(lx), size=(n_boot, len(lx)))
    bx, by = lx[idx], ly[idx]
    bxm, bym = bx.mean(axis=1, keepdims=True), by.mean(axis=1, keepdims=True)
    var = ((bx - bxm) ** 2).sum(axis=1)
    valid = var > 0
    slopes = ((bx - bxm) * (by - bym)).sum(axis=1)[valid] / var[valid]
    lo, hi = np.quantile(slopes, [(1 - level) / 2, (1 + level) / 2])
    return PowerLawFit(float(slope), float(lo), float(hi), float(np.exp(intercept)), int(len(lx)), level)


def series(record: dict) -> str:
    """Which curve a record belongs to: its construction's name, or the fit mode that produced it.

    Plain training, the least-Lipschitz search and each construction are different searches over
    interpolators; their exponents are fitted and drawn apart, never pooled."""
    return record.get("construction") or record.get("mode") or "train"


def by_series(records: list[dict]) -> dict[str, list[dict]]:
    """Completed records grouped by :func:`series`, in order of first appearance."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        if r.get("status") == "ok":
            groups.setdefault(series(r), []).append(r)
    return groups


def law_fit(records: list[dict], column: str = "lip_lower") -> PowerLawFit | None:
    """Fit ``column`` against n d / P over the runs that completed and reached their target."""
    rows = [r for r in records if r.get("status") == "ok" and r.get("reached")]
    return fit_power_law([r["law_scale"] ** 2 for r in rows], [r[column] for r in rows])


def law_fits(records: list[dict], column: str = "lip_lower") -> dict[str, PowerLawFit | None]:
    """:func:`law_fit` for each series of the records."""
    return {name: law_fit(rows, column) for name, rows in by_series(records).items()}
