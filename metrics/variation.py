"""Training speed: relative parameter variation per local iteration, smoothed across rounds."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray


def _as_vector(values: Any) -> NDArray[np.float64]:
    """A NumPy array, a torch tensor (any device, with or without grad) or a list, flattened."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch here
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64).ravel()


def flatten_params(params: Iterable[Any]) -> NDArray[np.float64]:
    """Concatenate an iterable of tensors/arrays (e.g. ``module.parameters()``) into one vector."""
    parts = [_as_vector(p) for p in params]
    return np.concatenate(parts) if parts else np.zeros(0)


def parameter_variation(start: Any, end: Any, tau: float) -> float:
    """v = ||end - start||_2 / (||start||_2 * tau): relative change per local iteration.

    ``start`` and ``end`` are arrays or tensors of the same size (flattened). nan when tau is 0
    (nothing was trained); when ||start|| is 0 the change is not relative: ||end - start|| / tau.
    """
    if not tau > 0:
        return math.nan
    s = _as_vector(start)
    e = _as_vector(end)
    if s.shape != e.shape:
        raise ValueError(f"start and end differ in size ({s.size} vs {e.size})")
    change = float(np.linalg.norm(e - s))
    norm = float(np.linalg.norm(s))
    return change / ((norm if norm > 0 else 1.0) * tau)


@dataclass
class SpeedTracker:
    """Exponential moving average of v[k, m] with a prior for modalities not measured yet.

    The first measurement of an entry is taken as is; later ones are folded in as
    ``beta * new + (1 - beta) * old``. Entries never measured get the network-wide mean of the
    measured held entries (1.0 when nothing is measured yet).
    """

    n_devices: int
    n_modalities: int
    beta: float = 0.5  # weight of the newest measurement
    smoothed: NDArray[np.float64] = field(init=False)
    measured: NDArray[np.bool_] = field(init=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.beta <= 1.0:
            raise ValueError(f"beta must be in (0, 1] (got {self.beta})")
        self.smoothed = np.zeros((self.n_devices, self.n_modalities))
        self.measured = np.zeros((self.n_devices, self.n_modalities), bool)

    def update(self, v: NDArray[np.float64]) -> None:
        """Fold in one round's measurements (K, M), nan where a modality was not trained."""
        v = np.asarray(v, float)
        if v.shape != self.smoothed.shape:
            raise ValueError(f"speed update has shape {v.shape}, expected {self.smoothed.shape}")
        ok = np.isfinite(v)
        first = ok & ~self.measured
        again = ok & self.measured
        self.smoothed[first] = v[first]
        self.smoothed[again] = self.beta * v[again] + (1 - self.beta) * self.smoothed[again]
        self.measured |= ok

    def speed(self, holds: NDArray[np.bool_]) -> NDArray[np.float64]:
        """Smoothed speeds (K, M) where held; unmeasured held entries get the prior; 0 elsewhere."""
        holds = np.asarray(holds, bool)
        known = self.measured & holds
        prior = float(self.smoothed[known].mean()) if known.any() else 1.0
        out = np.where(known, self.smoothed, prior)
        return np.where(holds, out, 0.0)
