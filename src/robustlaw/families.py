"""Model families: the function classes a sweep can study, each a plug-in.

A :class:`Family` owns its spec fields (its ``options`` dataclass), how a model is built for a run,
how runs are fitted (trained in batches, or constructed from the data), which runs may share a batch,
and its parameter count P and parametrisation constant J (BS21, arXiv:2105.12806, Lemma 3.1).
:class:`ModelSpec` names a family in :data:`FAMILIES`; ``experiment`` never asks which one it is.
A new family is one class registered in :data:`FAMILIES`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from robustlaw.activations import ACTIVATIONS
from robustlaw.constructions import CONSTRUCTIONS
from robustlaw.data import Dataset
from robustlaw.errors import require
from robustlaw.conv import cnn, conv_shapes, multiply_adds
from robustlaw.fitting import FitResult, FitSpec, fit_many, fit_module, padded_width
from robustlaw.lipschitz.network import MAX_DENSE
from robustlaw.linearised import SOLVERS, LinearisedTwoLayer, gradient_descent, min_norm, random_features
from robustlaw.models import mlp
from robustlaw.pruning import MASKS, Pruning
from robustlaw.registry import Registry, build_variant, settle_options
from robustlaw.theory import deep_net_J

#: the most parameters a spec may ask for (8 bytes each, times a few copies while training)
MAX_PARAMS = 10**8


def _widths_ok(widths) -> bool:
    return len(widths) >= 1 and all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths)


@dataclass(frozen=True)
class TwoLayerOptions:
    """BLN20's width k (arXiv:2009.14444): f(x) = a . act(W x + b), P = k (d + 2)."""

    width: int = 16

    def __post_init__(self):
        require(_widths_ok([self.width]), "model.width", f"must be an integer >= 1, got {self.width!r}")


@dataclass(frozen=True)
class MLPOptions:
    """Hidden widths d -> widths[0] -> ... -> 1."""

    widths: tuple[int, ...] = (16, 16)

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(self.widths))
        require(_widths_ok(self.widths), "model.widths",
                f"must be a non-empty list of integers >= 1, got {list(self.widths)!r}")


@dataclass(frozen=True)
class ConstructionOptions:
    """One of robustlaw.constructions.CONSTRUCTIONS, built from the data; ``size`` is its size knob (the
    number of caps k for compromise_caps, the projected dimension d' for projected_rbf, else unused)."""

    construction: str = ""
    size: int = 16

    def __post_init__(self):
        CONSTRUCTIONS.get(self.construction)
        require(_widths_ok([self.size]), "model.size", f"must be an integer >= 1, got {self.size!r}")


@dataclass(frozen=True)
class ModelSpec:
    """Which function class to fit: a ``family`` of :data:`FAMILIES` with its ``options`` (its defaults
    if None), the ``activation`` of :data:`robustlaw.activations.ACTIVATIONS` and ``q`` (the power of
    ``poly``, the degree of the tensor construction)."""

    family: str = "two_layer"
    activation: str = "relu"
    q: int = 2
    options: object = None

    @classmethod
    def of(cls, **fields) -> ModelSpec:
        """A spec from flat fields, the family's own ones included (``ModelSpec.of(family=..., ...)``)."""
        return build_variant(cls, "family", FAMILIES, fields)

    def __post_init__(self):
        settle_options(self, self.family, FAMILIES)
        ACTIVATIONS.get(self.activation)
        require(isinstance(self.q, int) and not isinstance(self.q, bool) and self.q >= 1, "model.q",
                f"must be an integer >= 1, got {self.q!r}")

    @property
    def kind(self) -> Family:
        return FAMILIES.get(self.family)

    @property
    def hidden(self) -> list[int]:
        """Dense hidden widths (empty for a construction, whose size depends on the data, and for a CNN)."""
        return self.kind.hidden(self)


@runtime_checkable
class Family(Protocol):
    name: str
    options: type

    def hidden(self, spec: ModelSpec) -> list[int]: ...

    def check(self, spec: ModelSpec, d: int) -> None: ...

    def build(self, spec: ModelSpec, d: int, seed: int) -> nn.Module | None: ...

    def batch_key(self, spec: ModelSpec) -> tuple: ...

    def fit(self, models: list, data: list[Dataset], spec: FitSpec, model_specs: list[ModelSpec],
            seeds: list[int]) -> tuple[list, list[FitResult]]: ...


