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
  ``smooth_steps`` steps of Adam restarted at ``smooth_lr``. It returns the last iterate that met
  the target, so a smooth fit meets the same target as plain training.

Batching (:class:`Stack`): models of one depth and activation are stacked, hidden layers
zero-padded to the widest model (in multiples of 16), and trained with batched matmuls and one
elementwise Adam. A model leaves the batch when it is done, and the padding shrinks with it.
The layout keeps every real unit's arithmetic identical whatever the padding and batch size,
and every random choice a model makes comes from its own seed, so a model's result is bitwise
the same alone or batched. Two-layer ReLU nets in train mode get their gradient in closed form
(:meth:`Stack.mse_grads`), the rest by autograd.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robustlaw.errors import RobustlawError, require
from robustlaw.models import Network

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
    this layout padding a hidden width only adds columns to matrix products, so every real unit's
    arithmetic -- forward and backward -- is the same whatever the padding; a separate bias would
    have its gradient summed over n by a reduction whose order depends on the padded width.
    ``widths``: (m, depth - 1) true hidden widths; units beyond a model's width are zero.
    """

    def __init__(self, models: list[Network]):
        parts = [_layers(m) for m in models]
        self.acts = parts[0][1]
        signature = [repr(a) for a in self.acts]
        self.bias = [lin.bias is not None for lin in parts[0][0]]
        for linear, acts in parts:
            if [repr(a) for a in acts] != signature or [lin.bias is not None for lin in linear] != self.bias:
                raise RobustlawError("fit_many needs models of one depth, activation and bias layout")
            if linear[0].in_features != parts[0][0][0].in_features:
                raise RobustlawError("fit_many needs models of one input dimension")
        depth = len(signature) + 1
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


# ----------------------------------------------------------------------------- probes and Adam


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


class Adam:
    """AdamW over stacked tensors: elementwise, so it is exactly one Adam per model, and a model's
    state can be dropped when it leaves the batch. With a float ``lr`` (one step count and rate for
    all models: the train mode) it runs fused foreach ops; with a per-model tensor ``lr`` (the
    smooth mode, whose models restart their moments when smoothing begins) per-model arithmetic.
    Which path runs depends only on the mode, never on the batch, so results stay batch-independent."""

    def __init__(self, params: list[torch.Tensor], weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = torch.zeros(params[0].shape[0], dtype=params[0].dtype)
        self.count = 0
        self.weight_decay, self.betas, self.eps = weight_decay, betas, eps

    @torch.no_grad()
    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], lr: torch.Tensor | float) -> None:
        b1, b2 = self.betas
        if isinstance(lr, float):
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
            return
        self.t += 1
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, g, m, v in zip(params, grads, self.m, self.v):
            shape = (-1,) + (1,) * (p.dim() - 1)
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            rate = lr.view(shape)
            if self.weight_decay:
                p.mul_(1 - rate * self.weight_decay)
            p.sub_(rate * (m / c1.view(shape)) / ((v / c2.view(shape)).sqrt() + self.eps))

    @torch.no_grad()
    def reset(self, rows: torch.Tensor) -> None:
        """Forget the moments of models ``rows`` (boolean), as a fresh Adam would."""
        assert self.count == 0, "a reset needs the per-model path (tensor lr) throughout"
        self.t[rows] = 0
        for m, v in zip(self.m, self.v):
            m[rows] = 0
            v[rows] = 0

    def select(self, keep: torch.Tensor, stack: Stack) -> None:
        """Keep the state of the models ``keep``, cut as ``stack`` (already selected) was."""
        self.t = self.t[keep]
        self.m, self.v = _select(self.m, keep, stack), _select(self.v, keep, stack)


def _select(tensors: list[torch.Tensor], keep: torch.Tensor, stack: Stack) -> list[torch.Tensor]:
    """Rows ``keep`` of per-layer tensors shaped like ``stack.weights``, cut as :meth:`Stack.select` cut them."""
    return [stack.cut(t[keep], layer) for layer, t in enumerate(tensors)]


def cosine(lr: float, t: torch.Tensor, total: int) -> torch.Tensor:
    """Cosine decay from lr to lr / 100 over ``total`` steps, evaluated at steps ``t`` (the smooth
    mode's per-model schedule; the train mode evaluates the same formula in Python floats)."""
    low = lr * 0.01
    return low + (lr - low) * 0.5 * (1 + torch.cos(math.pi * t.clamp(max=total) / total))


# ----------------------------------------------------------------------------- fitting


def fit(model: Network, X: np.ndarray, y: np.ndarray, spec: FitSpec = FitSpec(), sigma: float = 1.0,
        seed: int = 0) -> FitResult:
    """Train ``model`` in place on (X, y) towards ``spec``'s target; see :func:`fit_many`."""
    return fit_many([model], [X], [y], spec, [sigma], [seed])[0]


def fit_many(models: list[Network], Xs: list[np.ndarray], ys: list[np.ndarray], spec: FitSpec = FitSpec(),
             sigmas: list[float] | None = None, seeds: list[int] | None = None) -> list[FitResult]:
    """Train same-depth ``models`` (any widths; each on its own data, all of one shape) in one batch.

    Each model ends with the parameters of the first iterate that met its target (``train``), the
    last iterate that met it after smoothing (``smooth``), or the last iterate if it never met it.
    ``seeds`` seed each model's probe points in smooth mode. The same model, data and seed give the
    same result whatever else is in the batch.
    """
    start = time.perf_counter()
    m = len(models)
    if m == 0:
        return []
    if not (len(Xs) == len(ys) == m):
        raise RobustlawError(f"fit_many got {m} models, {len(Xs)} inputs and {len(ys)} label vectors")
    seeds = list(seeds) if seeds is not None else [0] * m
    stack = Stack(models)
    dtype = stack.weights[0].dtype
    if len({np.shape(X) for X in Xs}) != 1:
        raise RobustlawError("fit_many needs every data set to have the same shape (n, d)")
    X = torch.as_tensor(np.stack(Xs), dtype=dtype)
    y = torch.as_tensor(np.stack(ys), dtype=dtype)
    n = X.shape[1]
    sigma = torch.as_tensor(sigmas if sigmas is not None else [1.0] * m, dtype=dtype)
    goal, smooth = spec.goal, spec.mode == "smooth"
    generators = [torch.Generator().manual_seed(int(s) * 1_000_003 + 17) for s in seeds]
    per_step = [step_flops(n, model) for model in models]
    probe_factor = 2 * (n + spec.smooth_probes) / n  # a smoothing step adds double backprop at the probes

    ids = torch.arange(m)  # original index of each model still in the batch
    phase_start = torch.full((m,), -1, dtype=torch.long)  # step at which smoothing began, -1 before
    mu = torch.full((m,), spec.smooth_mu, dtype=dtype)
    adam = Adam(stack.params, spec.weight_decay)
    results: dict[int, tuple] = {}
    flops: dict[int, float] = {}  # useful training FLOPs per model, counted when it leaves the batch
    kept: dict[int, tuple] = {}  # smooth mode: the last feasible iterate of each smoothing model
    total = spec.max_steps + (spec.smooth_steps if smooth else 0)

    def snapshot(row: int, step: int, reached: bool, surrogate: float | None = None) -> tuple:
        return (reached, step, float(mse[row]), float(max_err[row]), stack.slices(row), surrogate)

    inputs, masks = stack.augment(X), None
    fast = not smooth and stack.closed_form
    for step in range(total + 1):
        if masks is None:
            masks = stack.masks()
        smoothing = phase_start >= 0
        surrogate = None
        if fast:
            residual, grads = stack.mse_grads(inputs, y)
            mse = (residual**2).mean(dim=1)
        else:
            params = [p.requires_grad_(True) for p in stack.params]
            residual = stack.forward(inputs, masks) - y
            mse = (residual**2).mean(dim=1)
            loss = mse
        if smooth and bool(smoothing.any()):
            # probes only for smoothing models, so each model's random stream is its own
            probes = X.new_zeros((len(ids), n + spec.smooth_probes, X.shape[2]))
            for row in torch.nonzero(smoothing).flatten().tolist():
                probes[row] = _probes(X[row], y[row], spec.smooth_probes, generators[int(ids[row])])
            probes.requires_grad_(True)
            (grad,) = torch.autograd.grad(stack.forward(stack.augment(probes), masks).sum(), probes, create_graph=True)
            norms = (grad.pow(2).sum(dim=-1) + 1e-12).sqrt()
            surrogate = norms.topk(spec.smooth_top, dim=1).values.mean(dim=1)
            loss_surrogate = surrogate
            surrogate = surrogate.detach()
            loss = torch.where(smoothing, loss_surrogate + mu * goal.violation(residual, sigma), mse)
        if not fast:
            grads = list(torch.autograd.grad(loss.sum(), params)) if step < total else None
            for p in params:
                p.requires_grad_(False)
            mse, residual = mse.detach(), residual.detach()

        if step % spec.check_every == 0 or step == total:
            max_err = residual.abs().amax(dim=1)
            met = goal.met(max_err, mse, sigma)
            if smooth:
                # smoothing models keep their last feasible iterate; the penalty doubles when infeasible
                for row in torch.nonzero(smoothing & met).flatten().tolist():
                    kept[int(ids[row])] = snapshot(row, step, True, float(surrogate[row]))
                mu = torch.where(smoothing & ~met, mu * 2, mu)
                begin = ~smoothing & met
                for row in torch.nonzero(begin).flatten().tolist():
                    kept[int(ids[row])] = snapshot(row, step, True)
                finished = (smoothing & (step - phase_start >= spec.smooth_steps)) | (
                    ~smoothing & ~met & (step >= spec.max_steps))
                phase_start = torch.where(begin, step, phase_start)
                adam.reset(begin)  # the fit's large early gradients would damp the smoothing steps
                smoothing = phase_start >= 0
            else:
                finished = met | (step >= spec.max_steps)
            if step == total:
                finished = torch.ones_like(finished)
            if bool(finished.any()):
                for row in torch.nonzero(finished).flatten().tolist():
                    i = int(ids[row])
                    results[i] = kept.pop(i) if i in kept else snapshot(row, step, bool(met[row]))
                    smoothed = step - int(phase_start[row]) if int(phase_start[row]) >= 0 else 0
                    flops[i] = per_step[i] * (step + smoothed * probe_factor)
                keep = torch.nonzero(~finished).flatten()
                if len(keep) == 0:
                    break
                ids, phase_start, mu, smoothing = ids[keep], phase_start[keep], mu[keep], smoothing[keep]
                X, y, sigma, inputs, masks = X[keep], y[keep], sigma[keep], inputs[keep], None
                stack.select(keep)
                grads = _select(grads, keep, stack)
                adam.select(keep, stack)

        if smooth:
            lr = cosine(spec.lr, torch.full((len(ids),), float(step), dtype=dtype), spec.max_steps)
            lr = torch.where(smoothing, cosine(spec.smooth_lr, (step - phase_start).to(dtype), spec.smooth_steps), lr)
        else:
            decay = 0.5 * (1 + math.cos(math.pi * min(step, spec.max_steps) / spec.max_steps))
            lr = spec.lr * 0.01 + spec.lr * 0.99 * decay
        adam.step(stack.params, grads, lr)

    seconds = (time.perf_counter() - start) / m
    out = []
    with torch.no_grad():
        for i, model in enumerate(models):
            reached, steps, train_mse, max_err, values, surrogate = results[i]
            for p, value in zip(model.parameters(), values):
                p.copy_(value)
            out.append(FitResult(reached=reached, steps=steps, train_mse=train_mse, train_max_err=max_err,
                                 seconds=seconds, mode=spec.mode, flops=flops[i], smooth_surrogate=surrogate))
    return out
