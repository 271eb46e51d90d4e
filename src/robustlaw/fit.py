"""Training to exact or partial memorisation, many same-shaped models in one computation.

Targets (``Target.kind``):
- ``interpolate``: max_i |f(x_i) - y_i| <= tol (exact memorisation up to tol);
- ``memorise``: train MSE <= sigma^2 - eps, the hypothesis of BS21 Theorem 3;
- ``budget``: train for ``max_steps`` and record what was reached.
A model that meets its target is frozen at that moment (its parameters are snapshotted) and
the rest train on; a model that never meets it is recorded with ``reached = False``.

Models of one architecture are stacked and trained with ``torch.func.vmap``: full-batch Adam is
elementwise, so one Adam over stacked tensors is exactly one Adam per model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from robustlaw.errors import require
from robustlaw.models import Network


@dataclass(frozen=True)
class Target:
    """What counts as fitted: see the module docstring for the three kinds."""

    kind: str = "interpolate"
    tol: float = 0.1
    eps: float = 0.1

    def __post_init__(self):
        require(self.kind in ("interpolate", "memorise", "budget"), "fit.target",
                f"unknown target {self.kind!r} (known: interpolate, memorise, budget)")
        require(np.isfinite(self.tol) and self.tol > 0, "fit.tol", f"must be > 0, got {self.tol}")
        require(np.isfinite(self.eps) and self.eps > 0, "fit.eps", f"must be > 0, got {self.eps}")

    def met(self, max_err: torch.Tensor, mse: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Boolean per model: is the target met at these train errors?"""
        if self.kind == "interpolate":
            return max_err <= self.tol
        if self.kind == "memorise":
            return mse <= sigma**2 - self.eps
        return torch.zeros_like(mse, dtype=torch.bool)


@dataclass(frozen=True)
class FitSpec:
    """How to train: the target, full-batch AdamW (``lr``, decoupled ``weight_decay``), at most ``max_steps``."""

    target: str = "interpolate"
    tol: float = 0.1
    eps: float = 0.1
    lr: float = 0.01
    max_steps: int = 5000
    check_every: int = 10
    weight_decay: float = 0.0

    def __post_init__(self):
        Target(self.target, self.tol, self.eps)
        require(np.isfinite(self.lr) and self.lr > 0, "fit.lr", f"must be > 0, got {self.lr}")
        require(isinstance(self.max_steps, int) and self.max_steps >= 1, "fit.max_steps",
                f"must be an integer >= 1, got {self.max_steps!r}")
        require(np.isfinite(self.weight_decay) and self.weight_decay >= 0, "fit.weight_decay",
                f"must be >= 0, got {self.weight_decay}")
        require(isinstance(self.check_every, int) and self.check_every >= 1, "fit.check_every",
                f"must be an integer >= 1, got {self.check_every!r}")

    @property
    def goal(self) -> Target:
        return Target(self.target, self.tol, self.eps)


@dataclass(frozen=True)
class FitResult:
    """What training achieved: whether the target was met, after how many steps, the train errors."""

    reached: bool
    steps: int
    train_mse: float
    train_max_err: float
    seconds: float
    mode: str = "train"


def fit(model: Network, X: np.ndarray, y: np.ndarray, spec: FitSpec = FitSpec(), sigma: float = 1.0) -> FitResult:
    """Train ``model`` in place on (X, y) towards ``spec``'s target; see :func:`fit_many`."""
    return fit_many([model], [X], [y], spec, [sigma])[0]


def fit_many(models: list[Network], Xs: list[np.ndarray], ys: list[np.ndarray], spec: FitSpec = FitSpec(),
             sigmas: list[float] | None = None) -> list[FitResult]:
    """Train same-architecture ``models`` (each on its own data of one shape) in one batched loop.

    Each model's parameters end as they were when it first met its target (or after the last
    step if it never did). The loss is the sum over models of each model's train MSE, so every
    model's gradient is its own.
    """
    start = time.perf_counter()
    m = len(models)
    dtype = next(models[0].parameters()).dtype
    X = torch.as_tensor(np.stack(Xs), dtype=dtype)
    y = torch.as_tensor(np.stack(ys), dtype=dtype)
    sigma = torch.as_tensor(sigmas if sigmas is not None else [1.0] * m, dtype=dtype)
    goal = spec.goal

    params, buffers = stack_module_state(models)
    params = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
    base = models[0]

    def predict(p, b, x):
        return functional_call(base, (p, b), (x,))

    batched = vmap(predict)
    optimiser = torch.optim.AdamW(params.values(), lr=spec.lr, weight_decay=spec.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=spec.max_steps, eta_min=spec.lr * 0.01)

    done = torch.zeros(m, dtype=torch.bool)
    steps = torch.full((m,), spec.max_steps, dtype=torch.long)
    snapshot = {name: p.detach().clone() for name, p in params.items()}
    final_mse = torch.zeros(m, dtype=dtype)
    final_max = torch.zeros(m, dtype=dtype)

    for step in range(spec.max_steps + 1):
        pred = batched(params, buffers, X)
        residual = pred - y
        mse = (residual**2).mean(dim=1)
        if step % spec.check_every == 0 or step == spec.max_steps:
            with torch.no_grad():
                max_err = residual.abs().amax(dim=1)
                newly = goal.met(max_err, mse, sigma) & ~done
                if step == spec.max_steps:
                    newly_or_last = ~done
                else:
                    newly_or_last = newly
                for name, p in params.items():
                    snapshot[name][newly_or_last] = p.detach()[newly_or_last]
                final_mse[newly_or_last] = mse.detach()[newly_or_last]
                final_max[newly_or_last] = max_err[newly_or_last]
                steps[newly] = step
                done |= newly
            if bool(done.all()) or step == spec.max_steps:
                break
        optimiser.zero_grad(set_to_none=True)
        mse.sum().backward()
        optimiser.step()
        schedule.step()

    with torch.no_grad():
        for i, model in enumerate(models):
            for name, p in model.named_parameters():
                p.copy_(snapshot[name][i])
    seconds = (time.perf_counter() - start) / m
    return [FitResult(reached=bool(done[i]), steps=int(steps[i]), train_mse=float(final_mse[i]),
                      train_max_err=float(final_max[i]), seconds=seconds) for i in range(m)]
