"""The results store: one SQLite file, one row per run, keyed by the hash of its spec.

The ``runs`` table declares a column for every field of :class:`robustlaw.experiment.Record`
(``SELECT n, P, lip_lower FROM runs WHERE sweep = 'x'`` works in plain SQL), and keeps the whole
record as JSON in ``record``. Databases written before a column existed get it added (empty).

A run belongs to every sweep that asked for it: the ``members`` table holds (sweep, key) pairs, so a
run first computed under one sweep is listed (not recomputed) in every other sweep that contains the
same spec; the key stays the spec's hash and ``runs.sweep`` the sweep that computed it. Databases
written before the table existed get it, filled from ``runs.sweep``, when opened for writing.

Each record is written in its own transaction as soon as it arrives, so an interrupted sweep
loses nothing it finished, and a re-run skips every key already stored with status ok.

``Store(path, create=False)`` (what ``robustlaw report`` uses) opens the file read-only: it never
creates tables or writes a byte, and refuses a file that has no robustlaw ``runs`` table.
Every SQLite or file-system failure (a corrupted page, a read-only file, a full disk) becomes one
:class:`RobustlawError` line. A row whose record is not a JSON object holding ``key``, ``sweep``
and ``status`` is skipped with one warning line on stderr, so one damaged row does not hide the
others.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path

from robustlaw.errors import RobustlawError
from robustlaw.experiment import COLUMNS

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    sweep TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_sweep ON runs (sweep);
CREATE TABLE IF NOT EXISTS members (
    sweep TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (sweep, key)
);
INSERT OR IGNORE INTO members (sweep, key) SELECT sweep, key FROM runs;
"""
#: SQLite's file header: bytes 18 and 19 (read and write format versions) are 2 in WAL mode.
SQLITE_HEADER = 100
WAL_FORMAT = 2
#: The fields every stored record must hold.
RECORD_KEYS = ("key", "sweep", "status")
#: The record's other fields, each a declared column, with its SQL type.
FIELDS = {name: ("INTEGER" if kind.startswith(("int", "bool")) else "REAL" if kind.startswith("float") else "TEXT")
          for name, kind in COLUMNS.items() if name not in RECORD_KEYS}


def _column_value(value):
    """A record value as SQLite stores it (booleans as 0/1; anything else not a number or text as JSON)."""
    if value is None or isinstance(value, (int, float, str)):
        return value
    return json.dumps(value)


def _parse_record(text) -> dict | None:
    """The record stored as ``text``, or None if it is not a JSON object holding RECORD_KEYS."""
    try:
        record = json.loads(text)
    except (TypeError, ValueError):
        return None
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in RECORD_KEYS):
        return None
    return record


def warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"robustlaw: warning: {message}", file=sys.stderr)


def _set_up(db: sqlite3.Connection, step) -> sqlite3.Connection:
    """``db`` after ``step(db)``; closed again if the step fails."""
    try:
        step(db)
    except BaseException:
        db.close()
        raise
    return db


