"""One float64 view of a feed-forward network, whatever it came from.

Every Lipschitz method works on a :class:`Net`: affine layers ``x -> W_i x + b_i`` with an
elementwise activation between consecutive layers and a scalar output. A :class:`Net` is built
from a ``torch.nn.Sequential`` (any robustlaw model, or any Sequential of ``Linear`` layers and
supported activations) with :func:`from_torch`, or from an interchange file with :func:`load_npz`:
an ``.npz`` holding ``W1, b1, ..., WL, bL`` with ReLU between layers and one output.

Gradients are computed here in float64 by hand (no autograd), so a lower bound is reproducible
from its witness point by anyone holding the weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robustlaw.activations import ACTIVATIONS, RELU, Activation, Identity, PiecewiseLinear, ReLU, activation_of
from robustlaw.errors import RobustlawError
from robustlaw.models import Network

__all__ = ["RELU", "Activation", "Net", "as_net", "from_torch", "load_npz"]


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


def load_npz(path: str | Path) -> Net:
    """Read the interchange format: ``W1, b1, ..., WL, bL`` (layer i: x -> Wi x + bi, ReLU between layers,
    one output). Every problem is reported as one line naming it."""
    path = Path(path)
    if not path.exists():
        raise RobustlawError(f"{path}: no such file")
    try:
        data = np.load(path, allow_pickle=False)
        arrays = {k: data[k] for k in data.files}
    except Exception as error:  # zip errors, pickled objects, truncated files
        raise RobustlawError(f"{path}: not a readable .npz file ({type(error).__name__}: {error})") from None
    names = set(arrays)
    numbers = sorted({int(m.group(2)) for k in names if (m := re.fullmatch(r"([Wb])(\d+)", k))})
    if not numbers:
        raise RobustlawError(f"{path}: no layers found: expected arrays named W1, b1, ..., WL, bL, got "
                             f"{', '.join(sorted(names)) or 'nothing'}")
    L = numbers[-1]
    missing = [f"{c}{i}" for i in range(1, L + 1) for c in "Wb" if f"{c}{i}" not in names]
    if missing:
        raise RobustlawError(f"{path}: missing {', '.join(missing)} (a network of {L} layers needs W1, b1, ..., W{L}, b{L})")
    extra = sorted(names - {f"{c}{i}" for i in range(1, L + 1) for c in "Wb"})
    if extra:
        raise RobustlawError(f"{path}: unexpected arrays {', '.join(extra)} (expected only W1, b1, ..., W{L}, b{L})")
    weights, biases = [], []
    for i in range(1, L + 1):
        W, b = arrays[f"W{i}"], arrays[f"b{i}"]
        if not (np.issubdtype(W.dtype, np.number) and np.issubdtype(b.dtype, np.number)):
            raise RobustlawError(f"{path}: W{i} and b{i} must be numeric arrays")
        if W.ndim != 2:
            raise RobustlawError(f"{path}: W{i} must be a matrix, got shape {W.shape}")
        b = b.reshape(-1) if b.ndim == 2 and 1 in b.shape else b
        if b.ndim != 1 or b.shape[0] != W.shape[0]:
            raise RobustlawError(f"{path}: shape mismatch: b{i} has shape {b.shape} but W{i} has {W.shape[0]} rows")
        if weights and W.shape[1] != weights[-1].shape[0]:
            raise RobustlawError(f"{path}: shape mismatch: W{i} has {W.shape[1]} columns but layer {i - 1} has "
                                 f"{weights[-1].shape[0]} outputs")
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            bad = f"W{i}" if not np.isfinite(W).all() else f"b{i}"
            raise RobustlawError(f"{path}: {bad} contains NaN or infinite values")
        if W.size == 0:
            raise RobustlawError(f"{path}: W{i} is empty (shape {W.shape})")
        weights.append(W.astype(float))
        biases.append(b.astype(float))
    if weights[-1].shape[0] != 1:
        raise RobustlawError(f"{path}: the last layer must have one output, but W{L} has {weights[-1].shape[0]} rows")
    return Net(tuple(weights), tuple(biases), tuple(RELU for _ in range(L - 1)))


def as_net(model) -> Net:
    """A :class:`Net` from a Net, a torch Sequential, or a path to an ``.npz`` file."""
    if isinstance(model, Net):
        return model
    if isinstance(model, (str, Path)):
        return load_npz(model)
    return from_torch(model)
