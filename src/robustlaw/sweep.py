"""Sweeps: a TOML spec expands to a grid of runs, executed in batches, streamed into the store.

Spec format (see examples/)::

    name = "bln20-sphere"        # the sweep's name in the store
    seeds = [0, 1, 2]
    [data]    distribution, n, d, labels, sigma, ... and the distribution's own fields (robustlaw.data.DataSpec)
    [model]   family, activation, q and the family's own fields: width | widths | construction, size
              (robustlaw.families.ModelSpec)
    [fit]     target, tol, eps, lr, max_steps, mode, device, ... (robustlaw.fitting.FitSpec; mode = "train" |
              "smooth"; device = "cpu" | "cuda" | "auto", not part of the record)
    [certify] domain, radius                           (robustlaw.experiment.CertifySpec)

    [report]  axes = ["bs21", "bln20"]                  (robustlaw.analysis.AXES; default: all the records hold)
    [[grid]]  sections overriding the shared ones, one table per grid (robustlaw.grid)

A list in place of a value makes that field an axis of the grid (``width = [10, 20, 40]``); for
``model.widths``, which is itself a list, a list of lists is an axis. A numeric field may depend on
the point's other fields: ``width = {from = "n/d", to = "n", steps = 6}`` (robustlaw.grid). The grid is the product of
all axes and the seeds (robustlaw.grid), every point validated before the first run starts.
``batch_size`` (runs) and ``batch_work`` (n x padded P) bound one batch of models fitted together
(see :func:`batches`).

Executors (:mod:`robustlaw.executors`, re-exported here): ``local`` (worker processes, one thread
each) and ``ray`` (a local or remote Ray cluster). Both stream (task, records or exception) back
to :func:`run_sweep`, which is the single writer of the store.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from collections.abc import Callable, Iterator

from robustlaw.analysis import AXES
from robustlaw.errors import RobustlawError, SpecError
from robustlaw.executors import EXECUTORS, Executor, LocalExecutor, RayExecutor, make_executor  # noqa: F401 (re-exported)
from robustlaw.experiment import Fitted, RunSpec, certify_fitted, failed_record, fit_group
from robustlaw.fitting import plan_batches
from robustlaw.grid import SECTIONS, expand
from robustlaw.store import Store

TOP_LEVEL = {"name", "seeds", "description", "batch_size", "batch_work", "grid", "report", *(s.name for s in SECTIONS)}


@dataclass(frozen=True)
class SweepSpec:
    """A named grid of runs."""

    name: str
    runs: tuple[RunSpec, ...]
    description: str = ""
    batch_size: int = 32
    batch_work: float = 4e6
    #: the report's x axes (names in robustlaw.analysis.AXES); None: every axis the records hold
    report_axes: tuple[str, ...] | None = None

    @classmethod
    def from_dict(cls, spec: dict) -> SweepSpec:
        unknown = set(spec) - TOP_LEVEL
        if unknown:
            raise SpecError(sorted(unknown)[0], f"unknown top-level key (known: {', '.join(sorted(TOP_LEVEL))})")
        name = spec.get("name", "sweep")
        if not isinstance(name, str) or not name:
            raise SpecError("name", f"must be a non-empty string, got {name!r}")
        seeds = spec.get("seeds", [0])
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            seeds = [seeds]
        valid = isinstance(seeds, list) and seeds and all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**63 for s in seeds)
        if not valid:
            raise SpecError("seeds", f"must be a non-empty list of integers in [0, 2^63), got {seeds!r}")
        batch_size = spec.get("batch_size", 32)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise SpecError("batch_size", f"must be an integer >= 1, got {batch_size!r}")
        batch_work = spec.get("batch_work", 4e6)
        if not isinstance(batch_work, (int, float)) or isinstance(batch_work, bool) or not batch_work > 0:
            raise SpecError("batch_work", f"must be a number > 0, got {batch_work!r}")
        if len(set(seeds)) != len(seeds):
            raise SpecError("seeds", f"repeats a seed: {seeds!r}")
        report_axes = _report_axes(spec.get("report", {}))
        runs = expand(spec, name, seeds)
        return cls(name=name, runs=tuple(runs), description=str(spec.get("description", "")), batch_size=batch_size,
                   batch_work=float(batch_work), report_axes=report_axes)

    @classmethod
    def from_toml(cls, path: str | Path) -> SweepSpec:
        path = Path(path)
        if not path.is_file():
            raise RobustlawError(f"no spec file at {path}")
        try:
            spec = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise RobustlawError(f"{path}: not valid TOML ({error})") from None
        return cls.from_dict(spec)

    def on_device(self, device: str) -> SweepSpec:
        """This sweep with every run fitted on ``device`` (robustlaw.fitting.DEVICES); records keep their keys."""
        runs = tuple(replace(r, fit=replace(r.fit, device=device)) for r in self.runs)
        return replace(self, runs=runs)

    @classmethod
    def default(cls) -> SweepSpec:
        """The embedded default sweep (the same file as examples/default.toml)."""
        return cls.from_dict(tomllib.loads(default_spec_text()))


def _report_axes(table) -> tuple[str, ...] | None:
    """``[report] axes = ["bs21", "bln20"]``: the report's x axes, each a name in robustlaw.analysis.AXES."""
    if not isinstance(table, dict) or set(table) - {"axes"}:
        raise SpecError("report", f"must be a table with axes = [...] (known axes: {', '.join(AXES)}), got {table!r}")
    names = table.get("axes")
    if names is None:
        return None
    if not isinstance(names, list) or not names or not all(isinstance(a, str) for a in names):
        raise SpecError("report.axes", f"must be a non-empty list of axis names ({', '.join(AXES)}), got {names!r}")
    for axis in names:
        AXES.get(axis)
    return tuple(names)


