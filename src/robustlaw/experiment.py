"""One spec -> one record: data, model, fit, certify, theory, as one typed row.

A :class:`RunSpec` is a frozen description of one run; its :meth:`RunSpec.key` (a hash of the
canonical JSON of the spec) keys the record in the store, so the same spec and seed give the
same key and the same record. :class:`Record` is the row: the same columns for every run, those a
failed run could not measure left empty.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
import torch

from robustlaw.data import DataSpec, Dataset, lip_floor, make_dataset
from robustlaw.effdim import subsample, twonn
from robustlaw.errors import RobustlawError, require
from robustlaw.families import ModelSpec, parametrisation_constant
from robustlaw.fitting import FitResult, FitSpec
from robustlaw.lipschitz import DOMAINS, Bracket, Domain, certify, mean_gradient_norm
from robustlaw.pruning import nonzero_count
from robustlaw.theory import bln20_lip, bs21_lip_lower, law_scale

#: bump when a change alters what a spec's record holds, so stale records are not reused.
#: 2: typed Record (one schema for ok and failed runs), specs with per-variant options, P, J from the family.
#: 3: every run's d_eff (TwoNN), law_scale_deff and data_scaling; data.flip in every spec; the smooth mode
#:    fits as the train mode does, then smooths all its met models together (closed-form surrogate
#:    gradient, probes drawn in blocks), so smooth-mode records differ from version 2's.
RECORD_VERSION = 3
#: d_eff is TwoNN on at most this many of the run's inputs (a seeded subsample above it): O(m^2 d) work.
D_EFF_MAX_POINTS = 2000


@dataclass(frozen=True)
class CertifySpec:
    """Where to measure the Lipschitz constant: a ``domain`` of robustlaw.lipschitz.DOMAINS (global, ball,
    sphere, local) of ``radius`` (0: the data's radius; a local domain needs a radius > 0)."""

    domain: str = "ball"
    radius: float = 0.0

    def __post_init__(self):
        kind = DOMAINS.get(self.domain)
        require(np.isfinite(self.radius) and self.radius >= 0, "certify.radius", f"must be >= 0, got {self.radius}")
        kind.check_spec_radius(self.radius)

    def domain_for(self, data: Dataset) -> Domain:
        return DOMAINS.get(self.domain).from_spec(self.radius or data.radius, data.X)


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run's record."""

    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    fit: FitSpec = FitSpec()
    certify: CertifySpec = CertifySpec()
    seed: int = 0
    sweep: str = "adhoc"

    def __post_init__(self):
        require(isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed < 2**63, "seeds",
                f"must be integers in [0, 2^63), got {self.seed!r}")
        self.model.kind.check(self.model, self.data.d)
        check_run = getattr(self.model.kind, "check_run", None)  # optional: limits that depend on n or the fit
        if check_run is not None:
            check_run(self.model, self.data.n, self.data.d, self.fit)

    def as_dict(self) -> dict:
        """The spec as its record holds it: everything but ``fit.device``, where the fit ran, which
        moves results only within floating-point tolerance (docs/ARCHITECTURE.md, "Devices"), so a
        run fitted on a GPU keeps the key and spec column of the same run on the CPU."""
        body = dataclasses.asdict(self)
        del body["fit"]["device"]
        return body

    def key(self) -> str:
        """A hash of everything that determines the record (the sweep name is not part of it)."""
        body = {k: v for k, v in self.as_dict().items() if k != "sweep"}
        body["version"] = RECORD_VERSION
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def batch_key(self) -> tuple:
        """Runs with an equal batch key can be fitted in one batch: same data shape, fit spec, activation
        and family batch key (two-layer nets of any width, deeper nets of equal widths)."""
        m = self.model
        return (*m.kind.batch_key(m), m.activation, m.q, self.data.n, self.data.d, self.fit)

    def work(self) -> int:
        """The size of one training step (n times the padded parameter count), for batching."""
        return self.model.kind.work(self.model, self.data.n, self.data.d)


@dataclass
class Record:
    """One run's row in the store; see docs/ARCHITECTURE.md for the columns. ``status`` is "ok" or
    "error"; a failed run keeps its spec, its error and what it measured before failing (else None)."""

    key: str
    sweep: str
    status: str
    seed: int
    spec: str
    distribution: str
    labels: str
    n: int
    d: int
    family: str
    activation: str
    construction: str | None = None
    width: int | None = None
    widths: str | None = None
    version: int = RECORD_VERSION
    sigma: float | None = None
    depth: int | None = None
    P: int | None = None
    nonzero: int | None = None
    mask_source: str | None = None
    d_eff: float | None = None
    data_scaling: str | None = None
    mode: str | None = None
    target: str | None = None
    reached: bool | None = None
    steps: int | None = None
    train_mse: float | None = None
    train_max_err: float | None = None
    fit_seconds: float | None = None
    fit_flops: float | None = None
    smooth_surrogate: float | None = None
    domain: str | None = None
    lip_lower: float | None = None
    lip_upper: float | None = None
    lip_exact: bool | None = None
    lower_method: str | None = None
    upper_method: str | None = None
    witness: str | None = None
    certify_seconds: float | None = None
    grad_mean_train: float | None = None
    lip_floor: float | None = None
    law_scale: float | None = None
    law_scale_deff: float | None = None
    bln20: float | None = None
    bs21_lip_lower: float | None = None
    bs21_eps: float | None = None
    bs21_W: float | None = None
    bs21_J: float | None = None
    bs21_mixture_ok: bool | None = None
    bs21_dimension_ok: bool | None = None
    seconds: float | None = None
    error: str | None = None
    traceback: str | None = None

    @classmethod
    def start(cls, spec: RunSpec) -> Record:
        """The columns known from the spec alone."""
        m = spec.model
        return cls(key=spec.key(), sweep=spec.sweep, status="error", seed=spec.seed,
                   spec=json.dumps(spec.as_dict(), sort_keys=True), distribution=spec.data.distribution,
                   labels=spec.data.labels, n=spec.data.n, d=spec.data.d, family=m.family, activation=m.activation,
                   construction=getattr(m.options, "construction", None), mask_source=getattr(m.options, "mask", None),
                   width=m.hidden[0] if len(m.hidden) == 1 else None, widths=json.dumps(m.hidden),
                   target=spec.fit.target, mode=spec.fit.mode)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


COLUMNS: dict[str, type] = {f.name: f.type for f in dataclasses.fields(Record)}


@dataclass
class Prepared:
    """A run's data and initialised model (None until fitted for a construction)."""

    spec: RunSpec
    data: Dataset
    model: torch.nn.Module | None = field(repr=False)


def prepare(spec: RunSpec) -> Prepared:
    data = make_dataset(spec.data, spec.seed)
    return Prepared(spec, data, spec.model.kind.build(spec.model, spec.data.d, spec.seed))


def measure(run: Prepared, fitted: FitResult) -> Record:
    """Certify the fitted model and set the measurement beside the theory, as one record."""
    spec, data, model = run.spec, run.data, run.model
    domain = spec.certify.domain_for(data)
    # no time limit: the search runs a fixed number of rounds, so the same spec gives the same bracket
    bracket: Bracket = certify(model, domain, data.X, data.y, seed=spec.seed, time_limit=None)
    record = Record.start(spec)
    _fill_fit(record, fitted, data, model)
    _fill_bracket(record, bracket, model, data, domain)
    _fill_theory(record, spec, fitted, data, model)
    record.status = "ok"
    return record


def _fill_fit(record: Record, fitted: FitResult, data: Dataset, model) -> None:
    record.sigma, record.depth, record.P = data.sigma, model.depth, model.param_count()
    record.nonzero = nonzero_count(model)  # P minus the weights a pruning mask holds at zero
    record.mode, record.reached, record.steps = fitted.mode, fitted.reached, fitted.steps
    record.train_mse, record.train_max_err = fitted.train_mse, fitted.train_max_err
    record.data_scaling, record.d_eff = data.scaling, effective_dimension(data.X, record.seed)
    record.fit_seconds, record.fit_flops, record.smooth_surrogate = fitted.seconds, fitted.flops, fitted.smooth_surrogate


def _fill_bracket(record: Record, bracket: Bracket, model, data: Dataset, domain: Domain) -> None:
    record.domain, record.lip_lower, record.lip_upper, record.lip_exact = (
        bracket.domain, bracket.lower, bracket.upper, bracket.exact)
    record.lower_method, record.upper_method = bracket.lower_method, bracket.upper_method
    record.witness = json.dumps([round(float(v), 8) for v in bracket.witness])
    record.certify_seconds = bracket.seconds
    record.grad_mean_train = mean_gradient_norm(model, data.X, domain)
    record.lip_floor = lip_floor(data.X, data.y)


def _fill_theory(record: Record, spec: RunSpec, fitted: FitResult, data: Dataset, model) -> None:
    """The papers' predictions for this run: the law's scale, BLN20's sqrt(n / k) for two-layer nets (trained
    or constructed) and
    BS21 Theorem 3 with W, J from the fitted parameters and eps from the fit target."""
    n, d, P = data.n, data.d, record.P
    W, J = parametrisation_constant(model, data)
    eps = spec.fit.eps if spec.fit.target == "memorise" else max(data.sigma**2 - fitted.train_mse, 1e-6)
    eps = min(eps, 1 - 1e-9)
    bs21 = bs21_lip_lower(n, d, P, sigma=data.sigma, eps=eps, W=W, J=J, c=1.0,
                          k_mixture=spec.data.options.mixture_components, lip=record.lip_lower)
    record.law_scale = law_scale(n, d, P)
    record.law_scale_deff = law_scale(n, record.d_eff, P) if record.d_eff and record.d_eff > 0 else None
    k = record.width if record.width is not None else _two_layer_width(model)
    record.bln20 = bln20_lip(n, k) if k else None
    record.bs21_lip_lower, record.bs21_eps, record.bs21_W, record.bs21_J = bs21.lip_lower, eps, W, J
    record.bs21_mixture_ok, record.bs21_dimension_ok = bs21.mixture_condition, bs21.dimension_condition


def _two_layer_width(model) -> int | None:
    """k of a two-layer network (one hidden layer: trained or built by a construction such as BLN20's
    caps), for BLN20's sqrt(n / k); None for any other model."""
    hidden = getattr(model, "hidden_widths", None)
    return hidden[0] if hidden is not None and len(hidden) == 1 else None


def effective_dimension(X: np.ndarray, seed: int) -> float | None:
    """TwoNN's estimate (robustlaw.effdim, Facco et al. 2017) of the run's inputs, on a seeded subsample of
    at most :data:`D_EFF_MAX_POINTS` points; None when TwoNN has no answer (fewer than 3 distinct points)."""
    try:
        return twonn(subsample(X, D_EFF_MAX_POINTS, seed)).value
    except RobustlawError:
        return None


def failed_record(spec: RunSpec, error: BaseException) -> Record:
    """The record of a run that raised: its spec and the error, so the sweep goes on."""
    record = Record.start(spec)
    record.error = f"{type(error).__name__}: {error}"
    record.traceback = "".join(traceback.format_exception(error, limit=5))
    return record


@dataclass
class Fitted:
    """A fitted run waiting for its certificate (picklable, so it can be certified in another
    process): its data and model, its fit (or the exception that stands for it), and its share of
    the wall time of the batch that prepared and fitted it."""

    run: Prepared
    result: FitResult | BaseException
    seconds: float

    def __getstate__(self) -> dict:
        # plain pickle, tensors by value: between processes torch would pass each tensor as a
        # shared-memory file descriptor, held open in the driver until the run is certified
        return {"blob": pickle.dumps((self.run, self.result, self.seconds))}

    def __setstate__(self, state: dict) -> None:
        self.run, self.result, self.seconds = pickle.loads(state["blob"])

    def cost(self) -> int:
        """A proxy of its certification cost, to certify the largest runs first."""
        return self.run.spec.work()


def fit_group(specs: list[RunSpec]) -> list[Fitted]:
    """Prepare specs that share a batch key and fit them all in one batch."""
    start = time.perf_counter()
    torch.set_num_threads(1)
    prepared = [prepare(s) for s in specs]
    family, fit_spec = specs[0].model.kind, specs[0].fit
    models, fitted = family.fit([p.model for p in prepared], [p.data for p in prepared], fit_spec,
                                [s.model for s in specs], [s.seed for s in specs])
    share = (time.perf_counter() - start) / len(specs)
    return [Fitted(dataclasses.replace(run, model=model), result, share)
            for run, model, result in zip(prepared, models, fitted)]


def certify_fitted(item: Fitted) -> dict:
    """Certify one fitted run and return its record (a failed fit or measurement as a failed record);
    ``seconds`` is its fit share plus its certification."""
    start = time.perf_counter()
    torch.set_num_threads(1)
    record = _measured(item.run, item.result)
    record.seconds = item.seconds + time.perf_counter() - start
    return record.as_dict()


def run_group(specs: list[RunSpec]) -> list[dict]:
    """Run specs that share a batch key: prepare each, fit all in one batch, measure each. A run whose
    fit or measurement fails is recorded as failed; the others go on."""
    return [certify_fitted(item) for item in fit_group(specs)]


def _measured(run: Prepared, result: FitResult | BaseException) -> Record:
    if isinstance(result, BaseException):
        return failed_record(run.spec, result)
    try:
        return measure(run, result)
    except Exception as error:  # one failing measurement must not lose the others
        return failed_record(run.spec, error)


def run(spec: RunSpec) -> dict:
    """Run one spec and return its record."""
    return run_group([spec])[0]
