"""Convolutional networks on flattened inputs: 1-D signals and 2-D images.

:func:`cnn` builds ``x (n, d) -> Unflatten -> [Conv, act] x L -> AvgPool -> Flatten -> Linear -> (n,)``:
convolutions with ``same`` padding, an average pooling and a linear head without bias. Inputs are
flat vectors (as every robustlaw data set), reshaped to one channel of ``image`` (e.g. 8x8 for the
64-dimensional digits); an empty ``image`` means a 1-D signal of length d.

Counting as BS21 (arXiv:2105.12806) counts: P is the number of distinct trainable scalars (a shared
kernel weight counts once); the weight-sharing factor Q of Lemma 3.1 is the largest number of
places one parameter is used in computing f, i.e. the number of output positions of the widest
convolution (a kernel weight multiplies one input at every output position), and the depth D counts
the convolutions and the head. Lemma 3.1 then gives J = R (W Q P)^D
(:func:`robustlaw.theory.deep_net_J` with ``sharing = Q``).

Certification sees the same function as a chain of dense layers: convolution, pooling and flatten are
linear, so :func:`robustlaw.lipschitz.network.from_torch` expands each run of them into its matrix.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from robustlaw.activations import make_activation
from robustlaw.errors import require
from robustlaw.models import trainable_count
from robustlaw.seeding import torch_stream

__all__ = ["ConvNet", "cnn", "conv_shapes", "multiply_adds"]


class ConvNet(nn.Sequential):
    """A CNN on flattened inputs with one output; x: (..., d) -> (...,)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(lead)

    @property
    def input_dim(self) -> int:
        return int(math.prod(self[0].unflattened_size))

    @property
    def head(self) -> nn.Linear:
        return self[-1]

    def convolutions(self) -> list[nn.Module]:
        return [m for m in self if isinstance(m, (nn.Conv1d, nn.Conv2d))]

    def param_count(self) -> int:
        """P: the number of distinct trainable scalars (a shared kernel weight counts once)."""
        return trainable_count(self)

    @property
    def depth(self) -> int:
        """D: the convolutions and the head."""
        return len(self.convolutions()) + 1

    @property
    def weight_sharing(self) -> int:
        """Q of BS21 Lemma 3.1: the most places one parameter is used (a kernel weight at every output
        position of its convolution; with ``same`` padding, the input's positions)."""
        positions = int(math.prod(self[0].unflattened_size[1:]))
        return positions if self.convolutions() else 1


def conv_shapes(d: int, image: tuple[int, ...], kernel: int, pool: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The input's spatial shape ((d,) for a signal) and the pooled one (each side floor-divided by
    ``pool``), after checking that they fit: one SpecError line naming the field otherwise."""
    spatial = tuple(image) if image else (d,)
    pooled = tuple(s // pool for s in spatial)
    require(math.prod(spatial) == d, "model.image", f"an image of {list(image)} has {math.prod(spatial)} pixels, "
            f"but data.d = {d}")
    require(len(spatial) in (1, 2), "model.image", f"must be [] (1-D) or [height, width], got {list(image)}")
    require(kernel % 2 == 1, "model.kernel", f"must be odd (same padding), got {kernel}")
    require(min(pooled) >= 1, "model.pool", f"pooling {pool} leaves nothing of inputs of shape {list(spatial)}")
    return spatial, pooled


def multiply_adds(d: int, channels: list[int], image: tuple[int, ...] = (), kernel: int = 3, pool: int = 2) -> int:
    """Multiply-adds of one forward pass of one input through :func:`cnn`'s net (each kernel weight at
    every position, then the head), from the shapes alone."""
    spatial, pooled = conv_shapes(d, image, kernel, pool)
    sizes = [1, *channels]
    convolutions = sum(a * b * kernel ** len(spatial) for a, b in zip(sizes[:-1], sizes[1:]))
    return convolutions * math.prod(spatial) + channels[-1] * math.prod(pooled)


def cnn(d: int, channels: list[int], image: tuple[int, ...] = (), kernel: int = 3, pool: int = 2,
        activation: str = "relu", seed: int = 0, q: int = 2, dtype: torch.dtype = torch.float32) -> ConvNet:
    """A CNN on R^d: convolutions of ``channels`` (odd ``kernel``, same padding) with ``activation``, an
    average pooling of ``pool`` and a linear head; 2-D when ``image = (h, w)`` with h w = d, else 1-D.
    Initialised from ``seed`` as :func:`robustlaw.models.mlp`: the first layer N(0, d / fan_in) (inputs of
    norm ~1), later ones N(0, 2 / fan_in), the head N(0, 1 / fan_in)."""
    spatial, pooled = conv_shapes(d, image, kernel, pool)
    Conv, Pool = (nn.Conv1d, nn.AvgPool1d) if len(spatial) == 1 else (nn.Conv2d, nn.AvgPool2d)
    generator = torch_stream(seed, "init")
    modules: list[nn.Module] = [nn.Unflatten(1, (1, *spatial))]
    previous = 1
    for i, width in enumerate(channels):
        conv = Conv(previous, width, kernel, padding=kernel // 2, dtype=dtype)
        fan_in = previous * kernel ** len(spatial)
        with torch.no_grad():
            conv.weight.normal_(0.0, (d**0.5 if i == 0 else 2**0.5) / fan_in**0.5, generator=generator)
            conv.bias.normal_(0.0, 0.1 if i == 0 else 0.0, generator=generator)
        modules += [conv, make_activation(activation, q).to_torch()]
        previous = width
    head = nn.Linear(previous * math.prod(pooled), 1, bias=False, dtype=dtype)
    with torch.no_grad():
        head.weight.normal_(0.0, 1 / head.in_features**0.5, generator=generator)
    return ConvNet(*modules, Pool(pool), nn.Flatten(), head)
