import re

import pytest

from robustlaw.report import write_report


def rows():
    out = []
    for i, s in enumerate((1.0, 2.0, 3.0, 4.0)):
        out.append({"key": f"k{i}", "status": "ok", "reached": True, "n": 100, "d": 10, "width": 10 * (i + 1),
                    "P": 100 * (i + 1), "seed": 0, "train_max_err": 0.05, "law_scale": s, "lip_lower": 2 * s,
                    "lip_upper": 3 * s, "grad_mean_train": s, "lip_floor": 1.5})
    out.append({"key": "bad", "status": "error", "error": "RuntimeError: <boom>", "n": 100, "d": 10})
    return out


def test_report_embeds_the_figure_table_exponent_and_failures(tmp_path):
    path = write_report(rows(), tmp_path, title="t")
    page = path.read_text()
    assert page.startswith("<!doctype html>")
    png = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert png and len(png.group(1)) > 1000
    assert (tmp_path / "law.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "1.000 [1.000, 1.000]" in page  # Lip = 2 sqrt(nd/P): exponent 1 against the drawn axis sqrt(nd/P)
    assert page.count("<tr>") == 1 + 4
    assert "RuntimeError: &lt;boom&gt;" in page  # escaped, listed, not dropped


def test_report_with_too_few_runs_says_so(tmp_path):
    page = write_report(rows()[:2], tmp_path).read_text()
    assert "no fit (fewer than 3 fitted runs" in page


def test_infinite_lipschitz_constants_are_named_not_drawn_or_fitted(tmp_path):
    """A run whose certified constant is infinite (a jump) is said so on the page and left out of the fit,
    which still recovers the finite runs' exponent."""
    finite = [{**r, "bln20": r["law_scale"]} for r in rows()[:4]]  # also on BLN20's linear axis
    jump = {**finite[0], "key": "jump", "law_scale": 5.0, "lip_lower": float("inf"), "lip_upper": float("inf")}
    page = write_report(finite + [jump], tmp_path).read_text()
    assert "1 runs have an infinite certified Lipschitz constant" in page
    assert "1.000 [1.000, 1.000]" in page


def sweep_rows(sweep, scale, exponent):
    """Four runs of ``sweep`` with Lip = scale * sqrt(nd/P)^exponent."""
    return [{**r, "sweep": sweep, "key": f"{sweep}{r['key']}", "lip_lower": scale * r["law_scale"] ** exponent,
             "sigma": 1.0, "bs21_lip_lower": 0.01} for r in rows()[:4]]


def test_two_sweeps_get_a_section_each_and_are_never_pooled(tmp_path):
    from robustlaw.analysis import fit_power_law, law_fits
    from robustlaw.report import _sections

    a, b = sweep_rows("a", 2.0, 1.0), sweep_rows("b", 5.0, 0.5)
    sections = _sections({"a": a, "b": b}, "")
    fits = {s.name: law_fits(s.records) for s in sections}
    assert [s.name for s in sections] == ["a", "b"]
    assert abs(fits["a"]["train"].exponent - 1.0) < 1e-9 and abs(fits["b"]["train"].exponent - 0.5) < 1e-9
    pooled = fit_power_law([r["law_scale"] for r in a + b], [r["lip_lower"] for r in a + b])
    page = write_report({"a": a, "b": b}, tmp_path, title="t").read_text()
    assert "<h2>Sweep a</h2>" in page and "<h2>Sweep b</h2>" in page and "All sweeps compared" in page
    assert "alpha = 1.000 [1.000, 1.000]" in page and "alpha = 0.500 [0.500, 0.500]" in page
    assert f"alpha = {pooled.exponent:.3f}" not in page  # the pooled exponent appears nowhere
    assert (tmp_path / "comparison.png").is_file() and (tmp_path / "a-bs21.png").is_file()


def test_a_flat_list_of_records_is_split_by_sweep(tmp_path):
    page = write_report(sweep_rows("a", 2.0, 1.0) + sweep_rows("b", 5.0, 0.5), tmp_path).read_text()
    assert page.count("<h2>Sweep ") == 2


def test_the_legend_stands_beside_the_axes_never_over_data():
    import matplotlib.pyplot as plt

    from robustlaw.report import law_figure

    many = [{**r, "key": f"{r['key']}{m}", "mode": m, "lip_lower": r["lip_lower"] * (1 + i)}
            for i, m in enumerate(("train", "smooth", "x", "y", "z")) for r in sweep_rows("a", 2.0, 1.0)]
    fig = law_figure(many)
    fig.canvas.draw()
    [ax] = fig.axes
    box, legend = ax.get_window_extent(), ax.get_legend().get_window_extent()
    assert legend.x0 >= box.x1  # entirely to the right of the plotting area
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sum("α=" in t for t in labels) == 5 and any("law: sigma sqrt(n d / P)" in t for t in labels)
    plt.close(fig)


def test_report_command_draws_every_sweep_or_the_chosen_one(tmp_path, monkeypatch, capsys):
    import sys

    from robustlaw.cli import entry
    from robustlaw.store import Store

    with Store(tmp_path / "results.db") as store:
        for r in sweep_rows("a", 2.0, 1.0) + sweep_rows("b", 5.0, 0.5):
            store.put(r)
        store.join("b", ["ak0"])  # a run of sweep a that sweep b contains too

    def report(*args):
        monkeypatch.setattr(sys, "argv", ["robustlaw", "report", str(tmp_path / "results.db"), *args])
        entry()
        return capsys.readouterr()

    report("--out", str(tmp_path / "all"))
    page = (tmp_path / "all" / "report.html").read_text()
    assert "<h2>Sweep a</h2>" in page and "<h2>Sweep b</h2>" in page and "All sweeps compared" in page
    report("--sweep", "b", "--out", str(tmp_path / "b"))
    page = (tmp_path / "b" / "report.html").read_text()
    assert "<h2>Sweep a</h2>" not in page and "Runs (5 completed, 0 failed)" in page  # b's four and the shared one
    with pytest.raises(SystemExit):
        report("--sweep", "nope", "--out", str(tmp_path / "x"))
    assert "no sweep 'nope' (sweeps: a, b)" in capsys.readouterr().err
