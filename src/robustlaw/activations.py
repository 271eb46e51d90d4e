"""Activations: one object per activation, owning every fact about it.

An :class:`Activation` knows its forward map and slope (float64 numpy, for certificates), the range
of its slope and of its values over an interval of pre-activations (for bounds on a domain), its
torch module (for fitting), how to recognise that module in a ``torch.nn.Sequential``, and a smooth
surrogate (for gradient search). Piecewise-linear ones also give linear lines below and above them on
an interval (the relaxation that CROWN-style bounds back-substitute; Zhang et al. 2018,
arXiv:1811.00866). A new activation is one subclass registered in :data:`ACTIVATIONS`; the spec's
``model.activation`` choices, the ``.pt`` reader and every certificate then know it.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from robustlaw.errors import RobustlawError
from robustlaw.registry import Registry

Array = np.ndarray


class Power(nn.Module):
    """The polynomial activation t -> t^q of BLN20 (arXiv:2009.14444) Section 3.4 (not Lipschitz on R
    for q >= 2)."""

    def __init__(self, q: int = 2):
        super().__init__()
        self.q = int(q)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t**self.q

    def extra_repr(self) -> str:
        return f"q={self.q}"


class Activation:
    """An elementwise activation t -> act(t). Subclasses set ``name`` and ``torch_types`` and implement
    ``__call__``, ``slope``, ``slope_range`` and ``to_torch``; the defaults below fit monotone ones."""

    name: ClassVar[str] = ""
    #: torch modules this activation reads (see :meth:`from_torch`)
    torch_types: ClassVar[tuple[type[nn.Module], ...]] = ()
    piecewise_linear: ClassVar[bool] = False
    #: act(c t) = c act(t) for c > 0: the network's Lipschitz constant scales with its weights
    positively_homogeneous: ClassVar[bool] = False

    @classmethod
    def build(cls, q: int = 2) -> Activation:
        """The instance a spec asks for (``model.activation = name``; ``q`` is the power of ``poly``)."""
        return cls()

    @classmethod
    def from_torch(cls, module: nn.Module) -> Activation | None:
        """This activation if ``module`` is one of its torch modules, else None."""
        return cls() if isinstance(module, cls.torch_types) else None

    def __call__(self, t: Array) -> Array:
        raise NotImplementedError

    def slope(self, t: Array) -> Array:
        """The derivative at ``t`` (at a kink: the right derivative)."""
        raise NotImplementedError

    def slope_range(self, lo: Array, hi: Array) -> tuple[Array, Array]:
        """Elementwise bounds [min, max] on the slope over pre-activations in [lo, hi] (lo may be -inf)."""
        raise NotImplementedError

    def value_range(self, lo: Array, hi: Array) -> tuple[Array, Array]:
        """Elementwise output range over [lo, hi]; monotone increasing activations by default."""
        with np.errstate(invalid="ignore", over="ignore"):
            return self(lo), self(hi)

    def to_torch(self) -> nn.Module:
        raise NotImplementedError

    def smoothed(self, beta: float) -> nn.Module:
        """A smooth surrogate for gradient ascent (the activation itself when it is smooth)."""
        return self.to_torch()

    def describe(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items()))))

    def __repr__(self) -> str:
        return self.describe()


class PiecewiseLinear(Activation):
    """act(t) = t for t > 0 and ``alpha`` t for t <= 0, for any real ``alpha``: convex when alpha <= 1,
    concave above. Its slope is ``alpha`` or 1."""

    piecewise_linear = True
    positively_homogeneous = True

    def __init__(self, alpha: float):
        if not np.isfinite(alpha):
            raise RobustlawError(f"LeakyReLU slope {alpha} is not finite")
        self.alpha = float(alpha)

    @property
    def low_slope(self) -> float:
        """The slope on the negative side."""
        return self.alpha

    def __call__(self, t: Array) -> Array:
        return np.where(t > 0, t, self.alpha * t)

    def slope(self, t: Array) -> Array:
        return np.where(t > 0, 1.0, self.alpha)

    def slope_range(self, lo: Array, hi: Array) -> tuple[Array, Array]:
        left = np.where(lo >= 0, 1.0, self.alpha)  # the slope at the interval's low end
        right = np.where(hi > 0, 1.0, self.alpha)
        return np.minimum(left, right), np.maximum(left, right)

    def value_range(self, lo: Array, hi: Array) -> tuple[Array, Array]:
        with np.errstate(invalid="ignore", over="ignore"):
            values = np.stack([self(lo), self(hi), self(np.clip(0.0, lo, hi))])
        return values.min(axis=0), values.max(axis=0)

    def relaxation(self, lo: Array, hi: Array) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
        """Per neuron, a line below and a line above the activation on [lo, hi], each (slope, offset):
        the chord on one side, on the other the line through 0 with whichever of the two slopes is closer
        to the activation over the interval. Exact for stable neurons."""
        s = self.alpha
        unstable = (lo < 0) & (hi > 0)
        width = np.where(unstable, hi - lo, 1.0)
        stable = np.where(hi <= 0, s, 1.0)
        chord_slope = np.where(unstable, (hi - s * lo) / width, stable)
        chord = (chord_slope, np.where(unstable, hi - chord_slope * hi, 0.0))
        tangent = (np.where(unstable, np.where(hi >= -lo, 1.0, s), chord_slope), np.zeros_like(lo))
        return (tangent, chord) if s <= 1 else (chord, tangent)

    def smoothed(self, beta: float) -> nn.Module:
        return _Surrogate(self.alpha, nn.Softplus(beta=beta))


class _Surrogate(nn.Module):
    """alpha t + (1 - alpha) softplus_beta(t): the smooth stand-in for a leaky kink."""

    def __init__(self, alpha: float, soft: nn.Module):
        super().__init__()
        self.alpha, self.soft = alpha, soft

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.alpha * t + (1 - self.alpha) * self.soft(t)


ACTIVATIONS: Registry[type[Activation]] = Registry("activation", "model.activation")


@ACTIVATIONS.register("relu")
class ReLU(PiecewiseLinear):
    name = "relu"
    torch_types = (nn.ReLU,)

    def __init__(self):
        super().__init__(0.0)

    def __call__(self, t: Array) -> Array:
        return np.maximum(t, 0.0)

    def to_torch(self) -> nn.Module:
        return nn.ReLU()

    def smoothed(self, beta: float) -> nn.Module:
        return nn.Softplus(beta=beta)


@ACTIVATIONS.register("leaky_relu")
class LeakyReLU(PiecewiseLinear):
    """LeakyReLU with negative slope ``alpha`` (the spec's ``leaky_relu`` is alpha = 0.01)."""

    name = "leaky_relu"
    torch_types = (nn.LeakyReLU,)

    def __init__(self, alpha: float = 0.01):
        super().__init__(alpha)

    @classmethod
    def from_torch(cls, module: nn.Module) -> Activation | None:
        return cls(float(module.negative_slope)) if isinstance(module, nn.LeakyReLU) else None

    def to_torch(self) -> nn.Module:
        return nn.LeakyReLU(self.alpha)

    def describe(self) -> str:
        return f"leaky_relu({self.alpha:g})"


@ACTIVATIONS.register("tanh")
class Tanh(Activation):
    name = "tanh"
    torch_types = (nn.Tanh,)

    def __call__(self, t: Array) -> Array:
        return np.tanh(t)

    def slope(self, t: Array) -> Array:
        return 1 - np.tanh(t) ** 2

    def slope_range(self, lo: Array, hi: Array) -> tuple[Array, Array]:
        near, far = _nearest_and_farthest_from_zero(lo, hi)
        return self.slope(far), self.slope(near)

    def to_torch(self) -> nn.Module:
        return nn.Tanh()


@ACTIVATIONS.register("softplus")
class Softplus(Activation):
    """softplus(beta t) / beta. torch switches to the identity above threshold / beta; the slope stays
    in [0, 1] either way."""

    name = "softplus"
    torch_types = (nn.Softplus,)

    def __init__(self, beta: float = 1.0):
        if not 0 < float(beta) < np.inf:
            raise RobustlawError(f"Softplus beta must be positive and finite, got {beta}")
        self.beta = float(beta)

    @classmethod
    def from_torch(cls, module: nn.Module) -> Activation | None:
        return cls(float(module.beta)) if isinstance(module, nn.Softplus) else None

    def __call__(self, t: Array) -> Array:
        return np.logaddexp(0.0, self.beta * t) / self.beta

    def slope(self, t: Array) -> Array:
        return 0.5 * (1 + np.tanh(self.beta * t / 2))

    def slope_range(self, lo: Array, hi: Array) -> tuple[Array, Array]:
        return self.slope(lo), self.slope(hi)  # increasing slope

    def to_torch(self) -> nn.Module:
        return nn.Softplus(beta=self.beta)

    def describe(self) -> str:
        return f"softplus(beta={self.beta:g})"


@ACTIVATIONS.register("sigmoid")
class Sigmoid(Activation):
    name = "sigmoid"
    torch_types = (nn.Sigmoid,)

    def __call__(self, t: Array) -> Array:
        return 0.5 * (1 + np.tanh(t / 2))

    def slope(self, t: Array) -> Array:
        s = self(t)
        return s * (1 - s)

    def slope_range(self, lo: Array, hi: Array) -> tuple[Array, Array]:
        near, far = _nearest_and_farthest_from_zero(lo, hi)
        return self.slope(far), self.slope(near)

    def to_torch(self) -> nn.Module:
        return nn.Sigmoid()


@ACTIVATIONS.register("poly")
class Poly(Activation):
    """t -> t^q (:class:`Power`); its slope is unbounded on R, so certificates need a bounded domain."""

    name = "poly"
    torch_types = (Power,)

    def __init__(self, q: int = 2):
        if not (isinstance(q, (int, np.integer)) and not isinstance(q, bool) and q >= 1):
            raise RobustlawError(f"Power q must be an integer >= 1, got {q!r}")
        self.q = int(q)

    @classmethod
    def build(cls, q: int = 2) -> Activation:
        return cls(q)

    @classmethod
    def from_torch(cls, module: nn.Module) -> Activation | None:
        return cls(module.q) if isinstance(module, Power) else None

    def __call__(self, t: Array) -> Array:
        return t**self.q

    def slope(self, t: Array) -> Array:
        return self.q * t ** (self.q - 1)

    def slope_range(self, lo: Array, hi: Array) -> tuple[Array, Array]:
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            inf = np.full(np.shape(lo), np.inf)
            return -inf, inf
        values = self.slope(np.stack([lo, hi, np.clip(0.0, lo, hi)]))
        return values.min(axis=0), values.max(axis=0)

    def value_range(self, lo: Array, hi: Array) -> tuple[Array, Array]:
        grid = np.stack([lo, hi, np.clip(0.0, lo, hi)]) ** self.q
        return grid.min(axis=0), grid.max(axis=0)

    def to_torch(self) -> nn.Module:
        return Power(self.q)

    def describe(self) -> str:
        return f"poly({self.q})"


@ACTIVATIONS.register("identity")
class Identity(PiecewiseLinear):
    """The identity; also what affine-only modules (Identity, Flatten, Dropout in eval) read as."""

    name = "identity"
    torch_types = (nn.Identity, nn.Flatten, nn.Dropout)

    def __init__(self):
        super().__init__(1.0)

    def __call__(self, t: Array) -> Array:
        return t

    def slope(self, t: Array) -> Array:
        return np.ones_like(t)

    def slope_range(self, lo: Array, hi: Array) -> tuple[Array, Array]:
        one = np.ones(np.shape(lo))
        return one, one

    def to_torch(self) -> nn.Module:
        return nn.Identity()


def _nearest_and_farthest_from_zero(lo: Array, hi: Array) -> tuple[Array, Array]:
    """Per entry, the |t| nearest to and farthest from 0 over [lo, hi] (for even bell-shaped slopes)."""
    near = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(np.abs(lo), np.abs(hi)))
    return near, np.maximum(np.abs(lo), np.abs(hi))


def activation_of(module: nn.Module) -> Activation | None:
    """The registered activation that reads ``module``, or None."""
    for cls in ACTIVATIONS.values():
        act = cls.from_torch(module)
        if act is not None:
            return act
    return None


def make_activation(name: str, q: int = 2) -> Activation:
    """The activation a spec names (``q``: the power of ``poly``); one-line error for unknown names."""
    return ACTIVATIONS.get(name).build(q)


RELU = ReLU()
