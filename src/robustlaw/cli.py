"""The ``robustlaw`` command line."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from robustlaw.analysis import AXES, LAW_EXPONENT
from robustlaw.effdim import DEFAULT_MAX_POINTS
from robustlaw.errors import RobustlawError
from robustlaw.executors import EXECUTORS
from robustlaw.export import WRITERS
from robustlaw.report import TABLE_COLUMNS, exponent_lines, format_value, slug, table_rows, write_report

console = Console(width=None if sys.stdout.isatty() else 160)  # wide tables when piped


def results_table(records: list[dict], title: str) -> Table:
    table = Table(title=title)
    columns = [(c, label) for c, label in TABLE_COLUMNS if c != "sweep"]  # the title names the sweep
    for _, label in columns:
        table.add_column(label, justify="right")
    for r in table_rows(records):
        table.add_row(*(format_value(r.get(c)) for c, _ in columns))
    return table


def print_summary(records: list[dict], title: str, axes: list[str] | None = None) -> None:
    console.print(results_table(records, title))
    for r in records:
        if r.get("status") != "ok":
            console.print(f"[red]run {r['key']} failed:[/red] {r.get('error')}")
    for line in exponent_lines(records, axes):
        console.print(line)
    console.print(f"(against each drawn axis the law predicts alpha = {LAW_EXPONENT:g} for the smoothest interpolator; "
                  "95% bootstrap intervals)")


def writable_out_dir(path: Path) -> Path:
    """``path`` if a folder can be made or written there, else one error line; creates nothing.

    Probes the nearest existing ancestor with a temporary file, so /proc/x, a path under a regular
    file, /dev/null or a read-only folder are refused before any work is done.
    """
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise RobustlawError(f"output folder {path}: {existing} is not a folder")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as error:
        raise RobustlawError(f"output folder {path}: cannot write in {existing} ({error.strerror or error})") from None
    return path


def save_report(records: list[dict] | dict[str, list[dict]], out: Path, **text) -> Path:
    """:func:`write_report` with file-system failures (a full disk, a vanished folder) as one error line."""
    try:
        return write_report(records, out, **text)
    except OSError as error:
        raise RobustlawError(f"cannot write the report to {out}: {error.strerror or error}") from None
    except Exception as error:  # a fault in drawing: one line, and the records are safe in the store
        raise RobustlawError(f"the report could not be drawn ({type(error).__name__}: {error}); the records "
                             "are in the database (robustlaw report DB retries)") from None


#: stderr, for progress and notes: stdout holds a command's result (one JSON object with --json)
notes = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
QUIET, NORMAL, VERBOSE = -1, 0, 1


def _verbosity(level: int):
    """Click callback of -q (``level`` QUIET) or -v (VERBOSE): note the level in the context."""
    def callback(ctx, param, value):
        if value:
            if ctx.meta.get("robustlaw.verbosity", level) != level:
                raise RobustlawError("give -q or -v, not both")
            ctx.meta["robustlaw.verbosity"] = level
    return callback


def verbosity() -> int:
    """QUIET, NORMAL or VERBOSE, as the running command was given."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get("robustlaw.verbosity", NORMAL) if ctx else NORMAL


def note(text: str) -> None:
    """A line on stderr, unless -q."""
    if verbosity() > QUIET:
        notes.print(text)


def detail(text: str) -> None:
    """A line on stderr with -v only."""
    if verbosity() >= VERBOSE:
        notes.print(text)


