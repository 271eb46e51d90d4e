"""Figures and the static HTML report of one or several sweeps.

One self-contained page (figures embedded): per sweep a section with the fits, one figure per x axis
of :data:`robustlaw.analysis.AXES` the records hold (BS21's sqrt(n d / P), BLN20's sqrt(n / k), ...)
and the table of runs; with several sweeps, first a comparison figure. In each figure every series
(see :func:`robustlaw.analysis.by_series`) has its own colour and its own fit; the law's line is
sigma times the axis; each seed's interpolation floor, BS21 eq. (10)'s value (its explicit constants,
arXiv:2105.12806) and the mean gradient on the data are drawn for contrast; the legend stands beside
the axes, never over data.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robustlaw.analysis import (AXES, LAW_EXPONENT, MIN_SPREAD, Axis, LineFit, by_series, collapses, law_fit, present_axes,
                                series_name, split_fields)

TABLE_COLUMNS = [("sweep", "sweep"), ("series", "series"), ("n", "n"), ("d", "d"), ("d_eff", "d_eff"),
                 ("widths", "widths"), ("depth", "depth"), ("P", "P"), ("nonzero", "nonzero"), ("seed", "seed"),
                 ("reached", "fit"), ("train_max_err", "max err"),
                 ("lip_lower", "Lip lower"), ("lip_upper", "Lip upper"), ("grad_mean_train", "mean |grad|"),
                 ("law_scale", "sqrt(nd/P)"), ("bln20", "sqrt(n/k)"), ("bs21_lip_lower", "BS21 (10)"),
                 ("lip_floor", "floor")]
#: Upper bounds above this are drawn clipped (a certificate may be astronomically loose).
UPPER_CLIP = 1e6


@dataclass
class ReportSection:
    """One sweep of the report: its name, its records, its description."""

    name: str
    records: list[dict]
    description: str = ""
    series: dict[str, list[dict]] = field(init=False)

    def __post_init__(self):
        self.series = by_series(self.records)


def format_value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def table_rows(records: list[dict]) -> list[dict]:
    """Completed records in table order, each with its series named."""
    fields = split_fields(records)
    ok = [{**r, "series": series_name(r, fields)} for r in records if r.get("status") == "ok"]
    return sorted(ok, key=lambda r: (r["series"], r["n"], r["d"], r["P"], r["seed"]))


def fit_text(fit) -> str:
    if isinstance(fit, LineFit):
        return fit.describe()
    return f"alpha = {fit.describe()}"


def exponent_lines(records: list[dict], axes: list[str] | None = None) -> list[str]:
    """One sentence per series and axis: the fit of the lower (and upper) bound against the drawn axis."""
    lines = []
    groups = by_series(records)
    for axis in present_axes(records, axes):
        for name, rows in groups.items():
            lower, upper = law_fit(rows, "lip_lower", axis.name), law_fit(rows, "lip_upper", axis.name)
            if lower is None:
                lines.append(f"{name} against {axis.label}: no fit (fewer than 3 fitted runs, or x spans less "
                             f"than {MIN_SPREAD}x)")
                continue
            line = f"{name}: Lip lower bound against {axis.label}: {fit_text(lower)}"
            if upper is not None and not isinstance(upper, LineFit):
                line += f"; upper bound alpha = {upper.exponent:.3f}"
            lines.append(line)
    lines += [c.describe() for c in collapses(records)]
    return lines


def _xy(axis: Axis, rows: list[dict], column: str) -> tuple[list, list]:
    rows = [r for r in rows if axis.value(r) is not None and r.get(column) is not None]
    return [axis.value(r) for r in rows], [r[column] for r in rows]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colours(count: int) -> list:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if count <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(count)]


def _fit_curve(ax, axis: Axis, fit, xs: np.ndarray, colour) -> None:
    if fit is None:
        return
    ys = fit(xs) if isinstance(fit, LineFit) else fit.prefactor * xs ** fit.exponent
    ax.plot(xs, ys, color=colour, lw=1.2, zorder=2)


def _short_fit(fit) -> str:
    if fit is None:
        return "too few runs to fit"
    if isinstance(fit, LineFit):
        return f"line {fit.slope:.2f} x {fit.intercept:+.2f}, R²={fit.r2:.2f}"
    return f"α={fit.exponent:.2f} [{fit.ci_low:.2f}, {fit.ci_high:.2f}]"


def _draw_series(ax, axis: Axis, name: str, rows: list[dict], colour) -> None:
    """One series: the bracket of each run, its mean gradient, its BS21 eq. (10) value, the floor of each
    of its seeds' data sets, and its fit (lower bound against the axis)."""
    rows = [r for r in rows if axis.value(r) is not None and np.isfinite(r["lip_lower"])]  # infinite: named, not drawn
    if not rows:
        return
    x = np.array([axis.value(r) for r in rows])
    lo = np.array([r["lip_lower"] for r in rows], float)
    up = np.minimum(np.array([r["lip_upper"] for r in rows], float), UPPER_CLIP)
    reached = np.array([bool(r.get("reached")) for r in rows])
    ax.vlines(x, lo, up, color=colour, alpha=0.3, lw=1, zorder=1)
    ax.scatter(x, up, marker="_", color=colour, s=60, zorder=2)
    fit = law_fit(rows, "lip_lower", axis.name)
    ax.scatter(x[reached], lo[reached], marker="o", s=22, color=colour, zorder=4, label=f"{name}: {_short_fit(fit)}")
    ax.scatter(x[~reached], lo[~reached], marker="x", color=colour, zorder=4)
    ax.scatter(x, [r.get("grad_mean_train") or np.nan for r in rows], marker=".", s=14, color=colour, alpha=0.6,
               zorder=3)
    bs21 = np.array([r.get("bs21_lip_lower") or np.nan for r in rows], float)
    ax.scatter(x, np.where(bs21 > 0, bs21, np.nan), marker="v", s=14, color=colour, alpha=0.6, zorder=3)
    for floor in sorted({(r.get("seed"), r.get("lip_floor")) for r in rows if r.get("lip_floor")}):
        ax.hlines(floor[1], x.min(), x.max(), color=colour, lw=0.8, ls=":", alpha=0.8, zorder=1)
    _fit_curve(ax, axis, fit, np.linspace(x.min(), x.max(), 50), colour)


