import numpy as np
import pytest

from robustlaw.lipschitz.network import RELU, Activation, Net


def random_net(rng: np.random.Generator, d: int, widths: list[int], act: Activation = RELU, bias: float = 0.5) -> Net:
    sizes = [d, *widths, 1]
    Ws = tuple(rng.standard_normal((o, i)) / np.sqrt(i) for i, o in zip(sizes[:-1], sizes[1:]))
    bs = tuple(bias * rng.standard_normal(o) for o in sizes[1:])
    return Net(Ws, bs, tuple(act for _ in widths))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
