"""Certified Lipschitz brackets [lower, upper] for networks on a stated domain.

``lower`` is an exact gradient norm attained at ``witness`` (a point of the domain), ``upper`` a
certificate no point can exceed. See :mod:`.lower`, :mod:`.upper` and :mod:`.domain`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from robustlaw.errors import RobustlawError
from robustlaw.lipschitz.domain import Domain
from robustlaw.lipschitz.exact import exact_two_layer
from robustlaw.lipschitz.lower import gradient_norms, mean_gradient_norm, search_lower, walk_grids, walk_regions, witness_norm
from robustlaw.lipschitz.files import load_model, load_npz
from robustlaw.lipschitz.network import Net, as_net, from_torch
from robustlaw.lipschitz.upper import upper_bound


@dataclass(frozen=True)
class Bracket:
    """lower <= Lip(f on domain) <= upper, with the point attaining ``lower`` and the methods used."""

    lower: float
    upper: float
    witness: np.ndarray
    lower_method: str
    upper_method: str
    domain: str
    seconds: float
    details: dict = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return bool(self.upper <= self.lower * (1 + 1e-6))

    @property
    def ratio(self) -> float:
        return self.upper / self.lower if self.lower > 0 else float("inf")

    def to_dict(self) -> dict:
        return {"lower": self.lower, "upper": self.upper, "ratio": self.ratio, "exact": self.exact,
                "witness": [float(v) for v in self.witness], "lower_method": self.lower_method,
                "upper_method": self.upper_method, "domain": self.domain, "seconds": self.seconds,
                **{k: v for k, v in self.details.items() if k not in ("lower", "upper", "witness")}}


def _domain_balls(domain: Domain, d: int):
    """The balls whose union is the domain (None radius: R^d); a sphere is covered by its ball."""
    if domain.kind == "global":
        return [(None, None)]
    if domain.kind == "local":
        return [(np.asarray(p, dtype=float), domain.radius) for p in domain.points]
    c = None if domain.center is None or domain.kind == "sphere" else np.asarray(domain.center, dtype=float)
    return [(c, domain.radius)]


def _certify_module(model, own_bound, domain: Domain, X, y, seed: int, start: float) -> Bracket:
    """Bracket for a differentiable module that is no Sequential: gradient search below, its own certificate above."""
    if X is None:
        raise RobustlawError(f"{type(model).__name__} is not a Sequential: certify it with its data X")
    low = search_lower(model, domain, X, y, seed=seed)
    value, method = own_bound(domain)
    return Bracket(lower=low.value, upper=value, witness=low.witness, lower_method=low.method,
                   upper_method=method, domain=domain.describe(), seconds=time.perf_counter() - start)


def certify(model, domain: Domain | None = None, X: np.ndarray | None = None, y: np.ndarray | None = None,
            seed: int = 0, time_limit: float | None = 60.0, threads: int | None = 1) -> Bracket:
    """A Lipschitz bracket for ``model`` on ``domain`` (default: R^d), searching near data ``X``.

    ``model``: a robustlaw model, a ``torch.nn.Sequential`` of Linear layers and activations with one
    output, a :class:`Net`, or a path to an ``.npz`` file. ``lower`` is the float64 gradient norm at
    ``witness`` (a point of the domain); ``upper`` is a certificate. Two-layer ReLU nets are solved
    exactly when their activation patterns can be covered in time; otherwise the bracket is the best
    found before ``time_limit`` seconds. With ``time_limit=None`` every search runs a fixed number of
    rounds instead, so the same model, data and seed give the same bracket (what sweeps use).
    """
    if threads is not None:
        # many small eigen-problems and LPs: one BLAS thread is faster than two fighting on a loaded box
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with threadpool_limits(threads):
                return certify(model, domain, X, y, seed=seed, time_limit=time_limit, threads=None)
        finally:
            torch.set_num_threads(torch_threads)
    start = time.perf_counter()
    # keep a little of the budget for assembling the answer
    deadline = start + 0.97 * time_limit if time_limit else math.inf
    domain = domain or Domain()
    # a model may carry its own sound certificate (robustlaw.constructions: RBFs, McShane, caps)
    own_bound = getattr(model, "lipschitz_upper_bound", None)
    if own_bound is not None and not isinstance(model, torch.nn.Sequential):
        return _certify_module(model, own_bound, domain, X, y, seed, start)
    net = as_net(model)
    if domain.center is not None and np.shape(domain.center) != (net.d,):
        raise RobustlawError(f"the domain centre has shape {np.shape(domain.center)}, the network takes {net.d} inputs")
    if domain.points is not None and np.shape(domain.points)[1] != net.d:
        raise RobustlawError(f"the local domain's points have {np.shape(domain.points)[1]} coordinates, "
                             f"the network takes {net.d} inputs")
    if X is not None and np.shape(X)[1] != net.d:
        raise RobustlawError(f"the data have {np.shape(X)[1]} coordinates, the network takes {net.d} inputs")
    rng = np.random.default_rng([seed, 0xC3])
    lowers: list[tuple[float, np.ndarray, str]] = []
    uppers: list[tuple[float, str]] = [tuple(own_bound(domain))] if own_bound is not None else []
    details: dict = {"network": net.describe()}

    def add_lower(x, method):
        if x is not None and domain.contains(x):
            lowers.append((witness_norm(net, x, domain), np.asarray(x, dtype=float), method))

    # 1. exact pattern covering for two-layer ReLU / LeakyReLU nets
    if net.is_two_layer_pwl:
        phase = time.perf_counter()
        exact = _exact_phase(net, domain, deadline=start + 0.7 * (deadline - start))
        if exact is not None:
            uppers.append((exact.upper * (1 + 1e-9), exact.method))
            details["exact_info"] = exact.info
            for x in exact.witnesses:
                add_lower(x, exact.method)
        details["exact_seconds"] = time.perf_counter() - phase
    lower_now = max((v for v, _, _ in lowers), default=-1.0)
    upper_now = min((v for v, _ in uppers), default=math.inf)
    if not upper_now <= lower_now * (1 + 1e-6):
        # 2. lower-bound search: data, between data, smoothed ascent, exact walks over regions
        phase = time.perf_counter()
        low = search_lower(net.to_torch(torch.float64), domain, X, y, seed=seed,
                           ascent_steps=100 if deadline - time.perf_counter() > 5 else 20,
                           deadline=time.perf_counter() + 0.3 * (deadline - time.perf_counter()))
        add_lower(low.witness, low.method)
        if time.perf_counter() < deadline:
            best = [w for _, w, _ in sorted(lowers, key=lambda t: -t[0])[:4]]
            if net.is_two_layer_pwl and domain.kind != "sphere":
                found, details["line_walk_rounds"] = walk_regions(net, domain, X, best, rng, deadline)
            else:
                found = walk_grids(net, domain, best, rng, deadline)
            for x, method in found:
                add_lower(x, method)
        details["search_seconds"] = time.perf_counter() - phase
        # 3. certified upper bounds
        phase = time.perf_counter()
        # on a local domain the per-ball bounds say where to search again: keep time for it
        upper_end = deadline if domain.kind != "local" else phase + 0.8 * (deadline - phase)
        up = upper_bound(net, domain, deadline=upper_end, split=1 if time_limit is None or time_limit >= 2 else 0)
        uppers.append((up.value, up.method))
        details["upper_seconds"] = time.perf_counter() - phase
        for x, method in _walk_balls(net, up.steepest[:4], X, lowers, rng, deadline):
            add_lower(x, method)
    lower, witness, lower_method = max(lowers, key=lambda t: t[0]) if lowers else (0.0, np.zeros(net.d), "none")
    upper, upper_method = min(uppers, key=lambda t: t[0])
    return Bracket(lower=lower, upper=upper, witness=witness, lower_method=lower_method, upper_method=upper_method,
                   domain=domain.describe(), seconds=time.perf_counter() - start, details=details)


def _walk_balls(net: Net, balls, X, lowers, rng: np.random.Generator, deadline: float):
    """Region walks inside the given balls (the steepest of a local domain by their upper bounds), from the
    best point found there so far and the centre; a few rounds each."""
    found = []
    for ball in balls:
        if time.perf_counter() > deadline:
            break
        best = [w for _, w, _ in sorted(lowers, key=lambda t: -t[0]) if ball.contains(w)][:1] + [ball.center]
        if net.is_two_layer_pwl:
            found += walk_regions(net, ball, X, best, rng, deadline, max_rounds=5)[0]
        else:
            found += walk_grids(net, ball, best, rng, deadline, max_rounds=5)
    return found


@dataclass(frozen=True)
class _Exact:
    upper: float
    method: str
    info: dict
    witnesses: list


def _exact_phase(net: Net, domain: Domain, deadline: float) -> _Exact | None:
    """The exact maximum over every ball of the domain, or None if any ball's patterns were not covered."""
    results = []
    for c, r in _domain_balls(domain, net.d):
        res = exact_two_layer(net, c, r, deadline=deadline)
        if res is None or not res.complete:
            return None
        results.append(res)
    best = max(results, key=lambda t: t.upper)
    # on a sphere the exact maximiser is a ball point, not a sphere point: no witness from it
    witnesses = [res.witness for res in results] if domain.kind != "sphere" else []
    return _Exact(best.upper, best.method, best.info, witnesses)

__all__ = ["Bracket", "Domain", "Net", "as_net", "certify", "exact_two_layer", "from_torch", "gradient_norms",
           "load_model", "load_npz", "mean_gradient_norm", "search_lower", "upper_bound", "witness_norm"]
