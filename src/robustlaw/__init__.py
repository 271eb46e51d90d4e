"""robustlaw: a laboratory for the law of robustness.

Bubeck-Li-Nagaraj (2020) and Bubeck-Sellke (2021): a model with P parameters that fits n noisy
points in d dimensions has Lipschitz constant >~ sigma sqrt(n d / P). The pieces of one
experiment, in the order they run::

    data = robustlaw.make_dataset(robustlaw.DataSpec(distribution="sphere", n=200, d=20), seed=0)
    model = robustlaw.two_layer(d=20, k=40, seed=0)
    result = robustlaw.fit(model, data.X, data.y, robustlaw.FitSpec(target="interpolate", tol=0.1))
    bracket = robustlaw.certify(model, robustlaw.Domain("ball", 1.0), data.X, data.y)
    robustlaw.law_scale(200, 20, model.param_count()), robustlaw.bs21_lip_lower(...)

``robustlaw.run_spec(RunSpec(...))`` does all of it for one run; ``run_sweep`` for a grid.
"""

from robustlaw.analysis import PowerLawFit, fit_power_law, law_fit
from robustlaw.constructions import mcshane_constant
from robustlaw.data import DISTRIBUTIONS, DataSpec, Dataset, make_dataset
from robustlaw.errors import RobustlawError, SpecError
from robustlaw.experiment import CertifySpec, RunSpec
from robustlaw.experiment import run as run_spec
from robustlaw.fit import FitResult, FitSpec, Target, fit, fit_many
from robustlaw.lipschitz import Bracket, Domain, certify
from robustlaw.models import ModelSpec, Network, mlp, two_layer
from robustlaw.report import write_report
from robustlaw.store import Store
from robustlaw.sweep import LocalExecutor, SweepSpec, run_sweep
from robustlaw.theory import BS21Constants, bln20_lip, bs21_lip_lower, deep_net_J, law_scale

__all__ = [
    "Bracket", "BS21Constants", "CertifySpec", "DISTRIBUTIONS", "DataSpec", "Dataset", "Domain", "FitResult",
    "FitSpec", "LocalExecutor", "ModelSpec", "Network", "PowerLawFit", "RobustlawError", "RunSpec", "SpecError",
    "Store", "SweepSpec", "Target", "bln20_lip", "bs21_lip_lower", "certify", "deep_net_J", "fit", "fit_many",
    "fit_power_law", "law_fit", "law_scale", "make_dataset", "mcshane_constant", "mlp", "run_spec", "run_sweep",
    "two_layer", "write_report",
]
