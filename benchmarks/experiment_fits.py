"""The numbers of docs/experiments.md from a sweep's results.db: per family and fit mode, the exponent of
each measured column against P (with its 95% bootstrap interval, robustlaw.analysis.fit_power_law) and
the median ratio of the column to the law's scale with d and with d_eff.

    python benchmarks/experiment_fits.py robustlaw-results/results.db [--sweep NAME]
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import statistics

from robustlaw.analysis import fit_power_law

COLUMNS = ("lip_lower", "lip_upper", "grad_mean_train")


def groups(path: str, sweep: str | None) -> dict[tuple, list[dict]]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute("SELECT * FROM runs WHERE status = 'ok'" + (" AND sweep = ?" if sweep else ""),
                                            (sweep,) if sweep else ())]
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault((r["family"], r["mode"], r["n"]), []).append(r)
    return out


def describe(rows: list[dict]) -> list[str]:
    reached = [r for r in rows if r["reached"]]
    lines = [f"  runs {len(rows)}, reached {len(reached)}, P {sorted({r['P'] for r in rows})}, "
             f"d_eff median {statistics.median(r['d_eff'] for r in rows if r['d_eff']):.2f}"]
    for column in COLUMNS:
        finite = [r for r in reached if r[column] is not None and math.isfinite(r[column])]
        if len(finite) < len(reached):
            lines.append(f"  {column}: {len(reached) - len(finite)} of {len(reached)} reached runs infinite")
        fit = fit_power_law([r["P"] for r in finite], [r[column] for r in finite])
        if fit is None:
            continue
        by_d = statistics.median(r[column] / r["law_scale"] for r in finite)
        by_deff = statistics.median(r[column] / r["law_scale_deff"] for r in finite if r["law_scale_deff"])
        lines.append(f"  {column} ~ P^beta, beta = {fit.describe()}; median {column} / sqrt(n d / P) = {by_d:.3g}, "
                     f"/ sqrt(n d_eff / P) = {by_deff:.3g}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("--sweep")
    args = parser.parse_args()
    for (family, mode, n), rows in sorted(groups(args.db, args.sweep).items()):
        print(f"{family} / {mode} / n = {n}")
        print("\n".join(describe(rows)))


if __name__ == "__main__":
    main()
