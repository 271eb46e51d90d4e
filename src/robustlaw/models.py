"""Function classes with honest parameter counts.

A model is a :class:`Network`: a ``torch.nn.Sequential`` of ``Linear`` layers and activations with
a scalar output, which every other step (fit, certify, store) understands. Its parameter count P is
the number of trainable scalars, as BS21 counts it; a width-k two-layer net on R^d,
f(x) = a . act(W x + b), has P = k (d + 2) (no output bias, as in BLN20).
"""

from __future__ import annotations

import torch
from torch import nn

from robustlaw.activations import Power, make_activation
from robustlaw.errors import require
from robustlaw.seeding import torch_stream

__all__ = ["Network", "Power", "mlp", "trainable_count", "two_layer"]


class Network(nn.Sequential):
    """Linear layers with activations between them and one scalar output; x: (..., d) -> (...,)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).squeeze(-1)

    @property
    def input_dim(self) -> int:
        return self.linear_layers()[0].in_features

    def linear_layers(self) -> list[nn.Linear]:
        return [m for m in self if isinstance(m, nn.Linear)]

    def param_count(self) -> int:
        """P: the number of trainable scalars."""
        return trainable_count(self)

    @property
    def depth(self) -> int:
        """D: the number of linear layers."""
        return len(self.linear_layers())

    @property
    def hidden_widths(self) -> list[int]:
        return [layer.out_features for layer in self.linear_layers()[:-1]]


def trainable_count(module: nn.Module) -> int:
    """P as BS21 counts it: the trainable scalars (a frozen layer does not count; a shared weight, one
    tensor entry, counts once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _normal_init(layer: nn.Linear, generator: torch.Generator, fan_in_scale: float, bias_std: float) -> None:
    """Weights N(0, fan_in_scale^2 / fan_in) so that pre-activations are O(1) for ||x|| ~ 1."""
    with torch.no_grad():
        layer.weight.normal_(0.0, fan_in_scale / layer.in_features**0.5, generator=generator)
        if layer.bias is not None:
            layer.bias.normal_(0.0, bias_std, generator=generator)


def mlp(d: int, widths: list[int], activation: str = "relu", seed: int = 0, q: int = 2,
        output_bias: bool = False, dtype: torch.dtype = torch.float32) -> Network:
    """A fully connected network d -> widths[0] -> ... -> 1, initialised from ``seed``.

    Inputs are assumed to have ||x|| ~ 1, so the first layer uses N(0, 1) rows (w.x ~ N(0, 1)),
    later layers He-style N(0, 2 / fan_in), and the output layer N(0, 1 / fan_in).
    """
    require(isinstance(d, int) and d >= 1, "data.d", f"must be an integer >= 1, got {d!r}")
    require(len(widths) >= 1 and all(isinstance(w, int) and w >= 1 for w in widths), "model.width",
            f"hidden widths must be integers >= 1, got {widths!r}")
    generator = torch_stream(seed, "init")
    sizes = [d, *widths]
    modules: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layer = nn.Linear(fan_in, fan_out, dtype=dtype)
        _normal_init(layer, generator, fan_in_scale=d**0.5 if i == 0 else 2**0.5, bias_std=0.1 if i == 0 else 0.0)
        modules += [layer, make_activation(activation, q).to_torch()]
    head = nn.Linear(sizes[-1], 1, bias=output_bias, dtype=dtype)
    _normal_init(head, generator, fan_in_scale=1.0, bias_std=0.0)
    return Network(*modules, head)


def two_layer(d: int, k: int, activation: str = "relu", seed: int = 0, q: int = 2,
              dtype: torch.dtype = torch.float32) -> Network:
    """BLN20's f(x) = sum_j a_j act(<w_j, x> + b_j), width k, P = k (d + 2)."""
    return mlp(d, [k], activation=activation, seed=seed, q=q, dtype=dtype)