class TrainedFamily:
    """Networks initialised from the seed and trained by :func:`robustlaw.fitting.fit_many` in batches."""

    options: ClassVar[type]

    def hidden(self, spec: ModelSpec) -> list[int]:
        raise NotImplementedError

    def check(self, spec: ModelSpec, d: int) -> None:
        sizes = [d, *self.hidden(spec), 1]
        params = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
        require(params <= MAX_PARAMS, "model.width",
                f"{params:.3g} parameters exceed the {MAX_PARAMS:.0e} a model may have here")

    def build(self, spec: ModelSpec, d: int, seed: int) -> nn.Module:
        return mlp(d, self.hidden(spec), activation=spec.activation, seed=seed, q=spec.q)

    def fit(self, models: list, data: list[Dataset], spec: FitSpec, model_specs: list[ModelSpec],
            seeds: list[int]) -> tuple[list, list[FitResult]]:
        results = fit_many(models, [x.X for x in data], [x.y for x in data], spec, [x.sigma for x in data], seeds)
        return models, results

    def work(self, spec: ModelSpec, n: int, d: int) -> int:
        """n times the padded parameter count: the size of one training step, for batching."""
        sizes = [d, *(padded_width(w) for w in self.hidden(spec)), 1]
        return n * sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


class TwoLayer(TrainedFamily):
    name, options = "two_layer", TwoLayerOptions

    def hidden(self, spec: ModelSpec) -> list[int]:
        return [spec.options.width]

    def batch_key(self, spec: ModelSpec) -> tuple:
        # widths that pad alike share a batch (fit_many stacks only those: see robustlaw.fitting.padding_groups)
        return ("two_layer", padded_width(spec.options.width))


class MLP(TrainedFamily):
    name, options = "mlp", MLPOptions

    def hidden(self, spec: ModelSpec) -> list[int]:
        return list(spec.options.widths)

    def batch_key(self, spec: ModelSpec) -> tuple:
        return ("mlp", spec.options.widths)


class Construction:
    """The papers' explicit interpolators, built from each run's data (robustlaw.constructions)."""

    name, options = "construction", ConstructionOptions

    def hidden(self, spec: ModelSpec) -> list[int]:
        return []

    def check(self, spec: ModelSpec, d: int) -> None:
        pass

    def build(self, spec: ModelSpec, d: int, seed: int) -> None:
        return None  # built from the data when fitted

    def batch_key(self, spec: ModelSpec) -> tuple:
        return ("construction", spec.options.construction)

    def work(self, spec: ModelSpec, n: int, d: int) -> int:
        return n * d

    def fit(self, models: list, data: list[Dataset], spec: FitSpec, model_specs: list[ModelSpec],
            seeds: list[int]) -> tuple[list, list[FitResult | BaseException]]:
        """Build each run's construction on its data; a failed precondition fails that run only (its
        exception stands in the place of its result)."""
        built, results = [], []
        for run_data, model_spec, seed in zip(data, model_specs, seeds):
            try:
                model, result = construct(model_spec, spec, run_data, seed)
            except Exception as error:  # noqa: BLE001 -- returned, recorded by the caller
                model, result = None, error
            built.append(model)
            results.append(result)
        return built, results


def construct(model_spec: ModelSpec, fit_spec: FitSpec, data: Dataset, seed: int) -> tuple[nn.Module, FitResult]:
    """Build ``model_spec``'s construction on ``data`` and report its fit as a FitResult (mode "construction")."""
    start = time.perf_counter()
    options = model_spec.options
    model = CONSTRUCTIONS.get(options.construction)(data.X, data.y, options.size, model_spec.q, seed)
    reached, mse, max_err = fit_quality(predict(model, data.X), data, fit_spec)
    return model, FitResult(reached=reached, steps=0, train_mse=mse, train_max_err=max_err,
                            seconds=time.perf_counter() - start, mode="construction")


@torch.no_grad()
def predict(model: nn.Module, X: np.ndarray) -> np.ndarray:
    return model(torch.as_tensor(X, dtype=torch.float64)).numpy()


