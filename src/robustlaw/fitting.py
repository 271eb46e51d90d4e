"""Training to exact or partial memorisation, many models in one computation.

Targets (``Target.kind``):
- ``interpolate``: max_i |f(x_i) - y_i| <= tol (exact memorisation up to tol);
- ``memorise``: train MSE <= sigma^2 - eps, the hypothesis of BS21 Theorem 3;
- ``budget``: train for ``max_steps`` and record what was reached.
A model that never meets its target is recorded with ``reached = False``.

Modes (``FitSpec.mode``):
- ``train``: plain full-batch AdamW on the train MSE; a model stops the moment it meets its target.
- ``smooth``: the law bounds *every* interpolator, so this mode searches for the least-Lipschitz
  one. It first fits exactly as ``train`` does (the same iterate, bitwise); then every model that
  met the target minimises a Lipschitz surrogate -- the mean of the ``smooth_top`` largest
  input-gradient norms at the data points and at ``smooth_probes`` fresh probe points per step
  (between data of opposite labels, jittered data, uniform in the data ball) -- plus ``mu`` times
  the fit violation beyond ``tol / 2`` (or beyond 0.9 of the memorise budget), doubling ``mu``
  whenever the target is lost (penalty continuation), for ``smooth_steps`` steps of a fresh AdamW
  at ``smooth_lr``. It returns the last iterate that met the target, so a smooth fit meets the same
  target as plain training. A model that never met the target is not smoothed.

Batching (:class:`Stack`): models of one depth and activation whose hidden widths pad to the same
multiples of 16 are stacked, zero-padded, and trained with batched matmuls and one elementwise
AdamW; :func:`fit_many` splits its models into such groups (:func:`padding_groups`), since a
reduction over a longer padded width is blocked differently by the matrix kernels. Each phase
starts all its models together (the smoothing phase takes the fitted models of the batch at once),
so the step count, rates and bias corrections are shared Python floats, and a model leaves the
batch at the check step where it is done: while fitting, when it meets the target or runs out of
steps; while smoothing, after exactly ``smooth_steps`` steps, when its batch mates are done too. The
layout keeps every real unit's arithmetic identical whatever the batch size and batch mates, and
every random choice a model makes comes from its own seed (its probe points are drawn in blocks of
steps whose size depends only on the data shape, :func:`probe_block`), so a model's result is
bitwise the same alone or batched, in any order, in both modes. Two-layer ReLU nets get their
gradients in closed form in both phases (:meth:`Stack.mse_grads`, :meth:`Stack.surrogate_grads`),
the rest by autograd (double backprop for the surrogate).

Devices (``FitSpec.device``): the stacks live on the CPU or a CUDA device; probe points are drawn
on the host from the same streams either way, so a GPU fit differs from the CPU one only by the
rounding of its kernels (docs/ARCHITECTURE.md, "Devices").
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
#: where fitting runs: "auto" is cuda when torch sees a CUDA device, else cpu
DEVICES = ("cpu", "cuda", "auto")


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

    def violation_grad(self, residual: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The derivative of :meth:`violation` with respect to each residual, (m, n)."""
        if self.kind == "interpolate":
            return 2 * torch.relu(residual.abs() - self.tol / 2) * residual.sign()
        budget = sigma**2 - self.eps
        return 4 * torch.relu((residual**2).mean(dim=1) - 0.9 * budget).unsqueeze(1) * residual


