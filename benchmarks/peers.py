"""Peer Lipschitz estimators for the benchmark (optional dependencies: cvxpy + cvxopt, eclipse-nn, ART).

Each returns (value, seconds) or raises ImportError when its package is missing.
"""

from __future__ import annotations

import time

import numpy as np

from robustlaw.lipschitz.network import Net


def spectral_product(net: Net) -> float:
    """prod_i ||W_i||_2 (ReLU slopes in [0, 1])."""
    return float(np.prod([np.linalg.norm(W, 2) for W in net.weights]))


def lipsdp_neuron(net: Net, solver: str = "CVXOPT") -> float:
    """LipSDP-Neuron (Fazlyab et al. 2019) for ReLU nets (slopes in [0, 1]), one diagonal multiplier per neuron.

    min rho s.t. the block matrix of the paper is negative semidefinite; returns sqrt(rho).
    The answer is an SDP solver's: re-certified here by checking the largest eigenvalue.
    """
    import cvxpy as cp

    Ws = net.weights
    n_hidden = sum(W.shape[0] for W in Ws[:-1])
    d = net.d
    dims = [d] + [W.shape[0] for W in Ws[:-1]]
    N = sum(dims)
    rho = cp.Variable(nonneg=True)
    lam = cp.Variable(n_hidden, nonneg=True)
    T = cp.diag(lam)
    # A = [blkdiag(W_1..W_{L-1}), 0] (n_hidden x N), B = [0, I_{n_hidden}]
    A = np.zeros((n_hidden, N))
    r, c = 0, 0
    for W in Ws[:-1]:
        A[r:r + W.shape[0], c:c + W.shape[1]] = W
        r += W.shape[0]
        c += W.shape[1]
    Bm = np.hstack([np.zeros((n_hidden, d)), np.eye(n_hidden)])
    # alpha = 0, beta = 1: M_phi = [A; B]^T [[0, T], [T, -2T]] [A; B]
    M_phi = A.T @ T @ Bm + Bm.T @ T @ A - 2 * Bm.T @ T @ Bm
    E0 = np.zeros((d, N))
    E0[:, :d] = np.eye(d)
    EL = np.zeros((dims[-1], N))
    EL[:, N - dims[-1]:] = np.eye(dims[-1])
    WL = Ws[-1]
    M_out = -rho * (E0.T @ E0) + EL.T @ (WL.T @ WL) @ EL
    M = M_phi + M_out
    prob = cp.Problem(cp.Minimize(rho), [(M + M.T) / 2 << 0])
    prob.solve(solver=solver)
    return float(np.sqrt(rho.value))


def eclipse(net: Net, fast: bool = True) -> float:
    """ECLipsE / ECLipsE-Fast from PyPI ``eclipse-nn`` (Xu and Sivaranjani, NeurIPS 2024)."""
    import torch
    from eclipse_nn.LipConstEstimator import LipConstEstimator

    model = net.to_torch(torch.float64)
    est = LipConstEstimator(model=model)
    return float(est.estimate(method="ECLipsE_Fast" if fast else "ECLipsE"))


def random_gradients(net: Net, n: int = 100_000, radius: float = 1.0, seed: int = 0, ball: bool = False,
                     centres: np.ndarray | None = None) -> float:
    """BLN20-style: the largest gradient norm at random points (a lower bound, not a certificate): on the
    sphere or ball of ``radius`` around 0, or in the balls of ``radius`` around ``centres``."""
    rng = np.random.default_rng(seed)
    best = 0.0
    for s in range(0, n, 10_000):
        X = rng.standard_normal((min(10_000, n - s), net.d))
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        if ball or centres is not None:
            X *= rng.uniform(size=(len(X), 1)) ** (1 / net.d)
        X = radius * X + (0.0 if centres is None else centres[rng.integers(len(centres), size=len(X))])
        best = max(best, float(np.linalg.norm(net.gradients(X), axis=1).max()))
    return best


def all_pattern_floor(net: Net, restarts: int = 30, seed: int = 0) -> float:
    """max ||W_1^T D_1 ... D_{L-1} W_L^T|| over ALL 0/1 slope patterns (realisable by some input or not), from
    below by bit-flip hill climbing. Every certificate that relaxes the patterns independently (spectral
    products, LipSDP, ECLipsE, robustlaw's own LipSDP on R^d) is at least this: the floor of such methods."""
    rng = np.random.default_rng(seed)

    def norm(D):
        g = net.weights[-1][0]
        for W, s in zip(net.weights[-2::-1], D[::-1]):
            g = (g * s) @ W
        return float(np.linalg.norm(g))

    best = 0.0
    for _ in range(restarts):
        D = [rng.integers(0, 2, w).astype(float) for w in net.widths]
        value, improved = norm(D), True
        while improved:
            improved = False
            for i, j in [(i, j) for i, w in enumerate(net.widths) for j in rng.permutation(w)]:
                D[i][j] = 1 - D[i][j]
                flipped = norm(D)
                if flipped > value:
                    value, improved = flipped, True
                else:
                    D[i][j] = 1 - D[i][j]
        best = max(best, value)
    return best


def clever(net: Net, radius: float = 1.0, seed: int = 0) -> float:
    """CLEVER (Weng et al. 2018) from adversarial-robustness-toolbox: an extreme-value estimate (uncertified).

    Computed for the scalar output at the origin-centred point with sampling radius ``radius``.
    """
    import torch
    from art.estimators.classification import PyTorchClassifier
    from art.metrics import clever_u

    class Two(torch.nn.Module):  # ART needs >= 2 classes: logits (f, -f)
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            y = self.m(x)
            return torch.stack([y, -y], dim=-1)

    torch.manual_seed(seed)
    model = Two(net.to_torch(torch.float32))
    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(net.d,), nb_classes=2,
                            clip_values=(-1e6, 1e6))
    x = np.zeros(net.d, dtype=np.float32)
    # clever_u returns the robustness score |f| / Lip estimate; recover the Lipschitz estimate (of f0 - f1 = 2f)
    score = clever_u(clf, x, nb_batches=50, batch_size=100, radius=radius, norm=2, pool_factor=5)
    margin = abs(2 * float(net.forward(x[None])[0]))
    return margin / score / 2 if score > 0 else float("nan")


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start
