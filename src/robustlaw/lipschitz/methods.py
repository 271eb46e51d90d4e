"""Lipschitz methods as plug-ins: one protocol, one registry, the built-in methods registered.

A method has a ``name``, a ``side`` (``exact``, ``lower`` or ``upper``), a ``stage`` (the order in
which :func:`robustlaw.certify` folds over the methods: exact solvers, searches, walks, certificates,
refinements), ``applies(problem)`` and ``run(problem, budget) -> list[Bound]``. A lower bound is a
witness point (its value is recomputed in float64 by the fold, and the point must lie in the domain);
an upper bound is a value no point of the domain can exceed. Every upper-bound method must pass
:func:`robustlaw.testing.check_upper_bound`.

Add a certificate::

    from robustlaw.lipschitz.methods import METHODS, UpperCertificate

    METHODS.register("frobenius", UpperCertificate("frobenius", lambda net, boxes, budget: ...))

Turn methods off or on by name: ``certify(..., methods=[...])``, ``robustlaw lip --method NAME``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from robustlaw.lipschitz import exact, lower, upper
from robustlaw.lipschitz.domain import Domain
from robustlaw.lipschitz.network import Net
from robustlaw.registry import Registry

Array = np.ndarray


@dataclass(frozen=True)
class Bound:
    """One result of a method: an upper bound (``value``) or a lower bound attained at ``witness``.
    ``steepest``: for bounds taken piece by piece, the pieces in decreasing order of their own bound."""

    side: str
    value: float
    method: str
    witness: Array | None = None
    steepest: tuple[Domain, ...] = ()
    info: dict = field(default_factory=dict)


#: a conservative rate of float64 work on one thread of this kind of machine (flop/s): a step whose
#: estimated cost does not fit the time left at this rate is skipped or done cheaply under a time limit
FLOP_RATE = 5e9

#: the fraction of the time left that each step of :func:`certify` may use (``Budget.until``)
SHARES = {"exact": 0.7, "search": 0.3, "upper": 1.0, "upper-local": 0.8, "per-ball": 0.7}


class Budget:
    """How long certification may take: ``time_limit`` seconds (anytime: each step stops at its share of
    what is left, :data:`SHARES`), or None for a fixed effort (a fixed number of search rounds and solver
    iterations, so the same model, data and seed give the same bracket)."""

    def __init__(self, time_limit: float | None, split: int | None = None):
        self.start = time.perf_counter()
        self.fixed = time_limit is None
        # keep a little of the budget for assembling the answer
        self.deadline = self.start + 0.97 * time_limit if time_limit else math.inf
        #: neurons to branch on in the certificates (by default none when the time is very short)
        self.split = (1 if time_limit is None or time_limit >= 2 else 0) if split is None else split

    def until(self, share: str, deadline: float | None = None) -> float:
        """The deadline of a step that may use :data:`SHARES` [share] of the time left before ``deadline``."""
        end = self.deadline if deadline is None else deadline
        if not math.isfinite(end):
            return math.inf
        now = time.perf_counter()
        return now + SHARES[share] * (end - now)

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def affords(self, flops: float, deadline: float | None = None) -> bool:
        """Does work of ``flops`` fit before ``deadline`` (default: the end)? Always, with a fixed effort."""
        return self.fixed or flops <= FLOP_RATE * ((self.deadline if deadline is None else deadline) - time.perf_counter())

    def expired(self) -> bool:
        return time.perf_counter() > self.deadline


@dataclass
class Problem:
    """What the methods share: the model (as given and as a float64 :class:`Net` if it is one), the
    domain, the data to search near, the search's random stream, and the bounds found so far."""

    model: Any
    net: Net | None
    domain: Domain
    X: Array | None
    y: Array | None
    seed: int
    rng: np.random.Generator
    enabled: frozenset[str] = frozenset()
    lowers: list[Bound] = field(default_factory=list)
    uppers: list[Bound] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)

    @cached_property
    def torch_model(self) -> torch.nn.Module:
        """The model to differentiate with autograd (float64)."""
        return self.net.to_torch(torch.float64) if self.net is not None else self.model

    def best_points(self, count: int = 4) -> list[Array]:
        return [b.witness for b in sorted(self.lowers, key=lambda b: -b.value)[:count]]

    @property
    def lower(self) -> float:
        return max((b.value for b in self.lowers), default=-1.0)

    @property
    def upper(self) -> float:
        return min((b.value for b in self.uppers), default=math.inf)

    @property
    def settled(self) -> bool:
        """Is the bracket exact already?"""
        return self.upper <= self.lower * (1 + 1e-6)

    def steepest(self) -> tuple[Domain, ...]:
        return next((b.steepest for b in self.uppers if b.steepest), ())


