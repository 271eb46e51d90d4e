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

import copy
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
            raise RobustlawError(f"the last layer must have one output, got {self.weights[-1].shape[0]} "
                                 "(certify one output or margin: --output i, --margin i,j)")

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


#: affine layers read by their dense matrix (:func:`dense_affine`): a convolution, average pooling, a batch
#: norm in eval mode, reshapes; all linear in the input plus a constant, so a run of them is one affine map
SPATIAL = (nn.Conv1d, nn.Conv2d, nn.AvgPool1d, nn.AvgPool2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.Unflatten)

MAX_DENSE = 20_000_000
"""Entries a dense affine map (and each intermediate of its expansion) may have: 160 MB of float64."""


def from_torch(model: nn.Module, input_shape: tuple[int, ...] | None = None, output: int | None = None,
               margin: tuple[int, int] | None = None) -> Net:
    """Read a ``torch.nn.Sequential`` of affine layers and elementwise activations as a :class:`Net`.

    Affine layers are ``Linear``; ``Conv1d``/``Conv2d``, ``AvgPool1d``/``AvgPool2d``, ``BatchNorm1d``/``2d``
    (eval mode: folded into the preceding map), ``Flatten``, ``Unflatten``, ``Dropout`` (the identity in
    eval mode) and ``Identity``. Consecutive affine layers are merged into one: Linear ones by their
    matrix product, runs holding a spatial layer by their dense matrix (:func:`dense_affine`), so a CNN
    becomes the chain of dense layers it computes and every certificate applies to it. The certified
    function is the model on flattened inputs R^d, d = prod(input_shape): the Euclidean Lipschitz
    constant does not depend on the reshape. ``input_shape`` (one sample's shape) is needed when the
    model starts with a convolution; it is read from a leading ``Linear`` or ``Unflatten(1, shape)``.
    A multi-class model is certified through one ``output`` i (f_i) or one ``margin`` (i, j) (f_i - f_j;
    0-based): a row selection or difference of the last layer. Without them it must have one output.
    """
    if not isinstance(model, nn.Sequential):
        raise RobustlawError(f"expected a torch.nn.Sequential of Linear layers and activations, got {type(model).__name__}")
    modules = _flatten(model)
    shape = _input_shape(modules, input_shape)
    weights: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    acts: list[Activation] = []
    for run, act in _affine_runs(modules):
        if len(shape) > 1 or any(isinstance(m, SPATIAL) for m in run):  # not flat: torch's own semantics
            W, b, shape = dense_affine(run, shape)
        else:
            W, b = _linear_product(run, shape[0])
            shape = (W.shape[0],) if W is not None else shape
        if W is None:
            raise RobustlawError(f"an activation ({type(act).__name__}) must follow a Linear layer")
        weights.append(W)
        biases.append(b)
        if act is not None:
            acts.append(activation_of(act))
    if output is not None or margin is not None:
        weights[-1], biases[-1] = select_head(weights[-1], biases[-1], output, margin)
    net = Net(tuple(weights), tuple(biases), tuple(acts))
    _check_finite(net)
    return net


def _affine_runs(modules: list[nn.Module]) -> list[tuple[list[nn.Module], nn.Module | None]]:
    """The model as (affine modules, the activation after them or None at the end); identity-like
    modules (Identity, Dropout) are dropped, Flatten kept (it matters after a spatial layer)."""
    runs, current = [], []
    for module in modules:
        if isinstance(module, (nn.Linear, nn.Flatten, *SPATIAL)):
            current.append(module)
            continue
        act = activation_of(module)
        if act is None:
            raise RobustlawError(f"unsupported layer {type(module).__name__}: expected Linear, Conv1d/2d, AvgPool1d/2d, "
                                 f"BatchNorm1d/2d, Flatten, Dropout and elementwise activations ({', '.join(ACTIVATIONS)})")
        if isinstance(act, Identity):
            continue
        runs.append((current, module))
        current = []
    if not any(isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) for m in current):
        raise RobustlawError("the network must end with a Linear layer")
    runs.append((current, None))
    return runs


