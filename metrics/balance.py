"""Training balance: relative speed b[k, m], predicted progress and imbalance ratios."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def balance(speed: NDArray, holds: NDArray) -> NDArray[np.float64]:
    """b[k, m] = v[k, m] / mean over held m' of v[k, m'] (above 1: faster than its siblings).

    0 where not held, and on a device whose held speeds are all 0.
    """
    holds = np.asarray(holds, bool)
    v = np.where(holds, np.asarray(speed, float), 0.0)
    count = np.maximum(holds.sum(axis=1, keepdims=True), 1)
    mean = v.sum(axis=1, keepdims=True) / count
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(holds & (mean > 0), v / mean, 0.0)


def progress(speed: NDArray, tau: NDArray) -> NDArray[np.float64]:
    """Predicted progress P = v * tau."""
    return np.asarray(speed, float) * np.asarray(tau, float)


def device_imbalance(progress: NDArray, holds: NDArray) -> NDArray[np.float64]:
    """Max over min held progress per device (K,): 1 for one modality, inf when a min is 0.

    A device holding nothing gets nan.
    """
    holds = np.asarray(holds, bool)
    p = np.asarray(progress, float)
    any_held = holds.any(axis=1)
    hi = np.where(holds, p, -np.inf).max(axis=1)
    lo = np.where(holds, p, np.inf).min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(lo > 0, hi / lo, np.inf)
    return np.where(any_held, ratio, np.nan)


def network_progress(progress: NDArray, holds: NDArray) -> NDArray[np.float64]:
    """G_m: mean progress of each modality over its holders (nan without holders)."""
    holds = np.asarray(holds, bool)
    n = holds.sum(axis=0)
    total = np.where(holds, np.asarray(progress, float), 0.0).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def network_imbalance(progress: NDArray, holds: NDArray) -> float:
    """max_m G_m / min_m G_m over modalities with holders (inf when a G_m is 0, nan if none)."""
    g = network_progress(progress, holds)
    g = g[np.isfinite(g)]
    if not g.size:
        return float("nan")
    return float(g.max() / g.min()) if g.min() > 0 else float("inf")
