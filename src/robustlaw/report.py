"""Figures and the static HTML report of a sweep."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from robustlaw.analysis import LAW_EXPONENT, by_series, law_fits, series

TABLE_COLUMNS = [("series", "series"), ("n", "n"), ("d", "d"), ("width", "k"), ("P", "P"), ("seed", "seed"), ("reached", "fit"),
                 ("train_max_err", "max err"), ("lip_lower", "Lip lower"), ("lip_upper", "Lip upper"),
                 ("grad_mean_train", "mean |grad|"), ("law_scale", "sqrt(nd/P)"), ("lip_floor", "floor")]


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
    ok = [{**r, "series": series(r)} for r in records if r.get("status") == "ok"]
    return sorted(ok, key=lambda r: (r["series"], r["n"], r["d"], r["P"], r["seed"]))


def exponent_lines(records: list[dict]) -> list[str]:
    """One sentence per series: the fitted exponent of the lower (and upper) bound against n d / P."""
    lines = []
    uppers = law_fits(records, "lip_upper")
    for name, fit in law_fits(records).items():
        if fit is None:
            lines.append(f"{name}: too few fitted runs for a scaling fit")
            continue
        line = f"{name}: Lip lower bound ~ (n d / P)^alpha, alpha = {fit.describe()}"
        if uppers.get(name):
            line += f"; upper bound alpha = {uppers[name].exponent:.3f}"
        lines.append(line)
    return lines


def law_figure(records: list[dict]):
    """Lipschitz bracket of each run against sqrt(n d / P), a colour per series, with the law's
    scale, the interpolation floor and each series' fitted power law."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = by_series(records)
    fits = law_fits(records)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for i, (name, rows) in enumerate(groups.items()):
        colour = f"C{i}"
        for reached, marker in ((True, "o"), (False, "x")):
            part = [r for r in rows if bool(r["reached"]) == reached]
            if not part:
                continue
            x = np.array([r["law_scale"] for r in part])
            lo = np.array([r["lip_lower"] for r in part])
            up = np.array([r["lip_upper"] for r in part])
            ax.vlines(x, lo, np.minimum(up, 1e6), color=colour, alpha=0.35, lw=1, zorder=1)
            ax.scatter(x, lo, marker=marker, color=colour, zorder=3,
                       label=f"{name}: Lip bracket" + ("" if reached else " (target missed)"))
            ax.scatter(x, up, marker="_", color=colour, s=60, zorder=2)
            if reached:
                ax.scatter(x, [r["grad_mean_train"] for r in part], marker=".", color=colour, alpha=0.5, zorder=2,
                           label=f"{name}: mean |grad f| on the data")
        xs = np.array(sorted({r["law_scale"] for r in rows}))
        if fits.get(name):
            ax.plot(xs, fits[name].prefactor * xs ** (2 * fits[name].exponent), color=colour, lw=1,
                    label=f"{name}: fit Lip ~ (nd/P)^{fits[name].exponent:.2f}")
    ok = [r for rows in groups.values() for r in rows]
    if ok:
        xs = np.array(sorted({r["law_scale"] for r in ok}))
        ax.plot(xs, xs, "k--", lw=1, label="law: sqrt(n d / P)")
        floor = np.mean([r["lip_floor"] for r in ok])
        ax.axhline(floor, color="k", lw=1, ls=":", label=f"floor max|yi-yj|/|xi-xj| ~ {floor:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sqrt(n d / P)")
    ax.set_ylabel("Lipschitz constant")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title("Law of robustness: certified Lipschitz bracket against sqrt(n d / P)")
    fig.tight_layout()
    return fig


def figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def write_report(records: list[dict], out_dir: str | Path, title: str = "robustlaw report", description: str = "") -> Path:
    """Write ``report.html`` (figure embedded, table, fitted exponent) and ``law.png`` into ``out_dir``."""
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig = law_figure(records)
    png = figure_png(fig)
    plt.close(fig)
    (out / "law.png").write_bytes(png)
    ok = table_rows(records)
    errors = [r for r in records if r.get("status") != "ok"]
    header = "".join(f"<th>{html.escape(label)}</th>" for _, label in TABLE_COLUMNS)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(format_value(r.get(c)))}</td>" for c, _ in TABLE_COLUMNS) + "</tr>"
                   for r in ok)
    err_rows = "".join(f"<li>run {html.escape(r['key'])}: {html.escape(r.get('error', ''))}</li>" for r in errors)
    fits = "".join(f"<li>{html.escape(line)}</li>" for line in exponent_lines(records))
    summary = (f"Fitted exponents against n d / P, per series (95% bootstrap intervals):<ul>{fits}</ul>"
               f"The law predicts alpha = {LAW_EXPONENT} for the smoothest interpolator: any fit lies above the "
               "dashed line up to constants; a search that does not find the smoothest one can fall more slowly.")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right}}
th{{background:#f3f3f3}}</style></head><body>
<h1>{html.escape(title)}</h1><p>{html.escape(description)}</p>
<div>{summary}</div>
<p>Each run's Lipschitz constant is bracketed on its stated domain: the lower bound is a gradient norm
attained at a stored witness point, the upper bound a certificate. The law bounds the supremum of
the gradient; the mean gradient norm on the data is shown for contrast and is not what the law is about.</p>
<img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="Lipschitz constant against sqrt(n d / P)">
<h2>Runs ({len(ok)} completed, {len(errors)} failed)</h2>
<table><tr>{header}</tr>{rows}</table>
{f"<h2>Failed runs</h2><ul>{err_rows}</ul>" if errors else ""}
</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
