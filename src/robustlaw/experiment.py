"""One spec -> one record: data, model, fit, certify, theory, as one flat row.

A :class:`RunSpec` is a frozen description of one run; its :meth:`RunSpec.key` (a hash of the
canonical JSON of the spec) keys the record in the store, so the same spec and seed give the
same key and the same record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
import torch

from robustlaw.constructions import build_construction, mcshane_constant
from robustlaw.data import DataSpec, Dataset, make_dataset
from robustlaw.errors import require
from robustlaw.fit import FitResult, FitSpec, fit_many, padded_width
from robustlaw.lipschitz import Bracket, Domain, certify, mean_gradient_norm
from robustlaw.models import ModelSpec, Network
from robustlaw.theory import bln20_lip, bs21_lip_lower, deep_net_J, law_scale

#: bump when a change alters what a spec's record holds, so stale records are not reused
RECORD_VERSION = 1


@dataclass(frozen=True)
class CertifySpec:
    """Where to measure the Lipschitz constant: ``domain`` global, ball (radius ``radius``, or the
    data radius if 0), sphere, or local (balls of ``radius`` around the training points)."""

    domain: str = "ball"
    radius: float = 0.0
    search_points: int = 512

    def __post_init__(self):
        require(self.domain in ("global", "ball", "sphere", "local"), "certify.domain",
                f"unknown domain {self.domain!r} (known: global, ball, sphere, local)")
        require(np.isfinite(self.radius) and self.radius >= 0, "certify.radius", f"must be >= 0, got {self.radius}")
        require(self.domain != "local" or self.radius > 0, "certify.radius", "a local domain needs a radius > 0")
        require(isinstance(self.search_points, int) and self.search_points >= 1, "certify.search_points",
                f"must be an integer >= 1, got {self.search_points!r}")

    def domain_for(self, data: Dataset) -> Domain:
        radius = self.radius or data.radius
        if self.domain == "local":
            return Domain("local", radius, points=data.X)
        return Domain(self.domain, radius)


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run's record."""

    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    fit: FitSpec = FitSpec()
    certify: CertifySpec = CertifySpec()
    seed: int = 0
    sweep: str = "adhoc"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """A hash of everything that determines the record (the sweep name is not part of it)."""
        body = {k: v for k, v in self.as_dict().items() if k != "sweep"}
        if not body["model"]["construction"]:  # keep the keys of trained-model specs as they were
            del body["model"]["construction"]
        body["version"] = RECORD_VERSION
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def architecture(self) -> tuple:
        """Runs with an equal key can be fitted in one batch: same data shape, fit spec and
        activation; two-layer nets of any width (padded), deeper nets of equal widths."""
        m = self.model
        shape = ("two_layer",) if m.family == "two_layer" else (m.family, m.widths)
        return (*shape, m.activation, m.q, self.data.n, self.data.d, self.fit)

    def work(self) -> int:
        """n times the padded parameter count: the size of one training step, for batching."""
        sizes = [self.data.d, *(padded_width(w) for w in self.model.hidden), 1]
        return self.data.n * sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


@dataclass
class Prepared:
    """A run's data and initialised model, ready to fit."""

    spec: RunSpec
    data: Dataset
    model: Network | None = field(repr=False)


def prepare(spec: RunSpec) -> Prepared:
    data = make_dataset(spec.data, spec.seed)
    model = None if spec.model.family == "construction" else spec.model.build(spec.data.d, spec.seed)
    return Prepared(spec, data, model)


