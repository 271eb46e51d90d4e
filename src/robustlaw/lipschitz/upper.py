"""Certified upper bounds on the Lipschitz constant of a feed-forward network on a domain.

For f = W_L act(... act(W_1 x + b_1) ...), grad f(x) = W_1^T D_1 W_2^T ... D_{L-1} W_L^T with
D_i = diag(act'(pre-activations)). Every bound here comes from a box [lo, hi] that provably
contains each neuron's slope on the domain:
- slope boxes: the activation's global slope range, narrowed on bounded domains by interval
  bound propagation of the pre-activations (a ReLU neuron that is stably on or off has slope 1 or 0);
- ``spectral``: ||W_L|| prod_i ||diag(m_i) W_i||, m_i = max(|lo|, |hi|) (for ReLU on R^d this
  is the product of spectral norms; for two layers BLN20's proxy ||a|| ||W||);
- ``path``: two-layer only, sum_j |a_j| m_j ||w_j||;
- ``vertices``: two-layer only, max over the vertices of the slope box of ||W^T (a * s)||, which is
  exact for the all-pattern relaxation (the objective is convex in s, so the box maximum is at
  a vertex); enumerated when at most ``max_free`` neurons are not stable.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robustlaw.errors import RobustlawError
from robustlaw.lipschitz.domain import Domain
from robustlaw.models import Power


@dataclass(frozen=True)
class UpperBound:
    value: float
    method: str


def affine_layers(model: nn.Module) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[nn.Module]]:
    """Split a Sequential of Linear layers and activations into [(W_i, b_i)] and the activations between."""
    if not isinstance(model, nn.Sequential):
        raise RobustlawError(f"expected a torch.nn.Sequential of Linear layers and activations, got {type(model).__name__}")
    layers, acts = [], []
    expect_linear = True
    for module in model:
        if isinstance(module, nn.Linear) == expect_linear:
            if expect_linear:
                W = module.weight.detach().double().numpy()
                b = module.bias.detach().double().numpy() if module.bias is not None else np.zeros(W.shape[0])
                layers.append((W, b))
            else:
                acts.append(module)
            expect_linear = not expect_linear
        elif isinstance(module, nn.Identity):
            continue
        else:
            raise RobustlawError(f"unsupported layer order at {type(module).__name__}: expected Linear and activation layers alternating")
    if not layers or expect_linear:
        raise RobustlawError("the network must end with a Linear layer")
    if layers[-1][0].shape[0] != 1:
        raise RobustlawError(f"the last layer must have one output, got {layers[-1][0].shape[0]}")
    return layers, acts


def slope_box(act: nn.Module, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on act'(t) for t in [lo, hi] (elementwise); lo = -inf, hi = +inf means unbounded."""
    if isinstance(act, nn.ReLU):
        return (lo >= 0).astype(float), (hi > 0).astype(float)
    if isinstance(act, nn.LeakyReLU):
        s = act.negative_slope
        return np.where(lo >= 0, 1.0, s), np.where(hi > 0, 1.0, s)
    if isinstance(act, nn.Tanh):
        nearest = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(np.abs(lo), np.abs(hi)))
        farthest = np.maximum(np.abs(lo), np.abs(hi))
        return 1 - np.tanh(farthest) ** 2, 1 - np.tanh(nearest) ** 2
    if isinstance(act, nn.Softplus):
        sig = lambda t: 1 / (1 + np.exp(-act.beta * np.clip(t, -1e6, 1e6)))  # noqa: E731
        return sig(lo), sig(hi)
    if isinstance(act, Power):
        q = act.q
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            inf = np.full_like(lo, np.inf)
            return -inf, inf
        grid = np.stack([lo, hi, np.clip(0.0, lo, hi)])
        values = q * grid ** (q - 1)
        return values.min(axis=0), values.max(axis=0)
    raise RobustlawError(f"no slope bound known for activation {type(act).__name__}")


