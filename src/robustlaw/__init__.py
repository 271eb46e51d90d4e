"""robustlaw: a laboratory for the law of robustness.

Bubeck-Li-Nagaraj (2020) and Bubeck-Sellke (2021): a model with P parameters that fits n noisy
points in d dimensions has Lipschitz constant >~ sigma sqrt(n d / P). The pieces of one
experiment, in the order they run::

    data = robustlaw.make_dataset(robustlaw.DataSpec(distribution="sphere", n=200, d=20), seed=0)
    model = robustlaw.two_layer(d=20, k=40, seed=0)
    result = robustlaw.fit(model, data.X, data.y, robustlaw.FitSpec(target="interpolate", tol=0.1))
    bracket = robustlaw.certify(model, robustlaw.Ball(1.0), data.X, data.y)
    robustlaw.law_scale(200, 20, model.param_count()), robustlaw.bs21_lip_lower(...)

``robustlaw.run_spec(RunSpec(...))`` does all of it for one run; ``run_sweep`` for a grid.
The papers' explicit interpolators (``caps``, ``projected_rbf``, ``mcshane``, ...), the bounds as
formulas (``bs21_lip_lower``, ``law_params_for_lip``, ...) and effective-dimension estimators
(``twonn``, ``levina_bickel``) are described in docs/bounds.md. Every extension point is a registry
(``ACTIVATIONS``, ``DOMAINS``, ``DISTRIBUTIONS``, ``FAMILIES``, ``METHODS``, ``EXECUTORS``) and
``robustlaw.testing`` checks a plug-in; docs/ARCHITECTURE.md says where each kind of extension goes.
"""

from robustlaw.analysis import PowerLawFit, fit_power_law, law_fit
from robustlaw.activations import ACTIVATIONS, Activation
from robustlaw.constructions import (
    CONSTRUCTIONS,
    ConstructedNetwork,
    Interpolant,
    baum,
    caps,
    compromise_caps,
    mcshane,
    projected_rbf,
    rbf,
    single_neuron,
    tensor,
)
from robustlaw.data import DISTRIBUTIONS, Dataset, DataSpec, lip_floor, make_dataset
from robustlaw.effdim import EffDim, levina_bickel, load_points, twonn
from robustlaw.effdim import estimate as estimate_effdim
from robustlaw.errors import RobustlawError, SpecError
from robustlaw.export import export_records, load_records
from robustlaw.experiment import CertifySpec, Record, RunSpec
from robustlaw.experiment import run as run_spec
from robustlaw.families import FAMILIES, ModelSpec
from robustlaw.fitting import FitResult, FitSpec, Target, fit, fit_many
from robustlaw.lipschitz import (
    DOMAINS,
    METHODS,
    Ball,
    Bound,
    Bracket,
    Domain,
    Global,
    LocalBalls,
    Sphere,
    UpperCertificate,
    certify,
    upper_bound,
)
from robustlaw.models import Network, mlp, two_layer
from robustlaw.report import write_report
from robustlaw.store import Store
from robustlaw.sweep import LocalExecutor, SweepSpec, run_sweep
from robustlaw.theory import (
    BS21Bound,
    BS21Constants,
    bln20_lip,
    bln20_spectral_proxy,
    bs21_dimension_condition,
    bs21_finite_class_lip_lower,
    bs21_lip_lower,
    bs21_mixture_condition,
    bs21_params_for_lip,
    deep_net_J,
    law_params_for_lip,
    law_scale,
    no_free_prune_p_eff,
    poincare_scale,
    rademacher_bound,
)

__all__ = [
    "ACTIVATIONS",
    "CONSTRUCTIONS",
    "DISTRIBUTIONS",
    "DOMAINS",
    "FAMILIES",
    "METHODS",
    "Activation",
    "BS21Bound",
    "BS21Constants",
    "Ball",
    "Bound",
    "Bracket",
    "CertifySpec",
    "ConstructedNetwork",
    "DataSpec",
    "Dataset",
    "Domain",
    "EffDim",
    "FitResult",
    "FitSpec",
    "Global",
    "Interpolant",
    "LocalBalls",
    "LocalExecutor",
    "ModelSpec",
    "Network",
    "PowerLawFit",
    "Record",
    "RobustlawError",
    "RunSpec",
    "SpecError",
    "Sphere",
    "Store",
    "SweepSpec",
    "Target",
    "UpperCertificate",
    "baum",
    "bln20_lip",
    "bln20_spectral_proxy",
    "bs21_dimension_condition",
    "bs21_finite_class_lip_lower",
    "bs21_lip_lower",
    "bs21_mixture_condition",
    "bs21_params_for_lip",
    "caps",
    "certify",
    "compromise_caps",
    "deep_net_J",
    "estimate_effdim",
    "export_records",
    "fit",
    "fit_many",
    "fit_power_law",
    "law_fit",
    "law_params_for_lip",
    "law_scale",
    "levina_bickel",
    "lip_floor",
    "load_points",
    "load_records",
    "make_dataset",
    "mcshane",
    "mlp",
    "no_free_prune_p_eff",
    "poincare_scale",
    "projected_rbf",
    "rademacher_bound",
    "rbf",
    "run_spec",
    "run_sweep",
    "single_neuron",
    "tensor",
    "two_layer",
    "twonn",
    "upper_bound",
    "write_report",
]