def default_spec_text() -> str:
    return resources.files("robustlaw").joinpath("specs/default.toml").read_text()


def batches(runs: list[RunSpec], size: int, work: float = 4e6) -> list[list[RunSpec]]:
    """The sweep's runs in batches (:func:`robustlaw.fitting.plan_batches`): runs with an equal
    :meth:`RunSpec.batch_key`, at most ``size`` per batch, padded step size within ``work``."""
    return plan_batches(runs, size, work, key=RunSpec.batch_key, cost=RunSpec.work, order=RunSpec.key)


def safe_fit_group(specs: list[RunSpec]) -> list[Fitted | dict]:
    """:func:`fit_group`, with failures recorded instead of raised: if the batch raises, each run is
    retried alone, so only the runs that fail by themselves become (failed) records."""
    try:
        return fit_group(specs)
    except Exception as error:
        if len(specs) == 1:
            return [failed_record(specs[0], error).as_dict()]
    return [item for spec in specs for item in safe_fit_group([spec])]


def safe_run_group(specs: list[RunSpec]) -> list[dict]:
    """Fit and certify ``specs`` in this process (:func:`safe_fit_group`, then :func:`certify_fitted`)."""
    return [certify_fitted(item) if isinstance(item, Fitted) else item for item in safe_fit_group(specs)]


def run_sweep(sweep: SweepSpec, store: Store, executor: Executor | None = None,
              on_record: Callable[[dict], None] | None = None) -> list[dict]:
    """Run every run of ``sweep`` not yet in ``store``; write each record as it arrives.

    Two rounds of tasks on the executor: batches of runs are fitted together (largest batches first);
    then every fitted run is certified as a task of its own (largest first), so the certification
    work, most of a sweep's, is spread evenly over the workers whatever the batches were. Returns the
    sweep's records (old and new, those first computed by another sweep included: every run of
    ``sweep`` joins it in the store). The driver is the store's only writer, and each record is
    committed on arrival, so a killed driver loses only runs not yet certified. If this call is
    interrupted (KeyboardInterrupt), the executor's iterator is closed, which stops its workers, and
    the interrupt propagates.
    """
    store.join(sweep.name, [r.key() for r in sweep.runs])
    done = store.done_keys()
    todo = [r for r in sweep.runs if r.key() not in done]
    executor = executor or LocalExecutor()

    def put(record: dict) -> None:
        store.put(record)
        if on_record:
            on_record(record)

    fitted: list[Fitted] = []
    tasks = sorted(batches(todo, sweep.batch_size, sweep.batch_work), key=lambda b: -len(b) * b[-1].work())
    for task, outcome in _outcomes(executor, safe_fit_group, tasks):
        for item in [failed_record(s, outcome).as_dict() for s in task] if isinstance(outcome, BaseException) else outcome:
            if isinstance(item, Fitted):
                fitted.append(item)
            else:
                put(item)
    fitted.sort(key=lambda item: -item.cost())
    for item, outcome in _outcomes(executor, certify_fitted, fitted):
        put(failed_record(item.run.spec, outcome).as_dict() if isinstance(outcome, BaseException) else outcome)
    return store.records(sweep.name, keys={r.key() for r in sweep.runs})


def _outcomes(executor: Executor, fn: Callable, tasks: list) -> Iterator[tuple]:
    """``executor.map_unordered(fn, tasks)``, closed (its workers stopped) however the caller leaves."""
    if not tasks:
        return
    outcomes = executor.map_unordered(fn, tasks)
    try:
        yield from outcomes
    finally:
        close = getattr(outcomes, "close", None)
        if close is not None:
            close()
