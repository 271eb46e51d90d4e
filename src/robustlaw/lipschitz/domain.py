"""Where a Lipschitz constant is taken: the domain is part of the answer.

One class per kind of domain, each owning its geometry, so no code outside asks which kind it is:

- :class:`Global`: all of R^d.
- :class:`Ball`: the Euclidean ball of ``radius`` around ``center`` (default: the origin); for sphere
  data the unit ball holding the data is the natural domain (BLN20, arXiv:2009.14444, Section 3.2:
  the one-cap-per-point net is O(1)-Lipschitz there and not on R^d).
- :class:`Sphere`: the sphere of ``radius`` around the origin; the gradient is the tangential one.
- :class:`LocalBalls`: the union of balls of ``radius`` around given ``points`` (e.g. the training
  points), certified ball by ball.

Each gives containment, projection, the gradient it sees, random points, the chord of a line, the
balls that cover it and a ball that bounds it. A new kind is one subclass registered in
:data:`DOMAINS`; the spec's ``certify.domain`` and ``robustlaw lip --domain`` then accept it.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch

from robustlaw.errors import RobustlawError, require
from robustlaw.registry import Registry

Array = np.ndarray


class Domain:
    """A set of inputs. Subclasses set ``name`` and implement the methods below that raise."""

    name: ClassVar[str] = ""
    #: a union of full-dimensional convex pieces (lines through a point stay in it along a chord), where
    #: exact line scans and pattern covering apply; False for the sphere
    solid: ClassVar[bool] = True
    #: certificates are taken piece by piece (:meth:`covering_balls`) and the largest kept
    per_ball: ClassVar[bool] = False
    radius: float = math.inf
    center: Array | None = None

    @classmethod
    def from_spec(cls, radius: float, points: Array) -> Domain:
        """The domain a spec's ``certify`` section describes: ``radius`` (> 0) around the data ``points``."""
        return cls(radius)

    @classmethod
    def check_spec_radius(cls, radius: float) -> None:
        """Raise a :class:`SpecError` if a spec's ``certify.radius`` (0 = the data's radius) does not fit."""

    @classmethod
    def parse_value(cls, value: str, center: Array | None = None, points: Array | None = None) -> Domain:
        """The domain written ``name:value`` on the command line (value: the radius, default 1), with the
        ``center`` (``--center``) of a domain that has one and the data ``points`` (``--data``), which a
        domain around the data takes as its centres and any other leaves to the search."""
        if center is not None:
            raise RobustlawError(f"a {cls.name} domain takes no centre")
        return cls(_radius_of(value))

    def describe(self) -> str:
        return f"{self.name}(r={self.radius:g})"

    def check_dim(self, d: int) -> None:
        """Raise a one-line error if the domain does not live in R^d."""

    def contains(self, x: Array, slack: float = 1e-6) -> bool:
        """Is the point ``x`` in the domain (up to ``slack``)?"""
        raise NotImplementedError

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The nearest point(s) of the domain to the rows of ``x``."""
        raise NotImplementedError

    def tangential(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The part of ``grad`` at ``x`` that the domain sees (torch): all of it, except on a sphere."""
        return grad

    def tangential_np(self, x: Array, grad: Array) -> Array:
        """:meth:`tangential` for float64 numpy rows."""
        return grad

    def on_domain(self, x: Array) -> Array:
        """Points of a chord (:meth:`chord`) moved onto the domain: the identity where chords stay in it."""
        return x

    def active_tangent_factor(self, W: Array, b: Array) -> Array:
        """Per neuron j, a bound on ||tangential(x, w_j)|| / ||w_j|| over the points x of the domain where
        w_j . x + b_j >= 0 (what a ReLU neuron adds to the gradient the domain sees): 1, except on a sphere."""
        return np.ones(len(W))

    def bounding_ball(self, d: int) -> tuple[Array, float] | None:
        """A ball (centre, radius) containing the domain, or None for an unbounded one."""
        raise NotImplementedError

    def covering_balls(self) -> list[Ball] | None:
        """Balls whose union contains the domain (None: unbounded)."""
        raise NotImplementedError

    def chord(self, x: Array, v: Array, span: float) -> tuple[float, float]:
        """The parameter interval [t0, t1] of the line {x + t v} inside the domain (at most [-span, span])."""
        raise NotImplementedError

    def random_points(self, rng: np.random.Generator, count: int, d: int) -> Array:
        """``count`` random points to start searches from: N(0, I/d), moved into the bounding ball."""
        random = rng.standard_normal((count, d)) / np.sqrt(d)
        c, r = self.bounding_ball(d)
        return c + r * random * rng.uniform(size=(count, 1)) ** (1.0 / d) / np.linalg.norm(random, axis=1, keepdims=True)

    def search_scale(self, d: int) -> float:
        """The length scale of the domain for search steps."""
        return self.bounding_ball(d)[1]

    def start_radii(self, rng: np.random.Generator, R: float, count: int) -> Array:
        """Radii of random search starts around the bounding ball's centre (of radius R)."""
        return R * rng.uniform(size=(count, 1))

    def outer_balls(self, rng: np.random.Generator, R: float) -> list[Ball]:
        """Extra balls a search should walk in (far regions matter only on an unbounded domain)."""
        return []

    def sample(self, rng: np.random.Generator, n: int, d: int) -> Array:
        """``n`` points of the domain, spread over all of it (for independent checks of certificates)."""
        raise NotImplementedError


