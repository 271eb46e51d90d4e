"""Figures and the static HTML report of a sweep."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from robustlaw.analysis import LAW_EXPONENT, law_fit

TABLE_COLUMNS = [("n", "n"), ("d", "d"), ("width", "k"), ("P", "P"), ("seed", "seed"), ("reached", "fit"),
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


def law_figure(records: list[dict]):
    """Lipschitz bracket of each run against sqrt(n d / P), with the law's scale and the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if r.get("status") == "ok"]
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    for reached, marker, label in ((True, "o", "fitted"), (False, "x", "target missed")):
        rows = [r for r in ok if bool(r["reached"]) == reached]
        if not rows:
            continue
        x = np.array([r["law_scale"] for r in rows])
        lo = np.array([r["lip_lower"] for r in rows])
        up = np.array([r["lip_upper"] for r in rows])
        ax.vlines(x, lo, up, color="0.75", lw=1, zorder=1)
        ax.scatter(x, lo, marker=marker, color="C0", zorder=3, label=f"Lip lower bound ({label})")
        ax.scatter(x, up, marker="_" if reached else "x", color="C3", s=60, zorder=2, label=f"Lip upper bound ({label})")
        ax.scatter(x, [r["grad_mean_train"] for r in rows], marker=".", color="C2", zorder=2,
                   label=f"mean |grad f| on the data ({label})" if reached else None)
    if ok:
        xs = np.array(sorted({r["law_scale"] for r in ok}))
        ax.plot(xs, xs, "k--", lw=1, label="law: sqrt(n d / P)")
        floor = np.mean([r["lip_floor"] for r in ok])
        ax.axhline(floor, color="C1", lw=1, ls=":", label=f"floor max|yi-yj|/|xi-xj| ~ {floor:.2f}")
        fit = law_fit(ok)
        if fit:
            ax.plot(xs, fit.prefactor * xs ** (2 * fit.exponent), color="C0", lw=1,
                    label=f"fit: Lip ~ (nd/P)^{fit.exponent:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sqrt(n d / P)")
    ax.set_ylabel("Lipschitz constant")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Law of robustness: measured Lipschitz bracket against sqrt(n d / P)")
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
    fit = law_fit(records)
    fit_upper = law_fit(records, "lip_upper")
    ok = [r for r in records if r.get("status") == "ok"]
    errors = [r for r in records if r.get("status") != "ok"]
    header = "".join(f"<th>{html.escape(label)}</th>" for _, label in TABLE_COLUMNS)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(format_value(r.get(c)))}</td>" for c, _ in TABLE_COLUMNS) + "</tr>"
                   for r in sorted(ok, key=lambda r: (r["n"], r["d"], r["P"], r["seed"])))
    err_rows = "".join(f"<li>run {html.escape(r['key'])}: {html.escape(r.get('error', ''))}</li>" for r in errors)
    summary = (f"Fitted exponent of the Lipschitz lower bound against n d / P: <b>{fit.describe()}</b>; "
               f"the law predicts {LAW_EXPONENT} for the smoothest interpolator."
               if fit else "Too few fitted runs for a scaling fit.")
    if fit_upper:
        summary += f"<br>Same fit for the certified upper bound: {fit_upper.describe()}."
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right}}
th{{background:#f3f3f3}}</style></head><body>
<h1>{html.escape(title)}</h1><p>{html.escape(description)}</p>
<p>{summary}</p>
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
