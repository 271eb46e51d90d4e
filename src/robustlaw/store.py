"""The results store: one SQLite file, one row per run, keyed by the hash of its spec.

Each record is written in its own transaction as soon as it arrives, so an interrupted sweep
loses nothing it finished, and a re-run skips every key already stored with status ok.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from robustlaw.errors import RobustlawError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    sweep TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_sweep ON runs (sweep);
"""


class Store:
    """A results database at ``path`` (created if missing)."""

    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise RobustlawError(f"no results database at {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as error:
            raise RobustlawError(f"{self.path} is not a robustlaw results database ({error})") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def done_keys(self) -> set[str]:
        """Keys of runs that completed (status ok); failed runs are retried on the next sweep."""
        return {k for (k,) in self._db.execute("SELECT key FROM runs WHERE status = 'ok'")}

    def put(self, record: dict) -> None:
        """Insert or replace one record (a flat dict with at least key, sweep, status)."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO runs (key, sweep, status, created, record) VALUES (?, ?, ?, ?, ?)",
                (record["key"], record["sweep"], record["status"], time.time(), json.dumps(record, sort_keys=True)),
            )

    def records(self, sweep: str | None = None, keys: set[str] | None = None) -> list[dict]:
        """All records (of ``sweep``, or with ``keys``, if given), oldest first."""
        query, args = "SELECT record FROM runs", ()
        if sweep is not None:
            query, args = query + " WHERE sweep = ?", (sweep,)
        rows = [json.loads(r) for (r,) in self._db.execute(query + " ORDER BY created", args)]
        return rows if keys is None else [r for r in rows if r["key"] in keys]

    def sweeps(self) -> list[str]:
        return [s for (s,) in self._db.execute("SELECT DISTINCT sweep FROM runs ORDER BY sweep")]
