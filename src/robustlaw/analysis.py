"""Scaling-law fits of the measured Lipschitz constants against the papers' scales, series by series.

The x axes are named quantities (:data:`AXES`): BS21's law scale sqrt(n d / P) (Bubeck & Sellke,
arXiv:2105.12806, Theorem 3), BLN20's sqrt(n / k) for width-k two-layer nets (Bubeck, Li & Nagaraj,
arXiv:2009.14444, Conjecture 1), and the same law with an effective dimension or a non-zero
parameter count. On a log axis a fit is a power law log Lip = log C + alpha log x, with a bootstrap
interval; the law predicts alpha = 1 against its own scale (:data:`LAW_EXPONENT`). On BLN20's linear
axis the fit is BLN20's straight line Lip = slope sqrt(n / k) + intercept with its R^2.

A series is the runs that differ only along the x axis: records are split by every spec field that
varies among them (n, d, sigma, activation, family, data source, fit mode, construction, any
family's own option...), read generically from the records' spec JSON, except the model's size
knobs (the numeric options that change P with everything else fixed: width, widths, size, ...).
Series are fitted apart, never pooled.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from robustlaw.registry import Registry
from robustlaw.theory import law_scale

#: The exponent of Lip against the law's own scale (sqrt(n d / P), sqrt(n / k), ...) for the smoothest interpolator.
LAW_EXPONENT = 1.0


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


@dataclass(frozen=True)
class LineFit:
    """y ~ slope * x + intercept (least squares), with its coefficient of determination r2."""

    slope: float
    intercept: float
    r2: float
    points: int

    def describe(self) -> str:
        return f"slope {self.slope:.3f}, intercept {self.intercept:.3f}, R^2 = {self.r2:.3f} ({self.points} runs)"

    def __call__(self, x):
        return self.slope * np.asarray(x, float) + self.intercept


def _usable(x, y, positive: bool) -> tuple[np.ndarray, np.ndarray]:
    """The finite (x, y) pairs (positive ones if ``positive``), sorted, so any order gives the same fit."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & ((x > 0) & (y > 0) if positive else True)
    order = np.lexsort((y[ok], x[ok]))
    return x[ok][order], y[ok][order]


#: the least spread max(x) / min(x) a power-law fit needs: below it the exponent is noise (an axis that
#: moves only through an estimate, such as d_eff at a fixed P)
MIN_SPREAD = 1.25