def _legend_keys() -> list:
    """Proxy artists for what every series draws (the series themselves are listed by colour)."""
    from matplotlib.lines import Line2D

    grey = "0.35"
    return [Line2D([], [], color=grey, marker="o", ls="", label="Lip lower bound (witness gradient)"),
            Line2D([], [], color=grey, marker="_", ms=10, ls="", label="Lip upper bound (certificate)"),
            Line2D([], [], color=grey, marker="x", ls="", label="fit target missed (not fitted)"),
            Line2D([], [], color=grey, lw=1.2, label="fit of the lower bounds"),
            Line2D([], [], color=grey, marker=".", ls="", label="mean |grad f| on the data"),
            Line2D([], [], color=grey, marker="v", ls="", label="BS21 eq. (10) with its constants"),
            Line2D([], [], color=grey, lw=0.8, ls=":", label="floor max|yi-yj|/|xi-xj|, per seed")]


def _law_line(ax, axis: Axis, rows: list[dict]) -> None:
    """sigma times the axis, for each sigma of the records (the law with hidden constant 1)."""
    for sigma in sorted({r.get("sigma") or 1.0 for r in rows}):
        xs = np.array(sorted({axis.value(r) for r in rows if axis.value(r) is not None}))
        if len(xs):
            ax.plot(xs, sigma * xs, "k--", lw=1, zorder=2, label=f"law: sigma {axis.label}, sigma = {sigma:.3g}")