@runtime_checkable
class LipschitzMethod(Protocol):
    """See the module docstring."""

    name: str
    side: str
    stage: int

    def applies(self, problem: Problem) -> bool: ...

    def run(self, problem: Problem, budget: Budget) -> list[Bound]: ...


METHODS: Registry[LipschitzMethod] = Registry("Lipschitz method", "--method")

#: the order in which :func:`certify` runs the methods: structural certificates (cheap, and exact on the
#: constructions they read) before the general relaxations, so a bracket they settle costs no SDP
STAGE_NAMES = ("exact", "search", "walk", "structure", "certificate", "refine")
EXACT, SEARCH, WALK, STRUCTURE, CERTIFICATE, REFINE = range(len(STAGE_NAMES))


# ----------------------------------------------------------------------------- exact


class ExactTwoLayer:
    """Exact value of a two-layer ReLU / LeakyReLU net by covering its activation patterns, ball by
    ball of the domain (:mod:`.exact`); it gives up (no bound) when the patterns cannot be covered."""

    name, side, stage = "exact", "exact", EXACT

    def applies(self, problem: Problem) -> bool:
        return problem.net is not None and problem.net.is_two_layer_pwl

    def run(self, problem: Problem, budget: Budget) -> list[Bound]:
        deadline = budget.until("exact")
        if not (budget.fixed or exact.may_cover(problem.net) or budget.affords(upper.svd_flops(problem.net), deadline)):
            return []  # too many neurons to cover, and no time even to reduce the problem
        balls = problem.domain.covering_balls()
        results = []
        for c, r in [(None, None)] if balls is None else [(b.center, b.radius) for b in balls]:
            res = exact.exact_two_layer(problem.net, c, r, deadline=deadline)
            if res is None or not res.complete:
                return []
            results.append(res)
        best = max(results, key=lambda t: t.upper)
        problem.details["exact_info"] = best.info
        out = [Bound("upper", best.upper * (1 + 1e-9), best.method)]
        # on a sphere the exact maximiser is a point of the ball, not of the sphere: no witness from it
        if problem.domain.solid:
            out += [Bound("lower", math.nan, best.method, witness=res.witness) for res in results]
        return out


# ----------------------------------------------------------------------------- lower: searches and walks