def fit_power_law(x, y, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> PowerLawFit | None:
    """Least-squares fit of log y on log x; None if fewer than 3 usable points or x spans less than a
    factor :data:`MIN_SPREAD`.

    The (x, y) pairs are sorted first, so the same points in any order give the same fit and the
    same bootstrap interval (the resampling draws indices)."""
    x, y = _usable(x, y, positive=True)
    lx, ly = np.log(x), np.log(y)
    if len(lx) < 3 or np.ptp(lx) < np.log(MIN_SPREAD):
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


def fit_line(x, y) -> LineFit | None:
    """Least-squares straight line y = slope x + intercept; None if fewer than 3 usable points or one distinct x."""
    x, y = _usable(x, y, positive=False)
    if len(x) < 3 or np.ptp(x) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    residual = float(np.sum((y - (slope * x + intercept)) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - residual / total if total > 0 else 1.0
    return LineFit(float(slope), float(intercept), r2, int(len(x)))


@dataclass(frozen=True)
class Axis:
    """A named x quantity of the report: ``value(record)`` (None where the record lacks its columns),
    its ``label``, its source, and its ``scale``: "log" (power-law fits) or "linear" (straight lines)."""

    name: str
    label: str
    source: str
    value: Callable[[dict], float | None]
    scale: str = "log"

    def fit(self, x, y) -> PowerLawFit | LineFit | None:
        return fit_power_law(x, y) if self.scale == "log" else fit_line(x, y)


#: The report's x axes, in drawing order (``[report] axes = [...]`` in a spec picks some).
AXES: Registry[Axis] = Registry("report axis", "report.axes")
AXES.register("bs21", Axis("bs21", "sqrt(n d / P)", "BS21 (arXiv:2105.12806) Theorem 3: Lip >~ sigma sqrt(n d / P)",
                           lambda r: r.get("law_scale")))
AXES.register("bln20", Axis("bln20", "sqrt(n / k)", "BLN20 (arXiv:2009.14444) Conjecture 1: width-k two-layer nets, "
                            "Lip >~ sqrt(n / k)", lambda r: r.get("bln20"), scale="linear"))
AXES.register("deff", Axis("deff", "sqrt(n d_eff / P)", "BS21 with the data's effective (TwoNN) dimension",
                           lambda r: r.get("law_scale_deff")))
AXES.register("nonzero", Axis("nonzero", "sqrt(n d / nonzero)", "BS21 with the non-zero parameter count "
                              "(pruned nets)",
                              lambda r: law_scale(r["n"], r["d"], r["nonzero"]) if r.get("nonzero") else None))


def present_axes(records: list[dict], names: list[str] | None = None) -> list[Axis]:
    """The axes to draw: ``names`` (each checked), or every registered axis whose values the records
    hold, skipping one that repeats an earlier axis's values (the non-zero count of a dense net is P)."""
    if names is not None:
        return [AXES.get(name) for name in names]
    shown, seen = [], []
    for axis in AXES.values():
        values = [axis.value(r) for r in records]
        if any(v is not None for v in values) and values not in seen:
            shown.append(axis)
            seen.append(values)
    return shown


def facets(record: dict) -> dict[str, object]:
    """The record's spec as flat dotted fields (``data.n``, ``model.width``, ``fit.mode``...; a
    variant's options beside its section's fields), plus its ``depth``; seed and sweep left out."""
    return dict(_facets(record.get("spec") or "{}", record.get("depth"), record.get("construction"), record.get("mode")))


@functools.lru_cache(maxsize=65536)
def _facets(spec_text: str, depth, construction, mode) -> tuple[tuple[str, object], ...]:
    """:func:`facets` of one stored spec, parsed once however often a report splits its records."""
    try:
        spec = json.loads(spec_text)
    except (TypeError, ValueError):
        spec = {}
    out: dict[str, object] = {}
    for section, fields in spec.items():
        if not isinstance(fields, dict):
            continue
        for name, value in {**fields, **(fields.get("options") or {})}.items():
            if name != "options":
                out[f"{section}.{name}"] = json.dumps(value) if isinstance(value, (list, dict)) else value
    out["depth"] = depth
    if not spec:  # a record without its spec: its construction and fit mode still tell series apart
        out["construction"], out["mode"] = construction, mode
    return tuple(out.items())


def _is_size_knob(field: str, rows: list[dict], table: list[dict], varying: list[str]) -> bool:
    """A numeric model option along which P or the non-zero count changes with every other varying field
    fixed (a width, a CNN's channels, a pruned net's density)."""
    if not field.startswith("model.") or not all(_numeric(t.get(field)) for t in table):
        return False
    groups: dict[tuple, set] = {}
    for row, t in zip(rows, table):
        groups.setdefault(tuple(str(t.get(f)) for f in varying if f != field), set()).add((row.get("P"), row.get("nonzero")))
    return any(len(sizes) > 1 for sizes in groups.values())


def _numeric(value) -> bool:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return False
    items = value if isinstance(value, list) else [value]
    return value is None or all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items)


def split_fields(records: list[dict]) -> list[str]:
    """The fields that split the completed records into series: every facet that takes two values or
    more (a variant's own field absent elsewhere does not count as a value), except the model's size
    knobs (which the x axis shows)."""
    rows = [r for r in records if r.get("status") == "ok"]
    table = [facets(r) for r in rows]
    names = list(dict.fromkeys(k for t in table for k in t))
    varying = [k for k in names if len({json.dumps(t[k], default=str) for t in table if t.get(k) is not None}) > 1]
    return [f for f in varying if not _is_size_knob(f, rows, table, varying)]


#: Facets the series name already shows (its construction or fit mode), left out of its label.
NAMED_BY_BASE = {"construction", "mode", "fit.mode", "model.construction"}


def series_name(record: dict, fields: list[str]) -> str:
    """A series' label: the record's construction or fit mode, then each other splitting field's value."""
    values = facets(record)
    parts = [record.get("construction") or record.get("mode") or "train"]
    named = NAMED_BY_BASE | ({"model.family"} if record.get("construction") else set())  # a construction's name says it
    parts += [f"{f.split('.')[-1]}={values[f]}" for f in fields if f not in named and values.get(f) is not None]
    return ", ".join(parts)


def by_series(records: list[dict]) -> dict[str, list[dict]]:
    """Completed records grouped into series (all splitting fields equal), in order of first appearance,
    each named by :func:`series_name` (made unique if two series would read alike)."""
    fields = split_fields(records)
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("status") == "ok":
            values = facets(r)
            groups.setdefault(tuple(json.dumps(values.get(f), default=str) for f in fields), []).append(r)
    out: dict[str, list[dict]] = {}
    for key, rows in groups.items():
        name = series_name(rows[0], fields)
        out[name if name not in out else f"{name} [{', '.join(key)}]"] = rows
    return out


def fitted(records: list[dict]) -> list[dict]:
    """The runs a scaling fit uses: completed and at their fit target."""
    return [r for r in records if r.get("status") == "ok" and r.get("reached")]


def law_fit(records: list[dict], column: str = "lip_lower", axis: str = "bs21") -> PowerLawFit | LineFit | None:
    """Fit ``column`` against the axis ``axis`` over the runs that completed and reached their target
    (one series: use :func:`law_fits` to split a sweep first)."""
    kind = AXES.get(axis)
    rows = [r for r in fitted(records) if kind.value(r) is not None]
    return kind.fit([kind.value(r) for r in rows], [r.get(column) for r in rows])


def law_fits(records: list[dict], column: str = "lip_lower", axis: str = "bs21") -> dict[str, PowerLawFit | LineFit | None]:
    """:func:`law_fit` for each series of the records."""
    return {name: law_fit(rows, column, axis) for name, rows in by_series(records).items()}


@dataclass(frozen=True)
class Collapse:
    """Whether the straight lines of series that differ only in n collapse onto one: the pooled line's
    R^2 against the mean of the per-n R^2 (collapsed when it is at most ``tolerance`` lower)."""

    label: str
    ns: tuple[int, ...]
    pooled: LineFit
    per_n: dict[int, LineFit]
    tolerance: float = 0.1

    @property
    def collapsed(self) -> bool:
        return self.pooled.r2 >= np.mean([f.r2 for f in self.per_n.values()]) - self.tolerance

    def describe(self) -> str:
        slopes = [f.slope for f in self.per_n.values()]
        verdict = "collapse onto one line" if self.collapsed else "do not collapse"
        return (f"{self.label}: the curves for n = {', '.join(map(str, self.ns))} {verdict} "
                f"(one line through all: {self.pooled.describe()}; per-n R^2 "
                f"{min(f.r2 for f in self.per_n.values()):.3f}-{max(f.r2 for f in self.per_n.values()):.3f}, "
                f"slopes {min(slopes):.3f}-{max(slopes):.3f})")


def collapses(records: list[dict], axis: str = "bln20", column: str = "lip_lower") -> list[Collapse]:
    """For each group of series that differ only in n (on a linear axis such as BLN20's sqrt(n / k)):
    do their straight lines collapse? (BLN20's conjecture says Lip depends on n and k only through n / k.)"""
    kind = AXES.get(axis)
    fields = split_fields(records)
    if "data.n" not in fields:
        return []
    others = [f for f in fields if f != "data.n"]
    groups: dict[tuple, dict[int, list[dict]]] = {}
    for r in fitted(records):
        if kind.value(r) is not None:
            values = facets(r)
            groups.setdefault(tuple(str(values.get(f)) for f in others), {}).setdefault(r["n"], []).append(r)
    out = []
    for by_n in groups.values():
        per_n = {n: fit for n, rows in sorted(by_n.items())
                 if (fit := fit_line([kind.value(r) for r in rows], [r[column] for r in rows]))}
        rows = [r for n in per_n for r in by_n[n]]
        pooled = fit_line([kind.value(r) for r in rows], [r[column] for r in rows])
        if len(per_n) >= 2 and pooled:
            label = series_name(rows[0], others)
            out.append(Collapse(label, tuple(per_n), pooled, per_n))
    return out
