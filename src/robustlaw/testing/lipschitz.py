"""Conformance checks for Lipschitz methods: run them on your own method before you trust it.

The analogue of scikit-learn's ``check_estimator``: a fixed, seeded family of networks and domains
(:func:`cases`: two-layer and deep; ReLU, LeakyReLU with slopes below 0, in (0, 1) and above 1, tanh;
degenerate nets with dead, duplicated and cancelling neurons; a trained interpolating net; the papers'
constructions (caps, tensor interpolation with t^2, one bump per point, BS21's projection, McShane);
three linearised (NTK) nets, one with jumps (:func:`linearised_cases` has more);
on R^d, a ball, an off-centre ball, a sphere and local balls), and an independent search for steep points
(random points of the domain, then random local refinement around the steepest, all by float64
autograd: no code of robustlaw's own searches). A check fails with an ``AssertionError`` that names
the case and the point.

    from robustlaw.testing import check_upper_bound
    check_upper_bound(lambda model, domain: my_bound(model, domain))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robustlaw.lipschitz.domain import Ball, Domain, Global, LocalBalls, Sphere
from robustlaw.models import Network

UpperFn = Callable[[nn.Module, Domain], float]
LowerFn = Callable[[nn.Module, Domain], tuple[float, np.ndarray]]


@dataclass(frozen=True)
class Case:
    """One network on one domain; ``name`` says which (it appears in every failure message)."""

    name: str
    model: nn.Module
    domain: Domain

    def __repr__(self) -> str:
        return self.name


def _net(d: int, widths: list[int], act: Callable[[], nn.Module], seed: int, bias: float = 0.5) -> Network:
    """A float64 network d -> widths -> 1 with N(0, 1/fan_in) weights and N(0, bias^2) biases."""
    generator = torch.Generator().manual_seed(seed)
    sizes, layers = [d, *widths, 1], []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layer = nn.Linear(a, b, dtype=torch.float64)
        with torch.no_grad():
            layer.weight.normal_(0.0, 1 / math.sqrt(a), generator=generator)
            layer.bias.normal_(0.0, bias, generator=generator)
        layers += [layer] + ([act()] if i < len(widths) else [])
    return Network(*layers)


def _degenerate(seed: int) -> Network:
    """A two-layer ReLU net with a dead neuron, a duplicated neuron, and a neuron copied with its output
    weight negated (the pair cancels)."""
    net = _net(3, [6], nn.ReLU, seed)
    with torch.no_grad():
        W, b, a = net[0].weight, net[0].bias, net[2].weight
        W[0], b[0] = 0.0, -1.0  # dead
        W[1], b[1], a[0, 1] = W[2], b[2], a[0, 2]  # duplicate of neuron 2
        W[3], b[3], a[0, 3] = W[4], b[4], -a[0, 4]  # cancels neuron 4
    return net


def _trained(seed: int) -> Network:
    """A two-layer ReLU net fitted to random signs on the sphere (n = 24, d = 4), float64, on one thread (the
    same weights on any machine, and fast: threads only add overhead at this size)."""
    from robustlaw.lipschitz.bracket import limited_threads

    with limited_threads(1):
        return _fit_signs(seed)


def _fit_signs(seed: int) -> Network:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((24, 4))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = torch.as_tensor(rng.choice([-1.0, 1.0], size=24))
    net, Xt = _net(4, [24], nn.ReLU, seed, bias=0.1), torch.as_tensor(X)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(400):
        optimiser.zero_grad()
        loss = (net(Xt).squeeze(-1) - y).pow(2).mean()
        loss.backward()
        optimiser.step()
    return net


def _constructions() -> dict[str, tuple[nn.Module, list[Domain]]]:
    """The papers' interpolators on random signs on the sphere (n = 12, d = 16; tensor: d = 6)."""
    from robustlaw import constructions as C
    from robustlaw.data import sphere

    rng = np.random.default_rng(2020)
    X, y = sphere(12, 16, rng), rng.choice([-1.0, 1.0], size=12)
    small = sphere(8, 6, rng)
    return {
        "caps 16-12-1": (C.caps(X, y, offset=0.05), [Ball(1.0), Global()]),
        "tensor t^2 6-6-1": (C.tensor(small, y[:8]), [Ball(1.0)]),
        "rbf bumps": (C.rbf(X, y), [Ball(1.0)]),
        "projected rbf d'=4": (C.projected_rbf(X, y, 4), [Ball(1.0)]),
        "mcshane": (C.mcshane(X, y), [Ball(1.0)]),
    }


