"""Which device holds which modality, drawn at random (shared by the allocator's generator and
the learner's partition, so both draw the same tables from the same seed)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def random_availability(n_devices: int, n_modalities: int, missing_rate: float,
                        rng: np.random.Generator) -> NDArray[np.bool_]:
    """Holdings with each (device, modality) missing at a rate; every device keeps one
    modality and every modality keeps a holder (repaired at random, in that order)."""
    holds = rng.random((n_devices, n_modalities)) >= missing_rate
    empty = np.flatnonzero(~holds.any(axis=1))
    holds[empty, rng.integers(0, n_modalities, size=empty.size)] = True
    for m in np.flatnonzero(~holds.any(axis=0)):
        holds[rng.integers(0, n_devices), m] = True
    return holds
