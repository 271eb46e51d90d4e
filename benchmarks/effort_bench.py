"""`robustlaw lip --effort N` against time limits: the bracket a fixed effort buys, and its reproducibility.

    python benchmarks/effort_bench.py [--efforts 1 2 4 8] [--limits 5 30]

The deep MLP of lip_bench.py (20-64-64-64-1, seeded Gaussian weights) on R^d and on the unit ball, and
a trained deep net of the lab on the balls of radius 0.1 around its 200 data points. For each effort N
(no clock: search rounds times N) and each time limit: lower, upper and seconds, one BLAS thread. Each
effort runs twice: "same" says whether both runs gave the identical bracket (lower, upper, witness).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from lip_bench import gaussian_net, lab_net  # noqa: E402


def cases():
    from robustlaw.lipschitz import Ball, Global, LocalBalls

    deep = gaussian_net(20, [64, 64, 64], 0)
    yield "deep 20-64-64-64-1", deep, Global(), None
    yield "deep 20-64-64-64-1", deep, Ball(1.0), None
    net, X, _ = lab_net([64, 64], 0)
    yield "lab deep 20-64-64-1 (trained)", net, LocalBalls(0.1, X), X


def measure(net, domain, X, **clock):
    from robustlaw.lipschitz import certify

    start = time.perf_counter()
    bracket = certify(net, domain, X, seed=0, **clock)
    return bracket, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--efforts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--limits", type=float, nargs="+", default=[5.0, 30.0])
    args = parser.parse_args()
    print("| net | domain | clock | lower | upper | upper/lower | seconds | same |")
    print("|---|---|---|---|---|---|---|---|")
    for name, net, domain, X in cases():
        for effort in args.efforts:
            (first, seconds), (second, _) = (measure(net, domain, X, time_limit=None, effort=effort) for _ in range(2))
            same = (first.lower, first.upper) == (second.lower, second.upper) and np.array_equal(first.witness, second.witness)
            print(f"| {name} | {domain.describe()} | effort {effort} | {first.lower:.5g} | {first.upper:.5g} | "
                  f"{first.ratio:.4g} | {seconds:.1f} | {'yes' if same else 'NO'} |", flush=True)
        for limit in args.limits:
            bracket, seconds = measure(net, domain, X, time_limit=limit)
            print(f"| {name} | {domain.describe()} | {limit:g} s | {bracket.lower:.5g} | {bracket.upper:.5g} | "
                  f"{bracket.ratio:.4g} | {seconds:.1f} | |", flush=True)


if __name__ == "__main__":
    main()
