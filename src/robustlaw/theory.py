"""The law of robustness as formulas, every constant explicit.

Sources (see docs/bounds.md for the full statements):
- BS21 = Bubeck & Sellke, "A universal law of robustness via isoperimetry", arXiv:2105.12806
  (NeurIPS 2021): Theorem 3, its finite-class form (the statement Theorem 3 instantiates with a
  net of the parameter set), Lemma 3.1 (J for deep nets), and its discussion of generalisation
  (the Rademacher bound) and of MNIST / ImageNet (the back-of-the-envelope P ~ n d_eff).
  The labels "eq. (8)" (mixture condition), "eq. (9)" (dimension condition), "eq. (10)" and
  "eq. (11)" are robustlaw's own: "eq. (10)" names the explicit form of Theorem 3 and "eq. (11)"
  its corollary for s-sparse parameters.
- BLN20 = Bubeck, Li & Nagaraj, "A law of robustness for two-layers neural networks",
  arXiv:2009.14444 (COLT 2021): the sqrt(n / k) conjecture and the spectral-norm proxy
  ||a|| ||W||_op it is proven for.
- KLS24 = Kumar, Luo & Sellke, "No Free Prune: information-theoretic barriers to pruning at
  initialization", arXiv:2402.01089: P -> p_eff.

Asymptotic statements (``law_scale``, ``bln20_lip``, ``poincare_scale``, ``rademacher_bound``,
``law_params_for_lip``) are the papers' orders of magnitude with the hidden constant set to 1;
the BS21 functions carry every constant of eq. (10) explicitly (C1, C2 as parameters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from robustlaw.errors import require

#: BS21 eq. (10): the covering radius of the parameter net is eps / (60 J), so a parameter set of
#: diameter W has a net of (1 + 60 W J / eps)^P points.
BS21_NET_FACTOR = 60.0
#: BS21 eq. (10): the failure probability delta enters as log(4 / delta).
BS21_DELTA_FACTOR = 4.0
#: BS21 eq. (8): the mixture condition is MIX * k log(8 k / delta) <= n eps^2.
BS21_MIXTURE_LOG_FACTOR = 8.0
#: BS21 NeurIPS version: prefactor eps / (2^9 sqrt(c)) and 8^4 in place of 10^4.
BS21_NEURIPS_PREFACTOR = 2.0**9


def law_scale(n: float, d: float, P: float) -> float:
    """sqrt(n d / P): the law's Lipschitz scale for P parameters fitting n points in d dimensions."""
    require(n > 0 and d > 0 and P > 0, "theory", f"n, d, P must be positive, got n={n}, d={d}, P={P}")
    return math.sqrt(n * d / P)


def law_params_for_lip(n: float, d: float, lip: float, sigma: float = 1.0) -> float:
    """The inverse of the law Lip ~ sigma sqrt(n d / P): P = n d sigma^2 / Lip^2 parameters are needed
    for a Lip-Lipschitz memoriser (hidden constant 1). With d an effective dimension this is BS21's
    back-of-the-envelope P ~ n d_eff for MNIST / ImageNet (sigma = Lip = 1). Returns inf when the
    value exceeds the float range (a tiny ``lip``)."""
    require(n > 0 and d > 0, "theory", f"n and d must be positive, got n={n}, d={d}")
    require(lip > 0 and sigma > 0, "theory", f"target Lipschitz constant and sigma must be positive, got {lip}, {sigma}")
    ratio = sigma / lip  # squared by a product: ** raises OverflowError, a product gives inf
    return n * d * ratio * ratio


def bln20_lip(n: float, k: float) -> float:
    """BLN20's conjectured Lipschitz constant sqrt(n / k) of the best width-k two-layer interpolator."""
    require(n > 0 and k > 0, "theory", f"n, k must be positive, got n={n}, k={k}")
    return math.sqrt(n / k)


