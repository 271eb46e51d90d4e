"""Where a Lipschitz constant is taken: the domain is part of the answer.

- ``global``: all of R^d.
- ``ball``: the Euclidean ball of ``radius`` around ``center`` (default: the origin); for sphere
  data the unit ball holding the data is the natural domain (BLN20's caps are O(1)-Lipschitz
  there and not on R^d).
- ``sphere``: the sphere of ``radius`` around the origin; the gradient is the tangential one.
- ``local``: the union of balls of ``radius`` around given ``points`` (e.g. the training points).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from robustlaw.errors import RobustlawError

KINDS = ("global", "ball", "sphere", "local")


@dataclass(frozen=True, eq=False)
class Domain:
    kind: str = "global"
    radius: float = 1.0
    center: np.ndarray | None = None
    points: np.ndarray | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise RobustlawError(f"unknown domain {self.kind!r} (known: {', '.join(KINDS)})")
        if self.kind != "global" and not (np.isfinite(self.radius) and self.radius > 0):
            raise RobustlawError(f"domain radius must be a positive number, got {self.radius}")
        if self.kind == "local" and (self.points is None or np.ndim(self.points) != 2 or not len(self.points)):
            raise RobustlawError("a local domain needs a non-empty 2-d array of centre points")
        if self.kind == "local" and not np.isfinite(self.points).all():
            raise RobustlawError("a local domain's centre points contain NaN or Inf")
        if self.center is not None and not np.isfinite(self.center).all():
            raise RobustlawError("the domain centre contains NaN or Inf")

    @classmethod
    def parse(cls, text: str) -> Domain:
        """Parse ``global``, ``ball:R``, ``sphere`` or ``sphere:R`` (as on the command line)."""
        kind, _, value = text.partition(":")
        try:
            radius = float(value) if value else 1.0
        except ValueError:
            raise RobustlawError(f"domain {text!r}: radius {value!r} is not a number") from None
        if kind == "local":
            raise RobustlawError("a local domain needs centre points: "
                                 "robustlaw.certify(..., domain=Domain('local', r, points=X))")
        return cls(kind, radius)

    def describe(self) -> str:
        if self.kind == "global":
            return "global"
        if self.kind == "local":
            return f"local(r={self.radius:g}, {len(self.points)} centres)"
        return f"{self.kind}(r={self.radius:g})"

    def _center(self, d: int, like: torch.Tensor) -> torch.Tensor:
        if self.center is None:
            return torch.zeros(d, dtype=like.dtype)
        return torch.as_tensor(self.center, dtype=like.dtype)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The nearest point(s) of the domain to the rows of ``x`` (identity for ``global``)."""
        if self.kind == "global":
            return x
        if self.kind == "sphere":
            return self.radius * x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        if self.kind == "ball":
            c = self._center(x.shape[-1], x)
            offset = x - c
            scale = (self.radius / offset.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
            return c + offset * scale
        centres = torch.as_tensor(self.points, dtype=x.dtype)
        nearest = centres[torch.cdist(x, centres).argmin(dim=1)]
        offset = x - nearest
        scale = (self.radius / offset.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
        return nearest + offset * scale

    def contains(self, x: np.ndarray, slack: float = 1e-6) -> bool:
        """Is the point ``x`` in the domain (up to ``slack``)?"""
        x = np.asarray(x, dtype=float)
        if self.kind == "global":
            return True
        if self.kind == "sphere":
            return abs(np.linalg.norm(x) - self.radius) <= slack * max(1.0, self.radius)
        if self.kind == "ball":
            c = np.zeros_like(x) if self.center is None else np.asarray(self.center, dtype=float)
            return np.linalg.norm(x - c) <= self.radius * (1 + slack)
        return np.linalg.norm(np.asarray(self.points) - x, axis=1).min() <= self.radius * (1 + slack)

    def tangential(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The part of ``grad`` that the domain sees: tangential on the sphere, all of it elsewhere."""
        if self.kind != "sphere":
            return grad
        u = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return grad - (grad * u).sum(dim=-1, keepdim=True) * u

    def bounding_ball(self, d: int) -> tuple[np.ndarray, float] | None:
        """A ball (centre, radius) containing the domain, or None for R^d."""
        if self.kind == "global":
            return None
        if self.kind == "local":
            pts = np.asarray(self.points, dtype=float)
            c = pts.mean(axis=0)
            return c, float(np.linalg.norm(pts - c, axis=1).max() + self.radius)
        c = np.zeros(d) if self.center is None or self.kind == "sphere" else np.asarray(self.center, dtype=float)
        return c, float(self.radius)
