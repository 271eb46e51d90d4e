"""Fitting benchmarks: machine peak, sweep efficiency, speed-up over a one-model-at-a-time baseline,
and how the cost of a training step grows with n, k and d.

    PYTHONPATH=src python benchmarks/fit_bench.py all        # everything (~2-4 min on 2 cores)
    PYTHONPATH=src python benchmarks/fit_bench.py peak|sweep|baseline|scaling
    PYTHONPATH=src python benchmarks/fit_bench.py table [REPEATS [GRID...]]   # the side-by-side fitting table
    PYTHONPATH=src python benchmarks/fit_bench.py certify-scaling             # certification time against k

Numbers go to benchmarks/README.md; the scaling figure to benchmarks/fit_scaling.png.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from robustlaw.experiment import prepare
from robustlaw.fitting import FitSpec, fit_many
from robustlaw.models import two_layer
from robustlaw.sweep import LocalExecutor, SweepSpec, batches

HERE = Path(__file__).parent
DEFAULT_THREADS = torch.get_num_threads()  # what a script that never calls set_num_threads gets


def peak(size: int = 1024, repeats: int = 20) -> float:
    """fp32 matmul GFLOP/s on one thread (best of ``repeats``)."""
    torch.set_num_threads(1)
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def fit_task(specs) -> list[tuple[bool, float]]:
    """Fit one batch of the sweep (no certification): (reached, useful FLOPs) per run."""
    prepared = [prepare(s) for s in specs]
    results = fit_many([p.model for p in prepared], [p.data.X for p in prepared], [p.data.y for p in prepared],
                       specs[0].fit, [p.data.sigma for p in prepared], [s.seed for s in specs])
    return [(r.reached, r.flops) for r in results]


def sweep_fit(sweep: SweepSpec, workers: int) -> dict:
    """Wall time and useful FLOPs of fitting every run of ``sweep`` the way run_sweep batches it."""
    tasks = sorted(batches(list(sweep.runs), sweep.batch_size, sweep.batch_work), key=lambda b: -len(b) * b[-1].work())
    start = time.perf_counter()
    out = [pair for _, result in LocalExecutor(workers).map_unordered(fit_task, tasks) for pair in result]
    wall = time.perf_counter() - start
    return {"runs": len(out), "reached": sum(r for r, _ in out), "flops": sum(f for _, f in out), "wall": wall,
            "batches": len(tasks)}


def baseline(sweep: SweepSpec, threads: int | None = None) -> dict:
    """The script a researcher would write: one nn.Module at a time, full-batch torch.optim.Adam on
    the MSE, same data, init, lr and cosine schedule, stopped when it meets the same target."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    reached = 0
    for run in sweep.runs:
        p = prepare(run)
        X = torch.as_tensor(p.data.X, dtype=torch.float32)
        y = torch.as_tensor(p.data.y, dtype=torch.float32)
        spec = run.fit
        opt = torch.optim.Adam(p.model.parameters(), lr=spec.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spec.max_steps, eta_min=spec.lr * 0.01)
        for _ in range(spec.max_steps + 1):
            residual = p.model(X) - y
            if float(residual.detach().abs().max()) <= spec.tol:
                reached += 1
                break
            opt.zero_grad()
            (residual**2).mean().backward()
            opt.step()
            schedule.step()
    return {"runs": len(sweep.runs), "reached": reached, "wall": time.perf_counter() - start}


def loop_fit(sweep: SweepSpec) -> dict:
    """robustlaw's own fitting one model at a time (``fit_many`` on each run alone, one thread, one
    process): the same algorithm as the batched fit, so the same models bitwise, smoothing included."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    out = [pair for run in sweep.runs for pair in fit_task([run])]
    return {"runs": len(out), "reached": sum(r for r, _ in out), "wall": time.perf_counter() - start}


def _train_only() -> SweepSpec:
    spec = _default_dict()
    return SweepSpec.from_dict({**spec, "fit": {**spec["fit"], "mode": "train"}})


GRIDS = {
    "train-only default (30 runs)": _train_only,
    "6 large runs (n=2000, d=100, k=100..400)": lambda: SweepSpec.from_dict({
        "name": "big", "seeds": [0, 1], "data": {"n": 2000, "d": 100}, "model": {"width": [100, 200, 400]},
        "fit": {"tol": 0.1, "max_steps": 300}}),
    "shipped default, train + smooth (60 runs)": SweepSpec.default,
}


def _default_dict() -> dict:
    import tomllib

    from robustlaw.sweep import default_spec_text

    return tomllib.loads(default_spec_text())


def table(repeats: int = 3, grids: list[str] | None = None) -> list[dict]:
    """The fitting table of benchmarks/README.md: for each grid, ``repeats`` rounds of the three
    contenders side by side (torch.optim loop, robustlaw one model at a time, robustlaw batched on
    every core), so the ratios compare runs made under the same load."""
    cores = os.cpu_count() or 1
    rows = []
    for name, make in GRIDS.items():
        if grids and not any(g in name for g in grids):
            continue
        sweep = make()
        for rep in range(repeats):
            torch_loop = baseline(sweep, 1)
            ours_alone = loop_fit(sweep)
            batched = sweep_fit(sweep, cores)
            row = {"grid": name, "rep": rep, "torch_loop_wall": torch_loop["wall"],
                   "torch_loop_reached": torch_loop["reached"], "alone_wall": ours_alone["wall"],
                   "alone_reached": ours_alone["reached"], "batched_wall": batched["wall"],
                   "batched_reached": batched["reached"], "runs": batched["runs"],
                   "speedup_vs_torch_loop": torch_loop["wall"] / batched["wall"],
                   "speedup_vs_alone": ours_alone["wall"] / batched["wall"], "useful_gflop": batched["flops"] / 1e9}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def certify_scaling(widths=(10, 20, 40, 80, 160, 320)) -> dict:
    """Certification time (the sweep's fixed effort, unit ball) of a default-spec run (n=200, d=20,
    seed 0, train mode) against its width k, with the log-log slope."""
    from dataclasses import replace

    from robustlaw.experiment import certify_fitted, fit_group

    torch.set_num_threads(1)
    run = next(r for r in _train_only().runs if r.seed == 0)
    seconds = []
    for k in widths:
        spec = replace(run, model=replace(run.model, options=replace(run.model.options, width=k)))
        (item,) = fit_group([spec])
        start = time.perf_counter()
        record = certify_fitted(item)
        seconds.append(time.perf_counter() - start)
        print(json.dumps({"k": k, "certify_seconds": seconds[-1], "bracket": [record["lip_lower"], record["lip_upper"]]}),
              flush=True)
    slope = float(np.polyfit(np.log(widths), np.log(seconds), 1)[0])
    return {"k": list(widths), "seconds": seconds, "slope": slope}


def step_time(n: int, k: int, d: int, steps: int = 40) -> float:
    """Seconds per full-batch step of one two-layer net (budget target, no early stop)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    y = rng.choice([-1.0, 1.0], n)
    spec = FitSpec(target="budget", max_steps=steps, check_every=steps)
    fit_many([two_layer(d, k)], [X], [y], FitSpec(target="budget", max_steps=3, check_every=3))  # warm-up
    t = time.perf_counter()
    fit_many([two_layer(d, k)], [X], [y], spec)
    return (time.perf_counter() - t) / steps


