"""Certified Lipschitz brackets [lower, upper] for networks on a stated domain.

``lower`` is an exact gradient norm attained at ``witness`` (a point of the domain), ``upper`` a
certificate no point can exceed. See :mod:`.lower`, :mod:`.upper` and :mod:`.domain`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from robustlaw.lipschitz.domain import Domain
from robustlaw.lipschitz.lower import gradient_norms, mean_gradient_norm, search_lower
from robustlaw.lipschitz.upper import UpperBound, upper_bound


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
        return self.upper <= self.lower * (1 + 1e-6)

    @property
    def ratio(self) -> float:
        return self.upper / self.lower if self.lower > 0 else float("inf")


def certify(model: nn.Module, domain: Domain | None = None, X: np.ndarray | None = None,
            y: np.ndarray | None = None, seed: int = 0) -> Bracket:
    """A Lipschitz bracket for ``model`` on ``domain`` (default: R^d), searching near data ``X``."""
    start = time.perf_counter()
    domain = domain or Domain()
    low = search_lower(model, domain, X, y, seed=seed)
    # a model may carry its own sound certificate (robustlaw.constructions); else the network bounds
    own = getattr(model, "lipschitz_upper_bound", None)
    up = UpperBound(*own(domain)) if own is not None else upper_bound(model, domain)
    return Bracket(lower=low.value, upper=up.value, witness=low.witness,
                   lower_method=low.method, upper_method=up.method, domain=domain.describe(),
                   seconds=time.perf_counter() - start)


__all__ = ["Bracket", "Domain", "certify", "gradient_norms", "mean_gradient_norm", "search_lower", "upper_bound"]
