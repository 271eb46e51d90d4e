"""Grids that say what they mean: dependent axes against hand-expanded lists, several grids in one
spec, and a bad expression refused with one line before any run."""

import sys

import numpy as np
import pytest

from robustlaw.cli import entry
from robustlaw.errors import SpecError
from robustlaw.sweep import SweepSpec


def points(spec, *fields):
    """The sorted distinct (field values...) of the spec's runs; a field is section.name (options included)."""
    def value(run, field):
        section, name = field.split(".")
        part = getattr(run, section)
        return getattr(part, name) if hasattr(part, name) else getattr(part.options, name, None)

    return sorted({tuple(value(r, f) for f in fields) for r in SweepSpec.from_dict(spec).runs})


def test_width_per_n_over_d_times_factors():
    spec = {"data": {"n": [100, 200], "d": 20}, "model": {"width": {"per": "n/d", "times": [1, 2, 4, 8]}}}
    assert points(spec, "data.n", "model.width") == [(100, 5), (100, 10), (100, 20), (100, 40),
                                                     (200, 10), (200, 20), (200, 40), (200, 80)]


def test_log_span_from_n_over_d_to_n_is_rounded_and_per_n():
    spec = {"data": {"n": [100, 400], "d": 20}, "model": {"width": {"from": "n/d", "to": "n", "steps": 5}}}
    expected = [(n, int(round(k))) for n in (100, 400) for k in np.geomspace(n / 20, n, 5)]
    assert points(spec, "data.n", "model.width") == sorted(expected)
    assert expected[:5] == [(100, 5), (100, 11), (100, 22), (100, 47), (100, 100)]  # by hand


def test_linear_span_and_mixed_lists_dedupe_after_rounding():
    spec = {"data": {"n": 90, "d": 9}, "model": {"width": {"from": "n/d", "to": "2*n/d", "steps": 3, "scale": "linear"}}}
    assert points(spec, "model.width") == [(10,), (15,), (20,)]
    spec = {"data": {"n": 90, "d": 9}, "model": {"width": [10, "n/d", "(n + 10) / 10", "n^0.5 * 2", "data.n"]}}
    assert points(spec, "model.width") == [(10,), (19,), (90,)]  # 10, 10, 10, 18.97 -> 19, 90


def test_float_fields_are_not_rounded_and_expressions_chain():
    spec = {"data": {"n": 50, "d": 8, "labels": "teacher", "sigma": "d / 32"},
            "model": {"width": "n / d / sigma"}}  # width refers to sigma, itself dependent
    assert points(spec, "data.sigma", "model.width") == [(0.25, 25)]


def test_several_grids_share_defaults_and_each_run_is_kept_once():
    spec = {"data": {"d": 20, "n": 100}, "model": {"width": 7}, "seeds": [0, 1],
            "grid": [{"data": {"n": [100, 200]}, "model": {"width": "n/d"}},
                     {"model": {"family": "construction", "construction": "caps"}},
                     {"model": {"width": 5}}]}  # width 5 at n = 100 repeats the first grid's point
    sweep = SweepSpec.from_dict(spec)
    got = sorted((r.data.n, r.model.family, getattr(r.model.options, "width", None), r.seed) for r in sweep.runs)
    assert got == sorted([(100, "two_layer", 5, s) for s in (0, 1)] + [(200, "two_layer", 10, s) for s in (0, 1)]
                         + [(100, "construction", None, s) for s in (0, 1)])
    assert len({r.key() for r in sweep.runs}) == len(sweep.runs) == 6


@pytest.mark.parametrize("width, words", [
    ("n/", "cannot read the expression"),
    ("n * bogus", "bogus is not a numeric field"),
    ("__import__('os').system('true')", "cannot read the expression"),
    ("n / (d - d)", "not a finite number"),
    ({"from": "n/d"}, "needs to"),
    ({"per": "n/d", "times": []}, "times must be"),
    ({"from": 1, "to": "n", "steps": 1}, "steps must be"),
    ("labels", "not a numeric field"),
])
def test_bad_expression_is_one_spec_error_naming_the_field(width, words):
    with pytest.raises(SpecError, match=words) as error:
        SweepSpec.from_dict({"data": {"n": 40, "d": 4}, "model": {"width": width}})
    assert error.value.field == "model.width" and "\n" not in str(error.value)


def test_a_cycle_and_a_bad_grid_are_named():
    with pytest.raises(SpecError, match="cycle"):
        SweepSpec.from_dict({"data": {"n": "d", "d": "n"}})
    with pytest.raises(SpecError, match=r"grid\[1\].model.width"):
        SweepSpec.from_dict({"grid": [{"model": {"width": 3}}, {"model": {"width": "n/x"}}]})
    with pytest.raises(SpecError, match=r"^report.axes: unknown report axis 'bogus'"):
        SweepSpec.from_dict({"report": {"axes": ["bogus"]}})


def test_bad_expression_stops_run_before_any_work(tmp_path, monkeypatch, capsys):
    """The expression is evaluated at every grid point before the store is opened: one line, no files."""
    spec = tmp_path / "bad.toml"
    spec.write_text('[data]\nn = [40, 80]\nd = 4\n[model]\nwidth = {from = "n/d", to = "n/(d-4)", steps = 3}\n')
    monkeypatch.setattr(sys, "argv", ["robustlaw", "run", str(spec), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as stop:
        entry()
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "model.width" in err[0] and "not a finite number" in err[0]
    assert not (tmp_path / "out").exists()  # no database, no report


def test_the_bln20_example_is_one_spec_of_the_whole_design():
    from pathlib import Path

    sweep = SweepSpec.from_toml(Path(__file__).parent.parent / "examples" / "bln20.toml")
    trained = {(r.data.n, r.model.options.width) for r in sweep.runs if r.model.family == "two_layer"}
    assert trained == {(100, 5), (100, 11), (100, 22), (100, 47), (100, 100), (200, 10), (200, 21), (200, 45),
                       (200, 95), (200, 200), (400, 20), (400, 42), (400, 89), (400, 189), (400, 400)}
    caps = {(r.data.n, r.model.options.size) for r in sweep.runs if r.model.family == "construction"}
    assert caps == {(100, 100), (200, 200), (400, 400)}  # one cap per point: k = n
    assert {r.fit.mode for r in sweep.runs if r.model.family == "two_layer"} == {"train", "smooth"}
    assert len(sweep.runs) == (15 * 2 + 3) * 3 and sweep.report_axes == ("bln20", "bs21")
