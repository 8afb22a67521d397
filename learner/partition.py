"""Non-IID partitions: Dirichlet label skew over devices, and which modalities each device holds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from dmmlkd.learner.errors import ConfigError
from dmmlkd.metrics.availability import random_availability


def dirichlet_partition(labels: NDArray[np.int64], n_devices: int, alpha: float,
                        min_samples: int = 10, seed: int = 0,
                        max_tries: int = 1000) -> list[NDArray[np.int64]]:
    """Split sample indices over devices with per-class Dirichlet(alpha) proportions.

    Every sample goes to exactly one device; large alpha is close to IID, small alpha gives
    each device few classes. Draws again until every device has ``min_samples``.
    """
    labels = np.asarray(labels)
    if alpha <= 0:
        raise ConfigError(f"alpha must be > 0 (got {alpha})")
    if n_devices < 1:
        raise ConfigError(f"devices must be >= 1 (got {n_devices})")
    if n_devices * min_samples > labels.size:
        # mfeat's 1,600 training samples (1,440 after the default validation split) at
        # min_samples 10 cap it at 160 (144) devices.
        fits = _largest_min_samples(labels, n_devices, alpha, seed, labels.size // n_devices)
        lower = f"min_samples = {fits} works for {n_devices} devices" if fits else \
            "lower min_samples"
        raise ConfigError(
            f"devices={n_devices} need {n_devices * min_samples} samples at {min_samples} each, "
            f"but the training set has {labels.size}: at most {labels.size // max(min_samples, 1)} "
            f"devices ({lower}, or use synthetic data with more n_samples)")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[NDArray[np.int64]]] = [[] for _ in range(n_devices)]
        for c in classes:
            idx = np.flatnonzero(labels == c)
            rng.shuffle(idx)
            share = rng.dirichlet(np.full(n_devices, alpha))
            cuts = (np.cumsum(share)[:-1] * idx.size).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(p.size for p in out) >= min_samples:
            return out
    raise ConfigError(
        f"could not give every one of {n_devices} devices {min_samples} samples with "
        f"alpha={alpha} in {max_tries} draws (the training set has {labels.size} samples and "
        f"the draws need slack: mfeat at min_samples 10 works up to 140 devices, 155 with "
        f"val_fraction 0); use fewer devices, a lower min_samples or a larger alpha")


def _largest_min_samples(labels: NDArray[np.int64], n_devices: int, alpha: float, seed: int,
                         start: int, candidates: int = 5) -> int:
    """The largest min_samples (from ``start`` down, a few tries) this partition reaches, 0 if
    none: said in the refusal, so the advice is one that works (rounding needs slack)."""
    for m in range(start, max(start - candidates, 0), -1):
        try:
            dirichlet_partition(labels, n_devices, alpha, m, seed, max_tries=200)
        except ConfigError:
            continue
        return m
    return 0


def modality_availability(n_devices: int, views: Sequence[str], mode: str = "all",
                          missing_rate: float = 0.0, pattern: Sequence[Sequence[str]] | None = None,
                          seed: int = 0) -> NDArray[np.bool_]:
    """Which device holds which view, as a (K, M) bool table.

    ``all``: every device holds every view. ``pattern``: device k holds the views listed in
    ``pattern[k % len(pattern)]``. ``random``: each entry is missing with ``missing_rate``; a
    device left with none gets one view at random, a view left with no holder gets one device
    at random. Every device keeps at least one view and every view keeps at least one holder
    (a pattern that breaks this is a ConfigError).
    """
    views = list(views)
    K, M = n_devices, len(views)
    if K < 1 or M < 1:
        raise ConfigError(f"availability needs devices >= 1 and views >= 1 (got {K} and {M})")
    if mode == "all":
        holds = np.ones((K, M), bool)
    elif mode == "pattern":
        if not pattern:
            raise ConfigError("mode 'pattern' needs a pattern: a list of view lists")
        holds = np.zeros((K, M), bool)
        for k in range(K):
            entry = pattern[k % len(pattern)]
            for v in [entry] if isinstance(entry, str) else entry:
                if v not in views:
                    raise ConfigError(f"pattern names unknown view {v!r}")
                holds[k, views.index(v)] = True
        if not holds.any(axis=1).all():
            raise ConfigError("pattern gives a device no view")
    elif mode == "random":
        if not 0.0 <= missing_rate < 1.0:
            raise ConfigError(f"missing_rate must be in [0, 1) (got {missing_rate})")
        holds = random_availability(K, M, missing_rate, np.random.default_rng(seed))
    else:
        raise ConfigError(f"availability mode must be all, pattern or random (got {mode!r})")
    if not holds.any(axis=0).all():
        missing = views[int(np.argmin(holds.any(axis=0)))]
        raise ConfigError(f"no device holds view {missing!r}")
    return holds