DOMAINS: Registry[type[Domain]] = Registry("domain", "certify.domain")


def _radius_of(value: str) -> float:
    try:
        return float(value) if value else 1.0
    except ValueError:
        raise RobustlawError(f"domain radius {value!r} is not a number") from None


#: The largest domain radius: its square must be a finite float.
MAX_RADIUS = math.sqrt(np.finfo(float).max)


def _check_radius(radius: float) -> float:
    if not (isinstance(radius, (int, float, np.floating)) and np.isfinite(radius) and radius > 0):
        raise RobustlawError(f"domain radius must be a positive number, got {radius}")
    if radius > MAX_RADIUS:
        raise RobustlawError(f"domain radius above {MAX_RADIUS:.4g} (its square overflows a float)")
    return float(radius)


def _check_center(center, what: str) -> Array:
    center = np.asarray(center, dtype=float)
    if not np.isfinite(center).all():
        raise RobustlawError(f"{what} contains NaN or Inf")
    return center


def _ball_chord(c: Array, R: float, x: Array, v: Array) -> tuple[float, float]:
    """The parameters t with ||x - c + t v|| <= R, shrunk by 1e-9 so both ends are inside."""
    p = x - c
    A, B, C = v @ v, 2 * p @ v, p @ p - R**2
    disc = B * B - 4 * A * C
    if A <= 0 or disc < 0:
        return 0.0, 0.0
    root = math.sqrt(disc)
    return (-B - root) / (2 * A) * (1 - 1e-9), (-B + root) / (2 * A) * (1 - 1e-9)


