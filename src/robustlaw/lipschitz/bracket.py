"""certify(): a Lipschitz bracket [lower, upper] by folding over the registered Lipschitz methods.

``lower`` is an exact float64 gradient norm attained at ``witness`` (a point of the domain), ``upper``
the smallest certificate found. The methods run stage by stage (:mod:`.methods`): exact solvers first
(when one settles the bracket, nothing else runs), then gradient searches, region walks, certificates
and refinements, each within its share of the time limit (or with a fixed effort when there is none).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from robustlaw.errors import RobustlawError
from robustlaw.lipschitz.domain import Domain, Global
from robustlaw.lipschitz.lower import witness_norm
from robustlaw.lipschitz.methods import METHODS, STAGE_NAMES, Bound, Budget, Problem
from robustlaw.lipschitz.files import as_net
from robustlaw.lipschitz.network import Net, check_scale
from robustlaw.seeding import stream


class UnsoundBracket(RuntimeError):
    """A lower bound above an upper bound: a bug in a method, never a result."""


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


@contextlib.contextmanager
def limited_threads(count: int | None):
    """``count`` torch and BLAS threads inside (all of them if None). Many small eigen-problems and LPs: one
    thread is faster than two fighting on a loaded box, and a net trained on one thread is the same on any."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        with threadpool_limits(count):
            yield
    finally:
        torch.set_num_threads(before)


def certify(model, domain: Domain | None = None, X: np.ndarray | None = None, y: np.ndarray | None = None,
            seed: int = 0, time_limit: float | None = 60.0, threads: int | None = 1,
            methods: Iterable[str] | None = None, split: int | None = None, effort: int = 1,
            progress: Progress | None = None) -> Bracket:
    """A Lipschitz bracket for ``model`` on ``domain`` (default: R^d), searching near data ``X`` (n, d).

    ``model``: a robustlaw model, a ``torch.nn.Sequential`` of Linear layers and activations with one
    output, a :class:`Net`, a path to an ``.npz`` file, or any differentiable module (then ``X`` is
    needed, and the upper bound comes from a registered certificate for its class, else inf).
    ``time_limit`` seconds make the answer anytime; ``None`` runs a fixed effort instead, so the same
    model, data and seed give the same bracket (what sweeps use). ``methods``: the names of the
    registered methods to use (default: all that apply). ``split``: neurons the certificates branch on
    (default 1, or 0 under a time limit below 2 s). ``effort`` N (without a time limit): after the fixed
    effort, N - 1 further passes of the searches (:func:`_search_again`); still the same bracket for the
    same inputs and seed on any machine, and effort N's bracket lies inside effort N - 1's.
    ``progress(stage, method, lower, upper)`` is called after each method with the bracket so far.
    """
    if isinstance(model, nn.Module) and not isinstance(model, nn.Sequential) and X is None:
        raise RobustlawError(f"{type(model).__name__} is not a Sequential: certify it with its data X")
    if not (isinstance(effort, int) and effort >= 1):
        raise RobustlawError(f"effort must be an integer >= 1, got {effort!r}")
    if effort != 1 and time_limit is not None:
        raise RobustlawError("an effort scales the fixed work of a run without a time limit: give one or the other")
    if time_limit is not None:
        # torch.optim imports torch._dynamo at its first optimiser (seconds on a loaded machine): paid
        # before the clock starts, and only by a certification that has a clock
        import torch._dynamo  # noqa: F401
    with limited_threads(threads):
        budget = Budget(time_limit, split)
        problem = _problem(model, domain or Global(), X, y, seed, methods)
        _fold(problem, budget, progress)
        for seed_k in stream(seed, "effort").integers(2**62, size=effort)[1:]:
            _search_again(problem, budget, int(seed_k), progress)
        return _bracket(problem, budget)


def _problem(model, domain: Domain, X, y, seed: int, methods: Iterable[str] | None) -> Problem:
    enabled = frozenset(METHODS.names() if methods is None else methods)
    for name in enabled:
        METHODS.get(name)
    module = isinstance(model, nn.Module) and not isinstance(model, nn.Sequential)
    net, scale = (None, 1.0) if module else _rescaled(as_net(model))
    d = net.d if net is not None else (np.shape(X)[1] if X is not None else model.input_dim)
    domain.check_dim(d)
    if X is not None and np.shape(X)[1] != d:
        raise RobustlawError(f"the data have {np.shape(X)[1]} coordinates, the network takes {d} inputs")
    details = {"network": net.describe()} if net is not None else {}
    if scale != 1.0:
        details["scale"] = scale
    return Problem(model, net, domain, X, y, seed, stream(seed, "search"), enabled, details=details)


#: weights outside [1 / EXTREME, EXTREME] make float64 overflow or underflow on the way to a bound
EXTREME = 1e50


