"""Models linear in their trainable parameters: random features and the linearised (NTK) two-layer net.

Both are f(x) = Phi(x) . theta + offset(x) with a feature map Phi fixed at initialisation, so they are
fitted in closed form (the minimum-norm least-squares solution) or by gradient descent from their
initialisation, and their parametrisation constant J (BS21, arXiv:2105.12806, Lemma 3.1) is
sup_x ||Phi(x)|| over the data ball, since theta -> f_theta(x) is linear with gradient Phi(x).

- :class:`RandomFeatures`: f(x) = a . act(W x + b) (+ c) with W, b frozen at initialisation and only a
  (and c) trained: P = k (k + 1 with the output bias). A plain two-layer :class:`~robustlaw.models.Network`
  (the frozen layer has ``requires_grad = False``), so every certificate of two-layer nets applies.
- :class:`LinearisedTwoLayer`: the width-k two-layer net with activation ReLU or t^2 (``poly``, q = 2)
  linearised at its initialisation theta0, f(x) = f0(x) + <grad_theta f0(x), theta - theta0>,
  P = k (d + 2) (the NTK regime of Bombari, Kiyani & Mondelli, arXiv:2302.01629, whose NTK result
  needs an even activation such as t^2). With act'(z0_j) the slope at the initial pre-activation,
  f(x) = sum_j a_j act(z0_j) + a0_j act'(z0_j) ((w_j - w0_j) . x + b_j - b0_j). For t^2 it is a
  quadratic polynomial in x (its gradient is affine); for ReLU it is
  f(x) = sum_j 1[w0_j . x + b0_j > 0] (u_j . x + c_j), u_j = a_j w0_j + a0_j (w_j - w0_j),
  c_j = a_j b0_j + a0_j (b_j - b0_j): piecewise affine with the pieces of the initial hyperplanes, and
  *discontinuous* across hyperplane j unless (u_j, c_j) is proportional to (w0_j, b0_j). Its Lipschitz
  constant on a domain such a hyperplane crosses is infinite (see robustlaw.lipschitz.linearised).

Solvers (a family's ``solver`` field): ``min_norm`` -- theta = theta_ref + Phi^+ (y - f_ref) by
least squares (scipy.linalg.lstsq, singular values below max(n, P) eps of the largest cut), the
interpolator nearest theta_ref when there is one (k >= n for
random features), else the least-squares fit; theta_ref is 0 for random features (the min-norm
interpolator the RF papers study) and theta0 for the NTK. ``gd`` -- full-batch gradient descent on the
mean squared error from the initialisation with step 1 / lambda_max(Phi^T Phi / n), run in function
space (residual r <- r - (eta/n) K r, K = Phi Phi^T), stopped when the fit target is met.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch
from torch import nn

from robustlaw.activations import activation_of, make_activation
from robustlaw.errors import RobustlawError
from robustlaw.models import Network, mlp, trainable_count

Array = np.ndarray
SOLVERS = ("min_norm", "gd")


# ----------------------------------------------------------------------------- random features


class RandomFeatures(Network):
    """f(x) = a . act(W x + b) (+ c): a two-layer :class:`Network` whose first layer is frozen."""

    @property
    def activation(self):
        return activation_of(self[1])

    def features(self, X: Array) -> Array:
        """Phi(X): the frozen layer's activations (and a column of ones for the output bias)."""
        with torch.no_grad():
            H = self[1](self[0](torch.as_tensor(X, dtype=torch.float64))).numpy()
        return np.hstack([H, np.ones((len(H), 1))]) if self[2].bias is not None else H

    def offset(self, X: Array) -> Array:
        return np.zeros(len(X))

    def theta(self) -> Array:
        return np.concatenate([p.detach().numpy().ravel() for p in self[2].parameters()])

    def set_theta(self, theta: Array) -> None:
        with torch.no_grad():
            k = self[2].weight.shape[1]
            self[2].weight.copy_(torch.as_tensor(theta[:k]).reshape(1, k))
            if self[2].bias is not None:
                self[2].bias.copy_(torch.as_tensor(theta[k:]))

    def reference(self) -> Array:
        """theta_ref of the min-norm solver: 0 (the minimum-norm interpolator)."""
        return np.zeros_like(self.theta())

    def parametrisation_J(self, radius: float) -> float:
        """J = sup_{||x|| <= R} ||Phi(x)|| <=
        sqrt(sum_j max |act| over neuron j's pre-activation range [b_j - R ||w_j||, b_j + R ||w_j||]^2 (+ 1))."""
        W0, b0 = (p.detach().numpy() for p in self[0].parameters())
        reach = radius * np.linalg.norm(W0, axis=1)
        lo, hi = self.activation.value_range(b0 - reach, b0 + reach)
        return math.sqrt(float((np.maximum(np.abs(lo), np.abs(hi)) ** 2).sum()) + (self[2].bias is not None))


