"""Training balance: relative speed b[k, m], predicted progress and imbalance ratios."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def balance(speed: NDArray, holds: NDArray) -> NDArray[np.float64]:
    """b[k, m] = v[k, m] / mean over held m' of v[k, m'] (above 1: faster than its siblings)."""
    holds = np.asarray(holds, bool)
    v = np.where(holds, np.asarray(speed, float), 0.0)
    count = np.maximum(holds.sum(axis=1, keepdims=True), 1)
    mean = v.sum(axis=1, keepdims=True) / count
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(holds & (mean > 0), v / mean, 0.0)


def progress(speed: NDArray, tau: NDArray) -> NDArray[np.float64]:
    """Predicted progress P = v * tau."""
    return np.asarray(speed, float) * np.asarray(tau, float)


def device_imbalance(prog: NDArray, holds: NDArray) -> NDArray[np.float64]:
    """Max over min held progress per device (1 for one modality, inf when a min is 0)."""
    holds = np.asarray(holds, bool)
    p = np.asarray(prog, float)
    hi = np.where(holds, p, -np.inf).max(axis=1)
    lo = np.where(holds, p, np.inf).min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(lo > 0, hi / lo, np.inf)


def network_progress(prog: NDArray, holds: NDArray) -> NDArray[np.float64]:
    """G_m: mean progress of each modality over its holders (nan without holders)."""
    holds = np.asarray(holds, bool)
    n = holds.sum(axis=0)
    total = np.where(holds, np.asarray(prog, float), 0.0).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def network_imbalance(prog: NDArray, holds: NDArray) -> float:
    """max_m G_m / min_m G_m over held modalities."""
    g = network_progress(prog, holds)
    g = g[np.isfinite(g)]
    return float(g.max() / g.min()) if g.size and g.min() > 0 else float("inf")
