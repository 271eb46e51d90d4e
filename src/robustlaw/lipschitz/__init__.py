"""Certified Lipschitz brackets [lower, upper] for networks on a stated domain.

``lower`` is an exact gradient norm attained at ``witness`` (a point of the domain), ``upper`` a
certificate no point can exceed. :func:`certify` folds over the registered Lipschitz methods
(:mod:`.methods`, :mod:`.certificates`) on a domain (:mod:`.domain`).
"""

from robustlaw.lipschitz import certificates  # noqa: F401  (registers the structural certificates)
from robustlaw.lipschitz import linearised  # noqa: F401  (registers ntk-exact)
from robustlaw.lipschitz.bracket import Bracket, UnsoundBracket, certify, upper_bound
from robustlaw.lipschitz.domain import DOMAINS, Ball, Domain, Global, LocalBalls, Sphere, make_domain, parse_domain
from robustlaw.lipschitz.exact import exact_two_layer
from robustlaw.lipschitz.files import as_net, load_model, load_npz
from robustlaw.lipschitz.lower import gradient_norms, mean_gradient_norm, search_lower, witness_norm
from robustlaw.lipschitz.methods import METHODS, Bound, Budget, LipschitzMethod, Problem, UpperCertificate
from robustlaw.lipschitz.network import Net, from_torch

__all__ = ["DOMAINS", "METHODS", "Ball", "Bound", "Bracket", "Budget", "Domain", "Global", "LipschitzMethod",
           "LocalBalls", "Net", "Problem", "Sphere", "UnsoundBracket", "UpperCertificate", "as_net", "certify",
           "exact_two_layer", "from_torch", "gradient_norms", "load_model", "load_npz", "make_domain",
           "mean_gradient_norm", "parse_domain", "search_lower", "upper_bound", "witness_norm"]