def measure(run: Prepared, fitted: FitResult) -> dict:
    """Certify the fitted model and set the measurement beside the theory, as one flat record."""
    spec, data, model = run.spec, run.data, run.model
    domain = spec.certify.domain_for(data)
    # no time limit: the search runs a fixed number of rounds, so the same spec gives the same bracket
    bracket: Bracket = certify(model, domain, data.X, data.y, seed=spec.seed, time_limit=None)
    n, d, P = data.n, data.d, model.param_count()
    w_max = max(float(p.detach().abs().max()) for p in model.parameters())
    W = 2 * w_max * np.sqrt(P)  # diameter of the box [-w_max, w_max]^P holding the parameters
    J = deep_net_J(R=max(data.radius, 1e-12), W=max(w_max, 1e-12), P=P, depth=model.depth)
    eps = spec.fit.eps if spec.fit.target == "memorise" else max(data.sigma**2 - fitted.train_mse, 1e-6)
    eps = min(eps, 1 - 1e-9)
    bs21 = bs21_lip_lower(n, d, P, sigma=data.sigma, eps=eps, W=W, J=J, c=1.0,
                          k_mixture=spec.data.components if spec.data.distribution == "mixture" else 1,
                          lip=bracket.lower)
    return {
        "key": spec.key(), "sweep": spec.sweep, "status": "ok", "seed": spec.seed,
        "distribution": spec.data.distribution, "labels": spec.data.labels, "n": n, "d": d, "sigma": data.sigma,
        "family": spec.model.family, "construction": spec.model.construction or None, "activation": spec.model.activation,
        "width": spec.model.hidden[0] if spec.model.family == "two_layer" else None,
        "widths": json.dumps(spec.model.hidden), "depth": model.depth, "P": P,
        "mode": fitted.mode, "target": spec.fit.target, "reached": fitted.reached, "steps": fitted.steps,
        "train_mse": fitted.train_mse, "train_max_err": fitted.train_max_err, "fit_seconds": fitted.seconds,
        "fit_flops": fitted.flops, "smooth_surrogate": fitted.smooth_surrogate,
        "domain": bracket.domain, "lip_lower": bracket.lower, "lip_upper": bracket.upper,
        "lip_exact": bracket.exact, "lower_method": bracket.lower_method, "upper_method": bracket.upper_method,
        "witness": json.dumps([round(float(v), 8) for v in bracket.witness]), "certify_seconds": bracket.seconds,
        "grad_mean_train": mean_gradient_norm(model, data.X, domain),
        "lip_floor": mcshane_constant(data.X, data.y),
        "law_scale": law_scale(n, d, P),
        "bln20": bln20_lip(n, spec.model.hidden[0]) if spec.model.family == "two_layer" else None,
        "bs21_lip_lower": bs21.lip_lower, "bs21_eps": eps, "bs21_mixture_ok": bs21.mixture_condition,
        "bs21_dimension_ok": bs21.dimension_condition,
        "spec": json.dumps(spec.as_dict(), sort_keys=True),
    }


def failed_record(spec: RunSpec, error: BaseException) -> dict:
    """The record of a run that raised: its spec and the error, so the sweep goes on."""
    return {"key": spec.key(), "sweep": spec.sweep, "status": "error", "seed": spec.seed,
            "error": f"{type(error).__name__}: {error}",
            "traceback": "".join(traceback.format_exception(error, limit=5)),
            "n": spec.data.n, "d": spec.data.d, "spec": json.dumps(spec.as_dict(), sort_keys=True)}


def run_group(specs: list[RunSpec]) -> list[dict]:
    """Run specs that share an architecture: prepare each, fit all in one batch, measure each."""
    start = time.perf_counter()
    torch.set_num_threads(1)
    prepared = [prepare(s) for s in specs]
    if specs[0].model.family == "construction":
        return _run_constructions(prepared, start)
    fitted = fit_many([p.model for p in prepared], [p.data.X for p in prepared], [p.data.y for p in prepared],
                      specs[0].fit, [p.data.sigma for p in prepared], [s.seed for s in specs])
    return _measure_all(prepared, fitted, start)


def _run_constructions(prepared: list[Prepared], start: float) -> list[dict]:
    """Build each construction on its data (a failed precondition fails that run only), then measure."""
    ok, fitted, failed = [], [], []
    for run in prepared:
        try:
            run.model, result = build_construction(run.spec, run.data)
            ok.append(run)
            fitted.append(result)
        except Exception as error:  # noqa: BLE001 -- a failed construction fails its run only
            failed.append(failed_record(run.spec, error))
    records = _measure_all(ok, fitted, start) + failed
    for record in failed:
        record["seconds"] = (time.perf_counter() - start) / len(records)
    return records


def _measure_all(prepared: list[Prepared], fitted: list[FitResult], start: float) -> list[dict]:
    records = []
    for run, result in zip(prepared, fitted):
        try:
            record = measure(run, result)
        except Exception as error:  # one failing measurement must not lose the others
            record = failed_record(run.spec, error)
        records.append(record)
    elapsed = time.perf_counter() - start
    for record in records:
        record["seconds"] = elapsed / len(records)
    return records


def run(spec: RunSpec) -> dict:
    """Run one spec and return its record."""
    return run_group([spec])[0]
