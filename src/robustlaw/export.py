"""Records out: a results database as a pandas DataFrame, a Parquet file or a CSV file.

One row per run, one typed column per field of :class:`robustlaw.experiment.Record`, in the
record's order (docs/records.md says what each column means). The types come from the record's
declaration (:data:`robustlaw.experiment.COLUMNS`), as pandas' nullable dtypes, so a failed run's
empty measurements are ``<NA>`` and an integer column stays integer:

=============  =============
Record field   pandas dtype
=============  =============
``int``        ``Int64``
``float``      ``Float64``
``bool``       ``boolean``
``str``        ``string``
=============  =============

pandas and pyarrow are an optional extra: ``pip install 'robustlaw[records]'``.
"""

from __future__ import annotations

from pathlib import Path

from robustlaw.errors import RobustlawError
from robustlaw.experiment import COLUMNS
from robustlaw.store import Store

#: the pandas dtype of each Python type a Record field is declared with
DTYPES = {"int": "Int64", "float": "Float64", "bool": "boolean", "str": "string"}
#: each format :func:`export_records` writes: the module it needs and how a DataFrame is written
WRITERS = {
    "parquet": ("pyarrow", lambda frame, out: frame.to_parquet(out, index=False)),
    "csv": ("pandas", lambda frame, out: frame.to_csv(out, index=False)),
}
EXTRA = "pip install 'robustlaw[records]'"


def _require(module: str):
    """The optional module ``module``, or one error line naming the extra that installs it."""
    try:
        return __import__(module)
    except ImportError:
        raise RobustlawError(f"records out need {module}, which is not installed: {EXTRA}") from None


def record_dtypes() -> dict[str, str]:
    """Each Record field's pandas dtype (``int | None`` -> ``Int64``, ...), in the record's order."""
    return {name: DTYPES[kind.split("|")[0].strip()] for name, kind in COLUMNS.items()}


def records_frame(records: list[dict]):
    """The records (dicts as :meth:`Store.records` gives them) as a typed DataFrame, one row each;
    fields a record lacks (written before the field existed) are <NA>, keys that are no field dropped."""
    pd = _require("pandas")
    dtypes = record_dtypes()
    columns = {name: pd.array([r.get(name) for r in records], dtype=dtype) for name, dtype in dtypes.items()}
    return pd.DataFrame(columns)


def load_records(db: str | Path, sweep: str | None = None):
    """The records of the results database ``db`` (of ``sweep`` only, if given) as a pandas DataFrame
    with one row per run, oldest first, and one typed column per Record field (see the module docstring).
    The database is opened read-only."""
    _require("pandas")
    with Store(db, create=False) as store:
        return records_frame(store.records(sweep))


def read_csv(path: str | Path):
    """A CSV file written by :func:`export_records`, read back with the record's dtypes."""
    pd = _require("pandas")
    return pd.read_csv(path, dtype=record_dtypes(), keep_default_na=False, na_values=[""])


def export_records(db: str | Path, out: str | Path, fmt: str = "parquet", sweep: str | None = None) -> int:
    """Write the records of ``db`` (of ``sweep``) to ``out`` as Parquet or CSV; returns the row count.
    An empty selection is refused (one error line), so no empty file stands for a typo in a sweep name."""
    if fmt not in WRITERS:
        raise RobustlawError(f"unknown format {fmt!r} (known: {', '.join(WRITERS)})")
    module, write = WRITERS[fmt]
    _require(module)
    frame = load_records(db, sweep)
    if frame.empty:
        raise RobustlawError(f"{db} holds no records" + (f" of sweep {sweep!r}" if sweep else ""))
    try:
        write(frame, out)
    except OSError as error:
        raise RobustlawError(f"cannot write {out}: {error.strerror or error}") from None
    return len(frame)
