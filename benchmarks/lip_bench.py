"""Certified Lipschitz brackets: robustlaw against its peers, side by side.

    python benchmarks/lip_bench.py [--quick] [--out benchmarks/lip_results.md]

Seeded families (random Gaussian weights, W ~ N(0, 1/fan_in), biases N(0, 0.1^2)) on R^d unless
stated: tiny / medium / large two-layer ReLU nets, a deep MLP 20-64-64-64-1, and two-layer nets
trained by the lab (robustlaw.fit, interpolating random signs on the unit sphere, certified on the
unit ball). Every method runs in its own process so time and peak memory (max RSS of that process,
imports included) are its own. Peers need the ``bench`` extra: pip install -e .[bench].
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def gaussian_net(d, widths, seed, bias=0.1):
    from robustlaw.lipschitz.network import RELU, Net

    rng = np.random.default_rng(seed)
    sizes = [d, *widths, 1]
    Ws = tuple(rng.standard_normal((o, i)) / math.sqrt(i) for i, o in zip(sizes[:-1], sizes[1:]))
    bs = tuple(bias * rng.standard_normal(o) for o in sizes[1:-1]) + (np.zeros(1),)
    return Net(Ws, bs, tuple(RELU for _ in widths))


def lab_net(widths, seed):
    """A ReLU net (hidden ``widths``) trained by the lab to interpolate n=200 random signs on S^19."""
    import torch

    import robustlaw

    torch.set_num_threads(1)
    data = robustlaw.make_dataset(robustlaw.DataSpec(distribution="sphere", n=200, d=20, labels="signs"), seed=seed)
    model = robustlaw.mlp(20, widths, seed=seed)
    robustlaw.fit(model, data.X, data.y, robustlaw.FitSpec(target="interpolate", tol=0.1, max_steps=4000))
    from robustlaw.lipschitz.network import from_torch

    return from_torch(model), data.X, data.y


FAMILIES = {
    # name: (builder, domain, description)
    "tiny d=2 k=100": (lambda: gaussian_net(2, [100], 0), "global"),
    "tiny d=4 k=40": (lambda: gaussian_net(4, [40], 0), "global"),
    "tiny d=10 k=20": (lambda: gaussian_net(10, [20], 0), "global"),
    "medium d=50 k=200": (lambda: gaussian_net(50, [200], 0), "global"),
    "large d=100 k=1000": (lambda: gaussian_net(100, [1000], 0), "global"),
    "large d=784 k=2000": (lambda: gaussian_net(784, [2000], 0), "global"),
    "deep 20-64-64-64-1": (lambda: gaussian_net(20, [64, 64, 64], 0), "global"),
    "lab d=20 k=20 (trained)": (lambda: lab_net([20], 0), "ball:1"),
    "lab d=20 k=80 (trained)": (lambda: lab_net([80], 0), "ball:1"),
    "lab deep 20-64-64-1 (trained)": (lambda: lab_net([64, 64], 0), "ball:1"),
    "lab deep 20-64-64-1 (trained), r=0.1": (lambda: lab_net([64, 64], 0), "local:0.1"),
}
QUICK = ["tiny d=2 k=100", "tiny d=4 k=40", "medium d=50 k=200", "deep 20-64-64-64-1", "lab d=20 k=20 (trained)"]

# (method, kind) kind: "upper" certificate, "lower" attained value, "estimate" uncertified
METHODS = [("robustlaw", "bracket"), ("robustlaw 5 s", "bracket"), ("spectral product", "upper"),
           ("LipSDP-Neuron (CVXOPT)", "upper"),
           ("ECLipsE-Fast", "upper"), ("ECLipsE", "upper"), ("random gradients (BLN20, 10^5 pts)", "lower"),
           ("CLEVER (ART)", "estimate"), ("all-pattern max (bit-flip search)", "floor"),
           ("independent search (robustlaw.testing, 50k pts)", "lower")]
#: methods run unless --methods names them (the 5 s bracket and the independent search are law_bench's)
DEFAULT_METHODS = [m for m in METHODS if m[0] not in ("robustlaw 5 s", "independent search (robustlaw.testing, 50k pts)")]


def _build(family):
    built = FAMILIES[family][0]()
    return (built, None, None) if not isinstance(built, tuple) else built


def _job(family, method, time_limit, queue):
    import torch

    torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    import peers

    net, X, y = _build(family)
    domain_text = FAMILIES[family][1]
    radius = float(domain_text.split(":")[1]) if ":" in domain_text else None
    local = domain_text.startswith("local:")
    start = time.perf_counter()
    out = {}
    try:
        if method.startswith("robustlaw"):
            from robustlaw.lipschitz import LocalBalls, certify, parse_domain

            domain = LocalBalls(radius, X) if local else parse_domain(domain_text)
            b = certify(net, domain, X, y, time_limit=5.0 if method == "robustlaw 5 s" else time_limit)
            out = {"lower": b.lower, "upper": b.upper, "exact": b.exact, "how": f"{b.lower_method} / {b.upper_method}"}
        elif method == "spectral product":
            out = {"upper": peers.spectral_product(net)}
        elif method.startswith("LipSDP"):
            if sum(net.widths) > 260:
                out = {"skipped": "size^3.7: minutes to hours"}
            else:
                out = {"upper": peers.lipsdp_neuron(net)}
        elif method == "ECLipsE-Fast":
            out = {"upper": peers.eclipse(net, fast=True)}
        elif method == "ECLipsE":
            if max(net.widths) > 64:
                out = {"skipped": "too slow at this width"}
            else:
                out = {"upper": peers.eclipse(net, fast=False)}
        elif method.startswith("random"):
            out = {"lower": peers.random_gradients(net, 100_000, radius=radius or 1.0, ball=radius is not None,
                                                   centres=X if local else None)}
        elif method.startswith("all-pattern"):
            out = ({"upper": peers.all_pattern_floor(net), "how": "what no pattern-relaxing certificate can beat"}
                   if net.depth > 2 else {"skipped": "deep nets only"})
        elif method.startswith("independent search"):
            from robustlaw.lipschitz import parse_domain
            from robustlaw.testing import Case, steepest_found

            case = Case(family, net.to_torch(), parse_domain(domain_text))
            out = {"lower": steepest_found(case, samples=50_000, rounds=6)[0]}
        elif method.startswith("CLEVER"):
            out = {"estimate": peers.clever(net, radius=radius or 1.0)} if not local else {"skipped": "one ball only"}
    except ImportError as error:
        out = {"skipped": f"not installed ({error.name})"}
    except Exception as error:  # a peer failing is a result, not a crash
        out = {"skipped": f"{type(error).__name__}: {str(error)[:60]}"}
    out["seconds"] = time.perf_counter() - start
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(out)


def run(family, method, time_limit, wall=300):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_job, args=(family, method, time_limit, queue))
    proc.start()
    proc.join(wall)
    if proc.is_alive():
        proc.terminate()
        proc.join()
        return {"skipped": f"over {wall} s"}
    return queue.get() if not queue.empty() else {"skipped": f"crashed (exit {proc.exitcode})"}


def fmt(v, digits=4):
    return "" if v is None else (f"{v:.{digits}g}" if isinstance(v, float) else str(v))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the small families")
    parser.add_argument("--families", nargs="*", default=None)
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--time-limit", type=float, default=30.0, help="robustlaw's time limit per net")
    parser.add_argument("--out", type=Path, default=HERE / "lip_results.md")
    args = parser.parse_args()
    families = args.families or (QUICK if args.quick else list(FAMILIES))
    methods = [m for m in METHODS if any(m[0].startswith(x) for x in args.methods)] if args.methods else DEFAULT_METHODS
    lines = ["| family | domain | method | lower | upper / estimate | upper/lower (vs best lower) | exact | time s | "
             "peak MB | notes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for family in families:
        results = {name: run(family, name, args.time_limit) for name, _ in methods}
        best_lower = max([r.get("lower", 0.0) for r in results.values()] + [1e-300])
        for (name, kind), r in zip(methods, results.values()):
            up = r.get("upper", r.get("estimate"))
            ratio = f"{up / best_lower:.4g}" if up is not None and kind != "estimate" and best_lower > 1e-300 else ""
            row = [family, FAMILIES[family][1], name, fmt(r.get("lower"), 6), fmt(up, 6), ratio,
                   {True: "yes", False: "no"}.get(r.get("exact"), ""), fmt(r.get("seconds"), 3),
                   fmt(r.get("peak_mb"), 4), r.get("skipped", r.get("how", ""))]
            lines.append("| " + " | ".join(row) + " |")
            print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"table: {args.out}")


if __name__ == "__main__":
    main()
