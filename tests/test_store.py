import pytest

from robustlaw.errors import RobustlawError
from robustlaw.store import Store


def record(key, status="ok", **extra):
    return {"key": key, "sweep": "s", "status": status, **extra}


def test_records_round_trip_and_replace(tmp_path):
    with Store(tmp_path / "r.db") as store:
        store.put(record("a", lip_lower=1.5))
        store.put(record("b", status="error", error="boom"))
        store.put(record("a", lip_lower=2.5))  # same key: replaced, not duplicated
        rows = store.records()
    assert sorted(r["key"] for r in rows) == ["a", "b"]
    assert next(r for r in rows if r["key"] == "a")["lip_lower"] == 2.5


def test_only_completed_runs_count_as_done(tmp_path):
    with Store(tmp_path / "r.db") as store:
        store.put(record("a"))
        store.put(record("b", status="error"))
        assert store.done_keys() == {"a"}


def test_records_survive_reopening(tmp_path):
    path = tmp_path / "r.db"
    with Store(path) as store:
        store.put(record("a", value=3))
    with Store(path, create=False) as store:
        assert store.records()[0]["value"] == 3
        assert store.sweeps() == ["s"]


def test_missing_and_corrupt_databases_get_one_line_errors(tmp_path):
    with pytest.raises(RobustlawError, match="no results database"):
        Store(tmp_path / "missing.db", create=False)
    bad = tmp_path / "bad.db"
    bad.write_text("this is not sqlite " * 100)
    with pytest.raises(RobustlawError, match="not a robustlaw results database"):
        Store(bad)
