"""Held-out nets for the law's regime (issue 13), trained by plain torch code (not robustlaw.fitting).

Each builder returns (Net, X, y, domain text) and caches the weights as .npz under ``CACHE`` so the
benchmark processes share one training run. Data on the unit sphere (random signs), or sklearn's digits
centred and scaled to unit norm with 15% flipped labels; nets trained by full-batch Adam on the squared
loss until every training point is within 0.1 of its label (interpolation) or the step budget ends.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("ROBUSTLAW_BENCH_CACHE", "/tmp/robustlaw_law_nets"))


def sphere_signs(n, d, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, rng.choice([-1.0, 1.0], size=n)


def digits_flipped(seed, flip=0.15):
    from sklearn.datasets import load_digits

    X, labels = load_digits(return_X_y=True)
    X = X - X.mean(axis=0)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.where(labels % 2 == 0, 1.0, -1.0)
    rng = np.random.default_rng(seed)
    flipped = rng.random(len(y)) < flip
    y[flipped] = -y[flipped]
    return X, y


def train(X, y, widths, seed, act="relu", steps=6000, lr=3e-3):
    """Full-batch Adam on the squared loss, float32; stops when max |f(x_i) - y_i| < 0.1."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    make = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus, "sigmoid": nn.Sigmoid}[act]
    sizes = [X.shape[1], *widths, 1]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths):
            layers.append(make())
    model = nn.Sequential(*layers)
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        err = model(Xt)[:, 0] - yt
        (err**2).mean().backward()
        opt.step()
        if err.abs().max().item() < 0.1:
            break
    return model


def gaussian(d, widths, seed, act="relu", bias=0.1):
    """Random weights W ~ N(0, 1/fan_in), hidden biases N(0, bias^2) (for cost curves and activations)."""
    import torch
    from torch import nn

    rng = np.random.default_rng(seed)
    make = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus, "sigmoid": nn.Sigmoid}[act]
    sizes = [d, *widths, 1]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(rng.standard_normal((b, a)) / math.sqrt(a)))
            lin.bias.copy_(torch.as_tensor(bias * rng.standard_normal(b) if i < len(widths) else np.zeros(b)))
        layers.append(lin)
        if i < len(widths):
            layers.append(make())
    return nn.Sequential(*layers)


def caps_net(n, d, seed, offset=0.2):
    """BLN20 3.2's one-cap-per-point net, written by hand: relu(<x_i, x> - (1 - offset)) / offset, heights y_i."""
    import torch
    from torch import nn

    X, y = sphere_signs(n, d, seed)
    first, out = nn.Linear(d, n, dtype=torch.float64), nn.Linear(n, 1, dtype=torch.float64)
    with torch.no_grad():
        first.weight.copy_(torch.as_tensor(X / offset))
        first.bias.fill_(-(1 - offset) / offset)
        out.weight.copy_(torch.as_tensor(y[None, :]))
        out.bias.zero_()
    return nn.Sequential(first, nn.ReLU(), out), X, y


def _trained(data, widths, seed, act="relu"):
    X, y = data
    return train(X, y, widths, seed, act), X, y


#: name: (builder -> (torch model, X, y), domain, exact value or None)
NETS = {
    "two-layer n=500 d=20 k=400": (lambda: _trained(sphere_signs(500, 20, 1), [400], 1), "ball:1"),
    "deep 20-64-64-1 n=300": (lambda: _trained(sphere_signs(300, 20, 2), [64, 64], 2), "ball:1"),
    "digits MLP 64-96-96-1, 15% flips": (lambda: _trained(digits_flipped(3), [96, 96], 3), "ball:1"),
    "caps n=100 d=1000 (.npz)": (lambda: caps_net(100, 1000, 4), "ball:1"),
    "sweep two-layer n=200 d=20 k=40": (lambda: _trained(sphere_signs(200, 20, 5), [40], 5), "ball:1"),
    "sweep two-layer n=200 d=20 k=200": (lambda: _trained(sphere_signs(200, 20, 6), [200], 6), "ball:1"),
    "two-layer n=500 d=20 k=400, sphere": (lambda: _trained(sphere_signs(500, 20, 1), [400], 1), "sphere"),
    "tanh two-layer n=200 d=20 k=100": (lambda: _trained(sphere_signs(200, 20, 7), [100], 7, "tanh"), "ball:1"),
    "softplus two-layer n=200 d=20 k=100": (lambda: _trained(sphere_signs(200, 20, 8), [100], 8, "softplus"), "ball:1"),
    "784-256-1 random": (lambda: (gaussian(784, [256], 9), None, None), "global"),
}


def load(name):
    """(Net, X, y, domain text) for ``name``, trained once and cached (our own files: torch.load is safe here)."""
    import torch

    from robustlaw.lipschitz.network import from_torch

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / (name.replace(" ", "_").replace("/", "_").replace(",", "").replace("%", "") + ".pt")
    if not path.exists():
        torch.save(NETS[name][0](), path)
    model, X, y = torch.load(path, weights_only=False)
    return from_torch(model), X, y, NETS[name][1]