@dataclass(frozen=True)
class FitSpec:
    """How to train: the target, full-batch AdamW (``lr``, decoupled ``weight_decay``, cosine decay
    to lr/100 over ``max_steps``), checked every ``check_every`` steps; and the ``mode`` (train or
    smooth, see the module docstring) with the smooth phase's ``smooth_steps``, ``smooth_lr``,
    ``smooth_mu``, ``smooth_probes`` and ``smooth_top``; and the ``device`` (cpu, cuda or auto) it
    runs on, which is not part of a run's record (see :meth:`robustlaw.experiment.RunSpec.as_dict`)."""

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
    device: str = "cpu"

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
        require(self.device in DEVICES, "fit.device", f"unknown device {self.device!r} (known: {', '.join(DEVICES)})")
        require(self.device != "cuda" or torch.cuda.is_available(), "fit.device",
                "cuda asked for, but torch sees no CUDA device here (use cpu or auto)")

    @property
    def torch_device(self) -> torch.device:
        """The device fitting runs on (``auto``: cuda if present, else cpu)."""
        cuda = self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available())
        return torch.device("cuda" if cuda else "cpu")

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

    def __init__(self, models: list[Network], device: torch.device | str = "cpu"):
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
            self.weights.append(W.to(device))
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
                       (torch.arange(W.shape[2]) < self.widths[:, layer, None]).to(W).unsqueeze(1))
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
        hidden, residual = self.hidden_and_residual(x, y)
        return residual, self.backprop(x, hidden, residual * (2.0 / residual.shape[1]))

    @torch.no_grad()
    def hidden_and_residual(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A two-layer ReLU stack's hidden activations (m, n, width) and residuals f(x) - y (m, n)."""
        W1, W2 = self.weights
        hidden = torch.relu(torch.bmm(x, W1))
        return hidden, torch.bmm(W2, hidden.transpose(1, 2))[:, 0] - y

    @torch.no_grad()
    def backprop(self, x: torch.Tensor, hidden: torch.Tensor, pull: torch.Tensor) -> list[torch.Tensor]:
        """Parameter gradients of sum_i pull_i f(x_i) per model, for a two-layer ReLU stack
        (``hidden`` from :meth:`hidden_and_residual`, ``pull``: (m, n))."""
        W2 = self.weights[1]
        head = pull.new_zeros((pull.shape[0], 2, pull.shape[1]))
        head[:, 0] = pull
        dz = torch.ops.aten.threshold_backward(pull.unsqueeze(-1) * W2[:, :1, :], hidden, 0.0)
        return [torch.bmm(x.transpose(1, 2), dz), torch.bmm(head, hidden)]

    @torch.no_grad()
    def surrogate_grads(self, probes: torch.Tensor, top: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The smooth mode's surrogate for a two-layer ReLU stack without autograd: per model, the
        mean of the ``top`` largest input-gradient norms |g(p)| at ``probes`` (m, p, d + 1),
        :meth:`augment` ed, where
        g(p) = W^T (a * 1[W p + b > 0]), and its parameter gradients: d|g|/da_j = s_j W_j . u and
        d|g|/dW_j = s_j a_j u with u = g / |g| (the slopes s are locally constant, so b gets none).
        Double backprop through autograd costs several times more for the same numbers."""
        W1, W2 = self.weights
        d = probes.shape[-1] - self.bias[0]
        head, inner = W2[:, :1, :], W1[:, :d, :]
        z = torch.bmm(probes, W1)
        gradients = torch.bmm(torch.where(z > 0, head, 0.0), inner.transpose(1, 2))
        norms = (gradients.pow(2).sum(dim=-1) + 1e-12).sqrt()
        values, index = norms.topk(top, dim=1)
        s = (z.gather(1, index.unsqueeze(-1).expand(-1, -1, z.shape[2])) > 0).to(z.dtype)
        u = gradients.gather(1, index.unsqueeze(-1).expand(-1, -1, d)) / (values.unsqueeze(-1) * top)
        g1, g2 = torch.zeros_like(W1), torch.zeros_like(W2)
        g1[:, :d] = torch.bmm(u.transpose(1, 2), s * head)
        g2[:, 0] = (s * torch.bmm(u, inner)).sum(dim=1)
        return values.mean(dim=1), [g1, g2]

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

#: the jitter scales (fractions of the data radius) of the smooth mode's probes near data points
_NEAR = (0.01, 0.03, 0.1, 0.3)
#: the most probe coordinates drawn at once per model (a block of steps is drawn together)
_PROBE_BLOCK_SIZE = 2**21


def probe_block(n: int, count: int, d: int) -> int:
    """Steps of probe points drawn at once: up to 16, fewer for large (n + count) d. It depends only on
    the shapes, so a model draws the same points alone or batched."""
    return max(1, min(16, _PROBE_BLOCK_SIZE // ((n + count) * d)))


def _probes(X: torch.Tensor, y: torch.Tensor, count: int, generator: torch.Generator, steps: int) -> torch.Tensor:
    """(steps, n + count, d): for each of ``steps`` steps, every data point and ``count`` more where a
    fit must change fast: between points of opposite labels, near data, uniform in the data ball."""
    n, d = X.shape
    q = count // 3
    radius = float(X.norm(dim=1).max())
    i, j = torch.randint(n, (steps, q), generator=generator), torch.randint(n, (steps, q), generator=generator)
    j = torch.where(y[i] != y[j], j, torch.randint(n, (steps, q), generator=generator))
    t = torch.rand(steps, q, 1, generator=generator, dtype=X.dtype)
    between = t * X[i] + (1 - t) * X[j]
    scale = torch.tensor(_NEAR, dtype=X.dtype)[torch.randint(len(_NEAR), (steps, q, 1), generator=generator)]
    near = X[torch.randint(n, (steps, q), generator=generator)] + radius * scale * torch.randn(
        steps, q, d, generator=generator, dtype=X.dtype) / math.sqrt(d)
    rest = count - 2 * q
    ball = torch.randn(steps, rest, d, generator=generator, dtype=X.dtype)
    inside = torch.rand(steps, rest, 1, generator=generator, dtype=X.dtype) ** (1 / d)
    ball = radius * ball / ball.norm(dim=-1, keepdim=True) * inside
    points = torch.cat([X.expand(steps, n, d), between, near, ball], dim=1)
    norms = points.norm(dim=-1, keepdim=True)
    return points * (radius / norms).clamp(max=1.0)


class AdamW:
    """Adam with decoupled weight decay (AdamW: Loshchilov & Hutter, "Decoupled Weight Decay
    Regularization", arXiv:1711.05101) over stacked tensors: elementwise (fused ``torch._foreach_*``
    ops), so it is exactly one AdamW per model, and a model's state can be dropped when it leaves the
    batch. Every model of a batch has taken the same number of steps (both phases of a fit start all
    their models together), so the rate and bias corrections are shared Python floats."""

    def __init__(self, params: list[torch.Tensor], weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.count = 0
        self.weight_decay, self.betas, self.eps = weight_decay, betas, eps

    @torch.no_grad()
    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], lr: float) -> None:
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

    def select(self, keep: torch.Tensor, stack: Stack) -> None:
        """Keep the state of the models ``keep``, cut as ``stack`` (already selected) was."""
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
    """The models of one stack still in one phase of training (fitting, or smoothing when
    ``smoothing``): the stack, its AdamW, each row's original index (``ids``), data, noise level,
    penalty weight ``mu`` and, while smoothing, the current block of probe points (``probes``, drawn
    on the host from ``host_X``, ``host_y``). :meth:`retire` drops finished rows."""

    def __init__(self, models: list[Network], Xs: list[np.ndarray], ys: list[np.ndarray], sigmas: list[float],
                 spec: FitSpec, ids: list[int], smoothing: bool):
        device = spec.torch_device
        self.stack = Stack(models, device)
        dtype = self.stack.weights[0].dtype
        self.ids = torch.as_tensor(ids, dtype=torch.long)
        self.host_X = torch.as_tensor(np.stack(Xs), dtype=dtype)
        self.host_y = torch.as_tensor(np.stack(ys), dtype=dtype)
        self.X, self.y = self.host_X.to(device), self.host_y.to(device)
        self.sigma = torch.as_tensor(sigmas, dtype=dtype, device=device)
        self.inputs = self.stack.augment(self.X)
        self.masks = self.stack.masks()
        self.mu = torch.full((len(models),), spec.smooth_mu, dtype=dtype, device=device)
        self.adam = AdamW(self.stack.params, spec.weight_decay)
        self.smoothing = smoothing
        self.total = spec.smooth_steps if smoothing else spec.max_steps
        self.probes: torch.Tensor | None = None

    def retire(self, finished: torch.Tensor, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """Drop the ``finished`` rows (not all of them); returns ``grads`` cut to the rows kept."""
        keep = torch.nonzero(~finished).flatten()
        for name in ("ids", "host_X", "host_y"):
            setattr(self, name, getattr(self, name)[keep])
        keep_here = keep.to(self.X.device)
        for name in ("mu", "X", "y", "sigma", "inputs") + (("probes",) if self.probes is not None else ()):
            setattr(self, name, getattr(self, name)[keep_here])
        self.stack.select(keep_here)
        self.masks = self.stack.masks()
        self.adam.select(keep_here, self.stack)
        return _select(grads, keep_here, self.stack)


@dataclass
class _Step:
    """One step's train errors and gradients (None at the final step, which only checks), the
    surrogate while smoothing, and, at check steps, the max error and which targets are met."""

    residual: torch.Tensor
    mse: torch.Tensor
    grads: list[torch.Tensor] | None
    surrogate: torch.Tensor | None = None
    max_err: torch.Tensor | None = None
    met: torch.Tensor | None = None


@dataclass
class _Ledger:
    """Per original model index: its result once finished (a :func:`_snapshot`), its last feasible
    iterate while smoothing (``kept``), and the steps it took in this phase (``taken``)."""

    results: dict = field(default_factory=dict)
    kept: dict = field(default_factory=dict)
    taken: dict = field(default_factory=dict)


def _snapshot(batch: _Batch, now: _Step, row: int, step: int, reached: bool) -> tuple:
    surrogate = float(now.surrogate[row]) if now.surrogate is not None else None
    return (reached, step, float(now.mse[row]), float(now.max_err[row]), batch.stack.slices(row), surrogate)


def _fit_batch(models: list[Network], Xs: list[np.ndarray], ys: list[np.ndarray], spec: FitSpec,
               sigmas: list[float], seeds: list[int]) -> list[FitResult]:
    """Train models of equal padded widths in one stack, in two phases: every model fits until it
    meets its target (or runs out of steps); then, in smooth mode, the models that met it are
    smoothed together for ``smooth_steps`` steps, all starting at once, so none waits for another."""
    start = time.perf_counter()
    m, n = len(models), np.shape(Xs[0])[0]
    fitting = _Ledger()
    _run(_Batch(models, Xs, ys, sigmas, spec, list(range(m)), smoothing=False), spec, fitting, [])
    results = dict(fitting.results)
    flops = {i: step_flops(n, models[i]) * fitting.taken[i] for i in range(m)}
    met = [i for i in range(m) if results[i][0]]
    if spec.mode == "smooth" and met:
        _write_back(models, results)
        smoothing = _Ledger()
        generators = {i: torch_stream(seeds[i], "probes") for i in met}
        batch = _Batch([models[i] for i in met], [Xs[i] for i in met], [ys[i] for i in met],
                       [sigmas[i] for i in met], spec, met, smoothing=True)
        _run(batch, spec, smoothing, generators)
        probe_factor = 2 * (n + spec.smooth_probes) / n  # double backprop at the probes, on top of the fit
        for i in met:
            reached, steps, *rest = smoothing.results[i]
            results[i] = (reached, results[i][1] + steps, *rest)
            flops[i] += step_flops(n, models[i]) * smoothing.taken[i] * (1 + probe_factor)
    _write_back(models, results)
    seconds = (time.perf_counter() - start) / m
    return [FitResult(reached=results[i][0], steps=results[i][1], train_mse=results[i][2],
                      train_max_err=results[i][3], seconds=seconds, mode=spec.mode, flops=flops[i],
                      smooth_surrogate=results[i][5]) for i in range(m)]


def _run(batch: _Batch, spec: FitSpec, ledger: _Ledger, generators: dict) -> None:
    """The step loop of one phase: step every model, check targets every ``check_every`` steps,
    retire finished models at once (their results into ``ledger``)."""
    rate = spec.smooth_lr if batch.smoothing else spec.lr
    for step in range(batch.total + 1):
        last = step == batch.total
        now = _smooth_step(batch, spec, generators, step, last) if batch.smoothing else _train_step(batch, last)
        if step % spec.check_every == 0 or last:
            finished = _check_targets(batch, spec, step, now, ledger) | last
            if bool(finished.any()):
                _collect_results(batch, step, now, finished, ledger)
                if bool(finished.all()):
                    return
                now.grads = batch.retire(finished, now.grads)
        # pruned nets: masked weights get no gradient (Stack.masked), so they stay zero
        batch.adam.step(batch.stack.params, batch.stack.masked(now.grads), cosine(rate, step, batch.total))


def _train_step(batch: _Batch, last: bool) -> _Step:
    """Train errors and the gradient of the summed train MSE: in closed form where the stack allows."""
    if batch.stack.closed_form:
        residual, grads = batch.stack.mse_grads(batch.inputs, batch.y)
        return _Step(residual, (residual**2).mean(dim=1), grads)
    params = [p.requires_grad_(True) for p in batch.stack.params]
    residual = batch.stack.forward(batch.inputs, batch.masks) - batch.y
    mse = (residual**2).mean(dim=1)
    return _backward(params, mse, residual, mse, last)


def _smooth_step(batch: _Batch, spec: FitSpec, generators: dict, step: int, last: bool) -> _Step:
    """The smoothing step: the Lipschitz surrogate at this step's probes plus ``mu`` times the fit
    violation, its gradient in closed form where the stack allows, else by double backprop."""
    probes = _step_probes(batch, spec, generators, step)
    if batch.stack.closed_form:
        hidden, residual = batch.stack.hidden_and_residual(batch.inputs, batch.y)
        surrogate, grads = batch.stack.surrogate_grads(probes, spec.smooth_top)
        pull = batch.mu.unsqueeze(1) * spec.goal.violation_grad(residual, batch.sigma)
        grads = [a + b for a, b in zip(grads, batch.stack.backprop(batch.inputs, hidden, pull))]
        return _Step(residual, (residual**2).mean(dim=1), grads, surrogate)
    params = [p.requires_grad_(True) for p in batch.stack.params]
    residual = batch.stack.forward(batch.inputs, batch.masks) - batch.y
    mse = (residual**2).mean(dim=1)
    surrogate = _surrogate(batch, spec, probes)
    now = _backward(params, surrogate + batch.mu * spec.goal.violation(residual, batch.sigma), residual, mse, last)
    now.surrogate = surrogate.detach()
    return now


def _step_probes(batch: _Batch, spec: FitSpec, generators: dict, step: int) -> torch.Tensor:
    """(m, n + smooth_probes, d [+ 1]): this step's probe points per model (:meth:`Stack.augment` ed),
    from each model's own stream, drawn a block of steps at a time (:func:`probe_block`) on the host."""
    n, d = batch.host_X.shape[1:]
    block = probe_block(n, spec.smooth_probes, d)
    if step % block == 0:
        batch.probes = batch.stack.augment(torch.stack([
            _probes(batch.host_X[row], batch.host_y[row], spec.smooth_probes, generators[int(i)], block)
            for row, i in enumerate(batch.ids.tolist())]).to(batch.X.device))
    return batch.probes[:, step % block]


def _surrogate(batch: _Batch, spec: FitSpec, probes: torch.Tensor) -> torch.Tensor:
    """Per model, the mean of the ``smooth_top`` largest input-gradient norms at ``probes`` (augmented),
    by autograd."""
    probes = probes.clone().requires_grad_(True)
    outputs = batch.stack.forward(probes, batch.masks)
    (grad,) = torch.autograd.grad(outputs.sum(), probes, create_graph=True)
    grad = grad[..., :probes.shape[-1] - batch.stack.bias[0]]  # not the column of ones
    norms = (grad.pow(2).sum(dim=-1) + 1e-12).sqrt()
    return norms.topk(spec.smooth_top, dim=1).values.mean(dim=1)


def _backward(params: list[torch.Tensor], loss: torch.Tensor, residual: torch.Tensor, mse: torch.Tensor,
              last: bool) -> _Step:
    grads = None if last else list(torch.autograd.grad(loss.sum(), params))
    for p in params:
        p.requires_grad_(False)
    return _Step(residual.detach(), mse.detach(), grads)


def _check_targets(batch: _Batch, spec: FitSpec, step: int, now: _Step, ledger: _Ledger) -> torch.Tensor:
    """Which models are finished at this check step. While fitting: those that met the target or ran
    out of steps. While smoothing: none before ``smooth_steps``; meanwhile each model keeps its last
    iterate that meets the target, and ``mu`` doubles for those that lost it."""
    now.max_err = now.residual.abs().amax(dim=1)
    now.met = met = spec.goal.met(now.max_err, now.mse, batch.sigma)
    if not batch.smoothing:
        return met | (step >= spec.max_steps)
    for row in torch.nonzero(met).flatten().tolist():
        ledger.kept[int(batch.ids[row])] = _snapshot(batch, now, row, step, True)
    batch.mu = torch.where(met, batch.mu, batch.mu * 2)
    return torch.full_like(met, step >= spec.smooth_steps)


def _collect_results(batch: _Batch, step: int, now: _Step, finished: torch.Tensor, ledger: _Ledger) -> None:
    """Record each finished model's result (its kept iterate if it has one) and its steps taken."""
    for row in torch.nonzero(finished).flatten().tolist():
        i = int(batch.ids[row])
        ledger.results[i] = ledger.kept.pop(i) if i in ledger.kept else _snapshot(batch, now, row, step,
                                                                                 bool(now.met[row]))
        ledger.taken[i] = step


def _write_back(models: list[Network], results: dict) -> None:
    """Copy each model's recorded parameters (the fifth entry of its snapshot) into it."""
    with torch.no_grad():
        for i, model in enumerate(models):
            for p, value in zip(model.parameters(), results[i][4]):
                p.copy_(value)


def fit_module(model: nn.Module, X: np.ndarray, y: np.ndarray, spec: FitSpec = FitSpec(), sigma: float = 1.0) -> FitResult:
    """Train any torch module mapping (n, d) to (n,) in place, alone: the train mode of :func:`fit_many`
    (full-batch AdamW with its cosine schedule, the same :class:`Target`, stopping at the first check
    step that meets it) for models :class:`Stack` cannot stack (convolutional nets). The smooth mode
    is refused (one line): its input-gradient surrogate is written for stacked dense layers.
    FLOPs are counted by torch's FlopCounterMode on one step, times the steps taken."""
    require(spec.mode == "train", "fit.mode", f"{type(model).__name__} models are fitted in train mode only, "
            f"not {spec.mode!r}")
    start = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    values = [p.detach() for p in params]  # AdamW steps these views in place
    dtype = params[0].dtype
    Xt, yt = torch.as_tensor(X, dtype=dtype), torch.as_tensor(y, dtype=dtype)
    sigma_t = torch.tensor(sigma, dtype=dtype)
    adam = AdamW(values, spec.weight_decay)
    flops_per_step = _module_step_flops(model, Xt, yt)
    for step in range(spec.max_steps + 1):
        residual = model(Xt) - yt
        mse = (residual**2).mean()
        if step % spec.check_every == 0 or step == spec.max_steps:
            max_err = residual.detach().abs().max()
            reached = bool(spec.goal.met(max_err, mse.detach(), sigma_t))
            if reached or step == spec.max_steps:
                return FitResult(reached=reached, steps=step, train_mse=float(mse.detach()),
                                 train_max_err=float(max_err), seconds=time.perf_counter() - start, mode="train",
                                 flops=flops_per_step * step)
        adam.step(values, list(torch.autograd.grad(mse, params)), cosine(spec.lr, step, spec.max_steps))


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