def fit_quality(predictions: np.ndarray, data: Dataset, spec: FitSpec) -> tuple[bool, float, float]:
    """(target met, train MSE, largest error) of ``predictions`` at the run's points (a model built or
    solved rather than trained)."""
    err = predictions - data.y
    mse, max_err = float(np.mean(err**2)), float(np.abs(err).max())
    return bool(spec.goal.met(torch.tensor(max_err), torch.tensor(mse), torch.tensor(data.sigma))), mse, max_err


def parametrisation_constant(model: nn.Module, data: Dataset) -> tuple[float, float]:
    """(W, J) of BS21 Theorem 3 for a fitted model: W the diameter of the box [-w, w]^P holding its
    parameters (w = the largest |parameter|), J = R (w Q P)^D its parametrisation's Lipschitz constant
    (Lemma 3.1) with R the data radius, D the depth and Q the model's ``weight_sharing`` (a CNN's;
    1 for models without shared weights). A model whose parametrisation is not a plain network's
    (linear in theta: robustlaw.linearised) gives its own J, ``parametrisation_J(R)``. Only trained
    parameters count (a frozen layer is part of the model, not of its parametrisation), unless none is
    (a construction's are all fixed)."""
    P, R = model.param_count(), max(data.radius, 1e-12)
    theta = [p for p in model.parameters() if p.requires_grad] or list(model.parameters())
    w_max = max(float(p.detach().abs().max()) for p in theta)
    if hasattr(model, "parametrisation_J"):
        J = model.parametrisation_J(R)
    else:
        J = deep_net_J(R=R, W=max(w_max, 1e-12), P=P, depth=model.depth, sharing=getattr(model, "weight_sharing", 1))
    return 2 * w_max * np.sqrt(P), J


FAMILIES: Registry[Family] = Registry("family", "model.family")
for _family in (TwoLayer(), MLP(), Construction()):
    FAMILIES.register(_family.name, _family)


# ----------------------------------------------------------------------------- random features and NTK
# Models linear in their trained parameters (robustlaw.linearised), fitted in closed form or by GD.

#: the most feature-matrix entries (n P, 8 bytes each) a closed-form fit may form here
MAX_FEATURE_ENTRIES = 3 * 10**7


@dataclass(frozen=True)
class NTKOptions:
    """The width-k two-layer ReLU or t^2 net linearised at initialisation, P = k (d + 2); ``solver`` min_norm
    (the interpolator nearest the initialisation) or gd (robustlaw.linearised)."""

    width: int = 16
    solver: str = "min_norm"

    def __post_init__(self):
        require(_widths_ok([self.width]), "model.width", f"must be an integer >= 1, got {self.width!r}")
        require(self.solver in SOLVERS, "model.solver", f"unknown solver {self.solver!r} (known: {', '.join(SOLVERS)})")


@dataclass(frozen=True)
class RandomFeaturesOptions(NTKOptions):
    """f(x) = a . act(W x + b) (+ c) with W, b frozen at initialisation: ``width`` k, ``output_bias`` c,
    ``solver`` min_norm (the minimum-norm interpolator) or gd (robustlaw.linearised). P = k (+ 1)."""

    output_bias: bool = False


class LinearFamily:
    """Models linear in their trained parameters, each fitted alone by its options' ``solver``; the record's
    ``mode`` is the solver. FitSpec's target, tol, eps, max_steps and check_every apply; its optimiser
    fields (lr, weight_decay) do not, and mode smooth is refused (there is nothing left to smooth: the
    solution of a linear model is fixed by the solver)."""

    options: ClassVar[type]

    def hidden(self, spec: ModelSpec) -> list[int]:
        return [spec.options.width]

    def batch_key(self, spec: ModelSpec) -> tuple:
        return (self.name, spec.options.solver)

    def work(self, spec: ModelSpec, n: int, d: int) -> int:
        return n * self.params(spec, d)

    def check(self, spec: ModelSpec, d: int) -> None:
        require(self.params(spec, d) <= MAX_PARAMS, "model.width",
                f"{self.params(spec, d):.3g} parameters exceed the {MAX_PARAMS:.0e} a model may have here")

    def check_run(self, spec: ModelSpec, n: int, d: int, fit: FitSpec) -> None:
        """What depends on the data size and the fit (an optional Family method, called by RunSpec)."""
        check_linear_fit(n, self.params(spec, d), fit)

    def fit(self, models: list, data: list[Dataset], spec: FitSpec, model_specs: list[ModelSpec],
            seeds: list[int]) -> tuple[list, list[FitResult | BaseException]]:
        results = []
        for model, run_data, model_spec in zip(models, data, model_specs):
            try:
                results.append(solve(model, run_data, spec, model_spec.options.solver))
            except Exception as error:  # noqa: BLE001 -- returned, recorded by the caller
                results.append(error)
        return models, results


