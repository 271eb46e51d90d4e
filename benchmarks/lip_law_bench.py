"""Certified brackets where the law lives (issue 13): held-out nets, peers beside, anytime, cost curves.

    python benchmarks/lip_law_bench.py                 # brackets + peers (~15 min), then cost curves
    python benchmarks/lip_law_bench.py --part brackets --nets "deep 20-64-64-1 n=300"
    python benchmarks/lip_law_bench.py --part cost     # certification time against k and depth (log-log PNG)

The nets (benchmarks/law_nets.py) are trained by plain torch code, never by robustlaw.fitting, and
cached under $ROBUSTLAW_BENCH_CACHE (default /tmp/robustlaw_law_nets). Every method runs in its own
process with one thread (benchmarks/lip_bench.py's runner), so the ratios in one table were measured
under the same load; absolute times on a shared machine are not comparable between runs.
Columns: upper / best lower (the best lower bound of any method in the row's net), and lower / best lower.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import law_nets  # noqa: E402
import lip_bench  # noqa: E402

# the held-out nets become lip_bench families (also in the spawned job processes, which import this module)
for _name, (_, _domain) in law_nets.NETS.items():
    lip_bench.FAMILIES[_name] = (lambda name=_name: law_nets.load(name)[:3], _domain)

PEERS = ["robustlaw", "robustlaw 5 s", "spectral product", "LipSDP-Neuron (CVXOPT)", "ECLipsE-Fast", "ECLipsE",
         "random gradients (BLN20, 10^5 pts)", "independent search (robustlaw.testing, 50k pts)"]


def brackets(nets: list[str], time_limit: float) -> list[str]:
    kinds = dict(lip_bench.METHODS)
    lines = ["| net | domain | method | lower | upper | upper / best lower | lower / best lower | exact | time s | notes |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for net in nets:
        results = {m: lip_bench.run(net, m, time_limit) for m in PEERS}
        best = max([r.get("lower", 0.0) for r in results.values()] + [1e-300])
        for m, r in results.items():
            up, low = r.get("upper"), r.get("lower")
            row = [net, lip_bench.FAMILIES[net][1], m, lip_bench.fmt(low, 6), lip_bench.fmt(up, 6),
                   f"{up / best:.4g}" if up is not None and kinds[m] != "estimate" else "",
                   f"{low / best:.4g}" if low is not None else "",
                   {True: "yes", False: "no"}.get(r.get("exact"), ""), lip_bench.fmt(r.get("seconds"), 3),
                   r.get("skipped", r.get("how", ""))]
            lines.append("| " + " | ".join(row) + " |")
            print(lines[-1], flush=True)
    return lines


def _certify_seconds(model, domain) -> tuple[float, float]:
    from robustlaw.lipschitz import certify, from_torch, parse_domain

    start = time.perf_counter()
    b = certify(from_torch(model), parse_domain(domain), time_limit=None)
    return time.perf_counter() - start, b.ratio


def cost_curves(out_png: Path) -> list[str]:
    """Fixed-effort certification time (what sweeps use) of random ReLU nets on the unit ball: two-layer
    20-k-1 against k, and 20-64-...-64-1 against the number of hidden layers; slopes of the log-log fits."""
    import torch

    torch.set_num_threads(1)
    _certify_seconds(law_nets.gaussian(20, [8], 0), "ball:1")  # warm-up: first-call imports are not the cost
    rows, curves = [], {}
    for label, xs, make in [("two-layer 20-k-1, ball:1 (x = k)", [25, 50, 100, 200, 400, 800],
                             lambda k: law_nets.gaussian(20, [k], 11)),
                            ("deep 20-64x(L-1)-1, ball:1 (x = hidden layers)", [1, 2, 3, 4, 6],
                             lambda L: law_nets.gaussian(20, [64] * L, 12))]:
        times = []
        for x in xs:
            seconds, ratio = _certify_seconds(make(x), "ball:1")
            times.append(seconds)
            rows.append(f"| {label} | {x} | {seconds:.3g} | {ratio:.4g} |")
            print(rows[-1], flush=True)
        slope = float(np.polyfit(np.log(xs), np.log(times), 1)[0])
        curves[label] = (xs, times, slope)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (label, (xs, times, slope)) in zip(axes, curves.items()):
        ax.loglog(xs, times, "o-")
        ax.set_title(f"{label}\nslope {slope:.2f}", fontsize=9)
        ax.set_xlabel("k" if "two-layer" in label else "hidden layers")
        ax.set_ylabel("certify seconds (fixed effort)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    head = ["| family | x | certify s | upper/lower |", "|---|---|---|---|"]
    return head + rows + [f"| slope (log-log) | {label} | {slope:.2f} | |" for label, (_, _, slope) in curves.items()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "brackets", "cost"], default="all")
    parser.add_argument("--nets", nargs="*", default=None, help=f"default: all of {list(law_nets.NETS)}")
    parser.add_argument("--time-limit", type=float, default=60.0, help="robustlaw's time limit per net")
    parser.add_argument("--out", type=Path, default=HERE / "lip_law_results.md")
    args = parser.parse_args()
    lines = [f"measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
    if args.part in ("all", "brackets"):
        lines += brackets(args.nets or list(law_nets.NETS), args.time_limit) + [""]
    if args.part in ("all", "cost"):
        lines += cost_curves(HERE / "lip_law_cost.png")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"table: {args.out}")


if __name__ == "__main__":
    main()