def random_features(d: int, k: int, activation: str = "relu", seed: int = 0, q: int = 2,
                    output_bias: bool = False) -> RandomFeatures:
    """A width-k random-features model initialised like :func:`robustlaw.models.two_layer` (float64)."""
    net = RandomFeatures(*mlp(d, [k], activation=activation, seed=seed, q=q, output_bias=output_bias,
                              dtype=torch.float64))
    for p in net[0].parameters():
        p.requires_grad_(False)
    return net


# ----------------------------------------------------------------------------- linearised two-layer ReLU net


#: the activations a linearised net may have: name -> (degree q of homogeneity, act, act') in torch
HOMOGENEOUS = {"relu": (1, torch.relu, lambda z: (z > 0).to(z.dtype)), "poly": (2, torch.square, lambda z: 2 * z)}


class LinearisedTwoLayer(nn.Module):
    """The two-layer net a . act(W x + b) (act: ReLU or t^2) linearised at its initialisation (W0, b0, a0);
    see the module docstring. Trainable: W (k, d), b (k,), a (k,); P = k (d + 2)."""

    depth = 2

    def __init__(self, net: Network):
        super().__init__()
        first, head = net[0], net[-1]
        act = activation_of(net[1])
        kind = next((name for name in HOMOGENEOUS if act == make_activation(name, 2)), None)
        if kind is None or len(net) != 3 or head.bias is not None:
            raise RobustlawError("the linearised model is built from a two-layer ReLU or t^2 net without output bias")
        self.activation, self.q = kind, HOMOGENEOUS[kind][0]
        W0, b0, a0 = (t.detach().double().clone() for t in (first.weight, first.bias, head.weight[0]))
        for name, value in (("W0", W0), ("b0", b0), ("a0", a0)):
            self.register_buffer(name, value)
        self.W, self.b, self.a = (nn.Parameter(t.clone()) for t in (W0, b0, a0))

    @property
    def input_dim(self) -> int:
        return self.W0.shape[1]

    def param_count(self) -> int:
        return trainable_count(self)

    def pieces(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, c) of a ReLU model: where neuron j is active at initialisation it contributes u_j . x + c_j."""
        dW, db = self.W - self.W0, self.b - self.b0
        return self.a[:, None] * self.W0 + self.a0[:, None] * dW, self.a * self.b0 + self.a0 * db

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.W0.dtype)
        _, act, slope = HOMOGENEOUS[self.activation]
        z0 = x @ self.W0.T + self.b0
        return (self.a * act(z0) + self.a0 * slope(z0) * (x @ (self.W - self.W0).T + self.b - self.b0)).sum(-1)

    def features(self, X: Array) -> Array:
        """Phi(X) = grad_theta f0 at the rows of X: [a0_j act'(z0_j) x | a0_j act'(z0_j) | act(z0)]."""
        _, act, slope = HOMOGENEOUS[self.activation]
        X = np.asarray(X, dtype=np.float64)
        Z = torch.as_tensor(X @ self.W0.numpy().T + self.b0.numpy())
        gate = slope(Z).numpy() * self.a0.numpy()
        return np.hstack([(gate[:, :, None] * X[:, None, :]).reshape(len(X), -1), gate, act(Z).numpy()])

    def offset(self, X: Array) -> Array:
        """f(x) - Phi(x) . theta = -q f0(x): Phi_W(x) . W0 + Phi_b(x) . b0 = sum_j a0_j act'(z0_j) z0_j, which is
        q f0(x) for an activation homogeneous of degree q (act'(z) z = q act(z))."""
        _, act, _ = HOMOGENEOUS[self.activation]
        Z = torch.as_tensor(np.asarray(X, dtype=np.float64) @ self.W0.numpy().T + self.b0.numpy())
        return -self.q * (act(Z).numpy() @ self.a0.numpy())

    def theta(self) -> Array:
        return np.concatenate([self.W.detach().numpy().ravel(), self.b.detach().numpy(), self.a.detach().numpy()])

    def set_theta(self, theta: Array) -> None:
        k, d = self.W0.shape
        with torch.no_grad():
            self.W.copy_(torch.as_tensor(theta[:k * d]).reshape(k, d))
            self.b.copy_(torch.as_tensor(theta[k * d:k * d + k]))
            self.a.copy_(torch.as_tensor(theta[k * d + k:]))

    def reference(self) -> Array:
        """theta_ref of the min-norm solver: theta0 (the interpolator nearest the initialisation)."""
        return np.concatenate([self.W0.numpy().ravel(), self.b0.numpy(), self.a0.numpy()])

    def parametrisation_J(self, radius: float) -> float:
        """J = sup_{||x|| <= R} ||Phi(x)||, with
        ||Phi(x)||^2 = sum_j act(z0_j)^2 + a0_j^2 act'(z0_j)^2 (||x||^2 + 1); over the ball
        ReLU: <= sum_j relu(b0_j + R ||w0_j||)^2 + a0_j^2 (R^2 + 1);
        t^2:  <= sum_j m_j^4 + 4 a0_j^2 m_j^2 (R^2 + 1), m_j = |b0_j| + R ||w0_j||."""
        reach = radius * np.linalg.norm(self.W0.numpy(), axis=1)
        top = np.maximum(self.b0.numpy() + reach, 0) if self.q == 1 else np.abs(self.b0.numpy()) + reach
        slope = np.ones_like(top) if self.q == 1 else 2 * top
        return math.sqrt(float((top ** (2 * self.q)).sum() + (self.a0.numpy() ** 2 * slope**2).sum() * (radius**2 + 1)))


# ----------------------------------------------------------------------------- closed-form and GD fits


def min_norm(model, X: Array, y: Array) -> None:
    """theta = theta_ref + Phi^+ (y - f(theta_ref)) (module docstring), set in place."""
    Phi, ref = model.features(X), model.reference()
    residual = y - model.offset(X) - Phi @ ref
    # singular values below max(n, P) eps of the largest are rounding noise (numpy.linalg.pinv's cutoff)
    step, *_ = scipy.linalg.lstsq(Phi, residual, cond=max(Phi.shape) * np.finfo(float).eps, lapack_driver="gelsd")
    model.set_theta(ref + step)


def gradient_descent(model, X: Array, y: Array, done, max_steps: int, check_every: int) -> int:
    """Full-batch GD on the mean squared error from the model's current theta (module docstring), in
    function space; ``done(predictions)`` is checked every ``check_every`` steps. Returns the steps taken."""
    Phi = model.features(X)
    K = Phi @ Phi.T
    top = float(scipy.linalg.eigvalsh(K, subset_by_index=[len(K) - 1, len(K) - 1])[0])
    eta_n = 1.0 / top if top > 0 else 0.0  # eta / n with eta = n / lambda_max(K)
    start = model.offset(X) + Phi @ model.theta()
    residual, beta, steps = y - start, np.zeros(len(y)), 0
    while steps < max_steps and not (steps % check_every == 0 and done(y - residual)):
        beta += eta_n * residual
        residual = residual - eta_n * (K @ residual)
        steps += 1
    model.set_theta(model.theta() + Phi.T @ beta)
    return steps
