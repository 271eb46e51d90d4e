"""CNN and pruned-net costs beside their dense peers of equal P, measured in the same run.

    PYTHONPATH=src python benchmarks/cnn_bench.py          # ~2-5 min on 2 cores

For CNNs on 8x8 inputs (robustlaw.conv.cnn, one 3x3 convolution of c channels, 2x2 pooling, P = 26 c)
and two-layer MLPs of nearly equal P (P = 66 k, k = 2 c / 5): the dense expansion (from_torch), a
training step (fit_module for the CNN, fit_many for the MLP), and a fixed-effort certification on the
unit ball. For pruned two-layer nets: a fit_many step with and without masks. Numbers go to
benchmarks/README.md (section "CNNs and pruned nets").
"""

from __future__ import annotations

import time

import numpy as np
import torch

from robustlaw.conv import cnn
from robustlaw.fitting import FitSpec, fit_many, fit_module
from robustlaw.lipschitz import Ball, certify
from robustlaw.lipschitz.network import from_torch
from robustlaw.models import two_layer
from robustlaw.pruning import MASKS, Pruning


def timed(fn, repeats: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def data(n: int = 100, d: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True), rng.choice([-1.0, 1.0], size=n)


def cnn_against_mlp(channels=(5, 10, 15), steps: int = 200) -> None:
    X, y = data()
    budget = FitSpec(target="budget", max_steps=steps)
    print("| c / k | P cnn / mlp | dense expansion | step cnn / mlp | certify cnn / mlp |")
    print("|---|---|---|---|---|")
    for c in channels:
        k = max(1, round(2 * c / 5))
        conv, dense = cnn(64, [c], image=(8, 8), seed=0), two_layer(64, k, seed=0)
        expand = timed(lambda conv=conv: from_torch(conv))
        step_cnn = timed(lambda c=c: fit_module(cnn(64, [c], image=(8, 8), seed=0), X, y, budget)) / steps
        step_mlp = timed(lambda k=k: fit_many([two_layer(64, k, seed=0)], [X], [y], budget)) / steps
        cert_cnn = timed(lambda conv=conv: certify(conv, Ball(1.0), X, y, time_limit=None))
        cert_mlp = timed(lambda dense=dense: certify(dense, Ball(1.0), X, y, time_limit=None))
        print(f"| {c} / {k} | {conv.param_count()} / {dense.param_count()} | {expand * 1e3:.1f} ms | "
              f"{step_cnn * 1e3:.2f} / {step_mlp * 1e3:.2f} ms ({step_cnn / step_mlp:.1f}x) | "
              f"{cert_cnn:.1f} / {cert_mlp:.2f} s ({cert_cnn / cert_mlp:.0f}x) |")


def pruned_step(width: int = 100, steps: int = 300) -> None:
    X, y = data(200, 20)
    budget = FitSpec(target="budget", max_steps=steps)

    def run(masked: bool) -> None:
        model = two_layer(20, width, seed=0)
        if masked:
            MASKS.get("random")().prune([model], [X], [y], budget, [1.0], [0], Pruning(0.2, 1))
        fit_many([model], [X], [y], budget)

    dense, masked = timed(lambda: run(False)) / steps, timed(lambda: run(True)) / steps
    print(f"pruned step (width {width}, n 200, d 20): masked {masked * 1e3:.2f} ms, dense {dense * 1e3:.2f} ms "
          f"({masked / dense:.2f}x)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    cnn_against_mlp()
    pruned_step()