def _apply_range(act: nn.Module, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Output range of a monotone (or even-power) activation over [lo, hi]."""
    if isinstance(act, Power):
        grid = np.stack([lo, hi, np.clip(0.0, lo, hi)]) ** act.q
        return grid.min(axis=0), grid.max(axis=0)
    with torch.no_grad():
        f = lambda t: act(torch.as_tensor(t)).numpy()  # noqa: E731
        return f(lo), f(hi)


def slope_boxes(layers, acts, domain: Domain) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per hidden layer, a box containing every neuron's slope on ``domain`` (interval propagation)."""
    d = layers[0][0].shape[1]
    ball = domain.bounding_ball(d)
    boxes = []
    if ball is None:
        lo = hi = None
    else:
        c, r = ball
        W, b = layers[0]
        mid, rad = W @ c + b, r * np.linalg.norm(W, axis=1)
        lo, hi = mid - rad, mid + rad
    for i, act in enumerate(acts):
        if lo is None:
            inf = np.full(layers[i][0].shape[0], np.inf)
            lo_i, hi_i = -inf, inf
        else:
            lo_i, hi_i = lo, hi
        boxes.append(slope_box(act, lo_i, hi_i))
        if lo is not None and i + 1 < len(layers):
            out_lo, out_hi = _apply_range(act, lo_i, hi_i)
            W, b = layers[i + 1]
            mid, rad = (out_lo + out_hi) / 2, (out_hi - out_lo) / 2
            lo, hi = W @ mid + b - np.abs(W) @ rad, W @ mid + b + np.abs(W) @ rad
    return boxes


def spectral_bound(layers, boxes) -> float:
    """||W_L|| prod_i ||diag(m_i) W_i||_op with m_i the largest |slope| per neuron."""
    value = np.linalg.norm(layers[-1][0], 2)
    for (W, _), (lo, hi) in zip(layers[:-1], boxes):
        m = np.maximum(np.abs(lo), np.abs(hi))
        if not np.isfinite(m).all():
            return float("inf")
        value *= np.linalg.norm(m[:, None] * W, 2)
    return float(value)


def path_bound(layers, boxes) -> float:
    """Two-layer: sum_j |a_j| m_j ||w_j||."""
    (W, _), (a, _) = layers
    lo, hi = boxes[0]
    m = np.maximum(np.abs(lo), np.abs(hi))
    return float(np.sum(np.abs(a[0]) * m * np.linalg.norm(W, axis=1)))


def vertex_bound(layers, boxes, max_free: int = 16) -> float | None:
    """Two-layer: max over slope-box vertices of ||W^T (a * s)||, or None if too many free neurons."""
    (W, _), (a, _) = layers
    lo, hi = boxes[0]
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        return None
    free = np.flatnonzero(lo != hi)
    if len(free) > max_free:
        return None
    G = W * a[0][:, None]  # row j: a_j w_j
    fixed = G.T @ lo
    delta = (G[free] * (hi - lo)[free, None])  # moving neuron j from lo to hi adds this row
    best = np.linalg.norm(fixed)
    for bits in itertools.product((0.0, 1.0), repeat=len(free)):
        best = max(best, np.linalg.norm(fixed + np.asarray(bits) @ delta))
    return float(best)


def upper_bound(model: nn.Module, domain: Domain = Domain(), max_free: int = 16) -> UpperBound:
    """The smallest of the sound bounds above for ``model`` on ``domain`` (a certificate)."""
    layers, acts = affine_layers(model)
    boxes = slope_boxes(layers, acts, domain)
    candidates = {"spectral": spectral_bound(layers, boxes)}
    if len(layers) == 2:
        candidates["path"] = path_bound(layers, boxes)
        vertex = vertex_bound(layers, boxes, max_free)
        if vertex is not None:
            candidates["vertices"] = vertex
    method = min(candidates, key=candidates.get)
    # floating-point slack: the bound is computed in float64 from float32/64 weights
    return UpperBound(value=candidates[method] * (1 + 1e-9), method=method)