def cases() -> list[Case]:
    """The fixed family every check runs over (built fresh on each call; a few seconds)."""
    rng = np.random.default_rng(2021)
    local = LocalBalls(0.3, rng.standard_normal((3, 3)))
    shifted = Ball(0.5, center=np.array([0.4, -0.3, 0.2]))
    nets = {
        "relu 3-8-1": (_net(3, [8], nn.ReLU, 1), [Global(), Ball(1.0), Sphere(1.0), local]),
        "relu 3-12-10-1": (_net(3, [12, 10], nn.ReLU, 2), [Global(), shifted, local]),
        "leaky(0.1) 3-10-1": (_net(3, [10], lambda: nn.LeakyReLU(0.1), 3), [Global(), Ball(2.0)]),
        "leaky(3.0) 3-16-16-1": (_net(3, [16, 16], lambda: nn.LeakyReLU(3.0), 4), [Global(), Ball(1.0)]),
        "leaky(3.0) 3-10-1": (_net(3, [10], lambda: nn.LeakyReLU(3.0), 5), [Global(), Sphere(1.0)]),
        "leaky(-0.5) 3-8-8-1": (_net(3, [8, 8], lambda: nn.LeakyReLU(-0.5), 6), [Global(), shifted]),
        "tanh 3-10-10-1": (_net(3, [10, 10], nn.Tanh, 7, bias=1.0), [Global(), Ball(1.0), Sphere(1.0)]),
        "degenerate relu 3-6-1": (_degenerate(8), [Global(), Ball(1.0)]),
        "trained relu 4-24-1": (_trained(9), [Ball(1.0), Sphere(1.0)]),
        **_constructions(),
    }
    linearised = [c for c in linearised_cases() if c.name in LINEARISED_IN_CASES]
    assert len(linearised) == len(LINEARISED_IN_CASES), "a renamed linearised case would drop out of the family"
    return [Case(f"{name} on {domain.describe()}", model, domain) for name, (model, domains) in nets.items()
            for domain in domains] + linearised


#: the linearised (NTK) models the shared family holds (all of them: :func:`linearised_cases`)
LINEARISED_IN_CASES = ("ntk 3-12-1 a moved on ball(r=1)", "ntk 3-12-1 all moved on ball(r=1)",
                       "ntk t^2 3-10-1 all moved on ball(r=0.5, centre of norm 0.5385)")


def input_dim(model: nn.Module) -> int:
    """d of a model: its ``input_dim``, or the input width of its first Linear layer."""
    if hasattr(model, "input_dim"):
        return int(model.input_dim)
    return next(m for m in model.modules() if isinstance(m, nn.Linear)).in_features


def _grad_norms(model: nn.Module, domain: Domain, points: np.ndarray) -> np.ndarray:
    x = torch.as_tensor(points, dtype=torch.float64).requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).sum(), x)
    return domain.tangential(x.detach(), g).norm(dim=-1).numpy()