def _readable_ticks(ax, axis: Axis) -> None:
    """Plain numbers on log axes, with more of them labelled the fewer decades an axis spans."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if axis.scale != "log":
        return
    for which, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        decades = np.log10(max(hi, 1e-300) / max(lo, 1e-300))
        subs = (1, 1.5, 2, 3, 4, 5, 6, 8) if decades < 1 else (1, 2, 5) if decades < 3 else (1,)
        which.set_major_locator(LogLocator(subs=subs))
        which.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        which.set_minor_formatter(NullFormatter())


def law_figure(records: list[dict], axis: Axis | str = "bs21", title: str = ""):
    """The Lipschitz bracket of each run against ``axis``, a colour and a fit per series, with the law's
    line (sigma times the axis), each seed's floor, BS21 eq. (10) and the mean gradient; legend outside."""
    axis = AXES.get(axis) if isinstance(axis, str) else axis
    plt = _pyplot()
    groups = by_series(records)
    fig, ax = plt.subplots(figsize=(12, 6))
    for (name, rows), colour in zip(groups.items(), _colours(len(groups))):
        _draw_series(ax, axis, name, rows, colour)
    shown = [r for rows in groups.values() for r in rows if axis.value(r) is not None and np.isfinite(r["lip_lower"])]
    _law_line(ax, axis, shown)
    if axis.scale == "linear" and shown:  # frame the lower bounds: a loose certificate runs off the top
        ax.set_ylim(0, 1.25 * max(max(r["lip_lower"], (r.get("sigma") or 1) * axis.value(r)) for r in shown))
    _finish(ax, axis, title or f"Lipschitz constant against {axis.label} ({axis.source})")
    return fig


def _finish(ax, axis: Axis, title: str, keys: bool = True) -> None:
    ax.set_xscale(axis.scale)
    ax.set_yscale(axis.scale)  # BLN20's straight lines are drawn straight
    ax.set_xlabel(axis.label)
    ax.set_ylabel("Lipschitz constant")
    ax.grid(True, which="both", alpha=0.3)
    _readable_ticks(ax, axis)
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + (_legend_keys() if keys else []), fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    ax.set_title(title, fontsize=10)


def comparison_figure(sections: list[ReportSection], axis: Axis | str = "bs21"):
    """Every sweep's series on one axis: lower bounds and each series' own fit (never pooled across sweeps)."""
    axis = AXES.get(axis) if isinstance(axis, str) else axis
    plt = _pyplot()
    pairs = [(s.name, name, rows) for s in sections for name, rows in s.series.items()]
    fig, ax = plt.subplots(figsize=(12, 6))
    markers = "osD^vP*X"
    for (sweep, name, rows), colour in zip(pairs, _colours(len(pairs))):
        rows = [r for r in rows if axis.value(r) is not None]
        if not rows:
            continue
        marker = markers[[s.name for s in sections].index(sweep) % len(markers)]
        x, y = _xy(axis, rows, "lip_lower")
        fit = law_fit(rows, "lip_lower", axis.name)
        ax.scatter(x, y, marker=marker, s=22, color=colour, zorder=3, label=f"{sweep} / {name}: {_short_fit(fit)}")
        _fit_curve(ax, axis, fit, np.linspace(min(x), max(x), 50), colour)
    _law_line(ax, axis, [r for _, _, rows in pairs for r in rows])
    _finish(ax, axis, f"All sweeps: Lipschitz lower bound against {axis.label}", keys=False)
    return fig


def figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def _img(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="{html.escape(alt)}">'


def _table(records: list[dict]) -> str:
    header = "".join(f"<th>{html.escape(label)}</th>" for _, label in TABLE_COLUMNS)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(format_value(r.get(c)))}</td>" for c, _ in TABLE_COLUMNS)
                   + "</tr>" for r in table_rows(records))
    return f"<table><tr>{header}</tr>{rows}</table>"