def check_linear_fit(n: int, P: int, fit: FitSpec) -> None:
    """One line if a linear-in-parameters fit cannot run: mode smooth, or a feature matrix too large."""
    require(fit.mode == "train", "fit.mode", f"{fit.mode} is for trained networks; this family uses its solver")
    require(n * P <= MAX_FEATURE_ENTRIES, "model.width",
            f"a closed-form fit forms n P = {n * P:.3g} features, above the {MAX_FEATURE_ENTRIES:.0e} allowed here")


def solve(model, data: Dataset, spec: FitSpec, solver: str) -> FitResult:
    """Fit a linear-in-parameters model by ``solver`` (robustlaw.linearised) and report it as a FitResult."""
    n, P, start = data.n, model.param_count(), time.perf_counter()
    if solver == "min_norm":
        min_norm(model, data.X, data.y)
        steps, flops = 0, 2.0 * n * P * min(n, P)
    else:
        met = lambda predictions: fit_quality(predictions, data, spec)[0]
        steps = gradient_descent(model, data.X, data.y, met, spec.max_steps, spec.check_every)
        flops = 2.0 * n * n * P + 2.0 * n * n * steps
    reached, mse, max_err = fit_quality(predict(model, data.X), data, spec)
    return FitResult(reached=reached, steps=steps, train_mse=mse, train_max_err=max_err,
                     seconds=time.perf_counter() - start, mode=solver, flops=flops)


class RandomFeaturesFamily(LinearFamily):
    name, options = "random_features", RandomFeaturesOptions

    def params(self, spec: ModelSpec, d: int) -> int:
        return spec.options.width + spec.options.output_bias

    def build(self, spec: ModelSpec, d: int, seed: int) -> nn.Module:
        return random_features(d, spec.options.width, spec.activation, seed, spec.q, spec.options.output_bias)


class NTKFamily(LinearFamily):
    name, options = "ntk", NTKOptions

    def params(self, spec: ModelSpec, d: int) -> int:
        return spec.options.width * (d + 2)

    def check(self, spec: ModelSpec, d: int) -> None:
        super().check(spec, d)
        require(spec.activation == "relu" or (spec.activation == "poly" and spec.q == 2), "model.activation",
                f"the ntk family linearises a ReLU or t^2 (poly, q = 2) net, got {spec.activation!r} (q = {spec.q})")

    def build(self, spec: ModelSpec, d: int, seed: int) -> nn.Module:
        net = mlp(d, [spec.options.width], activation=spec.activation, q=spec.q, seed=seed, dtype=torch.float64)
        return LinearisedTwoLayer(net)


for _family in (RandomFeaturesFamily(), NTKFamily()):
    FAMILIES.register(_family.name, _family)


# ----------------------------------------------------------------------------- issue 11 B: CNNs and pruned nets


def _channels_ok(values) -> bool:
    return len(values) >= 1 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)


@dataclass(frozen=True)
class CNNOptions:
    """A CNN (robustlaw.conv.cnn) on flat inputs reshaped to one channel of ``image``: [height, width]
    (digits: [8, 8], the 64-vector's rows) or [] for a 1-D signal of length d; convolutions of
    ``channels`` with an odd ``kernel`` (same padding), an average pooling of ``pool``, a linear head."""

    channels: tuple[int, ...] = (4, 4)
    image: tuple[int, ...] = ()
    kernel: int = 3
    pool: int = 2

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "image", tuple(self.image))
        require(_channels_ok(self.channels), "model.channels",
                f"must be a non-empty list of integers >= 1, got {list(self.channels)!r}")
        require(len(self.image) in (0, 1, 2) and (not self.image or _channels_ok(self.image)), "model.image",
                f"must be [] (1-D) or [height, width] of integers >= 1, got {list(self.image)!r}")
        require(isinstance(self.kernel, int) and self.kernel >= 1 and self.kernel % 2 == 1, "model.kernel",
                f"must be an odd integer >= 1, got {self.kernel!r}")
        require(isinstance(self.pool, int) and self.pool >= 1, "model.pool", f"must be an integer >= 1, got {self.pool!r}")