def steepest_found(case: Case, samples: int = 20_000, rounds: int = 4, seed: int = 0) -> tuple[float, np.ndarray]:
    """The largest gradient norm an independent search finds in the case's domain, and its point."""
    rng = np.random.default_rng(seed)
    d = input_dim(case.model)
    points = case.domain.sample(rng, samples, d)
    norms = _grad_norms(case.model, case.domain, points)
    scale = 1.0 if case.domain.bounding_ball(d) is None else case.domain.bounding_ball(d)[1]
    for step in 0.3 * scale * 0.3 ** np.arange(rounds):
        top = points[np.argsort(-norms)[:32]]
        moved = np.repeat(top, 64, axis=0) + step * rng.standard_normal((len(top) * 64, d))
        moved = case.domain.project(torch.as_tensor(moved)).numpy()
        points, norms = np.vstack([points, moved]), np.concatenate([norms, _grad_norms(case.model, case.domain, moved)])
    i = int(np.argmax(norms))
    return float(norms[i]), points[i]


def check_upper_bound(fn: UpperFn, family: list[Case] | None = None) -> None:
    """``fn(model, domain) -> float`` must be >= every gradient norm the independent search finds on every
    case (up to 1e-9 relative). Raises AssertionError naming the case and the point otherwise."""
    for case in (cases() if family is None else family):
        bound = float(fn(case.model, case.domain))
        found, point = steepest_found(case)
        if not found <= bound * (1 + 1e-9) + 1e-12:
            raise AssertionError(f"unsound upper bound on {case.name}: returned {bound:.10g}, but the gradient norm "
                                 f"at x = {np.array2string(point, precision=6)} is {found:.10g}")


def check_lower_bound(fn: LowerFn, family: list[Case] | None = None) -> None:
    """``fn(model, domain) -> (value, witness)``: the witness lies in the domain and the gradient norm there
    (float64 autograd, tangential on a sphere) reproduces the value to 1e-7 relative; an infinite value
    must be a point where the model jumps (:func:`jumps_at`)."""
    for case in (cases() if family is None else family):
        value, witness = fn(case.model, case.domain)
        witness = np.asarray(witness, dtype=float)
        if not case.domain.contains(witness):
            raise AssertionError(f"lower bound on {case.name}: witness {witness} lies outside the domain")
        if value == math.inf:
            if not jumps_at(case.model, witness):
                raise AssertionError(f"lower bound on {case.name}: claims inf, but the model does not jump at "
                                     f"{np.array2string(witness, precision=6)}")
            continue
        there = float(_grad_norms(case.model, case.domain, witness[None])[0])
        if abs(there - value) > 1e-7 * max(abs(value), 1e-12):
            raise AssertionError(f"lower bound on {case.name}: claims {value:.10g}, but the gradient norm at its "
                                 f"witness {np.array2string(witness, precision=6)} is {there:.10g}")


def jumps_at(model: nn.Module, x: np.ndarray, seed: int = 0) -> bool:
    """Is the model discontinuous at x? Along some of 64 random directions u the chord slope
    |f(x + t u) - f(x - t u)| / 2t grows like 1 / t (by more than 100 times from t = 1e-6 to t = 1e-9),
    which no Lipschitz function's can."""
    u = np.random.default_rng(seed).standard_normal((64, len(x)))
    u /= np.linalg.norm(u, axis=1, keepdims=True)

    def slopes(t):
        with torch.no_grad():
            ends = [model(torch.as_tensor(x + s * t * u, dtype=torch.float64)).numpy() for s in (1, -1)]
        return np.abs(ends[0] - ends[1]) / (2 * t)

    return bool((slopes(1e-9) > 100 * slopes(1e-6) + 1e-3).any())