def scaling(figure: Path = HERE / "fit_scaling.png") -> dict:
    """Time per step against n, k, d around (n, k, d) = (2000, 256, 64), with log-log slopes."""
    torch.set_num_threads(1)
    base = {"n": 2000, "k": 256, "d": 64}
    grids = {"n": [250, 500, 1000, 2000, 4000, 8000], "k": [32, 64, 128, 256, 512, 1024],
             "d": [8, 16, 32, 64, 128, 256]}
    out = {}
    for axis, values in grids.items():
        times = [step_time(**{**base, axis: v}) for v in values]
        slope = float(np.polyfit(np.log(values), np.log(times), 1)[0])
        out[axis] = {"values": values, "seconds": times, "slope": slope}
    # two-term cost model: elementwise work ~ n k (activation, its backward, Adam) plus matmuls ~ n k d
    points = [({**base, axis: v}, t) for axis, row in out.items() for v, t in zip(row["values"], row["seconds"])]
    features = np.array([[p["n"] * p["k"], p["n"] * p["k"] * p["d"]] for p, _ in points], float)
    coef = np.linalg.lstsq(features, np.array([t for _, t in points]), rcond=None)[0]
    out["model"] = {"seconds_per_nk": float(coef[0]), "seconds_per_nkd": float(coef[1]),
                    "gflops_of_matmul_term": float(4 / coef[1] / 1e9) if coef[1] > 0 else None}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharey=True)
    for ax, axis in zip(axes, grids):
        row = out[axis]
        ax.loglog(row["values"], [1e3 * s for s in row["seconds"]], "o-", label=f"measured (slope {row['slope']:.2f})")
        ref = np.array(row["values"], float)
        ax.loglog(ref, 1e3 * row["seconds"][-1] * ref / ref[-1], "--", color="grey", label="slope 1")
        shape = {**{a: float(v) for a, v in base.items()}, axis: ref}
        model = coef[0] * shape["n"] * shape["k"] + coef[1] * shape["n"] * shape["k"] * shape["d"]
        ax.loglog(ref, 1e3 * model * np.ones_like(ref), ":", color="black", label="fit n k (a + b d)")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(axis + "  (others: " + ", ".join(f"{a}={v}" for a, v in base.items() if a != axis) + ")")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("ms per full-batch Adam step")
    fig.suptitle("cost of one training step of a two-layer net, one thread (expected ~ n k d)")
    fig.tight_layout()
    fig.savefig(figure, dpi=110)
    return out


def main(what: str) -> None:
    torch.set_num_threads(1)
    gflops = peak()
    print(json.dumps({"peak_gflops_per_core": round(gflops, 1)}))
    cores = os.cpu_count() or 1
    if what in ("sweep", "baseline", "all"):
        default = SweepSpec.default()
        ours = sweep_fit(default, cores)
        ours["efficiency"] = ours["flops"] / (ours["wall"] * gflops * 1e9 * cores)
        print(json.dumps({"batched_default_fit": ours}))
        big = SweepSpec.from_dict({"name": "big", "seeds": [0, 1], "data": {"n": 2000, "d": 100},
                                   "model": {"width": [100, 200, 400]}, "fit": {"tol": 0.1, "max_steps": 300}})
        heavy = sweep_fit(big, cores)
        heavy["efficiency"] = heavy["flops"] / (heavy["wall"] * gflops * 1e9 * cores)
        print(json.dumps({"batched_large_fit (n=2000, d=100, k=100..400)": heavy}))
    if what in ("baseline", "all"):
        for threads in sorted({DEFAULT_THREADS, 1}):
            base = baseline(SweepSpec.default(), threads)
            base["speedup_of_batched"] = base["wall"] / ours["wall"]
            print(json.dumps({f"baseline_default_fit (torch threads={threads})": base}))
        torch.set_num_threads(1)
    if what == "table":
        table(int(sys.argv[2]) if len(sys.argv) > 2 else 3, sys.argv[3:] or None)
    if what == "certify-scaling":
        print(json.dumps({"certify_scaling": certify_scaling()}))
    if what in ("scaling", "all"):
        print(json.dumps({"scaling": scaling()}))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "all")
