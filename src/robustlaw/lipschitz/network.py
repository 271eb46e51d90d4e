"""One float64 view of a feed-forward network, whatever it came from.

Every Lipschitz method works on a :class:`Net`: affine layers ``x -> W_i x + b_i`` with an
elementwise activation between consecutive layers and a scalar output. A :class:`Net` is built
from a ``torch.nn.Sequential`` (any robustlaw model, or any Sequential of ``Linear`` layers and
supported activations) with :func:`from_torch`, or from a file with :mod:`robustlaw.lipschitz.files`
(``.npz`` holding ``W1, b1, ..., WL, bL`` with ReLU between layers and one output, or a torch file).

Gradients are computed here in float64 by hand (no autograd), so a lower bound is reproducible
from its witness point by anyone holding the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robustlaw.activations import ACTIVATIONS, RELU, Activation, Identity, PiecewiseLinear, ReLU, activation_of
from robustlaw.errors import RobustlawError
from robustlaw.models import Network

__all__ = ["RELU", "Activation", "Net", "check_scale", "from_torch"]


@dataclass(frozen=True, eq=False)
class Net:
    """f(x) = W_L act(... act(W_1 x + b_1) ...) + b_L in float64; ``weights[i]`` is (out, in)."""

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    acts: tuple[Activation, ...]

    def __post_init__(self):
        if len(self.weights) != len(self.biases) or len(self.acts) != len(self.weights) - 1:
            raise RobustlawError("a network needs one bias per layer and one activation between layers")
        if self.weights[-1].shape[0] != 1:
            raise RobustlawError(f"the last layer must have one output, got {self.weights[-1].shape[0]}")

    @property
    def d(self) -> int:
        return self.weights[0].shape[1]

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def widths(self) -> list[int]:
        return [W.shape[0] for W in self.weights[:-1]]

    @property
    def piecewise_linear(self) -> bool:
        return all(a.piecewise_linear for a in self.acts)

    @property
    def is_two_layer_pwl(self) -> bool:
        return self.depth == 2 and isinstance(self.acts[0], PiecewiseLinear)

    def describe(self) -> str:
        acts = sorted({a.describe() for a in self.acts}) or ["linear"]
        return f"{'-'.join(str(w) for w in [self.d, *self.widths, 1])} {'/'.join(acts)}"

    def preactivations(self, X: np.ndarray) -> list[np.ndarray]:
        """Pre-activations of every hidden layer at the rows of X (n, d)."""
        h, out = np.asarray(X, dtype=float), []
        for (W, b), act in zip(zip(self.weights, self.biases), self.acts):
            z = h @ W.T + b
            out.append(z)
            h = act(z)
        return out

    def forward(self, X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, dtype=float))
        pre = self.preactivations(X)
        h = self.acts[-1](pre[-1]) if pre else X
        return (h @ self.weights[-1].T + self.biases[-1])[:, 0]

    def gradients(self, X: np.ndarray) -> np.ndarray:
        """grad f at the rows of X, shape (n, d) (right derivatives at ReLU kinks)."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        pre = self.preactivations(X)
        delta = np.broadcast_to(self.weights[-1], (len(X), self.weights[-1].shape[1]))
        for i in range(self.depth - 2, -1, -1):
            delta = (delta * self.acts[i].slope(pre[i])) @ self.weights[i]
        return np.array(delta)

    def balanced(self) -> tuple[Net, float]:
        """An equivalent network at unit scale and the factor ``c`` with ``f = c * f'``.

        For positively homogeneous activations (ReLU, LeakyReLU, identity: act(s t) = s act(t), s > 0),
        layer i is divided by s_i = 2^e_i, the power of two putting max|W_i| / s_i in [0.5, 1), and its
        bias by s_1 ... s_i; then f = c f' with c = s_1 ... s_L, so Lip(f) = c Lip(f'), grad f = c grad f',
        and f' has the same activation patterns and witness points. The largest entry is the scale
        because it is exact and cannot overflow (a Frobenius or spectral norm squares entries, which
        overflows above 1e154); powers of two make the division exact, so every number computed on f'
        is the one computed on f divided by c, without overflow (barring entries ~1e308 times smaller
        than their layer's largest, which underflow). ``c`` is ``inf`` (or 0) when the scale leaves
        float64; :func:`check_scale` refuses those.

        Other activations are not scale-covariant: ``(self, 1.0)``, unless some |w| > 1e150 (its
        square overflows float64), which raises :class:`RobustlawError`.
        """
        net, exponent = _balance(self)
        try:
            return net, math.ldexp(1.0, exponent)
        except OverflowError:
            return net, math.inf

    def to_torch(self, dtype: torch.dtype = torch.float64) -> Network:
        """The same function as a robustlaw :class:`Network` (for autograd cross-checks)."""
        modules: list[nn.Module] = []
        for i, (W, b) in enumerate(zip(self.weights, self.biases)):
            layer = nn.Linear(W.shape[1], W.shape[0], dtype=dtype)
            with torch.no_grad():
                layer.weight.copy_(torch.as_tensor(W))
                layer.bias.copy_(torch.as_tensor(b))
            modules.append(layer)
            if i < len(self.acts):
                modules.append(self.acts[i].to_torch())
        return Network(*modules)

    def save_npz(self, path: str | Path) -> None:
        """Write the interchange format (ReLU networks only): W1, b1, ..., WL, bL."""
        if not all(isinstance(a, ReLU) for a in self.acts):
            raise RobustlawError("the .npz interchange format holds ReLU networks only")
        arrays = {}
        for i, (W, b) in enumerate(zip(self.weights, self.biases), start=1):
            arrays[f"W{i}"], arrays[f"b{i}"] = W, b
        np.savez(path, **arrays)