def section_html(section: ReportSection, axes: list[str] | None, pngs: dict[str, bytes]) -> str:
    """One sweep's part of the page: fits, figures (also returned in ``pngs`` by file name), table, failures."""
    records = section.records
    ok = [r for r in records if r.get("status") == "ok"]
    errors = [r for r in records if r.get("status") != "ok"]
    fits = "".join(f"<li>{html.escape(line)}</li>" for line in exponent_lines(records, axes))
    figures = []
    for axis in present_axes(ok, axes) if ok else []:
        png = figure_png(law_figure(ok, axis, title=f"{section.name}: Lipschitz constant against {axis.label}"))
        pngs[f"{slug(section.name)}-{axis.name}.png"] = png
        figures.append(f"<h3>Against {html.escape(axis.label)}</h3><p>{html.escape(axis.source)}.</p>"
                       + _img(png, f"{section.name}: Lipschitz constant against {axis.label}"))
    err_rows = "".join(f"<li>run {html.escape(r['key'])}: {html.escape(r.get('error') or '')}</li>" for r in errors)
    infinite = [r for r in ok if r.get("lip_lower") is not None and not np.isfinite(r["lip_lower"])]
    jumps = (f"<p>{len(infinite)} runs have an infinite certified Lipschitz constant (the model jumps inside the "
             "domain, e.g. a linearised ReLU net across an initial hyperplane): not drawn and not fitted; their "
             "mean gradient is in the table.</p>") if infinite else ""
    return (f"<h2>Sweep {html.escape(section.name)}</h2><p>{html.escape(section.description)}</p>"
            f"<p>Series: {len(section.series)}, split by {html.escape(', '.join(split_fields(records)) or 'nothing')}"
            f". Fits of the lower bound against each axis as drawn (power laws on log axes, with 95% bootstrap "
            f"intervals; the law predicts alpha = {LAW_EXPONENT:g} for the smoothest interpolator; BLN20's axis "
            f"is linear and fitted by straight lines, its frame set by the lower bounds: a certificate above it "
            f"runs off the top):</p><ul>{fits}</ul>" + jumps + "".join(figures)
            + f"<h3>Runs ({len(ok)} completed, {len(errors)} failed)</h3>" + _table(records)
            + (f"<h3>Failed runs</h3><ul>{err_rows}</ul>" if errors else ""))


def slug(name: str) -> str:
    """``name`` as a file or folder name: anything but letters, digits, - and _ becomes _."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "sweep"


def _sections(records, description) -> list[ReportSection]:
    """``records`` as sections: a dict sweep -> records, or a list grouped by each record's sweep."""
    if not isinstance(records, dict):
        grouped: dict[str, list[dict]] = {}
        for r in records:
            grouped.setdefault(r.get("sweep") or "sweep", []).append(r)
        records = grouped
    texts = description if isinstance(description, dict) else {}
    return [ReportSection(name, rows, texts.get(name, "" if texts else description)) for name, rows in records.items()]


PAGE_STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
img{max-width:100%}table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f3f3f3}"""


def write_report(records: list[dict] | dict[str, list[dict]], out_dir: str | Path, title: str = "robustlaw report",
                 description: str | dict[str, str] = "", axes: list[str] | None = None) -> Path:
    """Write ``report.html`` into ``out_dir``: a section per sweep (``records`` as a dict sweep -> records,
    or a list grouped by each record's ``sweep``), with a comparison figure first when there are
    several; each figure also as a PNG beside it (``law.png``: the first sweep's first figure).
    ``axes`` names the x axes to draw (default: every one the records hold)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = _sections(records, description)
    pngs: dict[str, bytes] = {}
    comparison = ""
    if len(sections) > 1 and any(s.series for s in sections):
        png = figure_png(comparison_figure(sections))
        pngs["comparison.png"] = png
        comparison = ("<h2>All sweeps compared</h2><p>Each sweep's series with its own fit (series and sweeps "
                      "are never pooled).</p>" + _img(png, "all sweeps: Lipschitz constant against sqrt(n d / P)"))
    body = "".join(section_html(s, axes, pngs) for s in sections)
    for name, png in pngs.items():
        (out / name).write_bytes(png)
    first = next((png for name, png in pngs.items() if name != "comparison.png"), None)
    if first is not None:
        (out / "law.png").write_bytes(first)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{PAGE_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Each run's Lipschitz constant is bracketed on its stated domain: the lower bound is a gradient norm
attained at a stored witness point, the upper bound a certificate. The law bounds the supremum of
the gradient; the mean gradient norm on the data is shown for contrast and is not what the law is about.
Sweeps: {html.escape(', '.join(s.name for s in sections))}.</p>
{comparison}{body}
</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
