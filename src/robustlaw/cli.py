"""The ``robustlaw`` command line."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from robustlaw.analysis import LAW_EXPONENT, law_fit
from robustlaw.errors import RobustlawError
from robustlaw.report import TABLE_COLUMNS, format_value, write_report

console = Console()


def results_table(records: list[dict], title: str) -> Table:
    table = Table(title=title)
    for _, label in TABLE_COLUMNS:
        table.add_column(label, justify="right")
    for r in sorted((r for r in records if r.get("status") == "ok"), key=lambda r: (r["n"], r["d"], r["P"], r["seed"])):
        table.add_row(*(format_value(r.get(c)) for c, _ in TABLE_COLUMNS))
    return table


def print_summary(records: list[dict], title: str) -> None:
    console.print(results_table(records, title))
    failed = [r for r in records if r.get("status") != "ok"]
    for r in failed:
        console.print(f"[red]run {r['key']} failed:[/red] {r.get('error')}")
    fit = law_fit(records)
    if fit:
        console.print(f"Lip (lower bound) ~ (n d / P)^alpha: alpha = {fit.describe()}; the law predicts {LAW_EXPONENT}")
    else:
        console.print("Too few fitted runs for a scaling fit.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="robustlaw")
def main():
    """robustlaw: a laboratory for the law of robustness (Bubeck-Li-Nagaraj 2020, Bubeck-Sellke 2021)."""


@main.command()
@click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("robustlaw-results"),
              show_default=True, help="Folder for the results database and the HTML report.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where runs execute: local worker processes, or a Ray cluster (pip install 'robustlaw[ray]').")
@click.option("--address", default=None, help="Ray cluster address (e.g. ray://host:10001 or auto); default: "
              "start a local Ray instance.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes, one thread each (default: all cores); for a local Ray instance, its CPUs.")
def run(spec: Path | None, out: Path, executor: str, address: str | None, workers: int | None):
    """Run the sweep in SPEC (a TOML file; default: the embedded BLN20 sphere sweep).

    Records go to OUT/results.db as they finish; re-running skips finished runs, so an
    interrupted (even killed) sweep resumes where it stopped.
    """
    from robustlaw.store import Store
    from robustlaw.sweep import SweepSpec, make_executor, run_sweep

    sweep = SweepSpec.from_toml(spec) if spec else SweepSpec.default()
    pool = make_executor(executor, workers, address)
    db = out / "results.db"
    start = time.perf_counter()
    with Store(db) as store:
        todo = len(sweep.runs) - len(store.done_keys() & {r.key() for r in sweep.runs})
        console.print(f"sweep [bold]{sweep.name}[/bold]: {len(sweep.runs)} runs, {len(sweep.runs) - todo} already done")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("eta"), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("runs", total=todo)
            records = run_sweep(sweep, store, pool, on_record=lambda r: progress.advance(task))
        print_summary(records, f"{sweep.name}: {sweep.description}")
        report = write_report(records, out, title=f"robustlaw: {sweep.name}", description=sweep.description)
    console.print(f"results: {db}")
    console.print(f"report:  {report}")
    console.print(f"wall time: {time.perf_counter() - start:.1f} s")


@main.command()
@click.argument("db", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the report (default: the database's folder).")
@click.option("--sweep", "sweep_name", default=None, help="Only this sweep's records (default: all).")
def report(db: Path, out: Path | None, sweep_name: str | None):
    """Rebuild the HTML report from the results database DB."""
    from robustlaw.store import Store

    with Store(db, create=False) as store:
        records = store.records(sweep_name)
    if not records:
        raise RobustlawError(f"{db} holds no records" + (f" of sweep {sweep_name!r}" if sweep_name else ""))
    print_summary(records, str(db))
    path = write_report(records, out or db.parent, title=f"robustlaw: {sweep_name or db.name}")
    console.print(f"report: {path}")


def entry() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        main(standalone_mode=False)
    except RobustlawError as error:
        click.echo(f"robustlaw: error: {error}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("robustlaw: interrupted; finished runs are kept in the results database", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        click.echo("robustlaw: interrupted; finished runs are kept in the results database", err=True)
        sys.exit(130)