def _input_shape(modules: list[nn.Module], given: tuple[int, ...] | None) -> tuple[int, ...]:
    """One sample's input shape: ``given``, or read from a leading Linear or Unflatten(1, shape)."""
    if given is not None:
        shape = tuple(int(s) for s in given)
        if not shape or min(shape) < 1:
            raise RobustlawError(f"the input shape must be positive integers, got {list(given)}")
        return shape
    first = next((m for m in modules if not isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout))), None)
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    if isinstance(first, nn.Unflatten) and first.dim == 1:
        return (int(np.prod(first.unflattened_size)),)
    raise RobustlawError(f"the model starts with {type(first).__name__}: give its input shape (one sample's, "
                         "e.g. 1,8,8 for 8x8 grey images: --input-shape)")


def _linear_product(run: list[nn.Module], fan_in: int | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The merged matrix and bias of consecutive Linear layers (Flatten of flat inputs is the identity)."""
    W_all, b_all = None, None
    for module in run:
        if not isinstance(module, nn.Linear):
            continue
        if module.weight.is_complex() or (module.bias is not None and module.bias.is_complex()):
            raise RobustlawError("a Linear layer holds complex numbers; robustlaw certifies real networks")
        W = module.weight.detach().double().cpu().numpy().copy()
        b = module.bias.detach().double().cpu().numpy().copy() if module.bias is not None else np.zeros(W.shape[0])
        inputs = W_all.shape[0] if W_all is not None else fan_in
        if inputs is not None and W.shape[1] != inputs:
            raise RobustlawError(f"layer shapes do not chain: {inputs} outputs into a Linear with {W.shape[1]} inputs")
        W_all, b_all = (W, b) if W_all is None else (W @ W_all, W @ b_all + b)
    return W_all, b_all


def dense_affine(run: list[nn.Module], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """The affine map x -> A x + c that ``run`` (affine torch modules, eval mode) computes on flattened
    inputs of one sample's ``shape``: A by forward-mode autodiff of the run at 0 in float64 (the
    Jacobian of an affine map, exactly its matrix), c = the run at 0. Returns A, c and the output shape.
    One error line when A or an intermediate would exceed :data:`MAX_DENSE` entries."""
    layers = nn.Sequential(*[copy.deepcopy(m) for m in run]).double().eval()
    for p in layers.parameters():
        if p.is_complex():
            raise RobustlawError(f"a {type(p).__name__} holds complex numbers; robustlaw certifies real networks")
    d = int(np.prod(shape))
    zero = torch.zeros((1, *shape), dtype=torch.float64)
    try:
        with torch.no_grad():
            sizes = [d]
            h = zero
            for module in layers:
                h = module(h)
                sizes.append(h[0].numel())
    except RuntimeError as error:
        raise RobustlawError(f"layer shapes do not chain on inputs of shape {list(shape)}: "
                             f"{str(error).splitlines()[0][:160]}") from None
    largest = d * max(sizes)
    if largest > MAX_DENSE:
        raise RobustlawError(f"the dense matrix of {', '.join(type(m).__name__ for m in run)} on inputs of shape "
                             f"{list(shape)} needs {largest:.3g} entries (more than MAX_DENSE = {MAX_DENSE:.0e})")
    out_shape = tuple(h.shape[1:])

    def flat(x: torch.Tensor) -> torch.Tensor:
        return layers(x.reshape(1, *shape)).reshape(-1)

    with torch.no_grad():
        A = torch.func.jacfwd(flat)(zero.reshape(-1))
    return A.numpy().copy(), h.reshape(-1).numpy().copy(), out_shape  # c: the run at 0, computed above


def select_head(W: np.ndarray, b: np.ndarray, output: int | None, margin: tuple[int, int] | None):
    """The last layer reduced to one output: row ``output`` (f_i), or row i minus row j (``margin``: f_i - f_j)."""
    outputs = W.shape[0]
    chosen = [output] if output is not None else [int(i) for i in margin]
    if output is not None and margin is not None:
        raise RobustlawError("choose one output or one margin, not both")
    for i in chosen:
        if not 0 <= i < outputs:
            raise RobustlawError(f"output {i} does not exist: the model has outputs 0 to {outputs - 1}")
    if len(chosen) == 2 and chosen[0] == chosen[1]:
        raise RobustlawError(f"a margin needs two different outputs, got {chosen[0]},{chosen[1]}")
    c = np.zeros(outputs)
    c[chosen[0]] = 1.0
    if len(chosen) == 2:
        c[chosen[1]] = -1.0
    return c[None, :] @ W, np.array([c @ b])


def _check_finite(net: Net) -> None:
    for i, (W, b) in enumerate(zip(net.weights, net.biases), start=1):
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise RobustlawError(f"layer {i} has NaN or infinite weights")