class CNN:
    """Convolutional nets (robustlaw.conv), each trained alone by robustlaw.fitting.fit_module (train mode);
    certified through their dense expansion (robustlaw.lipschitz.network.from_torch)."""

    name, options = "cnn", CNNOptions

    def hidden(self, spec: ModelSpec) -> list[int]:
        return []  # no dense hidden layer: convolutions, pooling, then the linear head

    def check(self, spec: ModelSpec, d: int) -> None:
        """The shape fits d, and the dense layers certification builds stay within MAX_DENSE."""
        o = spec.options
        conv_shapes(d, o.image, o.kernel, o.pool)
        widest = max(o.channels) * d
        require(widest * max(widest, d) <= MAX_DENSE, "model.channels",
                f"{max(o.channels)} channels on {d} inputs make a {widest}-wide dense layer, too large to certify "
                f"(at most MAX_DENSE = {MAX_DENSE:.0e} entries)")

    def check_run(self, spec: ModelSpec, n: int, d: int, fit: FitSpec) -> None:
        """fit_module trains in train mode only (the smooth surrogate is written for stacked dense layers)."""
        require(fit.mode == "train", "fit.mode", f"family cnn is fitted in train mode only, not {fit.mode!r}")

    def build(self, spec: ModelSpec, d: int, seed: int) -> nn.Module:
        o = spec.options
        return cnn(d, list(o.channels), o.image, o.kernel, o.pool, activation=spec.activation, seed=seed, q=spec.q)

    def batch_key(self, spec: ModelSpec) -> tuple:
        return ("cnn", spec.options)

    def work(self, spec: ModelSpec, n: int, d: int) -> int:
        o = spec.options
        return n * multiply_adds(d, list(o.channels), o.image, o.kernel, o.pool)

    def fit(self, models: list, data: list[Dataset], spec: FitSpec, model_specs: list[ModelSpec],
            seeds: list[int]) -> tuple[list, list[FitResult]]:
        return models, [fit_module(m, x.X, x.y, spec, x.sigma) for m, x in zip(models, data)]


@dataclass(frozen=True)
class PrunedOptions:
    """An MLP d -> widths -> 1 whose hidden Linear layers keep a fraction ``density`` of their weights,
    chosen by ``mask`` (robustlaw.pruning.MASKS: random, magnitude, snip, imp); ``rounds``: IMP's
    train-prune-rewind rounds."""

    widths: tuple[int, ...] = (64,)
    mask: str = "random"
    density: float = 0.25
    rounds: int = 3

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(self.widths))
        require(_widths_ok(self.widths), "model.widths",
                f"must be a non-empty list of integers >= 1, got {list(self.widths)!r}")
        MASKS.get(self.mask)
        require(isinstance(self.density, (int, float)) and 0 < self.density <= 1, "model.density",
                f"must be in (0, 1], got {self.density!r}")
        require(isinstance(self.rounds, int) and not isinstance(self.rounds, bool) and self.rounds >= 1,
                "model.rounds", f"must be an integer >= 1, got {self.rounds!r}")


class Pruned(TrainedFamily):
    """An MLP pruned by a mask source (robustlaw.pruning), then trained by fit_many with the pruned
    weights held at zero. P counts all weights; the record's ``nonzero`` the weights the mask leaves."""

    name, options = "pruned", PrunedOptions

    def hidden(self, spec: ModelSpec) -> list[int]:
        return list(spec.options.widths)

    def batch_key(self, spec: ModelSpec) -> tuple:
        return ("pruned", spec.options)

    def fit(self, models: list, data: list[Dataset], spec: FitSpec, model_specs: list[ModelSpec],
            seeds: list[int]) -> tuple[list, list[FitResult]]:
        o = model_specs[0].options
        Xs, ys, sigmas = [x.X for x in data], [x.y for x in data], [x.sigma for x in data]
        MASKS.get(o.mask)().prune(models, Xs, ys, spec, sigmas, seeds, Pruning(o.density, o.rounds))
        return models, fit_many(models, Xs, ys, spec, sigmas, seeds)


for _family in (CNN(), Pruned()):
    FAMILIES.register(_family.name, _family)