class Command(click.Command):
    """A robustlaw command: each takes -q (no progress or notes on stderr) and -v (more detail there)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params += [
            click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, is_eager=True, callback=_verbosity(QUIET),
                         help="No progress or notes on stderr (results and errors only)."),
            click.Option(["-v", "--verbose"], is_flag=True, expose_value=False, is_eager=True,
                         callback=_verbosity(VERBOSE), help="More detail on stderr."),
        ]


class Group(click.Group):
    command_class = Command


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="robustlaw")
def main():
    """robustlaw: a laboratory for the law of robustness (Bubeck-Li-Nagaraj 2020, Bubeck-Sellke 2021)."""


@main.command()
@click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("robustlaw-results"),
              show_default=True, help="Folder for the results database (OUT/results.db, shared by sweeps) and "
              "the sweep's HTML report (OUT/<sweep name>/report.html).")
@click.option("--executor", type=click.Choice(sorted(EXECUTORS)), default="local", show_default=True,
              help="Where runs execute: local worker processes, or a Ray cluster (pip install 'robustlaw[ray]').")
@click.option("--address", default=None, help="Ray cluster address (e.g. ray://host:10001 or auto); default: "
              "start a local Ray instance.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes, one thread each (default: all cores); for a local Ray instance, its CPUs.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default=None,
              help="Fit on this device (default: the spec's fit.device, cpu); auto: cuda when present.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object on stdout (paths, run counts, exponents); progress goes to stderr.")
def run(spec: Path | None, out: Path, executor: str, address: str | None, workers: int | None, device: str | None,
        as_json: bool):
    """Run the sweep in SPEC (a TOML file; default: the embedded BLN20 sphere sweep).

    Records go to OUT/results.db as they finish; re-running skips finished runs, so an
    interrupted (even killed) sweep resumes where it stopped. Each sweep's report goes to its own
    folder OUT/<sweep name>/report.html, so sweeps sharing a database keep their reports
    (`robustlaw report OUT/results.db` draws them all on one page).
    """
    writable_out_dir(out)
    from robustlaw.store import Store
    from robustlaw.sweep import SweepSpec, make_executor

    sweep = SweepSpec.from_toml(spec) if spec else SweepSpec.default()
    sweep = sweep.on_device(device) if device else sweep
    pool = make_executor(executor, workers, address)
    db = out / "results.db"
    start = time.perf_counter()
    keys = {r.key() for r in sweep.runs}
    human = notes if as_json else console  # with --json, stdout holds the JSON object only
    with Store(db) as store:
        reused = len(store.done_keys() & keys)
        if verbosity() > QUIET:
            human.print(f"sweep [bold]{sweep.name}[/bold]: {len(sweep.runs)} runs, {reused} already done")
        try:
            records = _sweep_with_progress(sweep, store, pool, human, len(sweep.runs) - reused)
        except KeyboardInterrupt:
            raise Interrupted(f"{len(store.done_keys() & keys)} finished runs are kept in {db}") from None
        axes = list(sweep.report_axes) if sweep.report_axes else None
        if not as_json:
            print_summary(records, f"{sweep.name}: {sweep.description}", axes)
        report = save_report({sweep.name: records}, out / slug(sweep.name), title=f"robustlaw: {sweep.name}",
                             description=sweep.description, axes=axes)
    seconds = time.perf_counter() - start
    if as_json:
        _emit(run_summary(sweep.name, db, report, records, reused, seconds), [], True, "")
    else:
        console.print(f"results: {db}")
        console.print(f"report:  {report}")
        console.print(f"wall time: {seconds:.1f} s")
    if records and all(r.get("status") != "ok" for r in records):
        click.echo(f"robustlaw: error: every run of sweep {sweep.name} failed ({len(records)} runs)", err=True)
        sys.exit(1)


def _sweep_with_progress(sweep, store, pool, human: Console, todo: int) -> list[dict]:
    """:func:`run_sweep` with a progress bar on ``human`` (none with -q) and, with -v, a line per finished run."""
    from robustlaw.sweep import run_sweep

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=human, transient=False, disable=verbosity() == QUIET) as progress:
        task = progress.add_task("runs", total=todo)

        def finished(record: dict) -> None:
            progress.advance(task)
            detail(f"run {record['key']}: {record['status']}, n={record['n']} d={record['d']} "
                   f"P={format_value(record.get('P'))} Lip in [{format_value(record.get('lip_lower'))}, "
                   f"{format_value(record.get('lip_upper'))}]")

        return run_sweep(sweep, store, pool, on_record=finished)


def run_summary(name: str, db: Path, report: Path, records: list[dict], reused: int, seconds: float) -> dict:
    """``robustlaw run --json``: the paths, the run counts and each series' exponents of the lower and
    upper bounds against sqrt(n d / P) (:func:`robustlaw.analysis.law_fits`; null when too few runs fit)."""
    import dataclasses

    from robustlaw.analysis import law_fits

    ok = sum(r.get("status") == "ok" for r in records)
    fits = {side: law_fits(records, f"lip_{side}") for side in ("lower", "upper")}
    return {"sweep": name, "db": str(db.absolute()), "report": str(report.absolute()),
            "runs": len(records), "ok": ok, "failed": len(records) - ok, "reused": reused, "seconds": seconds,
            "law_exponent": LAW_EXPONENT,
            "exponents": {series: {side: None if fit[series] is None else dataclasses.asdict(fit[series])
                                   for side, fit in fits.items()} for series in fits["lower"]}}


@main.command()
@click.argument("db", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the report (default: the database's folder).")
@click.option("--sweep", "sweep_names", multiple=True, metavar="NAME",
              help="Only this sweep (repeatable; default: every sweep in DB, a section each).")
@click.option("--axis", "axes", multiple=True, type=click.Choice(AXES.names()),
              help="Draw only these x axes (repeatable; default: every axis the records hold).")
def report(db: Path, out: Path | None, sweep_names: tuple[str, ...], axes: tuple[str, ...]):
    """Rebuild the HTML report from the results database DB (opened read-only): one page with a
    section per sweep (every run that belongs to it) and, with several sweeps, a comparison figure."""
    out = writable_out_dir(out or db.parent)
    from robustlaw.store import Store

    with Store(db, create=False) as store:
        known = store.sweeps()
        missing = [name for name in sweep_names if name not in known]
        if missing:
            raise RobustlawError(f"{db} holds no sweep {missing[0]!r} (sweeps: {', '.join(known) or 'none'})")
        sections = {name: store.records(name) for name in (sweep_names or known)}
    if not any(sections.values()):
        raise RobustlawError(f"{db} holds no records")
    for name, records in sections.items():
        print_summary(records, f"{db}: sweep {name}", list(axes) or None)
    title = f"robustlaw: {', '.join(sections)}" if len(sections) <= 3 else f"robustlaw: {len(sections)} sweeps in {db.name}"
    path = save_report(sections, out, title=title, axes=list(axes) or None)
    console.print(f"report: {path}")


@main.command()
@click.argument("db", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--sweep", "sweep_name", default=None, help="Only this sweep's records (default: all).")
@click.option("--format", "fmt", type=click.Choice(list(WRITERS)), default="parquet", show_default=True,
              help="File format (Parquet keeps each column's type; read CSV back with robustlaw.export.read_csv).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The file to write (default: DB's name with the format's suffix, beside DB).")
def export(db: Path, sweep_name: str | None, fmt: str, out: Path | None):
    """Write the records of the results database DB as a table: one row per run, one typed column per
    record field (docs/records.md). Needs pandas and pyarrow: pip install 'robustlaw[records]'."""
    from robustlaw.export import export_records

    out = out or db.with_suffix(f".{fmt}")
    writable_out_dir(out.parent)
    rows = export_records(db, out, fmt, sweep_name)
    note(f"{rows} records written to {out}")


def _emit(payload: dict, rows: list[tuple[str, str, str]], as_json: bool, title: str) -> None:
    """Print ``payload`` as one JSON object, or ``rows`` (quantity, value, source / status) as a table."""
    if as_json:
        try:
            click.echo(json.dumps(payload, default=lambda v: None if v is None else str(v), allow_nan=False))
        except ValueError:
            raise RobustlawError(f"not finite (beyond the float range), which JSON cannot hold: "
                                 f"{', '.join(_non_finite(payload))}; run without --json to see them") from None
        return
    table = Table(title=title)
    for name in ("quantity", "value", "formula, source, status"):
        table.add_column(name, justify="right" if name == "value" else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _non_finite(payload: dict, prefix: str = "") -> list[str]:
    """The keys of ``payload`` (nested ones dotted) whose value is an infinite or NaN float."""
    keys = []
    for key, value in payload.items():
        if isinstance(value, dict):
            keys += _non_finite(value, f"{prefix}{key}.")
        elif isinstance(value, float) and not math.isfinite(value):
            keys.append(prefix + key)
    return keys


def _finite(ctx, param, value):
    """Click callback: refuse an infinite or NaN number with one line naming the option."""
    if value is not None and not math.isfinite(value):
        raise RobustlawError(f"{param.opts[0]}: must be a finite number, got {value}")
    return value


def number(*decls, **kwargs):
    """A float option that refuses inf and NaN (see :func:`_finite`)."""
    return click.option(*decls, type=float, callback=_finite, **kwargs)


def bs21_options(command):
    """The options of BS21 Theorem 3's setting shared by ``bound`` and ``predict``."""
    options = [
        number("--sigma", default=1.0, show_default=True, help="Noise level sigma = sqrt(E Var(y|x))."),
        number("--eps", default=None,
               help="Fit margin: train MSE <= sigma^2 - eps (default sigma^2 / 2: fit half the noise)."),
        number("--W", "W", default=1.0, show_default=True, help="Diameter of the parameter set."),
        number("--c", "c", default=1.0, show_default=True, help="Isoperimetry constant c."),
        number("--delta", default=0.01, show_default=True, help="Failure probability delta."),
        number("--C2", "C2", default=1.0, show_default=True, help="BS21 constant C2 (prefactor)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _status(ok: bool | None) -> str:
    return "not checked" if ok is None else ("holds" if ok else "FAILS")


@main.command()
@bs21_options
@number("--n", "n", required=True, help="Number of data points.")
@number("--d", "d", required=True, help="Data dimension (or an effective dimension).")
@number("--params", "P", required=True, help="Parameter count P of the model class.")
@number("--J", "J", default=None, help="Lipschitz constant of the parametrisation (default 1, "
        "or R (W Q P)^D with --depth).")
@click.option("--depth", type=click.IntRange(min=1), default=None,
              help="Depth D: take J = R (W Q P)^D (BS21 Lemma 3.1), in log space if J overflows.")
@number("--radius", "R", default=1.0, show_default=True, help="Data radius R for --depth.")
@number("--sharing", "Q", default=1.0, show_default=True, help="Weight sharing Q for --depth.")
@number("--C1", "C1", default=1.0, show_default=True, help="BS21 constant C1 (dimension condition).")
@click.option("--variant", type=click.Choice(["seed", "neurips"]), default="seed", show_default=True,
              help="BS21 (arXiv:2105.12806) Theorem 3 constants: eq. (10), its explicit form, or the NeurIPS version.")
@click.option("--k-mixture", type=click.IntRange(min=1), default=1, show_default=True,
              help="Mixture components k (condition (8)).")
@number("--sparsity", default=None, help="s: s-sparse parameters, eq. (11) instead of (10).")
@number("--lip", default=None, help="Candidate L for the dimension condition (9) "
        "(default: the bound's own value).")
@number("--width", "k", default=None, help="Two-layer width k: also print BLN20's sqrt(n/k).")
@number("--mask-l1", default=None, help="No Free Prune: E||mask||_1 (with --mask-info).")
@number("--mask-info", default=None, help="No Free Prune: I(mask; data) in nats.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (key bs21_lip_lower holds eq. (10)/(11)).")
def bound(n, d, P, sigma, eps, W, J, depth, R, Q, c, delta, C1, C2, variant, k_mixture, sparsity, lip, k,
          mask_l1, mask_info, as_json):
    """Evaluate the law-of-robustness bounds for N points in D dimensions and P parameters."""
    from robustlaw import theory

    eps = sigma * sigma / 2 if eps is None else eps
    if depth is not None and J is not None:
        raise RobustlawError("give either --J or --depth (which sets J = R (W Q P)^D), not both")
    J, log_J = _parametrisation_J(J, depth, R, W, P, Q)
    constants = theory.BS21Constants(C1=C1, C2=C2, variant=variant)
    bs_args = (n, d, P, sigma, eps, W, J, c, delta, k_mixture, sparsity)
    first = theory.bs21_lip_lower(*bs_args, lip, constants, log_J)
    checked = lip if lip is not None else first.lip_lower
    bs = theory.bs21_lip_lower(*bs_args, checked, constants, log_J)
    payload = {
        "bs21_lip_lower": bs.lip_lower, "bs21_formula": bs.formula, "bs21_log_term": bs.log_term,
        "bs21_mixture_condition": bs.mixture_condition, "bs21_dimension_condition": bs.dimension_condition,
        "bs21_dimension_condition_at_lip": checked,
        "law_scale": theory.law_scale(n, d, P), "sigma_law_scale": sigma * theory.law_scale(n, d, P),
        "poincare_scale": theory.poincare_scale(n, d, P), "rademacher_bound": theory.rademacher_bound(n, d, P),
        "inputs": {"n": n, "d": d, "P": P, "sigma": sigma, "eps": eps, "W": W,
                   "J": J if math.isfinite(J) else None, "log_J": log_J, "c": c, "delta": delta,
                   "C1": C1, "C2": C2, "variant": variant, "k_mixture": k_mixture, "sparsity": sparsity},
    }
    mix = constants.mixture_constant
    rows = [
        (bs.formula, f"{bs.lip_lower:.6g}", "eps/(sigma sqrt(C2 c)) sqrt(n d / (" +
         ("s log(P(1+60WJ/eps))" if sparsity is not None else "P log(1+60WJ/eps)") + " + log(4/delta)))"
         if variant == "seed" else "NeurIPS constants: eps/(2^9 sqrt c), log(60WJ/eps)"),
        ("  mixture condition (8)", _status(bs.mixture_condition), f"{mix:g} k log(8k/delta) <= n eps^2"),
        ("  dimension condition (9)", _status(bs.dimension_condition),
         f"d >= C1 c L^2 sigma^2 / eps^2 at L = {checked:.4g}"),
        ("law sigma sqrt(n d / P)", f"{payload['sigma_law_scale']:.6g}", "BS21, hidden constant 1"),
        ("Poincare-only n sqrt(d) / P", f"{payload['poincare_scale']:.6g}", "order of magnitude"),
        ("Rademacher sqrt(P / (n d))", f"{payload['rademacher_bound']:.6g}", "BS21, section on generalisation"),
    ]
    if k is not None:
        payload["bln20_lip"] = theory.bln20_lip(n, k)
        rows.append(("BLN20 sqrt(n / k)", f"{payload['bln20_lip']:.6g}", f"BLN20 conjecture, k = {k:g}"))
    if (mask_l1 is None) != (mask_info is None):
        raise RobustlawError("No Free Prune needs both --mask-l1 and --mask-info")
    if mask_l1 is not None:
        p_eff = theory.no_free_prune_p_eff(mask_l1, mask_info)
        payload["p_eff"] = p_eff
        payload["p_eff_law_scale"] = sigma * theory.law_scale(n, d, p_eff)
        rows.append(("No Free Prune sigma sqrt(n d / p_eff)", f"{payload['p_eff_law_scale']:.6g}",
                     f"KLS24, p_eff = E||m||_1 + I(m; D) = {p_eff:.6g}"))
    _emit(payload, rows, as_json, f"bounds for n={n:g}, d={d:g}, P={P:g}, sigma={sigma:g}, eps={eps:g}")


def _parametrisation_J(J: float | None, depth: int | None, R: float, W: float, P: float, Q: float):
    """(J, log J) for ``bound``: --J (default 1), or with --depth BS21 Lemma 3.1's J = R (W Q P)^D,
    whose logarithm carries the bound when J itself overflows a float (J is then inf)."""
    from robustlaw import theory
    from robustlaw.errors import SpecError

    if depth is None:
        return 1.0 if J is None else J, None
    log_J = theory.deep_net_log_J(R, W, P, depth, Q)
    try:
        return theory.deep_net_J(R, W, P, depth, Q), log_J
    except SpecError:
        return math.inf, log_J


@main.command()
@click.argument("data")
@click.option("--method", type=click.Choice(["twonn", "mle"]), default="twonn", show_default=True,
              help="TwoNN (Facco et al. 2017) or the Levina-Bickel MLE.")
@click.option("--max-points", type=click.IntRange(min=3), default=DEFAULT_MAX_POINTS, show_default=True,
              help="Estimate on a uniform subsample of at most this many points.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the subsample.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def effdim(data, method, max_points, seed, as_json):
    """Estimate the effective dimension of DATA: 'digits' (bundled) or a .npy, .npz[:key] or .csv file."""
    from robustlaw.effdim import estimate, load_points, subsample

    X, name = load_points(data)
    result = estimate(subsample(X, max_points, seed), method)
    payload = {"data": name, "points": len(X), **result.as_dict()}
    rows = [("effective dimension", f"{result.value:.4g}", method),
            ("ambient dimension", f"{result.ambient_dim}", name),
            ("points used", f"{result.n_used}", f"of {len(X)}, {result.duplicates_removed} duplicate(s) removed")]
    _emit(payload, rows, as_json, f"effective dimension of {name}")


@main.command()
@bs21_options
@number("--n", "n", default=None, help="Number of data points (default: the data's).")
@number("--d", "d", default=None, help="Ambient dimension (default: the data's).")
@number("--effective-dim", default=None, help="Effective dimension d_eff (default: d).")
@click.option("--data", default=None, help="Estimate d_eff from this data set (see `robustlaw effdim`).")
@click.option("--method", type=click.Choice(["twonn", "mle"]), default="twonn", show_default=True,
              help="Effective-dimension estimator for --data.")
@click.option("--max-points", type=click.IntRange(min=3), default=DEFAULT_MAX_POINTS, show_default=True,
              help="With --data: estimate on a uniform subsample of at most this many points.")
@number("--target-lip", required=True, help="The Lipschitz constant L to reach.")
@number("--J", "J", default=1.0, show_default=True, help="BS21: parametrisation Lipschitz constant.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def predict(n, d, effective_dim, data, method, max_points, target_lip, sigma, eps, W, J, c, delta, C2, as_json):
    """Parameters needed to memorise N points robustly (Lip <= L): BS21's back-of-the-envelope.

    P = n d_eff sigma^2 / L^2 inverts the law Lip ~ sigma sqrt(n d_eff / P) (constant 1);
    the BS21 line solves eq. (10) (the explicit form of BS21 Theorem 3, arXiv:2105.12806) for P
    with its explicit constants. A value beyond the float range prints as inf (refused with --json).
    """
    from robustlaw import theory

    source = "given"
    if data is not None:
        if effective_dim is not None:
            raise RobustlawError("give either --effective-dim or --data, not both")
        n, d, effective_dim, source = _dimension_from_data(data, method, max_points, n, d)
    if n is None or d is None:
        raise RobustlawError("predict needs --n and --d (or --data to take them from)")
    if effective_dim is None:
        effective_dim, source = d, "ambient (no --effective-dim)"
    if not 0 < effective_dim <= d:
        raise RobustlawError(f"effective dimension must lie in (0, d={d:g}], got {effective_dim:g}")
    eps = sigma * sigma / 2 if eps is None else eps
    law = theory.law_params_for_lip(n, effective_dim, target_lip, sigma)
    ambient = theory.law_params_for_lip(n, d, target_lip, sigma)
    constants = theory.BS21Constants(C2=C2)
    bs = theory.bs21_params_for_lip(n, effective_dim, target_lip, sigma, eps, W, J, c, delta, constants)
    payload = {"n": n, "d": d, "effective_dim": effective_dim, "effective_dim_source": source,
               "target_lip": target_lip, "sigma": sigma, "params_law": law, "params_law_ambient": ambient,
               "params_bs21": bs, "bs21_inputs": {"eps": eps, "W": W, "J": J, "c": c, "delta": delta, "C2": C2},
               "bs21_mixture_condition": theory.bs21_mixture_condition(n, eps, delta)}
    rows = [("effective dimension", f"{effective_dim:.4g}", source),
            ("P needed (law, d_eff)", f"{law:.3g}", "n d_eff sigma^2 / L^2"),
            ("P needed (law, ambient d)", f"{ambient:.3g}", "n d sigma^2 / L^2"),
            ("P below which BS21 forbids Lip <= L", f"{bs:.3g}",
             "eq. (10) solved for P: (n d_eff (eps/(sigma L sqrt(C2 c)))^2 - log(4/delta)) / log(1+60WJ/eps)")]
    _emit(payload, rows, as_json, f"parameters for Lip <= {target_lip:g}: n={n:g}, d={d:g}")


def _dimension_from_data(data: str, method: str, max_points: int, n: float | None, d: float | None):
    """(n, d, d_eff, source) for ``predict --data``: n and d default to the data's; an estimate
    above d (nearest-neighbour estimates scatter around d on full-rank data) is taken as d, with a note."""
    from robustlaw.effdim import estimate, load_points, subsample

    X, name = load_points(data)
    effective_dim = estimate(subsample(X, max_points), method).value
    source = f"{method} estimate on {name}"
    n = float(len(X)) if n is None else n
    d = float(X.shape[1]) if d is None else d
    if effective_dim > d:
        source += f"; estimate {effective_dim:.3g} above d = {d:g}, taken as d"
        effective_dim = d
    return n, d, effective_dim, source


def _integers(text: str | None, option: str, count: int | None = None) -> tuple[int, ...] | None:
    """Click callback: comma-separated integers (``count`` of them if given), or one error line."""
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or (count is not None and len(values) != count) or min(values) < 0:
        raise RobustlawError(f"{option} {text}: expected {count or 'some'} comma-separated integers >= 0")
    return values


def _method_names() -> list[str]:
    from robustlaw.lipschitz import METHODS

    return METHODS.names()


def _npy(path: Path | None, option: str, ndims: tuple[int, ...]) -> np.ndarray | None:
    """The float array in the .npy file ``path`` (read without pickles), or one line naming ``option`` and
    what is wrong: a missing or unreadable file, not numbers, a NaN or Inf, a shape of another dimension."""
    if path is None:
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        first = (str(error).splitlines() or [type(error).__name__])[0]
        raise RobustlawError(f"{option} {path}: cannot read it as a .npy array ({first})") from None
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number) or array.dtype.kind == "c":
        raise RobustlawError(f"{option} {path}: not an array of real numbers")
    if array.ndim not in ndims or not array.size:
        raise RobustlawError(f"{option} {path}: expected a non-empty array of {' or '.join(map(str, ndims))} "
                             f"dimension(s), got shape {array.shape}")
    array = array.astype(float)
    if not np.isfinite(array).all():
        raise RobustlawError(f"{option} {path}: contains NaN or Inf")
    return array


def _center(path: Path | None) -> np.ndarray | None:
    """--center: one point, stored as a vector (d,) or a single row (1, d)."""
    center = _npy(path, "--center", (1, 2))
    if center is not None and center.ndim == 2:
        if len(center) != 1:
            raise RobustlawError(f"--center {path}: expected one point, got {len(center)} rows")
        center = center[0]
    return center


def _lip_progress(stage: str, method: str, lower: float, upper: float) -> None:
    note(f"  {stage:<11} {method:<20} Lip in [{lower:.6g}, {upper:.6g}]")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--domain", "domain_text", default="global", show_default=True,
              help="global (all of R^d), ball:R (the ball of radius R around the origin or --center), sphere or "
                   "sphere:R (tangential gradient), local:R (the balls of radius R around the points of --data).")
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A .npy file of points (n, d): the centres of a local domain; on any domain the search "
                   "also starts near them.")
@click.option("--center", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A .npy file holding one point (d,): the centre of a ball domain.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds; the best bracket found by then is returned (default 60 unless --effort).")
@click.option("--effort", type=click.IntRange(min=1), default=None,
              help="No clock: a fixed effort, the search rounds times N, so the same file, seed and effort give "
                   "the same bracket on any machine.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the randomised search.")
@click.option("--method", "methods", multiple=True, metavar="NAME",
              help="Use only these Lipschitz methods (repeatable; default: every registered one that applies). "
                   "Known: " + ", ".join(_method_names()) + ".")
@click.option("--input-shape", "input_shape", default=None, callback=lambda c, p, v: _integers(v, "--input-shape"),
              help="One sample's shape for a model starting with a convolution, e.g. 1,8,8 (C,H,W).")
@click.option("--output", type=click.IntRange(min=0), default=None,
              help="Certify output i (0-based) of a multi-output model.")
@click.option("--margin", default=None, callback=lambda c, p, v: _integers(v, "--margin", 2),
              help="Certify the margin f_i - f_j of a multi-output model: i,j (0-based).")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object.")
def lip(model: Path, domain_text: str, data: Path | None, center: Path | None, time_limit: float | None,
        effort: int | None, seed: int, methods: tuple[str, ...], input_shape, output, margin, as_json: bool):
    """Certify the Lipschitz constant of MODEL: a bracket [lower, upper] on a domain.

    MODEL is an .npz file holding W1, b1, ..., WL, bL (ReLU between layers), or a .pt /
    .pth file: a torch.save'd Sequential of Linear layers and activations (ReLU, LeakyReLU, Tanh,
    Softplus, Sigmoid, robustlaw's Power), also Conv1d/2d, AvgPool1d/2d, BatchNorm1d/2d (eval mode),
    Flatten, Unflatten and Dropout (a CNN is certified through its dense layers), or the state_dict of a
    Sequential of Linear layers (keys
    0.weight, 0.bias, 2.weight, ..., read with ReLU between layers). Torch files are read without
    running code: anything else in them is refused.

    lower is the gradient norm at the returned witness point; upper is a certificate no point of
    the domain can exceed. Progress goes to stderr (none with -q; -v adds the time of each method).
    """
    from robustlaw.lipschitz import certify, load_model, parse_domain

    if effort is not None and time_limit is not None:
        raise RobustlawError("give either --time-limit (anytime) or --effort (a fixed effort, no clock), not both")
    points, centre = _npy(data, "--data", (2,)), _center(center)
    try:
        domain = parse_domain(domain_text, centre, points)
    except RobustlawError as error:
        raise RobustlawError(f"--domain {domain_text}: {error}") from None
    net = load_model(model, **({"input_shape": input_shape} if input_shape else {}), output=output, margin=margin)
    note(f"certifying {net.describe()} on {domain.describe()}")
    clock = dict(time_limit=None, effort=effort) if effort is not None else dict(time_limit=time_limit or 60.0)
    bracket = certify(net, domain, points, seed=seed, methods=methods or None, progress=_lip_progress, **clock)
    for method, seconds in bracket.details.get("seconds_by_method", {}).items():
        detail(f"  {method}: {seconds:.3f} s")
    if as_json:
        # no finite certificate (e.g. a polynomial net on R^d): null, since JSON has no infinity
        payload = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in bracket.to_dict().items()}
        payload.update(seed=seed, effort=effort, time_limit=clock["time_limit"])  # what reproduces it
        click.echo(json.dumps(payload, allow_nan=False))
        return
    console.print(f"network: {net.describe()}   domain: {bracket.domain}")
    console.print(f"Lipschitz constant in [{bracket.lower:.10g}, {bracket.upper:.10g}]   "
                  f"upper/lower = {bracket.ratio:.8g}   exact: {'yes' if bracket.exact else 'no'}")
    console.print(f"lower by {bracket.lower_method} (witness: {len(bracket.witness)} coordinates, "
                  f"||x|| = {float(np.linalg.norm(bracket.witness)):.6g})")
    console.print(f"upper by {bracket.upper_method}")
    console.print(f"time: {bracket.seconds:.2f} s")


class Interrupted(Exception):
    """A command stopped by SIGINT or SIGTERM; the message says what was kept."""


def _exit_now(signum: int, frame) -> None:
    """A second SIGINT or SIGTERM: exit at once, quietly (workers die with this process)."""
    os._exit(130)


def _interrupt(signum: int, frame) -> None:
    """The first SIGINT or SIGTERM: stop the command by KeyboardInterrupt (the sweep's executor
    then kills its workers and finished runs stay in the store); the next signal exits at once."""
    signal.signal(signal.SIGINT, _exit_now)
    signal.signal(signal.SIGTERM, _exit_now)
    raise KeyboardInterrupt


def _exit_interrupted(line: str) -> None:
    """Exit 130 with one line, without the interpreter's shutdown: Python restores the default signal
    handlers while it finalizes (seconds, with torch loaded), and a second signal then would kill the
    process by SIGINT instead of exiting quietly. Everything finished is committed by now."""
    click.echo(line, err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def entry() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2; the first
    SIGINT or SIGTERM stops the command with one line and exit code 130, a second exits at once."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        main(standalone_mode=False)
    except RobustlawError as error:
        click.echo(f"robustlaw: error: {error}", err=True)
        sys.exit(2)
    except Interrupted as stop:
        _exit_interrupted(f"robustlaw: interrupted; {stop}")
    except (click.exceptions.Abort, KeyboardInterrupt):
        _exit_interrupted("robustlaw: interrupted")
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)


if __name__ == "__main__":
    entry()
