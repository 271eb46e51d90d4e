"""Pruning masks for dense networks: where they come from, and what they cost in parameters.

A mask keeps a fraction ``density`` of the weights of every hidden Linear layer (the head and the
biases are never pruned), so every mask source gives the same non-zero count. It is stored on the layer
as the buffer ``prune_mask`` (1 kept, 0 pruned); the pruned weights are set to zero, and
:class:`robustlaw.fitting.Stack` keeps them there while training. The sources, each a
:class:`MaskSource` registered in :data:`MASKS` (a new one is one more class):

- ``random``: a uniformly random subset of each layer (from the run's seed), independent of the data;
- ``magnitude``: the largest |w| at initialisation, independent of the data;
- ``snip``: the largest saliency |w * dL/dw| of the train MSE at initialisation, on the run's data
  (SNIP: Lee, Ajanthan, Torr, arXiv:1810.02340);
- ``imp``: iterative magnitude pruning with rewinding to initialisation (Frankle and Carbin,
  arXiv:1803.03635): train, keep the largest trained |w| among the survivors, rewind the survivors to
  their initial values, ``rounds`` times, each round keeping ``density ** (1 / rounds)`` of them.

Kumar, Luo and Sellke (KLS24, "No Free Prune", arXiv:2402.01089) show that a pruned class's effective
parameter count is p_eff = E||mask||_1 + I(mask; data)
(:func:`robustlaw.theory.no_free_prune_p_eff`): the data-free sources have I = 0, the data-dependent
ones up to log C(P_prunable, nonzero) nats (the entropy of the mask). See docs/experiments.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robustlaw.fitting import FitSpec, fit_many
from robustlaw.models import Network
from robustlaw.registry import Registry
from robustlaw.seeding import stream


def prunable(model: Network) -> list[nn.Linear]:
    """The layers a mask prunes: every Linear layer but the head."""
    return model.linear_layers()[:-1]


def keep_largest(scores: torch.Tensor, alive: torch.Tensor, keep: int) -> torch.Tensor:
    """A 0/1 mask keeping the ``keep`` largest ``scores`` among the ``alive`` entries (ties: lowest index)."""
    flat = torch.where(alive.flatten() > 0, scores.flatten().double(), torch.tensor(-np.inf, dtype=torch.float64))
    order = np.argsort(-flat.numpy(), kind="stable")[:keep]
    mask = torch.zeros(flat.numel(), dtype=scores.dtype)
    mask[torch.as_tensor(order.copy())] = 1
    return mask.reshape(scores.shape)


def kept_count(size: int, density: float) -> int:
    """How many of ``size`` weights a layer keeps at ``density`` (at least one)."""
    return max(1, int(round(density * size)))


def apply_masks(model: Network, masks: list[torch.Tensor]) -> None:
    """Store ``masks`` on the prunable layers (buffer ``prune_mask``) and zero the pruned weights."""
    for layer, mask in zip(prunable(model), masks):
        layer.register_buffer("prune_mask", mask.to(layer.weight.dtype))
        with torch.no_grad():
            layer.weight.mul_(layer.prune_mask)


def nonzero_count(model: nn.Module) -> int:
    """Trainable parameters a mask leaves free: P minus the entries pruned by ``prune_mask`` buffers."""
    pruned = sum(int((m.prune_mask == 0).sum()) for m in model.modules() if hasattr(m, "prune_mask"))
    return model.param_count() - pruned


@dataclass(frozen=True)
class Pruning:
    """What every mask source is told: the fraction of each prunable layer kept and IMP's rounds."""

    density: float
    rounds: int


class MaskSource:
    """Prunes freshly initialised models in place (:func:`apply_masks`); ``data_dependent``: whether
    the mask may depend on the training data (then I(mask; data) may be > 0)."""

    name: str
    data_dependent: bool

    def prune(self, models: list[Network], Xs: list[np.ndarray], ys: list[np.ndarray], spec: FitSpec,
              sigmas: list[float], seeds: list[int], how: Pruning) -> None:
        for model, X, y, seed in zip(models, Xs, ys, seeds):
            apply_masks(model, self.masks(model, X, y, seed, how.density))

    def masks(self, model: Network, X: np.ndarray, y: np.ndarray, seed: int, density: float) -> list[torch.Tensor]:
        raise NotImplementedError


MASKS: Registry[MaskSource] = Registry("mask source", "model.mask")


@MASKS.register("random")
class RandomMask(MaskSource):
    name, data_dependent = "random", False

    def masks(self, model, X, y, seed, density):
        rng = stream(seed, "mask")
        return [keep_largest(torch.as_tensor(rng.random(tuple(lin.weight.shape))), torch.ones(lin.weight.shape),
                             kept_count(lin.weight.numel(), density)).to(lin.weight.dtype) for lin in prunable(model)]


@MASKS.register("magnitude")
class MagnitudeMask(MaskSource):
    name, data_dependent = "magnitude", False

    def masks(self, model, X, y, seed, density):
        return magnitude_masks(model, [kept_count(lin.weight.numel(), density) for lin in prunable(model)])


@MASKS.register("snip")
class SnipMask(MaskSource):
    """SNIP: the saliency |w * dL/dw| of the train MSE L at the initial weights."""

    name, data_dependent = "snip", True

    def masks(self, model, X, y, seed, density):
        layers = prunable(model)
        dtype = layers[0].weight.dtype
        loss = (model(torch.as_tensor(X, dtype=dtype)) - torch.as_tensor(y, dtype=dtype)).pow(2).mean()
        grads = torch.autograd.grad(loss, [lin.weight for lin in layers])
        return [keep_largest((lin.weight.detach() * g).abs(), torch.ones_like(g), kept_count(g.numel(), density))
                for lin, g in zip(layers, grads)]


@MASKS.register("imp")
class IterativeMagnitude(MaskSource):
    """Iterative magnitude pruning with rewinding: each round trains the models
    (:func:`robustlaw.fitting.fit_many`), keeps the largest trained |w| among the survivors and rewinds
    every parameter to its initial value; the models end rewound and masked, ready for the final fit."""

    name, data_dependent = "imp", True

    def prune(self, models, Xs, ys, spec, sigmas, seeds, how):
        initial = [[p.detach().clone() for p in m.parameters()] for m in models]
        for r in range(1, how.rounds + 1):
            fit_many(models, Xs, ys, spec, sigmas, seeds)
            for model, start in zip(models, initial):
                layers = prunable(model)
                alive = [getattr(lin, "prune_mask", torch.ones_like(lin.weight)) for lin in layers]
                keep = [kept_count(lin.weight.numel(), how.density ** (r / how.rounds)) for lin in layers]
                masks = magnitude_masks(model, keep, alive)
                with torch.no_grad():
                    for p, value in zip(model.parameters(), start):
                        p.copy_(value)
                apply_masks(model, masks)


def magnitude_masks(model: Network, keep: list[int], alive: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Per prunable layer, the ``keep`` largest |w| among the ``alive`` entries (default: all)."""
    layers = prunable(model)
    alive = alive or [torch.ones_like(lin.weight) for lin in layers]
    return [keep_largest(lin.weight.detach().abs(), a, k) for lin, a, k in zip(layers, alive, keep)]