def bln20_spectral_proxy(a: np.ndarray, W: np.ndarray) -> float:
    """BLN20's proxy ||a||_2 ||W||_op for f(x) = a . relu(W x + b): an upper bound on Lip(f) on R^d
    that BLN20 prove is >~ sqrt(n / k) for every width-k net fitting random +-1 labels."""
    a, W = np.asarray(a, dtype=float).ravel(), np.asarray(W, dtype=float)
    require(W.ndim == 2 and W.shape[0] == a.size, "theory",
            f"need W of shape (k, d) and a of length k, got {W.shape} and {a.size}")
    return float(np.linalg.norm(a) * np.linalg.norm(W, 2))


def poincare_scale(n: float, d: float, P: float) -> float:
    """n sqrt(d) / P: the Lipschitz scale when the covariates satisfy only a Poincare inequality
    (polynomial instead of sub-Gaussian concentration), as listed in the project's issue; it is
    sqrt(n d / P) times sqrt(n / P), weaker in the over-parametrised regime P > n. Order of
    magnitude, hidden constant 1."""
    require(n > 0 and d > 0 and P > 0, "theory", f"n, d, P must be positive, got n={n}, d={d}, P={P}")
    return n * math.sqrt(d) / P


def rademacher_bound(n: float, d: float, P: float) -> float:
    """sqrt(P / (n d)): the Rademacher complexity of a P-parameter Lipschitz class on (mixtures
    of) isoperimetric data, against the classical sqrt(P / n) (Bubeck & Sellke (2021), section on
    generalisation)."""
    require(n > 0 and d > 0 and P > 0, "theory", f"n, d, P must be positive, got n={n}, d={d}, P={P}")
    return math.sqrt(P / (n * d))


def no_free_prune_p_eff(mask_l1: float, mutual_information: float) -> float:
    """KLS24: p_eff = E||mask||_1 + I(mask; data), which replaces P in the law for masked classes.

    ``mutual_information`` in nats (the theorem is up to log factors, so bits differ by log 2 only).
    """
    require(mask_l1 >= 0 and mutual_information >= 0, "theory",
            f"E||mask||_1 and I(mask; data) must be >= 0, got {mask_l1}, {mutual_information}")
    require(mask_l1 + mutual_information > 0, "theory", "p_eff must be positive")
    return float(mask_l1 + mutual_information)


