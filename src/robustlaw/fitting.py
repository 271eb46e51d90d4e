"""Training to exact or partial memorisation, many models in one computation.

Targets (``Target.kind``):
- ``interpolate``: max_i |f(x_i) - y_i| <= tol (exact memorisation up to tol);
- ``memorise``: train MSE <= sigma^2 - eps, the hypothesis of BS21 Theorem 3;
- ``budget``: train for ``max_steps`` and record what was reached.
A model that never meets its target is recorded with ``reached = False``.

Modes (``FitSpec.mode``):
- ``train``: plain full-batch AdamW on the train MSE; a model stops the moment it meets its target.
- ``smooth``: the law bounds *every* interpolator, so this mode searches for the least-Lipschitz
  one. After plain training meets the target, it minimises a Lipschitz surrogate -- the mean of
  the ``smooth_top`` largest input-gradient norms at the data points and at ``smooth_probes``
  fresh probe points per step (between data of opposite labels, jittered data, uniform in the
  data ball) -- plus ``mu`` times the fit violation beyond ``tol / 2`` (or beyond 0.9 of the
  memorise budget), doubling ``mu`` whenever the target is lost (penalty continuation), for
  ``smooth_steps`` steps of AdamW restarted at ``smooth_lr``. It returns the last iterate that met
  the target, so a smooth fit meets the same target as plain training.

Batching (:class:`Stack`): models of one depth and activation whose hidden widths pad to the same
multiples of 16 are stacked, zero-padded, and trained with batched matmuls and one elementwise
AdamW; :func:`fit_many` splits its models into such groups (:func:`padding_groups`), since a
reduction over a longer padded width is blocked differently by the matrix kernels. A model leaves
the batch when it is done. The layout keeps every real unit's arithmetic identical whatever the
batch size and batch mates, per-model scalars (learning rates, bias corrections) are computed in
Python floats, and every random choice a model makes comes from its own seed, so a model's result
is bitwise the same alone or batched, in any order, in both modes. Two-layer ReLU nets in train
mode get their gradient in closed form (:meth:`Stack.mse_grads`), the rest by autograd.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from robustlaw.errors import RobustlawError, require
from robustlaw.models import Network
from robustlaw.seeding import torch_stream

MODES = ("train", "smooth")


@dataclass(frozen=True)
class Target:
    """What counts as fitted: see the module docstring for the three kinds."""

    kind: str = "interpolate"
    tol: float = 0.1
    eps: float = 0.1

    def __post_init__(self):
        require(self.kind in ("interpolate", "memorise", "budget"), "fit.target",
                f"unknown target {self.kind!r} (known: interpolate, memorise, budget)")
        require(np.isfinite(self.tol) and self.tol > 0, "fit.tol", f"must be > 0, got {self.tol}")
        require(np.isfinite(self.eps) and self.eps > 0, "fit.eps", f"must be > 0, got {self.eps}")

    def met(self, max_err: torch.Tensor, mse: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Boolean per model: is the target met at these train errors?"""
        if self.kind == "interpolate":
            return max_err <= self.tol
        if self.kind == "memorise":
            return mse <= sigma**2 - self.eps
        return torch.zeros_like(mse, dtype=torch.bool)

    def violation(self, residual: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Per model, a smooth penalty that is zero well inside the target (used by the smooth mode)."""
        if self.kind == "interpolate":
            return torch.relu(residual.abs() - self.tol / 2).pow(2).sum(dim=1)
        budget = sigma**2 - self.eps
        return residual.shape[1] * torch.relu((residual**2).mean(dim=1) - 0.9 * budget).pow(2)


@dataclass(frozen=True)
class FitSpec:
    """How to train: the target, full-batch AdamW (``lr``, decoupled ``weight_decay``, cosine decay
    to lr/100 over ``max_steps``), checked every ``check_every`` steps; and the ``mode`` (train or
    smooth, see the module docstring) with the smooth phase's ``smooth_steps``, ``smooth_lr``,
    ``smooth_mu``, ``smooth_probes`` and ``smooth_top``."""

    target: str = "interpolate"
    tol: float = 0.1
    eps: float = 0.1
    lr: float = 0.01
    max_steps: int = 5000
    check_every: int = 10
    weight_decay: float = 0.0
    mode: str = "train"
    smooth_steps: int = 2000
    smooth_lr: float = 0.003
    smooth_mu: float = 1.0
    smooth_probes: int = 256
    smooth_top: int = 1

    def __post_init__(self):
        Target(self.target, self.tol, self.eps)
        for name in ("lr", "smooth_lr", "smooth_mu"):
            value = getattr(self, name)
            require(isinstance(value, (int, float)) and np.isfinite(value) and value > 0, f"fit.{name}",
                    f"must be > 0, got {value}")
        for name, low in (("max_steps", 1), ("check_every", 1), ("smooth_steps", 1), ("smooth_probes", 4),
                          ("smooth_top", 1)):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value >= low, f"fit.{name}",
                    f"must be an integer >= {low}, got {value!r}")
        require(np.isfinite(self.weight_decay) and self.weight_decay >= 0, "fit.weight_decay",
                f"must be >= 0, got {self.weight_decay}")
        require(self.mode in MODES, "fit.mode", f"unknown mode {self.mode!r} (known: {', '.join(MODES)})")
        require(self.mode != "smooth" or self.target != "budget", "fit.mode",
                "smooth needs a target to keep while smoothing (interpolate or memorise), not budget")
        require(self.smooth_top <= self.smooth_probes, "fit.smooth_top",
                f"must be <= fit.smooth_probes ({self.smooth_probes}), got {self.smooth_top}")

    @property
    def goal(self) -> Target:
        return Target(self.target, self.tol, self.eps)


@dataclass(frozen=True)
class FitResult:
    """What training achieved: whether the target was met, after how many steps (for a smooth fit,
    the step of the returned iterate), the train errors, wall time (its share of the batch), the
    useful training FLOPs spent on this model, and the mode that produced it."""

    reached: bool
    steps: int
    train_mse: float
    train_max_err: float
    seconds: float
    mode: str = "train"
    flops: float = 0.0
    smooth_surrogate: float | None = None


# ----------------------------------------------------------------------------- stacked networks


def _layers(model: Network) -> tuple[list[nn.Linear], list[nn.Module]]:
    linear = model.linear_layers()
    acts = [m for m in model if not isinstance(m, nn.Linear)]
    if len(acts) != len(linear) - 1:
        raise RobustlawError(f"fit expects Linear layers with one activation between them, got {model}")
    return linear, acts


#: hidden widths are padded to a multiple of this, alone or batched: matrix kernels treat a
#: narrow last panel differently, so a width-10 model computed in 10 columns would not equal
#: the same model computed inside a wider batch
PANEL = 16


def padded_width(width: int) -> int:
    return -(-width // PANEL) * PANEL


class Stack:
    """Same-depth networks as stacked, zero-padded tensors.

    ``weights[l]``: (m, in_l [+ 1], out_l) for hidden layers, transposed and with the bias as a
    last input row (the layer's input gets a column of ones); the head is (m, 2, in [+ 1]). In
    this layout padding a hidden width only adds columns to matrix products, so the forward pass
    and the parameter gradients of every real unit are the same whatever the padding; a separate
    bias would have its gradient summed over n by a reduction whose order depends on the padded
    width. The gradient with respect to the *inputs* (the smooth mode's surrogate) is a reduction
    over the padded width itself, which matrix kernels block differently for different lengths:
    that is why :func:`fit_many` stacks only models of equal padded widths.
    ``widths``: (m, depth - 1) true hidden widths; units beyond a model's width are zero.
    """

    def __init__(self, models: list[Network]):
        _check_stackable(models)
        parts = [_layers(m) for m in models]
        self.acts = parts[0][1]
        self.bias = [lin.bias is not None for lin in parts[0][0]]
        depth = len(self.acts) + 1
        self.widths = torch.tensor([[lin.out_features for lin in linear[:-1]] for linear, _ in parts],
                                   dtype=torch.long).reshape(len(models), depth - 1)
        self.weights = []
        for layer in range(depth):
            ws = [linear[layer].weight.detach().T for linear, _ in parts]
            in_max, out_max = max(w.shape[0] for w in ws), max(w.shape[1] for w in ws)
            if layer > 0:
                in_max = padded_width(in_max)
            if layer < depth - 1:
                out_max = padded_width(out_max)
                W = ws[0].new_zeros((len(ws), in_max + self.bias[layer], out_max))
                for i, (w, (linear, _)) in enumerate(zip(ws, parts)):
                    W[i, :w.shape[0], :w.shape[1]] = w
                    if self.bias[layer]:
                        W[i, -1, :w.shape[1]] = linear[layer].bias.detach()
            else:
                # the scalar head as (m, 2, in): row 0 the weights, row 1 always zero. A batched
                # matrix-vector product takes another kernel for one model than for many (breaking
                # determinism) and a 2-column product is slow; a 2-row product is neither.
                W = ws[0].new_zeros((len(ws), 2, in_max + self.bias[layer]))
                for i, (w, (linear, _)) in enumerate(zip(ws, parts)):
                    W[i, 0, :w.shape[0]] = w[:, 0]
                    if self.bias[layer]:
                        W[i, 0, -1] = linear[layer].bias.detach()[0]
            self.weights.append(W)
        self.prune = self._prune_masks([linear for linear, _ in parts])

    def _prune_masks(self, linears: list[list[nn.Linear]]) -> list[torch.Tensor | None] | None:
        """Pruning masks (robustlaw.pruning), laid out like ``weights``: per layer, 1 where a model's weight
        may move and 0 where its ``prune_mask`` buffer pruned it (biases and padding: 1); None for an
        unpruned layer, and None in all when no model is pruned. A pruned weight starts at zero and its
        gradient is masked (:meth:`masked`), so AdamW keeps it exactly zero."""
        if not any(hasattr(lin, "prune_mask") for layers in linears for lin in layers):
            return None
        out = []
        for layer, W in enumerate(self.weights):
            if not any(hasattr(layers[layer], "prune_mask") for layers in linears):
                out.append(None)
                continue
            M = torch.ones_like(W)
            for i, layers in enumerate(linears):
                mask = getattr(layers[layer], "prune_mask", None)
                if mask is not None and layer < len(self.acts):
                    M[i, :mask.shape[1], :mask.shape[0]] = mask.T
                elif mask is not None:
                    M[i, 0, :mask.shape[1]] = mask[0]
            out.append(M)
        return out

    def masked(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """``grads`` with the pruned weights' entries zeroed (unchanged without pruning)."""
        if self.prune is None:
            return grads
        return [g if M is None else g * M for g, M in zip(grads, self.prune)]

    @property
    def params(self) -> list[torch.Tensor]:
        return self.weights

    def masks(self) -> list[torch.Tensor | None]:
        """Per hidden layer, (m, 1, width_max) with 1 for a model's real units and 0 for padding;
        None where the activation maps 0 to 0, since a padded unit (zero weights in and out) then
        stays exactly zero, gradients included, without a mask."""
        out = []
        for layer, W in enumerate(self.weights[:-1]):
            with torch.no_grad():
                zero_at_zero = float(self.acts[layer](W.new_zeros(1))[0]) == 0.0
            out.append(None if zero_at_zero else
                       (torch.arange(W.shape[2]) < self.widths[:, layer, None]).to(W.dtype).unsqueeze(1))
        return out

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """x with the column of ones that carries the first layer's bias (if it has one)."""
        return torch.cat([x, x.new_ones(x.shape[:-1] + (1,))], dim=-1) if self.bias[0] else x

    def forward(self, x: torch.Tensor, masks: list[torch.Tensor | None]) -> torch.Tensor:
        """x: (m, p, d), already :meth:`augment` ed -> (m, p), model i applied to x[i]."""
        h = x
        for layer, W in enumerate(self.weights):
            if layer > 0 and self.bias[layer]:
                h = torch.cat([h, h.new_ones(h.shape[:-1] + (1,))], dim=-1)
            if layer == len(self.acts):
                return torch.bmm(W, h.transpose(1, 2))[:, 0]
            h = self.acts[layer](torch.bmm(h, W))
            if masks[layer] is not None:
                h = h * masks[layer]
        raise AssertionError("unreachable: the last layer returns")

    @property
    def closed_form(self) -> bool:
        """Two-layer ReLU nets get their MSE gradient in closed form (:meth:`mse_grads`)."""
        return len(self.weights) == 2 and isinstance(self.acts[0], nn.ReLU) and not self.bias[1]

    @torch.no_grad()
    def mse_grads(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Residuals f(x) - y and the gradient of the summed per-model train MSE, for two-layer
        ReLU nets without autograd: a quarter of the operations, which is what a step of a batch
        of small models costs. x: (m, n, d) augmented, y: (m, n). Uses the same matrix products
        as autograd would, so it is just as batch-independent."""
        W1, W2 = self.weights
        h = torch.relu(torch.bmm(x, W1))
        residual = torch.bmm(W2, h.transpose(1, 2))[:, 0] - y
        g = residual * (2.0 / residual.shape[1])
        g2 = torch.zeros((g.shape[0], 2, g.shape[1]), dtype=g.dtype)
        g2[:, 0] = g
        dz = torch.ops.aten.threshold_backward(g.unsqueeze(-1) * W2[:, :1, :], h, 0.0)
        return residual, [torch.bmm(x.transpose(1, 2), dz), torch.bmm(g2, h)]

    def _rows(self, layer: int, width: int) -> list[int]:
        """Indices of the input rows of ``layer`` a model with previous width ``width`` uses."""
        rows = list(range(width))
        return rows + [-1] if self.bias[layer] else rows

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the models ``keep`` (indices) and drop padding no remaining model needs."""
        self.widths = self.widths[keep]
        self.weights = [self.cut(W[keep], layer) for layer, W in enumerate(self.weights)]
        if self.prune is not None:
            self.prune = [None if M is None else self.cut(M[keep], layer) for layer, M in enumerate(self.prune)]

    def cut(self, T: torch.Tensor, layer: int) -> torch.Tensor:
        """A tensor shaped like layer ``layer``'s weights, cut to the padding the current models need."""
        widest = [padded_width(w) for w in self.widths.amax(dim=0).tolist()]
        if layer < len(self.acts):
            T = T[:, :, :widest[layer]]
            if layer > 0:
                T = T[:, self._rows(layer, widest[layer - 1])]
        elif layer > 0:
            T = T[:, :, self._rows(layer, widest[layer - 1])]
        return T.contiguous()

    def slices(self, i: int) -> list[torch.Tensor]:
        """Model i's own (unpadded) parameters, in the order of ``model.parameters()``."""
        width = self.widths[i].tolist()
        out = []
        for layer, W in enumerate(self.weights):
            head = layer == len(self.acts)
            fan_in = width[layer - 1] if layer > 0 else W.shape[1] - self.bias[layer]
            if head:
                out.append(W[i, :1, :fan_in].clone())
                if self.bias[layer]:
                    out.append(W[i, :1, -1].clone())
            else:
                out.append(W[i, :fan_in, :width[layer]].T.clone())
                if self.bias[layer]:
                    out.append(W[i, -1, :width[layer]].clone())
        return out


def step_flops(n: int, model: Network) -> float:
    """FLOPs of one full-batch forward + backward step: about 6 n P (2 n P forward, twice that back)."""
    return 6.0 * n * model.param_count()


# ----------------------------------------------------------------------------- probes and AdamW


def _probes(X: torch.Tensor, y: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Every data point and ``count`` more where a fit must change fast: between points of opposite
    labels, near data, uniform in the data ball."""
    n, d = X.shape
    q = count // 3
    radius = float(X.norm(dim=1).max())
    data = X
    i, j = torch.randint(n, (q,), generator=generator), torch.randint(n, (q,), generator=generator)
    j = torch.where(y[i] != y[j], j, torch.randint(n, (q,), generator=generator))
    t = torch.rand(q, 1, generator=generator, dtype=X.dtype)
    between = t * X[i] + (1 - t) * X[j]
    scale = torch.tensor([0.01, 0.03, 0.1, 0.3], dtype=X.dtype)[torch.randint(4, (q, 1), generator=generator)]
    near = X[torch.randint(n, (q,), generator=generator)] + radius * scale * torch.randn(
        q, d, generator=generator, dtype=X.dtype) / math.sqrt(d)
    rest = count - 2 * q
    ball = torch.randn(rest, d, generator=generator, dtype=X.dtype)
    inside = torch.rand(rest, 1, generator=generator, dtype=X.dtype) ** (1 / d)
    ball = radius * ball / ball.norm(dim=1, keepdim=True) * inside
    points = torch.cat([data, between, near, ball])
    norms = points.norm(dim=1, keepdim=True)
    return points * (radius / norms).clamp(max=1.0)


class AdamW:
    """Adam with decoupled weight decay (AdamW: Loshchilov & Hutter, "Decoupled Weight Decay
    Regularization", arXiv:1711.05101) over stacked tensors: elementwise, so it is exactly one
    AdamW per model, and a model's state can be dropped when it leaves the batch.

    With a float ``lr`` (one step count and rate for all models: the train mode) it runs fused
    foreach ops; with a per-model tensor ``lr`` (the smooth mode, whose models restart their
    moments when smoothing begins) per-model arithmetic, with each model's bias corrections
    computed in Python floats: a vectorised ``pow`` over a batch of 8 or more models rounds
    differently from the scalar one a smaller batch takes. Which path runs depends only on the
    mode, never on the batch, so results stay batch-independent."""

    def __init__(self, params: list[torch.Tensor], weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = [0] * params[0].shape[0]  # per-model step counts (per-model path)
        self.count = 0  # the shared step count (float-lr path)
        self.weight_decay, self.betas, self.eps = weight_decay, betas, eps

    @torch.no_grad()
    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], lr: torch.Tensor | float) -> None:
        if isinstance(lr, float):
            self._step_shared(params, grads, lr)
            return
        b1, b2 = self.betas
        self.t = [t + 1 for t in self.t]
        c1 = lr.new_tensor([1 - b1**t for t in self.t])
        c2 = lr.new_tensor([1 - b2**t for t in self.t])
        for p, g, m, v in zip(params, grads, self.m, self.v):
            shape = (-1,) + (1,) * (p.dim() - 1)
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            rate = lr.view(shape)
            if self.weight_decay:
                p.mul_(1 - rate * self.weight_decay)
            p.sub_(rate * (m / c1.view(shape)) / ((v / c2.view(shape)).sqrt() + self.eps))

    def _step_shared(self, params: list[torch.Tensor], grads: list[torch.Tensor], lr: float) -> None:
        b1, b2 = self.betas
        self.count += 1
        c1, c2 = 1 - b1**self.count, 1 - b2**self.count
        torch._foreach_lerp_(self.m, grads, 1 - b1)
        torch._foreach_mul_(self.v, b2)
        torch._foreach_addcmul_(self.v, grads, grads, 1 - b2)
        denom = torch._foreach_sqrt(self.v)
        torch._foreach_div_(denom, math.sqrt(c2))
        torch._foreach_add_(denom, self.eps)
        if self.weight_decay:
            torch._foreach_mul_(params, 1 - lr * self.weight_decay)
        torch._foreach_addcdiv_(params, self.m, denom, -lr / c1)

    @torch.no_grad()
    def reset(self, rows: torch.Tensor) -> None:
        """Forget the moments of models ``rows`` (boolean), as a fresh AdamW would."""
        assert self.count == 0, "a reset needs the per-model path (tensor lr) throughout"
        for row in torch.nonzero(rows).flatten().tolist():
            self.t[row] = 0
        for m, v in zip(self.m, self.v):
            m[rows] = 0
            v[rows] = 0

    def select(self, keep: torch.Tensor, stack: Stack) -> None:
        """Keep the state of the models ``keep``, cut as ``stack`` (already selected) was."""
        self.t = [self.t[row] for row in keep.tolist()]
        self.m, self.v = _select(self.m, keep, stack), _select(self.v, keep, stack)


def _select(tensors: list[torch.Tensor], keep: torch.Tensor, stack: Stack) -> list[torch.Tensor]:
    """Rows ``keep`` of per-layer tensors shaped like ``stack.weights``, cut as :meth:`Stack.select` cut them."""
    return [stack.cut(t[keep], layer) for layer, t in enumerate(tensors)]


def cosine(lr: float, step: float, total: int) -> float:
    """Cosine decay from lr to lr / 100 over ``total`` steps, at ``step``, in Python floats (the
    same for every model, whatever the batch)."""
    decay = 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    return lr * 0.01 + lr * 0.99 * decay


# ----------------------------------------------------------------------------- fitting


def fit(model: Network, X: np.ndarray, y: np.ndarray, spec: FitSpec = FitSpec(), sigma: float = 1.0,
        seed: int = 0) -> FitResult:
    """Train ``model`` in place on (X, y) towards ``spec``'s target; see :func:`fit_many`."""
    return fit_many([model], [X], [y], spec, [sigma], [seed])[0]


def fit_many(models: list[Network], Xs: list[np.ndarray], ys: list[np.ndarray], spec: FitSpec = FitSpec(),
             sigmas: list[float] | None = None, seeds: list[int] | None = None) -> list[FitResult]:
    """Train same-depth ``models`` (any widths; each on its own data, all of one shape) in batches.

    Each model ends with the parameters of the first iterate that met its target (``train``), the
    last iterate that met it after smoothing (``smooth``), or the last iterate if it never met it.
    ``seeds`` seed each model's probe points in smooth mode. The same model, data and seed give the
    same result whatever else is in the batch: models are stacked only with models of the same
    padded widths (:func:`padding_groups`), so no model's arithmetic depends on its batch mates.
    """
    m = len(models)
    if m == 0:
        return []
    if not (len(Xs) == len(ys) == m):
        raise RobustlawError(f"fit_many got {m} models, {len(Xs)} inputs and {len(ys)} label vectors")
    if len({np.shape(X) for X in Xs}) != 1:
        raise RobustlawError("fit_many needs every data set to have the same shape (n, d)")
    _check_stackable(models)
    seeds = list(seeds) if seeds is not None else [0] * m
    sigmas = list(sigmas) if sigmas is not None else [1.0] * m
    results: list[FitResult | None] = [None] * m
    for rows in padding_groups(models):
        fitted = _fit_batch([models[i] for i in rows], [Xs[i] for i in rows], [ys[i] for i in rows], spec,
                            [sigmas[i] for i in rows], [seeds[i] for i in rows])
        for i, result in zip(rows, fitted):
            results[i] = result
    return results


def padding_groups(models: list[Network]) -> list[list[int]]:
    """Indices of ``models`` grouped by padded hidden widths, groups in order of first appearance.

    Padding a hidden layer wider changes the length of the reductions over it, and matrix kernels
    block a longer reduction differently (the input gradient at the smooth mode's probes, for
    one, came out different for a width-120 model padded to 128 or to 208), so only models of
    equal padded widths share a stack."""
    groups: dict[tuple, list[int]] = {}
    for i, model in enumerate(models):
        groups.setdefault(tuple(padded_width(w) for w in model.hidden_widths), []).append(i)
    return list(groups.values())


def _check_stackable(models: list[Network]) -> None:
    first = _signature(models[0])
    for model in models[1:]:
        signature = _signature(model)
        if signature[:2] != first[:2]:
            raise RobustlawError("fit_many needs models of one depth, activation and bias layout")
        if signature[2] != first[2]:
            raise RobustlawError("fit_many needs models of one input dimension")


def _signature(model: Network) -> tuple[list[str], list[bool], int]:
    """Activations, bias layout and input dimension: what models stacked together must share."""
    linear, acts = _layers(model)
    return [repr(a) for a in acts], [lin.bias is not None for lin in linear], linear[0].in_features


class _Batch:
    """The models of one stack still in training: the stack, its AdamW, each row's original index
    (``ids``), data, noise level and smooth-mode state (``phase_start``: the step smoothing began,
    -1 before; ``mu``: the penalty weight). :meth:`retire` drops finished rows."""

    def __init__(self, models: list[Network], Xs: list[np.ndarray], ys: list[np.ndarray], sigmas: list[float],
                 spec: FitSpec):
        self.stack = Stack(models)
        dtype = self.stack.weights[0].dtype
        m = len(models)
        self.ids = torch.arange(m)
        self.X = torch.as_tensor(np.stack(Xs), dtype=dtype)
        self.y = torch.as_tensor(np.stack(ys), dtype=dtype)
        self.sigma = torch.as_tensor(sigmas, dtype=dtype)
        self.inputs = self.stack.augment(self.X)
        self.masks = self.stack.masks()
        self.phase_start = torch.full((m,), -1, dtype=torch.long)
        self.mu = torch.full((m,), spec.smooth_mu, dtype=dtype)
        self.adam = AdamW(self.stack.params, spec.weight_decay)
        self.fast = spec.mode != "smooth" and self.stack.closed_form

    @property
    def smoothing(self) -> torch.Tensor:
        return self.phase_start >= 0

    def retire(self, finished: torch.Tensor, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """Drop the ``finished`` rows (not all of them); returns ``grads`` cut to the rows kept."""
        keep = torch.nonzero(~finished).flatten()
        for name in ("ids", "phase_start", "mu", "X", "y", "sigma", "inputs"):
            setattr(self, name, getattr(self, name)[keep])
        self.stack.select(keep)
        self.masks = self.stack.masks()
        self.adam.select(keep, self.stack)
        return _select(grads, keep, self.stack)


@dataclass
class _Step:
    """One step's train errors and gradients (None at the final step, which only checks), the
    surrogate of smoothing models, and, at check steps, the max error and which targets are met."""

    residual: torch.Tensor
    mse: torch.Tensor
    grads: list[torch.Tensor] | None
    surrogate: torch.Tensor | None = None
    max_err: torch.Tensor | None = None
    met: torch.Tensor | None = None


@dataclass
class _Ledger:
    """Per original model index: its result once finished, its last feasible iterate while smoothing
    (``kept``), and its useful training FLOPs."""

    results: dict = field(default_factory=dict)
    kept: dict = field(default_factory=dict)
    flops: dict = field(default_factory=dict)


def _snapshot(batch: _Batch, now: _Step, row: int, step: int, reached: bool, surrogate: float | None = None) -> tuple:
    return (reached, step, float(now.mse[row]), float(now.max_err[row]), batch.stack.slices(row), surrogate)


def _fit_batch(models: list[Network], Xs: list[np.ndarray], ys: list[np.ndarray], spec: FitSpec,
               sigmas: list[float], seeds: list[int]) -> list[FitResult]:
    """Train models of equal padded widths in one stack: the step loop of :func:`fit_many`."""
    start = time.perf_counter()
    batch, ledger = _Batch(models, Xs, ys, sigmas, spec), _Ledger()
    generators = [torch_stream(s, "probes") for s in seeds]
    total = spec.max_steps + (spec.smooth_steps if spec.mode == "smooth" else 0)
    for step in range(total + 1):
        last = step == total
        now = _smooth_step(batch, spec, generators, last) if spec.mode == "smooth" else _train_step(batch, last)
        if step % spec.check_every == 0 or last:
            finished = _check_targets(batch, spec, step, now, ledger)
            if last:
                finished = torch.ones_like(finished)
            if bool(finished.any()):
                _collect_results(batch, spec, step, now, finished, ledger, models)
                if bool(finished.all()):
                    break
                now.grads = batch.retire(finished, now.grads)
        # pruned nets: masked weights get no gradient (Stack.masked), so they stay zero
        batch.adam.step(batch.stack.params, batch.stack.masked(now.grads), _learning_rate(batch, spec, step))
    return _write_back(models, ledger, spec, (time.perf_counter() - start) / len(models))


def _train_step(batch: _Batch, last: bool) -> _Step:
    """Train errors and the gradient of the summed train MSE: in closed form where the stack allows."""
    if batch.fast:
        residual, grads = batch.stack.mse_grads(batch.inputs, batch.y)
        return _Step(residual, (residual**2).mean(dim=1), grads)
    params = [p.requires_grad_(True) for p in batch.stack.params]
    residual = batch.stack.forward(batch.inputs, batch.masks) - batch.y
    mse = (residual**2).mean(dim=1)
    return _backward(params, mse, residual, mse, last)


def _smooth_step(batch: _Batch, spec: FitSpec, generators: list[torch.Generator], last: bool) -> _Step:
    """The smooth mode's step: the train MSE for models still fitting; for smoothing models the
    Lipschitz surrogate at fresh probes plus ``mu`` times the fit violation."""
    params = [p.requires_grad_(True) for p in batch.stack.params]
    residual = batch.stack.forward(batch.inputs, batch.masks) - batch.y
    mse = (residual**2).mean(dim=1)
    smoothing = batch.smoothing
    if not bool(smoothing.any()):
        return _backward(params, mse, residual, mse, last)
    surrogate = _surrogate(batch, spec, generators)
    loss = torch.where(smoothing, surrogate + batch.mu * spec.goal.violation(residual, batch.sigma), mse)
    now = _backward(params, loss, residual, mse, last)
    now.surrogate = surrogate.detach()
    return now


def _surrogate(batch: _Batch, spec: FitSpec, generators: list[torch.Generator]) -> torch.Tensor:
    """Per model, the mean of the ``smooth_top`` largest input-gradient norms at the data and fresh
    probes (drawn only for smoothing models, so each model's random stream is its own)."""
    X, y = batch.X, batch.y
    probes = X.new_zeros((len(batch.ids), X.shape[1] + spec.smooth_probes, X.shape[2]))
    for row in torch.nonzero(batch.smoothing).flatten().tolist():
        probes[row] = _probes(X[row], y[row], spec.smooth_probes, generators[int(batch.ids[row])])
    probes.requires_grad_(True)
    outputs = batch.stack.forward(batch.stack.augment(probes), batch.masks)
    (grad,) = torch.autograd.grad(outputs.sum(), probes, create_graph=True)
    norms = (grad.pow(2).sum(dim=-1) + 1e-12).sqrt()
    return norms.topk(spec.smooth_top, dim=1).values.mean(dim=1)


def _backward(params: list[torch.Tensor], loss: torch.Tensor, residual: torch.Tensor, mse: torch.Tensor,
              last: bool) -> _Step:
    grads = None if last else list(torch.autograd.grad(loss.sum(), params))
    for p in params:
        p.requires_grad_(False)
    return _Step(residual.detach(), mse.detach(), grads)


def _check_targets(batch: _Batch, spec: FitSpec, step: int, now: _Step, ledger: _Ledger) -> torch.Tensor:
    """Which models are finished at this check step. In smooth mode also: smoothing models keep
    their last feasible iterate and double ``mu`` when infeasible, and models that just met the
    target begin smoothing (with their AdamW moments forgotten)."""
    now.max_err = now.residual.abs().amax(dim=1)
    now.met = met = spec.goal.met(now.max_err, now.mse, batch.sigma)
    if spec.mode != "smooth":
        return met | (step >= spec.max_steps)
    smoothing = batch.smoothing
    for row in torch.nonzero(smoothing & met).flatten().tolist():
        ledger.kept[int(batch.ids[row])] = _snapshot(batch, now, row, step, True, float(now.surrogate[row]))
    batch.mu = torch.where(smoothing & ~met, batch.mu * 2, batch.mu)
    begin = ~smoothing & met
    for row in torch.nonzero(begin).flatten().tolist():
        ledger.kept[int(batch.ids[row])] = _snapshot(batch, now, row, step, True)
    finished = (smoothing & (step - batch.phase_start >= spec.smooth_steps)) | (
        ~smoothing & ~met & (step >= spec.max_steps))
    batch.phase_start = torch.where(begin, step, batch.phase_start)
    batch.adam.reset(begin)  # the fit's large early gradients would damp the smoothing steps
    return finished


def _collect_results(batch: _Batch, spec: FitSpec, step: int, now: _Step, finished: torch.Tensor,
                     ledger: _Ledger, models: list[Network]) -> None:
    """Record each finished model's result (its kept iterate if it has one) and FLOPs."""
    n = batch.X.shape[1]
    probe_factor = 2 * (n + spec.smooth_probes) / n  # a smoothing step adds double backprop at the probes
    for row in torch.nonzero(finished).flatten().tolist():
        i = int(batch.ids[row])
        ledger.results[i] = ledger.kept.pop(i) if i in ledger.kept else _snapshot(batch, now, row, step,
                                                                                 bool(now.met[row]))
        began = int(batch.phase_start[row])
        smoothed = step - began if began >= 0 else 0
        ledger.flops[i] = step_flops(n, models[i]) * (step + smoothed * probe_factor)


def _learning_rate(batch: _Batch, spec: FitSpec, step: int) -> torch.Tensor | float:
    """The train mode's shared rate (a float), or the smooth mode's per-model rates: the fit's
    schedule before smoothing, the smoothing schedule from the step smoothing began."""
    fitting = cosine(spec.lr, step, spec.max_steps)
    if spec.mode != "smooth":
        return fitting
    return batch.mu.new_tensor([cosine(spec.smooth_lr, step - began, spec.smooth_steps) if began >= 0 else fitting
                                for began in batch.phase_start.tolist()])


def _write_back(models: list[Network], ledger: _Ledger, spec: FitSpec, seconds: float) -> list[FitResult]:
    """Copy each model's recorded parameters into it and return its :class:`FitResult`."""
    out = []
    with torch.no_grad():
        for i, model in enumerate(models):
            reached, steps, train_mse, max_err, values, surrogate = ledger.results[i]
            for p, value in zip(model.parameters(), values):
                p.copy_(value)
            out.append(FitResult(reached=reached, steps=steps, train_mse=train_mse, train_max_err=max_err,
                                 seconds=seconds, mode=spec.mode, flops=ledger.flops[i], smooth_surrogate=surrogate))
    return out


def fit_module(model: nn.Module, X: np.ndarray, y: np.ndarray, spec: FitSpec = FitSpec(), sigma: float = 1.0,
               seed: int = 0) -> FitResult:
    """Train any torch module mapping (n, d) to (n,) in place, alone: the train mode of :func:`fit_many`
    (full-batch AdamW with its cosine schedule, the same :class:`Target`, stopping at the first check
    step that meets it) for models :class:`Stack` cannot stack (convolutional nets). The smooth mode
    is refused (one line): its input-gradient surrogate is written for stacked dense layers.
    FLOPs are counted by torch's FlopCounterMode on one step, times the steps taken."""
    require(spec.mode == "train", "fit.mode", f"{type(model).__name__} models are fitted in train mode only, "
            f"not {spec.mode!r}")
    start = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    dtype = params[0].dtype
    Xt, yt = torch.as_tensor(X, dtype=dtype), torch.as_tensor(y, dtype=dtype)
    sigma_t = torch.tensor(sigma, dtype=dtype)
    adam = AdamW([p.detach() for p in params], spec.weight_decay)
    best, step_flops_counted = None, _module_step_flops(model, Xt, yt)
    for step in range(spec.max_steps + 1):
        residual = model(Xt) - yt
        mse = (residual**2).mean()
        if step % spec.check_every == 0 or step == spec.max_steps:
            max_err = residual.detach().abs().max()
            reached = bool(spec.goal.met(max_err, mse.detach(), sigma_t))
            best = (reached, step, float(mse.detach()), float(max_err))
            if reached or step == spec.max_steps:
                break
        grads = torch.autograd.grad(mse, params)
        adam.step([p.detach() for p in params], list(grads), cosine(spec.lr, step, spec.max_steps))
    reached, steps, train_mse, max_err = best
    return FitResult(reached=reached, steps=steps, train_mse=train_mse, train_max_err=max_err,
                     seconds=time.perf_counter() - start, mode="train", flops=step_flops_counted * steps)


def _module_step_flops(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs of one full-batch forward and backward step of ``model``, as torch counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss = ((model(X) - y) ** 2).mean()
        torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    return float(counter.get_total_flops())


def plan_batches(items: list, size: int, budget: float, key, cost, order) -> list[list]:
    """Group ``items`` that can share a batch (equal ``key(item)``) into batches of at most ``size`` whose
    padded step size (batch length x the largest ``cost(item)`` in it) stays within ``budget``: small
    models are batched (per-step overhead dominates them), large ones run alone (batching them only loses
    cache). Items are sorted by cost (ties by ``order``), so padding stays small."""
    groups: dict[tuple, list] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    out = []
    for group in groups.values():
        group.sort(key=lambda item: (cost(item), order(item)))
        current: list = []
        for item in group:
            if current and (len(current) >= size or (len(current) + 1) * cost(item) > budget):
                out.append(current)
                current = []
            current.append(item)
        out.append(current)
    return out