def linearised_cases() -> list[Case]:
    """Linearised (NTK) two-layer nets (robustlaw.linearised). ReLU: at initialisation (continuous, equal to
    the net), with only the output weights moved (continuous), with every parameter moved (jumps across
    the initial hyperplanes), and moved but on a ball no moved neuron's hyperplane meets (affine there).
    t^2 (a quadratic polynomial): at initialisation and moved, on balls and R^d, and without biases
    (the gradient map is linear: the trust-region problem's hard case)."""
    from robustlaw.linearised import LinearisedTwoLayer
    from robustlaw.models import mlp

    out = []
    for name, moved, domains in (("at init", (), [Ball(1.0), Global()]), ("a moved", ("a",), [Ball(1.0), Global()]),
                                 ("all moved", ("W", "b", "a"), [Ball(1.0), Global()]),
                                 ("all moved, small ball", ("W", "b", "a"), [Ball(0.02, center=np.full(3, 0.6))])):
        model = LinearisedTwoLayer(mlp(3, [12], seed=11, dtype=torch.float64))
        head = model.a0
        with torch.no_grad():
            model.b0.copy_(torch.as_tensor(np.linspace(-1.5, 1.5, 12)))
            model.b.copy_(model.b0)
            for p in moved:
                getattr(model, p).add_(0.3 * torch.randn(getattr(model, p).shape, generator=torch.Generator().manual_seed(3),
                                                           dtype=head.dtype))
        out += [Case(f"ntk 3-12-1 {name} on {domain.describe()}", model, domain) for domain in domains]
    shifted = Ball(0.5, center=np.array([0.4, -0.3, 0.2]))
    for name, moved, bias in (("at init", (), 0.5), ("all moved", ("W", "b", "a"), 0.5),
                              ("W, a moved, no bias", ("W", "a"), 0.0)):
        model = LinearisedTwoLayer(mlp(3, [10], activation="poly", q=2, seed=12, dtype=torch.float64))
        with torch.no_grad():
            model.b0.mul_(bias)
            model.b.copy_(model.b0)
            for p in moved:
                getattr(model, p).add_(0.3 * torch.randn(getattr(model, p).shape, generator=torch.Generator().manual_seed(4),
                                                           dtype=torch.float64))
        out += [Case(f"ntk t^2 3-10-1 {name} on {domain.describe()}", model, domain) for domain in (Ball(1.0), shifted, Global())]
    return out


def check_deterministic(fn: Callable[[nn.Module, Domain], object], family: list[Case] | None = None) -> None:
    """``fn`` gives the same answer twice on every case (no time limit, same seed)."""
    for case in (cases() if family is None else family):
        first, second = fn(case.model, case.domain), fn(case.model, case.domain)
        if not _same(first, second):
            raise AssertionError(f"not deterministic on {case.name}: {first!r} then {second!r}")


def _same(a, b) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def check_method(name: str, family: list[Case] | None = None, time_limit: float | None = None) -> int:
    """The registered Lipschitz method ``name``, alone, on every case it applies to: its upper bounds pass
    :func:`check_upper_bound`, its lower bounds :func:`check_lower_bound`. Returns how many cases it
    applied to (a method that applies to none is not checked: add a case for it)."""
    from robustlaw.lipschitz import METHODS, certify

    side = METHODS.get(name).side
    applicable = [c for c in (cases() if family is None else family) if _applies(name, c)]

    def bracket(m, dom):
        return certify(m, dom, X=_data_for(m, dom), time_limit=time_limit, methods=[name])

    if side in ("upper", "exact"):
        check_upper_bound(lambda m, dom: bracket(m, dom).upper, applicable)
    if side in ("lower", "exact"):
        found = [(c, bracket(c.model, c.domain)) for c in applicable]
        check_lower_bound(lambda m, dom: next((b.lower, b.witness) for c, b in found if c.model is m and c.domain is dom),
                          [c for c, b in found if b.lower_method != "none"])
    return len(applicable)


def _applies(name: str, case: Case) -> bool:
    from robustlaw.lipschitz import METHODS
    from robustlaw.lipschitz.files import as_net
    from robustlaw.lipschitz.methods import Problem

    net = as_net(case.model) if isinstance(case.model, nn.Sequential) else None
    problem = Problem(case.model, net, case.domain, None, None, 0, np.random.default_rng(0))
    return METHODS.get(name).applies(problem)


def _data_for(model: nn.Module, domain: Domain) -> np.ndarray:
    return domain.sample(np.random.default_rng(1), 16, input_dim(model))
