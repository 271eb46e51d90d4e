"""Named random streams: one seed per run, one independent stream per use of randomness.

``stream(seed, name)`` is ``numpy.random.default_rng([seed, SALT])``: numpy's SeedSequence mixes the
run's seed with the stream's salt, so the streams of one run are independent of each other and each
is the same whatever else the run draws (adding a draw to one stream never shifts another). The
salts are fixed: changing one changes every record drawn from that stream.
"""

from __future__ import annotations

import numpy as np
import torch

#: stream name -> salt. data: inputs and labels; search: the certificate's region walks; ascent: its
#: gradient search; partition: compromise caps' groups; projection: BS21's random projection; effort:
#: the seeds of a certification's further search passes (``certify(..., effort=N)``); mask: random
#: pruning masks.
STREAMS = {"data": 0x5EED, "search": 0xC3, "ascent": 0x11B, "partition": 0xCA95, "projection": 0xB521,
           "effort": 0xEF, "mask": 0x3A5C}
#: torch streams: init (initial weights) and probes (the smooth fit's probe points), from the same seed
TORCH_STREAMS = {"init": (1, 0), "probes": (1_000_003, 17)}


def stream(seed: int, name: str) -> np.random.Generator:
    """The numpy stream ``name`` of a run seeded ``seed``."""
    return np.random.default_rng([int(seed), STREAMS[name]])


def torch_stream(seed: int, name: str) -> torch.Generator:
    """The torch stream ``name`` of a run seeded ``seed`` (an affine map of the seed, fixed per name)."""
    scale, offset = TORCH_STREAMS[name]
    return torch.Generator().manual_seed(int(seed) * scale + offset)