@dataclass(frozen=True)
class BS21Constants:
    """The explicit constants of BS21 Theorem 3.

    ``seed`` (default; the name of robustlaw's original statement) is eq. (10), the explicit form
    of BS21 Theorem 3 (arXiv:2105.12806): prefactor eps / (sigma sqrt(C2 c)), log(1 + 60 W J / eps),
    mixture condition 10^4 k log(8k/delta) <= n eps^2, dimension condition
    d >= C1 c L^2 sigma^2 / eps^2. C1 and C2 are absolute constants left unspecified there:
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

    def prefactor(self, sigma: float, eps: float, c: float) -> float:
        """eps / (sigma sqrt(C2 c)) (seed) or eps / (2^9 sqrt(c)) (NeurIPS)."""
        if self.variant == "seed":
            return eps / (sigma * math.sqrt(self.C2 * c))
        return eps / (BS21_NEURIPS_PREFACTOR * math.sqrt(c))

    def cover(self, W: float, log_J: float, eps: float) -> float:
        """log(1 + 60 W J / eps) (seed) or log(60 W J / eps) (NeurIPS, which needs 60 W J > eps),
        from log J, so that it stays finite when J itself overflows a float (deep nets)."""
        log_ratio = math.log(BS21_NET_FACTOR * W / eps) + log_J
        if self.variant == "seed":
            return float(np.logaddexp(0.0, log_ratio))
        require(log_ratio > 0, "theory", f"the NeurIPS bound needs 60 W J / eps > 1, got log of it {log_ratio:.4g}")
        return log_ratio


@dataclass(frozen=True)
class BS21Bound:
    """The value of BS21 eq. (10)/(11) and whether the theorem's conditions hold.

    ``dimension_condition`` is checked at ``lip_checked`` (the candidate L given, else None).
    """

    lip_lower: float
    mixture_condition: bool
    dimension_condition: bool | None
    log_term: float
    formula: str = "BS21 eq. (10)"
    lip_checked: float | None = None


def _check_bs21(n, d, sigma, eps, delta, c) -> None:
    require(n >= 1 and d >= 1, "theory", f"need n, d >= 1, got n={n}, d={d}")
    require(sigma > 0, "theory.sigma", f"must be > 0, got {sigma}")
    require(0 < eps < 1 and 0 < delta < 1, "theory", f"eps and delta must lie in (0, 1), got eps={eps}, delta={delta}")
    require(c > 0, "theory.c", f"must be positive, got {c}")


def bs21_mixture_condition(n: float, eps: float, delta: float, k_mixture: int = 1,
                           constants: BS21Constants = BS21Constants()) -> bool:
    """BS21 eq. (8): 10^4 k log(8 k / delta) <= n eps^2 (8^4 in the NeurIPS version)."""
    require(k_mixture >= 1, "theory.k_mixture", f"must be >= 1, got {k_mixture}")
    return constants.mixture_constant * k_mixture * math.log(BS21_MIXTURE_LOG_FACTOR * k_mixture / delta) <= n * eps**2


def bs21_dimension_condition(d: float, lip: float, sigma: float, eps: float, c: float = 1.0,
                             constants: BS21Constants = BS21Constants()) -> bool:
    """BS21 eq. (9): d >= C1 c L^2 sigma^2 / eps^2."""
    ratio = lip * sigma / eps  # squared by a product, which gives inf rather than OverflowError
    return d >= constants.C1 * c * ratio * ratio


def bs21_finite_class_lip_lower(n: float, d: float, log_size: float, sigma: float, eps: float, c: float = 1.0,
                                delta: float = 0.01, constants: BS21Constants = BS21Constants()) -> float:
    """BS21's finite-class form: for a class of N functions (``log_size`` = log N), w.p. 1 - delta
    every f with train MSE <= sigma^2 - eps has Lip(f) >= eps / (sigma sqrt(C2 c)) sqrt(n d / log(4 N / delta)).

    BS21 Theorem 3 (eq. (10)) is this with the eps/(60 J)-net of the parameter set: log N = P log(1 + 60 W J / eps).
    """
    _check_bs21(n, d, sigma, eps, delta, c)
    require(log_size >= 0, "theory", f"log |F| must be >= 0, got {log_size}")
    return constants.prefactor(sigma, eps, c) * math.sqrt(n * d / (log_size + math.log(BS21_DELTA_FACTOR / delta)))


def _log_J(W: float, J: float, log_J: float | None) -> float:
    """log J: ``log_J`` if given (for a J beyond the float range, see :func:`deep_net_log_J`), else log(J)."""
    require(W > 0 and (log_J is not None or J > 0), "theory", f"W and J must be positive, got W={W}, J={J}")
    return math.log(J) if log_J is None else log_J


def bs21_log_size(P: float, W: float, J: float, eps: float, sparsity: float | None = None,
                  constants: BS21Constants = BS21Constants(), log_J: float | None = None) -> float:
    """log of the net size in eq. (10)/(11): P log(1 + 60 W J / eps), or s log(P (1 + 60 W J / eps)).

    ``log_J`` replaces J when J overflows a float (deep nets, :func:`deep_net_log_J`)."""
    require(P >= 1, "theory.P", f"need P >= 1, got {P}")
    cover = constants.cover(W, _log_J(W, J, log_J), eps)
    if sparsity is None:
        return P * cover
    require(0 < sparsity <= P, "theory.sparsity", f"must lie in (0, P], got {sparsity}")
    return sparsity * (math.log(P) + cover)


def bs21_lip_lower(n: float, d: float, P: float, sigma: float, eps: float, W: float = 1.0, J: float = 1.0,
                   c: float = 1.0, delta: float = 0.01, k_mixture: int = 1, sparsity: float | None = None,
                   lip: float | None = None, constants: BS21Constants = BS21Constants(),
                   log_J: float | None = None) -> BS21Bound:
    """BS21 Theorem 3: every h with train MSE <= sigma^2 - eps has Lip(h) >= this, w.p. 1 - delta.

    eq. (10): eps / (sigma sqrt(C2 c)) * sqrt(n d / (P log(1 + 60 W J / eps) + log(4 / delta)));
    eq. (11), for s-sparse parameters (``sparsity`` = s): P log(...) becomes s log(P (1 + 60 W J / eps)).
    ``lip`` (a candidate L) is needed only to check the dimension condition (9); it is None otherwise.
    ``log_J`` replaces J when J overflows a float (deep nets, :func:`deep_net_log_J`).
    """
    _check_bs21(n, d, sigma, eps, delta, c)
    require(P >= 1, "theory", f"need n, d, P >= 1, got n={n}, d={d}, P={P}")
    log_size = bs21_log_size(P, W, J, eps, sparsity, constants, log_J)
    value = bs21_finite_class_lip_lower(n, d, log_size, sigma, eps, c, delta, constants)
    return BS21Bound(
        lip_lower=value,
        mixture_condition=bs21_mixture_condition(n, eps, delta, k_mixture, constants),
        dimension_condition=None if lip is None else bs21_dimension_condition(d, lip, sigma, eps, c, constants),
        log_term=log_size + math.log(BS21_DELTA_FACTOR / delta),
        formula="BS21 eq. (11)" if sparsity is not None else "BS21 eq. (10)",
        lip_checked=lip,
    )


def bs21_params_for_lip(n: float, d: float, lip: float, sigma: float, eps: float, W: float = 1.0, J: float = 1.0,
                        c: float = 1.0, delta: float = 0.01, constants: BS21Constants = BS21Constants(),
                        log_J: float | None = None) -> float:
    """eq. (10) solved for P: the smallest P for which eq. (10) no longer forbids an L-Lipschitz
    function with train MSE <= sigma^2 - eps, i.e. (n d (prefactor / L)^2 - log(4/delta)) / log(1 + 60 W J / eps).

    Below this P every memoriser in the class has Lip > L (w.p. 1 - delta); 0 if eq. (10) never forbids it,
    inf if it exceeds the float range (a tiny ``lip``).
    (J is taken as given; for deep nets J grows with P, see :func:`deep_net_J`; ``log_J`` as in
    :func:`bs21_lip_lower`.)
    """
    _check_bs21(n, d, sigma, eps, delta, c)
    require(lip > 0, "theory.lip", f"target Lipschitz constant must be positive, got {lip}")
    cover = constants.cover(W, _log_J(W, J, log_J), eps)
    ratio = constants.prefactor(sigma, eps, c) / lip  # squared by a product: inf, not OverflowError
    budget = n * d * ratio * ratio - math.log(BS21_DELTA_FACTOR / delta)
    return max(budget / cover, 0.0)


def deep_net_log_J(R: float, W: float, P: float, depth: int, sharing: float = 1.0) -> float:
    """log J of BS21 Lemma 3.1, log R + D log(W Q P): finite even where J overflows a float."""
    require(R > 0 and W > 0 and P >= 1 and depth >= 1 and sharing >= 1, "theory",
            f"need R, W > 0, P, D, Q >= 1, got R={R}, W={W}, P={P}, D={depth}, Q={sharing}")
    return math.log(R) + depth * math.log(W * sharing * P)


def deep_net_J(R: float, W: float, P: float, depth: int, sharing: float = 1.0) -> float:
    """BS21 Lemma 3.1: a depth-D net with weights in [-W, W], weight sharing Q, inputs ||x|| <= R has
    a parametrisation that is J-Lipschitz (sup norm) with J = R (W Q P)^D. Refused (one line) where J
    overflows a float; :func:`deep_net_log_J` gives its logarithm there."""
    log_J = deep_net_log_J(R, W, P, depth, sharing)
    try:
        J = R * (W * sharing * P) ** depth
    except OverflowError:
        J = math.inf
    require(math.isfinite(J), "theory.depth",
            f"J = R (W Q P)^D = exp({log_J:.6g}) overflows a float at D={depth}; use its logarithm (deep_net_log_J)")
    return J
