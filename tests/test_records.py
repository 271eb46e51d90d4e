"""Records out: robustlaw.load_records, robustlaw export (Parquet, CSV) and the schema in docs/records.md."""

import dataclasses
import math
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import robustlaw
from robustlaw.cli import main
from robustlaw.errors import RobustlawError
from robustlaw.experiment import COLUMNS, Record
from robustlaw.export import read_csv, record_dtypes
from robustlaw.store import Store

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

DOC = Path(__file__).parent.parent / "docs" / "records.md"


def record(key: str, sweep: str, ok: bool, P: int) -> dict:
    """A record as a run writes it: a completed one with measurements, or a failed one without."""
    r = Record(key=key, sweep=sweep, status="error", seed=3, spec="{}", distribution="sphere", labels="signs",
               n=40, d=5, family="two_layer", activation="relu", width=P // 7, widths=f"[{P // 7}]")
    if ok:
        r.status, r.P, r.sigma, r.reached, r.lip_lower, r.lip_upper = "ok", P, 1.0, True, 1.0 + P / 1000, math.inf
        r.lip_exact, r.law_scale, r.witness = False, math.sqrt(40 * 5 / P), "[0.1, -0.25]"
    else:
        r.error, r.traceback = "RuntimeError: boom", 'Traceback:\n  File "x.py", line 1, in f\nRuntimeError: boom'
    return r.as_dict()


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "results.db"
    with Store(path) as store:
        for i, (sweep, ok) in enumerate([("a", True), ("a", False), ("b", True), ("a", True)]):
            store.put(record(f"k{i}", sweep, ok, 70 * (i + 1)))
    return path


def test_one_typed_row_per_run(db):
    frame = robustlaw.load_records(db)
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 4
    assert {c: str(t) for c, t in frame.dtypes.items()} == record_dtypes()
    assert record_dtypes()["P"] == "Int64" and record_dtypes()["lip_exact"] == "boolean"
    assert list(frame["key"]) == ["k0", "k1", "k2", "k3"]
    failed = frame[frame["status"] == "error"].iloc[0]
    assert pd.isna(failed["P"]) and pd.isna(failed["lip_lower"]) and failed["error"] == "RuntimeError: boom"
    assert frame.loc[0, "P"] == 70 and frame.loc[0, "lip_upper"] == math.inf and frame.loc[3, "lip_lower"] == 1.28


def test_sweep_selects_its_runs(db):
    assert list(robustlaw.load_records(db, sweep="a")["key"]) == ["k0", "k1", "k3"]
    assert list(robustlaw.load_records(db, sweep="b")["key"]) == ["k2"]


def test_parquet_export_reads_back_with_one_row_per_run(db, tmp_path):
    out = tmp_path / "runs.parquet"
    result = CliRunner().invoke(main, ["export", str(db), "--format", "parquet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    back = pd.read_parquet(out)
    pd.testing.assert_frame_equal(back, robustlaw.load_records(db), check_exact=True)
    assert "4 records written" in result.stderr


def test_csv_export_round_trips(db, tmp_path):
    result = CliRunner().invoke(main, ["export", str(db), "--sweep", "a", "--format", "csv", "-q"])
    assert result.exit_code == 0 and result.stderr == ""
    back = read_csv(db.with_suffix(".csv"))
    pd.testing.assert_frame_equal(back, robustlaw.load_records(db, sweep="a"), check_exact=True)
    assert back.loc[1, "traceback"].count("\n") == 2 and back.loc[0, "law_scale"] == math.sqrt(40 * 5 / 70)


def test_an_empty_selection_is_one_error_line(db, tmp_path):
    result = CliRunner().invoke(main, ["export", str(db), "--sweep", "nope", "--out", str(tmp_path / "x.parquet")])
    assert isinstance(result.exception, RobustlawError) and "no records of sweep 'nope'" in str(result.exception)
    assert not (tmp_path / "x.parquet").exists()


def test_missing_pandas_names_the_extra(db, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(RobustlawError, match=re.escape("pip install 'robustlaw[records]'")):
        robustlaw.load_records(db)


def test_the_schema_doc_names_every_record_field():
    documented = re.findall(r"^\| `(\w+)` \| (\w+) \|", DOC.read_text(), flags=re.M)
    assert [name for name, _ in documented if name not in COLUMNS] == []
    assert sorted(name for name, _ in documented) == sorted(f.name for f in dataclasses.fields(Record))
    assert dict(documented) == record_dtypes()
