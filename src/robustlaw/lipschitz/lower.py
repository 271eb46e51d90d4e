"""Lower bounds on the Lipschitz constant: gradient norms attained at points of the domain.

Random points miss the action (a random sphere point lies outside every cap of BLN20's
construction) and ReLU gradients are piecewise constant (plain ascent on ||grad f|| stalls), so
the search looks where the function must change: at and around the data, on segments between
points of opposite labels, and by ascent on a smoothed copy of the network whose candidate
points are then scored with the exact gradient. Every value returned is the norm of the true
gradient at a returned point of the domain, so it is a lower bound on the Lipschitz constant.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robustlaw.lipschitz.domain import Domain


@dataclass(frozen=True)
class LowerBound:
    value: float
    witness: np.ndarray
    method: str


def gradient_norms(model: nn.Module, points: torch.Tensor, domain: Domain = Domain()) -> torch.Tensor:
    """||grad f(x)|| (tangential on a sphere domain) at each row of ``points``; autograd, no smoothing."""
    x = points.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    return domain.tangential(x.detach(), grad).norm(dim=-1)


def smoothed(model: nn.Module, beta: float) -> nn.Module:
    """A copy of ``model`` with every ReLU replaced by softplus(beta t)/beta (a smooth surrogate)."""
    clone = copy.deepcopy(model)
    for name, module in clone.named_children():
        if isinstance(module, nn.ReLU):
            setattr(clone, name, nn.Softplus(beta=beta))
        elif isinstance(module, nn.LeakyReLU):
            slope = module.negative_slope
            soft = nn.Softplus(beta=beta)
            setattr(clone, name, _Lambda(lambda t, s=slope, f=soft: s * t + (1 - s) * f(t)))
    return clone


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, t):
        return self.fn(t)


def _candidates(X: np.ndarray | None, y: np.ndarray | None, domain: Domain, d: int, rng: np.random.Generator,
                count: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Starting points by provenance: data, jittered data, segments between data, random domain points."""
    groups: dict[str, np.ndarray] = {}
    scale = 1.0 if domain.kind == "global" else domain.bounding_ball(d)[1]
    if X is not None and len(X):
        n = len(X)
        groups["data"] = X
        jitter = X[rng.integers(n, size=count)]
        radii = scale * rng.choice([0.01, 0.03, 0.1, 0.3], size=(count, 1))
        groups["near-data"] = jitter + radii * rng.standard_normal((count, d)) / np.sqrt(d)
        i, j = rng.integers(n, size=count), rng.integers(n, size=count)
        if y is not None:
            # prefer pairs whose labels differ: the function must change between them
            differ = y[i] != y[j]
            j = np.where(differ, j, rng.integers(n, size=count))
        t = rng.uniform(size=(count, 1))
        groups["between-data"] = t * X[i] + (1 - t) * X[j]
    random = rng.standard_normal((count, d)) / np.sqrt(d)
    if domain.kind == "ball" or domain.kind == "local" or domain.kind == "sphere":
        c, r = domain.bounding_ball(d)
        random = c + r * random * rng.uniform(size=(count, 1)) ** (1.0 / d) / np.linalg.norm(random, axis=1, keepdims=True)
    groups["random"] = random
    return {name: domain.project(torch.as_tensor(v, dtype=dtype)) for name, v in groups.items()}


def ascend(model: nn.Module, starts: torch.Tensor, domain: Domain, steps: int = 100, betas=(5.0, 20.0, 100.0),
           lr: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected gradient ascent on ||grad f_beta(x)||^2 of smoothed copies, beta annealed upwards.

    Returns the best point found per start and its exact gradient norm (of the unsmoothed model).
    """
    best_points = starts.detach().clone()
    best_norms = gradient_norms(model, best_points, domain)
    x = starts.detach().clone()
    for beta in betas:
        surrogate = smoothed(model, beta)
        x = x.detach().requires_grad_(True)
        optimiser = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            (grad,) = torch.autograd.grad(surrogate(x).sum(), x, create_graph=True)
            objective = domain.tangential(x, grad).pow(2).sum()
            optimiser.zero_grad()
            (-objective).backward()
            optimiser.step()
            with torch.no_grad():
                x.copy_(domain.project(x))
        exact = gradient_norms(model, x, domain)
        better = exact > best_norms
        best_points[better] = x.detach()[better]
        best_norms[better] = exact[better]
    return best_points, best_norms


def search_lower(model: nn.Module, domain: Domain = Domain(), X: np.ndarray | None = None,
                 y: np.ndarray | None = None, seed: int = 0, count: int = 512, ascent_starts: int = 32,
                 ascent_steps: int = 100) -> LowerBound:
    """The largest exact gradient norm found in the domain, with its point and the method that found it."""
    dtype = next(model.parameters()).dtype
    d = model[0].in_features if isinstance(model, nn.Sequential) else X.shape[1]
    rng = np.random.default_rng([seed, 0x11B])
    groups = _candidates(X, y, domain, d, rng, count, dtype)
    scored = {name: gradient_norms(model, pts, domain) for name, pts in groups.items()}
    # ascend from the best starting points of every provenance except pure random ones
    pool = torch.cat([groups[k] for k in groups if k != "random"] or [groups["random"]])
    pool_norms = torch.cat([scored[k] for k in groups if k != "random"] or [scored["random"]])
    top = pool_norms.argsort(descending=True)[:ascent_starts]
    points, norms = ascend(model, pool[top], domain, steps=ascent_steps)
    groups["ascent"], scored["ascent"] = points, norms
    method, value, witness = "none", -1.0, None
    for name, vals in scored.items():
        i = int(vals.argmax())
        if float(vals[i]) > value:
            method, value, witness = name, float(vals[i]), groups[name][i].detach().numpy().astype(float)
    return LowerBound(value=value, witness=witness, method=f"search:{method}")


def mean_gradient_norm(model: nn.Module, points: np.ndarray, domain: Domain = Domain()) -> float:
    """The average gradient norm over ``points``: a Sobolev-type quantity, *not* the Lipschitz constant."""
    dtype = next(model.parameters()).dtype
    return float(gradient_norms(model, torch.as_tensor(points, dtype=dtype), domain).mean())
