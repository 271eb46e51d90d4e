"""User errors end in one line "robustlaw: error: ..." (exit 2), never a traceback, and reading a
results database never writes to it."""

import errno
import json
import math
import os
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

from robustlaw import theory
from robustlaw.cli import entry
from robustlaw.errors import RobustlawError, SpecError
from robustlaw.store import Store


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run the console entry point in-process: (exit code, stdout, stderr lines)."""

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["robustlaw", *map(str, args)])
        try:
            entry()
            code = 0
        except SystemExit as stop:
            code = stop.code
        out, err = capsys.readouterr()
        return code, out, err.strip().splitlines()

    return run


def assert_one_error_line(result, *words):
    code, _, err = result
    assert code == 2 and len(err) == 1 and err[0].startswith("robustlaw: error:"), err
    assert all(word in err[0] for word in words), err


def record(i, sweep="s"):
    scale = 1.0 + i % 4
    return {"key": f"k{i}", "sweep": sweep, "status": "ok", "reached": True, "n": 100, "d": 10,
            "width": 10 * (1 + i % 4), "P": 100 * (1 + i % 4), "seed": i, "train_max_err": 0.05,
            "law_scale": scale, "lip_lower": 2 * scale, "lip_upper": 3 * scale, "grad_mean_train": scale,
            "lip_floor": 1.5, "padding": "x" * 400}


@pytest.fixture
def results_db(tmp_path) -> Path:
    """A valid results database of 200 records spread over many pages, checkpointed into one file."""
    path = tmp_path / "results.db"
    with Store(path) as store:
        for i in range(200):
            store.put(record(i))
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA journal_mode=DELETE")
    return path


def tables(path) -> list[str]:
    db = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True)
    try:
        return sorted(name for (name,) in db.execute("SELECT name FROM sqlite_master"))
    finally:
        db.close()


# -- read-only means read-only -------------------------------------------------------------------

def test_report_leaves_a_foreign_sqlite_file_untouched(cli, tmp_path):
    foreign = tmp_path / "notes.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('keep me')")
    db.close()
    before, listed = foreign.read_bytes(), tables(foreign)
    result = cli("report", foreign, "--out", tmp_path / "out")
    assert_one_error_line(result, "not a robustlaw results database (no runs table)")
    assert foreign.read_bytes() == before and tables(foreign) == listed == ["notes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]  # no -wal, -shm or report folder


def test_report_leaves_its_own_wal_database_and_folder_as_they_were(cli, tmp_path):
    folder = tmp_path / "results"
    with Store(folder / "results.db") as store:  # WAL mode, as sweeps write it
        for i in range(8):
            store.put(record(i))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    code, _, err = cli("report", folder / "results.db", "--out", tmp_path / "report")
    assert code == 0, err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no -wal or -shm left beside it


def test_report_opens_the_database_read_only(results_db):
    with Store(results_db, create=False) as store:
        assert len(store.records()) == 200
        with pytest.raises(RobustlawError, match="readonly"):
            store.put(record(999))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes read-only files")
def test_run_on_a_read_only_database_is_one_line(cli, results_db):
    results_db.chmod(0o444)
    with pytest.raises(RobustlawError):
        with Store(results_db) as store:
            store.put(record(999))


# -- unwritable or invalid --out ----------------------------------------------------------------

@pytest.mark.parametrize("command", ["run", "report"])
@pytest.mark.parametrize("out", ["/proc/robustlaw-x", "FILE/sub", "/dev/null"])
def test_unwritable_out_is_one_line(cli, results_db, tmp_path, command, out):
    regular = tmp_path / "regular"
    regular.write_text("a file, not a folder")
    out = out.replace("FILE", str(regular))
    args = ["run", "--out", out] if command == "run" else ["report", results_db, "--out", out]
    assert_one_error_line(cli(*args), "output folder")
    assert regular.read_text() == "a file, not a folder"


def test_full_disk_while_writing_the_report_is_one_line(cli, results_db, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    monkeypatch.setattr(Path, "write_bytes", full)
    assert_one_error_line(cli("report", results_db, "--out", tmp_path / "out"), "cannot write the report",
                          os.strerror(errno.ENOSPC))


# -- damaged databases ----------------------------------------------------------------------------

def corrupt(path: Path) -> None:
    """Garbage over every page but the first (the header and schema) and the last."""
    data = bytearray(path.read_bytes())
    page = 4096
    data[page:-page] = np.random.default_rng(0).integers(0, 256, len(data) - 2 * page, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def test_corrupted_database_is_one_line_on_read_and_on_put(cli, results_db, tmp_path):
    corrupt(results_db)
    with pytest.raises(RobustlawError, match="damaged"):
        with Store(results_db, create=False) as store:
            store.records()
    with pytest.raises(RobustlawError, match="damaged"):
        with Store(results_db) as store:
            store.put(record(999))
    assert_one_error_line(cli("report", results_db, "--out", tmp_path / "out"), "damaged")


def test_malformed_records_are_skipped_with_one_warning(cli, results_db, tmp_path, capsys):
    with sqlite3.connect(results_db) as db:
        insert = "INSERT INTO runs (key, sweep, status, created, record) VALUES (?, 's', 'ok', 1e12, ?)"
        db.execute(insert, ("bad1", "not json"))
        db.execute(insert, ("bad2", '{"lip_lower": 1}'))
        db.execute(insert, ("bad3", "[1, 2]"))
    db.close()
    with Store(results_db, create=False) as store:
        assert len(store.records()) == 200
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "skipped 3 malformed record(s)" in warning[0]
    code, out, err = cli("report", results_db, "--out", tmp_path / "out")
    assert code == 0 and len(err) == 1 and err[0].startswith("robustlaw: warning:")
    assert (tmp_path / "out" / "report.html").is_file()


# -- numbers beyond the float range --------------------------------------------------------------

def test_bound_with_a_deep_net_stays_finite_in_log_space(cli):
    n, d, P, depth, eps = 1000.0, 10.0, 100.0, 200, 0.5
    code, out, _ = cli("bound", "--n", n, "--d", d, "--params", P, "--depth", depth, "--json")
    assert code == 0
    payload = json.loads(out)
    log_J = depth * math.log(P)  # R = W = Q = 1: J = P^D = 1e400 overflows a float
    cover = log_J + math.log(60 / eps)  # log(1 + 60 J / eps), the 1 negligible
    expected = eps * math.sqrt(n * d / (P * cover + math.log(400)))
    assert payload["bs21_lip_lower"] == pytest.approx(expected, rel=1e-12)
    assert payload["inputs"]["log_J"] == pytest.approx(log_J) and payload["inputs"]["J"] is None
    with pytest.raises(SpecError, match="theory.depth"):
        theory.deep_net_J(1.0, 1.0, P, depth)


def test_log_J_agrees_with_J_where_both_exist():
    J = theory.deep_net_J(2.0, 0.5, 10, 3)
    log_J = theory.deep_net_log_J(2.0, 0.5, 10, 3)
    for variant in ("seed", "neurips"):
        constants = theory.BS21Constants(variant=variant)
        by_J = theory.bs21_lip_lower(1e4, 100, 1e3, 1.0, 0.5, J=J, constants=constants).lip_lower
        by_log = theory.bs21_lip_lower(1e4, 100, 1e3, 1.0, 0.5, log_J=log_J, constants=constants).lip_lower
        assert by_log == pytest.approx(by_J, rel=1e-12)


def test_predict_with_a_tiny_target_prints_inf_and_refuses_json(cli):
    code, out, _ = cli("predict", "--n", 1000, "--d", 10, "--target-lip", 1e-300)
    assert code == 0 and "inf" in out
    assert_one_error_line(cli("predict", "--n", 1000, "--d", 10, "--target-lip", 1e-300, "--json"),
                          "params_law", "--json")
    assert theory.law_params_for_lip(1000, 10, 1e-300) == math.inf


@pytest.mark.parametrize("args, option", [
    (["bound", "--n", "inf", "--d", "10", "--params", "100", "--json"], "--n"),
    (["bound", "--n", "1000", "--d", "nan", "--params", "100", "--json"], "--d"),
    (["bound", "--n", "1000", "--d", "10", "--params", "100", "--sigma", "-inf"], "--sigma"),
    (["predict", "--n", "1000", "--d", "10", "--target-lip", "nan", "--json"], "--target-lip"),
    (["predict", "--n", "1000", "--d", "10", "--target-lip", "1", "--J", "inf"], "--J"),
])
def test_non_finite_inputs_are_refused_naming_the_option(cli, args, option):
    assert_one_error_line(cli(*args), option, "finite")


def test_bound_json_is_strict_json(cli):
    code, out, _ = cli("bound", "--n", 1e308, "--d", 1e308, "--params", 1, "--json")
    assert code == 2 and "Infinity" not in out and "NaN" not in out


def test_lip_refuses_a_radius_whose_square_overflows(cli, tmp_path):
    assert_one_error_line(cli("lip", tmp_path / "net.npz", "--domain", "sphere:1e308"), "--domain", "radius")


@pytest.mark.parametrize("command", ["effdim", "lip"])
def test_negative_seeds_are_refused(cli, tmp_path, command):
    net = tmp_path / "net.npz"
    rng = np.random.default_rng(0)
    np.savez(net, W1=rng.standard_normal((4, 3)), b1=np.zeros(4), W2=rng.standard_normal((1, 4)), b2=np.zeros(1))
    args = ["effdim", "digits"] if command == "effdim" else ["lip", net, "--time-limit", "1"]
    code, _, err = cli(*args, "--seed", "-1")
    assert code == 2 and any("--seed" in line for line in err) and not any("Traceback" in line for line in err)


# -- data files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["garbage", "truncated", "overwritten"])
def test_a_damaged_npz_is_one_line(cli, tmp_path, damage):
    path = tmp_path / "points.npz"
    np.savez(path, X=np.random.default_rng(0).standard_normal((100, 3)))
    data = path.read_bytes()
    broken = {"garbage": b"PK\x03\x04" + b"garbage" * 100, "truncated": data[: len(data) // 2],
              "overwritten": data[:60] + b"x" * 300 + data[360:]}[damage]
    path.write_bytes(broken)
    assert_one_error_line(cli("effdim", path), "cannot read")


def test_predict_clips_a_full_rank_estimate_to_d(cli, tmp_path):
    path = tmp_path / "full.npy"
    np.save(path, np.random.default_rng(0).standard_normal((500, 4)))  # TwoNN estimates 4.35 here
    code, out, _ = cli("predict", "--data", path, "--target-lip", 1, "--json")
    assert code == 0
    payload = json.loads(out)
    assert payload["effective_dim"] == 4.0
    assert "above d = 4, taken as d" in payload["effective_dim_source"]
