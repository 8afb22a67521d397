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


def churn_availability(n_devices: int, rounds: int, leave: float, come_back: float,
                       rng: np.random.Generator) -> NDArray[np.bool_]:
    """Per-round presence (rounds, K) of devices that come and go: a two-state Markov chain per
    device (present -> absent with probability ``leave`` each round, absent -> present with
    ``come_back``), started from its stationary distribution come_back / (leave + come_back)."""
    if not (0.0 <= leave <= 1.0 and 0.0 < come_back <= 1.0):
        raise ValueError(f"need leave in [0, 1] and come_back in (0, 1] (got {leave}, {come_back})")
    present = np.empty((rounds, n_devices), bool)
    state = rng.random(n_devices) < come_back / (leave + come_back)
    for t in range(rounds):
        present[t] = state
        u = rng.random(n_devices)
        state = np.where(state, u >= leave, u < come_back)
    return present