HUGE_WEIGHT = 1e150
"""Weights above this overflow float64 when squared; only scale-covariant networks can be rescaled."""


def _balance(net: Net) -> tuple[Net, int]:
    """:meth:`Net.balanced` with the factor as a power of two: ``(f', E)`` with f = 2^E f'."""
    if not net.piecewise_linear:
        big = max(float(np.abs(W).max()) for W in net.weights)
        if big > HUGE_WEIGHT:
            kinds = "/".join(sorted({a.describe() for a in net.acts}))
            raise RobustlawError(f"weights up to {big:.3g} are too large to certify in float64 with {kinds} "
                                 f"activations (only ReLU, LeakyReLU and linear networks are rescaled)")
        return net, 0
    exponents = [int(np.frexp(np.abs(W).max())[1]) for W in net.weights]  # 0 for an all-zero layer
    cumulative = np.cumsum(exponents)
    weights = tuple(np.ldexp(W, -e) for W, e in zip(net.weights, exponents))
    biases = tuple(np.ldexp(b, -int(E)) for b, E in zip(net.biases, cumulative))
    return Net(weights, biases, net.acts), int(cumulative[-1])


def check_scale(net: Net) -> tuple[Net, float]:
    """``net.balanced()``, or one :class:`RobustlawError` line if its answers cannot be finite in float64.

    Refused: a balanced network with infinite biases, or one where c times the product of the layers'
    Frobenius norms and the activations' largest slopes (a bound on Lip(f) on R^d for ReLU-type
    networks) exceeds float64's largest number. The bound is summed in log2, so the check cannot
    overflow itself.
    """
    balanced, exponent = _balance(net)
    if not all(np.isfinite(b).all() for b in balanced.biases):
        raise RobustlawError("the biases are too large next to the weights to certify in float64")
    log2_bound = float(exponent)
    for W in balanced.weights:
        top = float(np.abs(W).max())
        log2_bound += math.log2(top) + math.log2(np.linalg.norm(W / top)) if top > 0 else -math.inf
    for act in balanced.acts:
        if act.piecewise_linear:
            log2_bound += math.log2(max(1.0, float(np.abs(act.slope(np.array([-1.0, 1.0]))).max())))
    if log2_bound >= 1024 or exponent >= 1024:
        raise RobustlawError(f"the Lipschitz constant may reach 1e{log2_bound * math.log10(2):.0f}, beyond "
                             "float64's largest number (1.8e308): the weights are too large to certify")
    return balanced, math.ldexp(1.0, exponent)


def _flatten(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        return [m for child in model for m in _flatten(child)]
    return [model]


def from_torch(model: nn.Module) -> Net:
    """Read a ``torch.nn.Sequential`` of ``Linear`` layers and elementwise activations (one output).

    Consecutive affine maps (Linear, Identity, Dropout, Flatten) are merged into one.
    """
    if not isinstance(model, nn.Sequential):
        raise RobustlawError(f"expected a torch.nn.Sequential of Linear layers and activations, got {type(model).__name__}")
    weights: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    acts: list[Activation] = []
    pending = False  # the last item appended to weights is still open for merging with the next Linear
    for module in _flatten(model):
        if isinstance(module, nn.Linear):
            if module.weight.is_complex() or (module.bias is not None and module.bias.is_complex()):
                raise RobustlawError("a Linear layer holds complex numbers; robustlaw certifies real networks")
            W = module.weight.detach().double().cpu().numpy().copy()
            b = (module.bias.detach().double().cpu().numpy().copy() if module.bias is not None
                 else np.zeros(W.shape[0]))
            if pending:
                if W.shape[1] != weights[-1].shape[0]:
                    raise RobustlawError(f"layer shapes do not chain: {weights[-1].shape[0]} outputs into a Linear "
                                         f"with {W.shape[1]} inputs")
                weights[-1], biases[-1] = W @ weights[-1], W @ biases[-1] + b
            else:
                if weights and W.shape[1] != weights[-1].shape[0]:
                    raise RobustlawError(f"layer shapes do not chain: {weights[-1].shape[0]} outputs into a Linear "
                                         f"with {W.shape[1]} inputs")
                weights.append(W)
                biases.append(b)
            pending = True
            continue
        act = activation_of(module)
        if act is None:
            raise RobustlawError(f"unsupported layer {type(module).__name__}: expected Linear layers and "
                                 f"elementwise activations ({', '.join(ACTIVATIONS)})")
        if isinstance(act, Identity):
            continue
        if not weights or not pending:
            raise RobustlawError(f"an activation ({type(module).__name__}) must follow a Linear layer")
        acts.append(act)
        pending = False
    if not weights or not pending:
        raise RobustlawError("the network must end with a Linear layer")
    net = Net(tuple(weights), tuple(biases), tuple(acts))
    _check_finite(net)
    return net


def _check_finite(net: Net) -> None:
    for i, (W, b) in enumerate(zip(net.weights, net.biases), start=1):
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise RobustlawError(f"layer {i} has NaN or infinite weights")