class GradientSearch:
    """Gradient norms at the data, near it, between points of opposite labels and at random points, then
    ascent on smoothed copies of the network (:func:`.lower.search_lower`)."""

    name, side, stage = "gradient-search", "lower", SEARCH

    def applies(self, problem: Problem) -> bool:
        return problem.net is not None or problem.X is not None

    def run(self, problem: Problem, budget: Budget) -> list[Bound]:
        steps = 100 if budget.fixed or budget.left() > 5 else 20
        deadline = budget.until("search")
        # under a time limit, as many candidate points as fit in the search's share (512 with a fixed effort)
        per_point = 60.0 * sum(p.numel() for p in problem.torch_model.parameters())
        count = 512 if budget.fixed else int(np.clip(FLOP_RATE * (deadline - time.perf_counter()) / (8 * per_point), 8, 512))
        low = lower.search_lower(problem.torch_model, problem.domain, problem.X, problem.y, seed=problem.seed,
                                 count=count, ascent_starts=min(32, count // 4), ascent_steps=steps, deadline=deadline)
        return [Bound("lower", low.value, low.method, witness=low.witness)]


class LineWalk:
    """Exact line scans across the activation regions of a two-layer piecewise-linear net, hill-climbing
    from the best points so far (:func:`.lower.walk_regions`)."""

    name, side, stage = "line-walk", "lower", WALK

    def applies(self, problem: Problem) -> bool:
        return problem.net is not None and problem.net.is_two_layer_pwl and problem.domain.solid

    def run(self, problem: Problem, budget: Budget) -> list[Bound]:
        if budget.expired():
            return []
        found, problem.details["line_walk_rounds"] = lower.walk_regions(
            problem.net, problem.domain, problem.X, problem.best_points(), problem.rng, budget.deadline)
        return [Bound("lower", math.nan, method, witness=x) for x, method in found]


class RegionWalk:
    """Exact line scans for deep piecewise-linear nets, sampled lines for smooth nets or on a sphere
    (:func:`.lower.walk_grids`)."""

    name, side, stage = "region-walk", "lower", WALK

    def applies(self, problem: Problem) -> bool:
        return problem.net is not None and not LineWalk().applies(problem)

    def run(self, problem: Problem, budget: Budget) -> list[Bound]:
        net = problem.net
        if not budget.affords(8.0 * sum(net.widths) * sum(W.size for W in net.weights)):  # a few line scans
            return []
        found = lower.walk_grids(problem.net, problem.domain, problem.best_points(), problem.rng, budget.deadline)
        return [Bound("lower", math.nan, method, witness=x) for x, method in found]


class BallWalk:
    """Walks inside the steepest pieces of a domain certified piece by piece, from the best point found
    there so far and the piece's centre; a few rounds each."""

    name, side, stage = "ball-walk", "lower", REFINE

    def applies(self, problem: Problem) -> bool:
        return problem.net is not None and problem.domain.per_ball

    def run(self, problem: Problem, budget: Budget) -> list[Bound]:
        found, net = [], problem.net
        for ball in problem.steepest()[:4]:
            if budget.expired():
                break
            best = [w for w in problem.best_points(len(problem.lowers)) if ball.contains(w)][:1] + [ball.center]
            if net.is_two_layer_pwl:
                found += lower.walk_regions(net, ball, problem.X, best, problem.rng, budget.deadline, max_rounds=5)[0]
            else:
                found += lower.walk_grids(net, ball, best, problem.rng, budget.deadline, max_rounds=5)
        return [Bound("lower", math.nan, method, witness=x) for x, method in found]


class AnytimeWalk:
    """Under a time limit, the time the other steps left is not wasted: more rounds of the region walks
    (:func:`.lower.walk_regions` for two-layer piecewise-linear nets on solid domains, :func:`.lower.walk_grids`
    otherwise) from the best points so far and fresh random starts, until the deadline or an exact bracket.
    With a fixed effort (sweeps) it does nothing, so records stay reproducible and sweeps no slower."""

    name, side, stage = "anytime-walk", "lower", REFINE

    def applies(self, problem: Problem) -> bool:
        return problem.net is not None

    def run(self, problem: Problem, budget: Budget) -> Iterator[Bound]:
        """Yields each round's points as it ends, so the fold keeps them at once: the next round starts
        from them, and the loop sees the bracket settle."""
        net, rounds, regions = problem.net, 0, LineWalk().applies(problem)
        problem.details["anytime_walk_rounds"] = 0
        while not (budget.fixed or problem.settled) and budget.left() > 0.5:
            best = problem.best_points()
            if regions:
                found = lower.walk_regions(net, problem.domain, problem.X, best, problem.rng, budget.deadline)[0]
            else:
                found = lower.walk_grids(net, problem.domain, best, problem.rng, budget.deadline)
            rounds += 1
            problem.details["anytime_walk_rounds"] = rounds
            yield from (Bound("lower", math.nan, method, witness=x) for x, method in found)


# ----------------------------------------------------------------------------- upper: certificates


@dataclass(frozen=True)
class Effort:
    """What a certificate may spend on one domain: a ``deadline``, ``split`` neurons to branch on, ``iters``
    solver iterations, and the network's slope ``boxes`` on the domain (computed once per domain)."""

    deadline: float = math.inf
    split: int = 0
    iters: int = 1000
    boxes: list | None = None

    def affords(self, flops: float) -> bool:
        """Does work of ``flops`` fit before the deadline (at :data:`FLOP_RATE`)? Always without one."""
        return flops <= FLOP_RATE * (self.deadline - time.perf_counter())


@dataclass
class UpperCertificate:
    """A certificate of a network on a domain: ``fn(net, domain, effort) -> float`` (see :class:`Effort`).
    ``when(net)`` says which networks it applies to; ``fallback_for`` names a certificate it only stands in
    for (it runs where that one gave no finite bound). ``stage``: :data:`STRUCTURE` for cheap certificates
    that read a network's structure. A certificate does not run once the bracket is exact. Registered
    certificates are also what a domain certified piece by piece (local balls) uses on each piece."""

    name: str
    fn: Any
    when: Any = None
    fallback_for: str | None = None
    stage: int = CERTIFICATE
    side: ClassVar[str] = "upper"

    def applies(self, problem: Problem) -> bool:
        return problem.net is not None and (self.when is None or self.when(problem.net))

    def value(self, problem: Problem, domain: Domain, effort: Effort) -> float:
        """The certified value on ``domain``, with float64 slack; inf for a NaN."""
        value = self.fn(problem.net, domain, Effort(effort.deadline, effort.split, effort.iters,
                                                    boxes_of(problem, domain)))
        return (math.inf if math.isnan(value) else float(value)) * (1 + 1e-9)

    def run(self, problem: Problem, budget: Budget) -> list[Bound]:
        if self.fallback_for and any(b.method == self.fallback_for and math.isfinite(b.value) for b in problem.uppers):
            return []
        effort = Effort(budget.until("upper-local" if problem.domain.per_ball else "upper"), budget.split)
        return [Bound("upper", self.value(problem, problem.domain, effort), self.name)]


def boxes_of(problem: Problem, domain: Domain) -> list:
    """The slope boxes of the problem's network on ``domain``, computed once per domain."""
    if id(domain) not in problem.cache:
        problem.cache[id(domain)] = (domain, upper.slope_boxes(problem.net, domain))
    return problem.cache[id(domain)][1]


def _two_layer(net: Net) -> bool:
    return net.depth == 2


def _deep(net: Net) -> bool:
    return net.depth > 2


def _spectral(net: Net, domain: Domain, effort: Effort) -> float:
    return upper.spectral_bound(net, effort.boxes, exact=effort.affords(upper.svd_flops(net)))


def _path(net: Net, domain: Domain, effort: Effort) -> float:
    return upper.path_bound(net, effort.boxes)


def _shor(net: Net, domain: Domain, effort: Effort) -> float:
    if not effort.affords(30.0 * net.d**3):  # a few eigen-decompositions in the gradient's space
        return math.inf
    g0, D = upper.all_pattern_parts(net, effort.boxes)
    if not (np.isfinite(D).all() and np.isfinite(g0).all()):
        return math.inf
    return upper.shor_bound(g0, D, effort.deadline, split=effort.split)


def _lipsdp(net: Net, domain: Domain, effort: Effort) -> float:
    if not effort.affords(30.0 * (net.d + sum(net.widths)) ** 3):  # a few eigen-decompositions of the matrix
        return math.inf
    return upper.lipsdp_branch_bound(net, effort.boxes, effort.deadline, branches=4 * effort.split, iters=effort.iters)


def _shor_tail(net: Net, domain: Domain, effort: Effort) -> float:
    if not effort.affords(upper.svd_flops(net) + 30.0 * net.widths[-2] ** 3):
        return math.inf
    return upper.tail_shor_bound(net, effort.boxes, effort.deadline, effort.split)


def piece_bound(problem: Problem, piece: Domain, effort: Effort) -> tuple[float, str]:
    """The best enabled certificate of the problem's network on one piece of its domain (a fallback only
    where the certificate it stands in for gave no finite bound, as on the whole domain)."""
    found: dict[str, float] = {}
    for method in METHODS.values():
        if not (isinstance(method, UpperCertificate) and method.name in problem.enabled and method.applies(problem)):
            continue
        if method.fallback_for and math.isfinite(found.get(method.fallback_for, math.inf)):
            continue
        found[method.name] = method.value(problem, piece, effort)
    return min(((v, k) for k, v in found.items()), key=lambda t: t[0], default=(math.inf, "none"))


class PerBall:
    """On a domain that is a union of balls: the largest over the balls of each ball's best certificate,
    refined in passes of growing effort (the spectral bound of every ball, then the full bound with 30 and
    with 1000 LipSDP iterations: 30 is within ~0.5% at a sixth of the cost). Each pass takes the balls in
    decreasing order of their bound so far and stops when the rest cannot matter or at the deadline (their
    previous bound stands). No neuron branching per ball: many balls, little gain each."""

    name, side, stage = "per-ball", "upper", CERTIFICATE

    def applies(self, problem: Problem) -> bool:
        return problem.net is not None and problem.domain.per_ball

    def run(self, problem: Problem, budget: Budget) -> list[Bound]:
        deadline = budget.until("per-ball", budget.until("upper-local"))
        balls = problem.domain.covering_balls()
        bounds = np.array([upper.spectral_bound(problem.net, boxes_of(problem, b)) for b in balls])
        methods = ["spectral"] * len(balls)
        for iters in (30, 1000):
            refined = 0.0
            for i in np.argsort(-bounds):
                if bounds[i] <= refined or time.perf_counter() > deadline:
                    break
                value, method = piece_bound(problem, balls[i], Effort(deadline, 0, iters))
                if value < bounds[i]:
                    bounds[i], methods[i] = value, method
                refined = max(refined, bounds[i])
        order = np.argsort(-bounds)
        return [Bound("upper", float(bounds[order[0]]) * (1 + 1e-9), f"per-ball {methods[order[0]]}",
                      steepest=tuple(balls[i] for i in order[:8]))]


METHODS.register("exact", ExactTwoLayer())
METHODS.register("gradient-search", GradientSearch())
METHODS.register("line-walk", LineWalk())
METHODS.register("region-walk", RegionWalk())
# per ball first: on a local domain it is the bound that matters, and it gets the larger share of the time
METHODS.register("per-ball", PerBall())
METHODS.register("spectral", UpperCertificate("spectral", _spectral))
METHODS.register("path", UpperCertificate("path", _path, _two_layer))
METHODS.register("shor", UpperCertificate("shor", _shor, _two_layer))
METHODS.register("lipsdp", UpperCertificate("lipsdp", _lipsdp, _deep))
METHODS.register("spectral+shor-tail", UpperCertificate("spectral+shor-tail", _shor_tail, _deep, fallback_for="lipsdp"))
METHODS.register("ball-walk", BallWalk())
METHODS.register("anytime-walk", AnytimeWalk())
