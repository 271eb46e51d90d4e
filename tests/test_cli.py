import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from robustlaw.cli import main

TINY = textwrap.dedent("""
    name = "tiny"
    seeds = [0, 1]
    [data]
    n = 30
    d = 5
    [model]
    width = [8, 16, 32]
    [fit]
    max_steps = 800
""")


def robustlaw(*args, cwd=None):
    """Run the installed entry point as a user would, in a subprocess."""
    code = "from robustlaw.cli import entry; entry()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200"}, timeout=600)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    spec = folder / "tiny.toml"
    spec.write_text(TINY)
    result = robustlaw("run", str(spec), "--out", str(folder / "out"), "--workers", "1")
    return folder, result


def test_run_writes_database_and_report_and_prints_the_exponent(tiny_run):
    folder, result = tiny_run
    assert result.returncode == 0, result.stderr
    assert "alpha =" in result.stdout and "95% CI" in result.stdout
    assert (folder / "out" / "tiny" / "report.html").is_file()  # each sweep its own folder
    count = sqlite3.connect(folder / "out" / "results.db").execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert count == 6


def test_rerun_skips_finished_runs_and_keeps_each_once(tiny_run):
    folder, _ = tiny_run
    again = robustlaw("run", str(folder / "tiny.toml"), "--out", str(folder / "out"), "--workers", "1")
    assert again.returncode == 0, again.stderr
    assert "6 already done" in again.stdout
    count = sqlite3.connect(folder / "out" / "results.db").execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert count == 6


def test_report_rebuilds_from_the_database(tiny_run, tmp_path):
    folder, _ = tiny_run
    result = robustlaw("report", str(folder / "out" / "results.db"), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report.html").is_file()


@pytest.mark.parametrize("body, message", [
    ("[data]\nn = 0\n", "data.n: must be an integer in [2, 1e+07]"),
    ("[model]\nwidth = 0\n", "model.width: must be an integer >= 1"),
    ("[model]\nwidht = 3\n", "model.widht: unknown field"),
    ("[data\nn = 3\n", "not valid TOML"),
    ("[fit]\nlr = 'fast'\n", "fit.lr: must be a number"),
    ("colour = 1\n", "colour: unknown top-level key"),
])
def test_bad_specs_get_one_line_naming_the_field(tmp_path, body, message):
    spec = tmp_path / "bad.toml"
    spec.write_text(body)
    result = robustlaw("run", str(spec), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_missing_files_get_one_line(tmp_path):
    for args in (["run", str(tmp_path / "nope.toml")], ["report", str(tmp_path / "nope.db")]):
        result = robustlaw(*args)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_every_command_has_help():
    runner = CliRunner()
    for command in [[], *([name] for name in main.commands)]:
        result = runner.invoke(main, [*command, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output


def test_embedded_default_is_the_bln20_sweep_across_the_interpolation_range():
    from pathlib import Path

    from robustlaw.sweep import SweepSpec, default_spec_text

    example = Path(__file__).parent.parent / "examples" / "default.toml"
    assert example.read_text() == default_spec_text()
    sweep = SweepSpec.default()
    widths = sorted({r.model.options.width for r in sweep.runs})
    n, d = sweep.runs[0].data.n, sweep.runs[0].data.d
    assert widths[0] <= n / d and widths[-1] >= n  # P from ~ n up to ~ n d
    assert {r.fit.mode for r in sweep.runs} == {"train", "smooth"}
    assert all(r.data.distribution == "sphere" and r.data.labels == "signs" for r in sweep.runs)


def test_run_json_is_one_object_whose_counts_match_the_store(tiny_run):
    import json

    folder, _ = tiny_run
    result = robustlaw("run", str(folder / "tiny.toml"), "--out", str(folder / "out"), "--workers", "1", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    db = sqlite3.connect(folder / "out" / "results.db")
    ok, failed = (db.execute("SELECT COUNT(*) FROM runs WHERE status = ?", (s,)).fetchone()[0] for s in ("ok", "error"))
    assert (summary["runs"], summary["ok"], summary["failed"], summary["reused"]) == (6, ok, failed, ok)
    assert summary["db"] == str((folder / "out" / "results.db").absolute())
    assert os.path.isfile(summary["report"]) and "6 already done" in result.stderr
    fit = summary["exponents"]["train"]["lower"]
    assert fit["ci_low"] <= fit["exponent"] <= fit["ci_high"] and fit["points"] <= ok


def test_export_writes_a_parquet_file_with_one_row_per_run(tiny_run, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    folder, _ = tiny_run
    result = CliRunner().invoke(main, ["export", str(folder / "out" / "results.db"), "--out", str(tmp_path / "runs.parquet")])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / "runs.parquet")
    assert len(frame) == 6 and frame["key"].is_unique and set(frame["seed"]) == {0, 1}
    assert str(frame["P"].dtype) == "Int64" and str(frame["lip_lower"].dtype) == "Float64"
    assert (frame["lip_lower"] <= frame["lip_upper"]).all()


def test_a_fault_while_drawing_the_report_is_one_line_and_keeps_the_records(monkeypatch, tmp_path):
    """A drawing error after a sweep (the store already holds its records) becomes one RobustlawError
    line naming it, not a traceback."""
    import robustlaw.cli as cli
    from robustlaw.errors import RobustlawError

    def broken(*args, **kwargs):
        raise ValueError("Axis limits cannot be NaN or Inf")

    monkeypatch.setattr(cli, "write_report", broken)
    with pytest.raises(RobustlawError) as info:
        cli.save_report([], tmp_path)
    assert "\n" not in str(info.value) and "ValueError: Axis limits cannot be NaN or Inf" in str(info.value)
    assert "records are in the database" in str(info.value)