def _rescaled(net: Net) -> tuple[Net, float]:
    """The network itself, or (for extreme weights) an exactly rescaled copy and the factor c with
    f = c f' (:meth:`Net.balanced`): every bound of f' times c is the bound of f. One error line when
    even that cannot stay finite."""
    sizes = [float(np.abs(W).max()) for W in net.weights if W.size]
    if all(1 / EXTREME <= s <= EXTREME for s in sizes if s > 0):
        return net, 1.0
    return check_scale(net)


#: ``progress(stage, method, lower, upper)``: a method of that stage finished; the bracket so far
Progress = Callable[[str, str, float, float], None]


def _report(progress: Progress | None, problem: Problem, stage: int, method: str) -> None:
    if progress is not None:
        scale = problem.details.get("scale", 1.0)
        progress(STAGE_NAMES[stage], method, max(problem.lower, 0.0) * scale, problem.upper * scale)


def _fold(problem: Problem, budget: Budget, progress: Progress | None = None,
          sides: tuple[str, ...] = ("exact", "lower", "upper")) -> None:
    """Run the enabled methods of ``sides`` that apply, stage by stage, until the bracket is exact (every
    method of the first stage runs; after it, nothing runs on a settled bracket)."""
    stages = sorted({m.stage for m in METHODS.values()})
    for stage in stages:
        for method in METHODS.values():
            if problem.settled and stage != stages[0]:
                return
            if method.stage == stage and method.side in sides and _usable(problem, method):
                _run(problem, budget, method, progress)
        if problem.settled:
            return


def _search_again(problem: Problem, budget: Budget, seed: int, progress: Progress | None = None) -> None:
    """One more pass of the enabled lower-bound methods (searches, walks), from the streams of ``seed``
    and the best points so far; the certificates are not rerun (no randomness in them). Nothing found
    before is dropped, so each pass can only raise the lower bound. Nothing to do on a settled bracket."""
    problem.seed, problem.rng = seed, stream(seed, "search")
    _fold(problem, budget, progress, sides=("lower",))


def _usable(problem: Problem, method) -> bool:
    return method.name in problem.enabled and method.applies(problem)


def _run(problem: Problem, budget: Budget, method, progress: Progress | None) -> None:
    """Run one method: keep its bounds, add up its time, report the bracket so far."""
    start = time.perf_counter()
    for bound in method.run(problem, budget):
        _add(problem, bound)
    timings = problem.details.setdefault("seconds_by_method", {})
    timings[method.name] = timings.get(method.name, 0.0) + time.perf_counter() - start
    _report(progress, problem, method.stage, method.name)


def _add(problem: Problem, bound: Bound) -> None:
    """Keep an upper bound as it is; a lower bound only at a witness in the domain, its value recomputed
    there (in float64 for networks), so no method can claim more than its point shows."""
    problem.details.update(bound.info)
    if bound.side == "upper":
        problem.uppers.append(bound)
        return
    x = bound.witness
    if x is None or not problem.domain.contains(x):
        return
    x = np.asarray(x, dtype=float)
    value = witness_norm(problem.net, x, problem.domain) if problem.net is not None else bound.value
    problem.lowers.append(Bound("lower", value, bound.method, witness=x))


def _bracket(problem: Problem, budget: Budget) -> Bracket:
    d = problem.net.d if problem.net is not None else np.shape(problem.X)[1]
    low = max(problem.lowers, key=lambda b: b.value, default=Bound("lower", 0.0, "none", witness=np.zeros(d)))
    up = min(problem.uppers, key=lambda b: b.value, default=Bound("upper", math.inf, "none"))
    scale = problem.details.get("scale", 1.0)
    low, up = dataclasses.replace(low, value=low.value * scale), dataclasses.replace(up, value=up.value * scale)
    if low.value > up.value * (1 + 1e-9):
        raise UnsoundBracket(f"lower bound {low.value:.10g} ({low.method}) above upper bound {up.value:.10g} "
                             f"({up.method}) on {problem.domain.describe()}: a certificate is wrong; please report it")
    return Bracket(lower=low.value, upper=up.value, witness=low.witness, lower_method=low.method,
                   upper_method=up.method, domain=problem.domain.describe(),
                   seconds=time.perf_counter() - budget.start, details=problem.details)


def upper_bound(model, domain: Domain | None = None, time_limit: float | None = None,
                methods: Iterable[str] | None = None, split: int = 0) -> Bound:
    """The smallest registered certificate of ``model`` on ``domain`` alone (no search): a :class:`Bound`
    with ``value`` and ``method`` (``split``: neurons to branch on)."""
    with limited_threads(1):
        budget = Budget(time_limit, split)
        problem = _problem(model, domain or Global(), None, None, 0, methods)
        for method in METHODS.values():
            if method.side == "upper" and method.name in problem.enabled and method.applies(problem):
                problem.uppers += method.run(problem, budget)
    up = min(problem.uppers, key=lambda b: b.value, default=Bound("upper", math.inf, "none"))
    return Bound("upper", up.value, up.method, steepest=problem.steepest())


__all__ = ["Bracket", "UnsoundBracket", "certify", "upper_bound", "Net"]