def _into_ball(c: torch.Tensor, radius: float, x: torch.Tensor) -> torch.Tensor:
    offset = x - c
    scale = (radius / offset.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
    return c + offset * scale


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> Array:
    X = rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@DOMAINS.register("global")
class Global(Domain):
    """All of R^d."""

    name = "global"

    def __init__(self, radius: float = math.inf):
        pass

    def describe(self) -> str:
        return "global"

    def contains(self, x: Array, slack: float = 1e-6) -> bool:
        return True

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def bounding_ball(self, d: int) -> None:
        return None

    def covering_balls(self) -> None:
        return None

    def chord(self, x: Array, v: Array, span: float) -> tuple[float, float]:
        return -span, span

    def random_points(self, rng: np.random.Generator, count: int, d: int) -> Array:
        return rng.standard_normal((count, d)) / np.sqrt(d)

    def search_scale(self, d: int) -> float:
        return 1.0

    def start_radii(self, rng: np.random.Generator, R: float, count: int) -> Array:
        # far regions count on R^d: starts at radii up to R, 3R and 10R
        return R * rng.uniform(size=(count, 1)) * rng.choice([1.0, 3.0, 10.0], size=(count, 1))

    def outer_balls(self, rng: np.random.Generator, R: float) -> list[Ball]:
        return [Ball(float(R * rng.choice([1.0, 3.0])))]

    def sample(self, rng: np.random.Generator, n: int, d: int) -> Array:
        return rng.standard_normal((n, d)) * rng.choice([0.1, 1, 5, 50], size=(n, 1))


@DOMAINS.register("ball")
class Ball(Domain):
    """The closed ball of ``radius`` around ``center`` (None: the origin)."""

    name = "ball"

    def __init__(self, radius: float = 1.0, center: Array | None = None):
        self.radius = _check_radius(radius)
        self.center = None if center is None else _check_center(center, "the domain centre")

    @classmethod
    def parse_value(cls, value: str, center: Array | None = None, points: Array | None = None) -> Domain:
        return cls(_radius_of(value), center)

    def describe(self) -> str:
        where = "" if self.center is None else f", centre of norm {np.linalg.norm(self.center):.4g}"
        return f"{self.name}(r={self.radius:g}{where})"

    def check_dim(self, d: int) -> None:
        if self.center is not None and np.shape(self.center) != (d,):
            raise RobustlawError(f"the domain centre has shape {np.shape(self.center)}, the network takes {d} inputs")

    def _c(self, d: int) -> Array:
        return np.zeros(d) if self.center is None else self.center

    def contains(self, x: Array, slack: float = 1e-6) -> bool:
        x = np.asarray(x, dtype=float)
        return np.linalg.norm(x - self._c(len(x))) <= self.radius * (1 + slack)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        c = torch.zeros(x.shape[-1], dtype=x.dtype) if self.center is None else torch.as_tensor(self.center, dtype=x.dtype)
        return _into_ball(c, self.radius, x)

    def bounding_ball(self, d: int) -> tuple[Array, float]:
        return self._c(d), self.radius

    def covering_balls(self) -> list[Ball]:
        return [self]

    def chord(self, x: Array, v: Array, span: float) -> tuple[float, float]:
        return _ball_chord(self._c(len(x)), self.radius, x, v)

    def sample(self, rng: np.random.Generator, n: int, d: int) -> Array:
        return self._c(d) + self.radius * _unit_rows(rng, n, d) * rng.uniform(size=(n, 1)) ** (1 / d)


@DOMAINS.register("sphere")
class Sphere(Domain):
    """The sphere of ``radius`` around the origin; a function on it is measured by its tangential gradient."""

    name = "sphere"
    solid = False

    def __init__(self, radius: float = 1.0):
        self.radius = _check_radius(radius)

    def contains(self, x: Array, slack: float = 1e-6) -> bool:
        return abs(np.linalg.norm(x) - self.radius) <= self.tolerance(slack)

    def tolerance(self, slack: float = 1e-6) -> float:
        """How far from the sphere a point may lie and still count as on it (:meth:`contains`)."""
        return slack * max(1.0, self.radius)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.radius * x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def tangential(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        u = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return grad - (grad * u).sum(dim=-1, keepdim=True) * u

    def tangential_np(self, x: Array, grad: Array) -> Array:
        u = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-300)
        return grad - np.sum(grad * u, axis=-1, keepdims=True) * u

    def on_domain(self, x: Array) -> Array:
        return self.radius * x / np.linalg.norm(x, axis=1, keepdims=True)

    def active_tangent_factor(self, W: Array, b: Array) -> Array:
        """Where w . x + b >= 0 on the sphere, u . x / R >= t := -b / (||w|| R) (u = w / ||w||), so for t > 0 the
        tangential part of w has norm ||w|| sqrt(1 - (u . x / R)^2) <= ||w|| sqrt(1 - t^2): a thin cap's neuron
        is nearly radial where it is on. The radius is taken as large as :meth:`contains` accepts (a witness may
        lie that far out) and 1e-12 is added under the root, so rounding cannot make the factor too small."""
        norms = np.linalg.norm(W, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(norms > 0, -b / (norms * (self.radius + self.tolerance())), 0.0)
        t = np.clip(t, 0.0, 1.0)
        return np.minimum(1.0, np.sqrt(1.0 - t * t + 1e-12))

    def bounding_ball(self, d: int) -> tuple[Array, float]:
        return np.zeros(d), self.radius

    def covering_balls(self) -> list[Ball]:
        return [Ball(self.radius)]

    def chord(self, x: Array, v: Array, span: float) -> tuple[float, float]:
        return _ball_chord(np.zeros_like(x), self.radius, x, v)

    def sample(self, rng: np.random.Generator, n: int, d: int) -> Array:
        return self.radius * _unit_rows(rng, n, d)


@DOMAINS.register("local")
class LocalBalls(Domain):
    """The union of the balls of ``radius`` around the rows of ``points`` (n, d)."""

    name = "local"
    per_ball = True

    def __init__(self, radius: float, points: Array):
        self.radius = _check_radius(radius)
        if points is None or np.ndim(points) != 2 or not len(points):
            raise RobustlawError("a local domain needs a non-empty 2-d array of centre points")
        self.points = _check_center(points, "a local domain's centre points")

    @classmethod
    def from_spec(cls, radius: float, points: Array) -> Domain:
        return cls(radius, points)

    @classmethod
    def check_spec_radius(cls, radius: float) -> None:
        require(radius > 0, "certify.radius", "a local domain needs a radius > 0")

    @classmethod
    def parse_value(cls, value: str, center: Array | None = None, points: Array | None = None) -> Domain:
        if points is None:
            raise RobustlawError("a local domain needs centre points: --data X.npy (in Python: LocalBalls(r, X))")
        if center is not None:
            raise RobustlawError("a local domain takes its centres from --data, not a --center")
        return cls(_radius_of(value), points)

    def describe(self) -> str:
        return f"local(r={self.radius:g}, {len(self.points)} centres)"

    def check_dim(self, d: int) -> None:
        if self.points.shape[1] != d:
            raise RobustlawError(f"the local domain's points have {self.points.shape[1]} coordinates, "
                                 f"the network takes {d} inputs")

    def _nearest(self, x: Array) -> Array:
        return self.points[np.argmin(np.linalg.norm(self.points - x, axis=1))]

    def contains(self, x: Array, slack: float = 1e-6) -> bool:
        return np.linalg.norm(self.points - np.asarray(x, dtype=float), axis=1).min() <= self.radius * (1 + slack)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        centres = torch.as_tensor(self.points, dtype=x.dtype)
        return _into_ball(centres[torch.cdist(x, centres).argmin(dim=1)], self.radius, x)

    def bounding_ball(self, d: int) -> tuple[Array, float]:
        c = self.points.mean(axis=0)
        return c, float(np.linalg.norm(self.points - c, axis=1).max() + self.radius)

    def covering_balls(self) -> list[Ball]:
        return [Ball(self.radius, center=p) for p in self.points]

    def chord(self, x: Array, v: Array, span: float) -> tuple[float, float]:
        return _ball_chord(self._nearest(x), self.radius, x, v)

    def sample(self, rng: np.random.Generator, n: int, d: int) -> Array:
        centres = self.points[rng.integers(len(self.points), size=n)]
        return centres + self.radius * _unit_rows(rng, n, d) * rng.uniform(size=(n, 1)) ** (1 / d)


def make_domain(kind: str = "global", radius: float = 1.0, points: Array | None = None) -> Domain:
    """The domain called ``kind`` with ``radius`` (and centre ``points`` for a local one)."""
    cls = DOMAINS.get(kind)
    return cls.from_spec(radius, points)


def parse_domain(text: str, center: Array | None = None, points: Array | None = None) -> Domain:
    """Parse ``global``, ``ball:R``, ``sphere``, ``sphere:R`` or ``local:R`` (as on the command line), with
    a ball's ``center`` and the data ``points`` a local domain is centred on (see :meth:`Domain.parse_value`)."""
    kind, _, value = text.partition(":")
    if kind not in DOMAINS:
        raise RobustlawError(f"unknown domain {kind!r} (known: {', '.join(DOMAINS)})")
    return DOMAINS.get(kind).parse_value(value, center, points)
