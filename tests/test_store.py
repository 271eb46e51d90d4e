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


def test_a_run_in_two_sweeps_is_listed_in_each(tmp_path):
    """Membership: the key stays the spec hash; the run computed under "a" is a run of "b" too."""
    with Store(tmp_path / "r.db") as store:
        store.put({"key": "shared", "sweep": "a", "status": "ok"})
        store.put({"key": "only-a", "sweep": "a", "status": "ok"})
        store.join("b", ["shared", "not-run-yet"])
        store.put({"key": "only-b", "sweep": "b", "status": "ok"})
    with Store(tmp_path / "r.db", create=False) as store:
        assert sorted(r["key"] for r in store.records("a")) == ["only-a", "shared"]
        assert sorted(r["key"] for r in store.records("b")) == ["only-b", "shared"]
        assert {r["sweep"] for r in store.records("b")} == {"b"}
        assert store.sweeps() == ["a", "b"]
        assert len(store.records()) == 3  # one row per run


def test_old_database_gains_membership_in_place(tmp_path):
    import json
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE runs (key TEXT PRIMARY KEY, sweep TEXT NOT NULL, status TEXT NOT NULL, "
               "created REAL NOT NULL, record TEXT NOT NULL)")
    for key, sweep in (("k1", "a"), ("k2", "b")):
        db.execute("INSERT INTO runs VALUES (?, ?, 'ok', 0, ?)", (key, sweep, json.dumps(record(key) | {"sweep": sweep})))
    db.commit()
    db.close()
    with Store(path, create=False) as store:  # read-only: no members table yet, runs.sweep is used
        assert [r["key"] for r in store.records("a")] == ["k1"] and store.sweeps() == ["a", "b"]
    with Store(path) as store:  # opened for writing: upgraded
        store.join("a", ["k2"])
        assert sorted(r["key"] for r in store.records("a")) == ["k1", "k2"]
        assert [r["key"] for r in store.records("b")] == ["k2"]
