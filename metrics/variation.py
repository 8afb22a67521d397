"""Training speed: relative parameter variation per local iteration, smoothed across rounds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray


def parameter_variation(start: NDArray | object, end: NDArray | object, tau: float) -> float:
    """v = ||end - start||_2 / (||start||_2 * tau): relative change per local iteration.

    nan when tau is 0 (nothing was trained); when ||start|| is 0 the change is not relative.
    """
    if tau <= 0:
        return math.nan
    s = np.asarray(start, dtype=np.float64).ravel()
    e = np.asarray(end, dtype=np.float64).ravel()
    change = float(np.linalg.norm(e - s))
    norm = float(np.linalg.norm(s))
    return change / ((norm if norm > 0 else 1.0) * tau)


@dataclass
class SpeedTracker:
    """Exponential moving average of v[k, m] with a prior for modalities not measured yet."""

    n_devices: int
    n_modalities: int
    beta: float = 0.5  # weight of the newest measurement
    smoothed: NDArray[np.float64] = field(init=False)
    measured: NDArray[np.bool_] = field(init=False)

    def __post_init__(self) -> None:
        self.smoothed = np.zeros((self.n_devices, self.n_modalities))
        self.measured = np.zeros((self.n_devices, self.n_modalities), bool)

    def update(self, v: NDArray[np.float64]) -> None:
        """Fold in one round's measurements (nan where a modality was not trained)."""
        v = np.asarray(v, float)
        ok = np.isfinite(v)
        first = ok & ~self.measured
        again = ok & self.measured
        self.smoothed[first] = v[first]
        self.smoothed[again] = self.beta * v[again] + (1 - self.beta) * self.smoothed[again]
        self.measured |= ok

    def speed(self, holds: NDArray[np.bool_]) -> NDArray[np.float64]:
        """Smoothed speeds where held; unmeasured held entries get the mean measured one (or 1)."""
        holds = np.asarray(holds, bool)
        known = self.measured & holds
        prior = float(self.smoothed[known].mean()) if known.any() else 1.0
        out = np.where(known, self.smoothed, prior)
        return np.where(holds, out, 0.0)
