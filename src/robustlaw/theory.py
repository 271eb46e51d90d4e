"""The law of robustness as formulas, every constant explicit.

Sources: BS21 = Bubeck & Sellke, "A universal law of robustness via isoperimetry" (2021), as
stated in seed 004 (Theorem 3, eq. (8)-(11)); BLN20 = Bubeck, Li & Nagaraj, "A law of robustness
for two-layers neural networks" (2020).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from robustlaw.errors import require


def law_scale(n: float, d: float, P: float) -> float:
    """sqrt(n d / P): the law's Lipschitz scale for P parameters fitting n points in d dimensions."""
    require(n > 0 and d > 0 and P > 0, "theory", f"n, d, P must be positive, got n={n}, d={d}, P={P}")
    return math.sqrt(n * d / P)


def bln20_lip(n: float, k: float) -> float:
    """BLN20's conjectured Lipschitz constant sqrt(n / k) of the best width-k two-layer interpolator."""
    require(n > 0 and k > 0, "theory", f"n, k must be positive, got n={n}, k={k}")
    return math.sqrt(n / k)


@dataclass(frozen=True)
class BS21Constants:
    """The explicit constants of BS21 Theorem 3.

    ``seed`` (default) is eq. (10) of seed 004: prefactor eps / (sigma sqrt(C2 c)),
    log(1 + 60 W J / eps), mixture condition 10^4 k log(8k/delta) <= n eps^2, dimension condition
    d >= C1 c L^2 sigma^2 / eps^2. C1 and C2 are absolute constants the seed does not give:
    they default to 1, so the value is the bound *up to* sqrt(C2). ``neurips`` is the published
    version: prefactor eps / (2^9 sqrt(c)), log(60 W J / eps), 8^4 in place of 10^4.
    """

    C1: float = 1.0
    C2: float = 1.0
    variant: str = "seed"

    def __post_init__(self):
        require(self.variant in ("seed", "neurips"), "theory.variant", f"unknown variant {self.variant!r} (known: seed, neurips)")
        require(self.C1 > 0 and self.C2 > 0, "theory", "C1 and C2 must be positive")

    @property
    def mixture_constant(self) -> float:
        return 1e4 if self.variant == "seed" else 8.0**4


@dataclass(frozen=True)
class BS21Bound:
    """The value of BS21 eq. (10)/(11) and whether the theorem's conditions hold."""

    lip_lower: float
    mixture_condition: bool
    dimension_condition: bool | None
    log_term: float


def bs21_lip_lower(n: float, d: float, P: float, sigma: float, eps: float, W: float = 1.0, J: float = 1.0,
                   c: float = 1.0, delta: float = 0.01, k_mixture: int = 1, sparsity: float | None = None,
                   lip: float | None = None, constants: BS21Constants = BS21Constants()) -> BS21Bound:
    """BS21 Theorem 3: every h with train MSE <= sigma^2 - eps has Lip(h) >= this, w.p. 1 - delta.

    eq. (10): eps / (sigma sqrt(C2 c)) * sqrt(n d / (P log(1 + 60 W J / eps) + log(4 / delta)));
    eq. (11), for s-sparse parameters (``sparsity`` = s): P log(...) becomes s log(P (1 + 60 W J / eps)).
    ``lip`` (a candidate L) is needed only to check the dimension condition (9); it is None otherwise.
    """
    require(n >= 1 and d >= 1 and P >= 1, "theory", f"need n, d, P >= 1, got n={n}, d={d}, P={P}")
    require(sigma > 0, "theory.sigma", f"must be > 0, got {sigma}")
    require(0 < eps < 1 and 0 < delta < 1, "theory", f"eps and delta must lie in (0, 1), got eps={eps}, delta={delta}")
    require(W > 0 and J > 0 and c > 0, "theory", f"W, J, c must be positive, got W={W}, J={J}, c={c}")
    ratio = 60 * W * J / eps
    cover = math.log1p(ratio) if constants.variant == "seed" else math.log(max(ratio, 1.0 + 1e-12))
    if sparsity is not None:
        require(0 < sparsity <= P, "theory.sparsity", f"must lie in (0, P], got {sparsity}")
        log_term = sparsity * (math.log(P) + cover)
    else:
        log_term = P * cover
    log_term += math.log(4 / delta)
    if constants.variant == "seed":
        prefactor = eps / (sigma * math.sqrt(constants.C2 * c))
    else:
        prefactor = eps / (2**9 * math.sqrt(c))
    value = prefactor * math.sqrt(n * d / log_term)
    mixture_ok = constants.mixture_constant * k_mixture * math.log(8 * k_mixture / delta) <= n * eps**2
    dimension_ok = None if lip is None else d >= constants.C1 * c * lip**2 * sigma**2 / eps**2
    return BS21Bound(lip_lower=value, mixture_condition=mixture_ok, dimension_condition=dimension_ok, log_term=log_term)


def deep_net_J(R: float, W: float, P: float, depth: int, sharing: float = 1.0) -> float:
    """BS21 Lemma 3.1: a depth-D net with weights in [-W, W], weight sharing Q, inputs ||x|| <= R has
    a parametrisation that is J-Lipschitz (sup norm) with J = R (W Q P)^D."""
    require(R > 0 and W > 0 and P >= 1 and depth >= 1 and sharing >= 1, "theory",
            f"need R, W > 0, P, D, Q >= 1, got R={R}, W={W}, P={P}, D={depth}, Q={sharing}")
    return R * (W * sharing * P) ** depth