class Store:
    """A results database at ``path``: created if missing, or (``create=False``) opened read-only."""

    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise RobustlawError(f"no results database at {self.path}")
        try:
            self._db = self._open_writable() if create else self._open_read_only()
        except sqlite3.DatabaseError as error:
            raise self._error(error) from None
        except OSError as error:
            raise RobustlawError(f"cannot open {self.path}: {error.strerror or error}") from None

    def _open_writable(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return _set_up(sqlite3.connect(self.path, timeout=30), self._create_schema)

    def _open_read_only(self) -> sqlite3.Connection:
        uri = f"{self.path.absolute().as_uri()}?mode=ro" + ("&immutable=1" if self._settled_wal() else "")
        return _set_up(sqlite3.connect(uri, uri=True, timeout=30), self._require_runs_table)

    def _settled_wal(self) -> bool:
        """A WAL-mode file with no -wal beside it: no writer is connected and every commit is in the
        file itself. It is then read as immutable, since a read-only WAL connection would otherwise
        leave new -wal and -shm files beside it."""
        with open(self.path, "rb") as file:
            header = file.read(SQLITE_HEADER)
        is_wal = len(header) == SQLITE_HEADER and header[18] == header[19] == WAL_FORMAT
        return is_wal and not Path(f"{self.path}-wal").exists()

    @staticmethod
    def _create_schema(db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        present = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
        for name, sql_type in FIELDS.items():
            if name not in present:
                db.execute(f'ALTER TABLE runs ADD COLUMN "{name}" {sql_type}')

    def _require_runs_table(self, db: sqlite3.Connection) -> None:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "runs" not in tables:
            raise RobustlawError(f"{self.path} is not a robustlaw results database (no runs table)")

    def _error(self, error: sqlite3.Error) -> RobustlawError:
        """One line for an SQLite failure: a foreign or damaged file, or one that cannot be written."""
        if isinstance(error, sqlite3.OperationalError):
            return RobustlawError(f"cannot use {self.path}: {error}")
        return RobustlawError(f"{self.path} is not a robustlaw results database, or is damaged ({error})")

    def _rows(self, query: str, args: tuple = ()) -> list[tuple]:
        try:
            return self._db.execute(query, args).fetchall()
        except sqlite3.Error as error:
            raise self._error(error) from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def done_keys(self) -> set[str]:
        """Keys of runs that completed (status ok); failed runs are retried on the next sweep."""
        return {k for (k,) in self._rows("SELECT key FROM runs WHERE status = 'ok'")}

    def join(self, sweep: str, keys) -> None:
        """Record that the runs ``keys`` belong to ``sweep`` (whether computed yet or not)."""
        try:
            with self._db:
                self._db.executemany("INSERT OR IGNORE INTO members (sweep, key) VALUES (?, ?)",
                                     [(sweep, key) for key in keys])
        except sqlite3.Error as error:
            raise self._error(error) from None

    def _has_members(self) -> bool:
        return bool(self._rows("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'members'"))

    def put(self, record: dict) -> None:
        """Insert or replace one record (a flat dict with at least key, sweep, status); the run joins its sweep."""
        columns = ["key", "sweep", "status", "created", "record", *FIELDS]
        row = (record["key"], record["sweep"], record["status"], time.time(), json.dumps(record, sort_keys=True),
               *(_column_value(record.get(name)) for name in FIELDS))
        names = ", ".join(f'"{c}"' for c in columns)
        try:
            with self._db:
                self._db.execute(f"INSERT OR REPLACE INTO runs ({names}) VALUES ({', '.join('?' * len(columns))})", row)
                self._db.execute("INSERT OR IGNORE INTO members (sweep, key) VALUES (?, ?)",
                                 (record["sweep"], record["key"]))
        except sqlite3.Error as error:
            raise self._error(error) from None

    def records(self, sweep: str | None = None, keys: set[str] | None = None) -> list[dict]:
        """All records (of ``sweep``, or with ``keys``, if given), oldest first; malformed rows are
        skipped with one warning line. The records of ``sweep`` are every run that belongs to it
        (see the module's docstring), each with its ``sweep`` field set to ``sweep``."""
        query, args = "SELECT key, record FROM runs", ()
        if sweep is not None:  # its own runs, and (once the database has the table) the runs that joined it
            query, args = query + " WHERE sweep = ?", (sweep,)
            if self._has_members():
                query, args = query + " OR key IN (SELECT key FROM members WHERE sweep = ?)", (sweep, sweep)
        rows = [(key, _parse_record(text)) for key, text in self._rows(query + " ORDER BY created", args)]
        bad = [key for key, record in rows if record is None]
        if bad:
            warn(f"skipped {len(bad)} malformed record(s) in {self.path} (not a JSON object with "
                 f"{', '.join(RECORD_KEYS)}), first: key {bad[0]!r}")
        good = [record if sweep is None else {**record, "sweep": sweep} for _, record in rows if record is not None]
        return good if keys is None else [r for r in good if r["key"] in keys]

    def sweeps(self) -> list[str]:
        """The names of the sweeps with at least one stored run, sorted."""
        query = "SELECT sweep FROM runs"
        if self._has_members():
            query += " UNION SELECT sweep FROM members WHERE key IN (SELECT key FROM runs)"
        return [s for (s,) in self._rows(f"SELECT DISTINCT sweep FROM ({query}) ORDER BY sweep")]
