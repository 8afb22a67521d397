"""Multi-view data sets: the real UCI Multiple Features digits and a controllable synthetic one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np
from numpy.typing import NDArray

from learner.errors import ConfigError

MFEAT_VIEWS = ("fou", "fac", "kar", "pix", "zer", "mor")
DATASETS = ("mfeat", "synthetic")


@dataclass(frozen=True)
class MultiViewDataset:
    """Train/validation/test views (standardised with training statistics) and labels.

    The validation split is carved from the training part (stratified, by seed); partitions
    over devices are built from ``train`` only, so ``val`` is never seen in training.
    """

    name: str
    views: tuple[str, ...]
    train: dict[str, NDArray[np.float32]]
    train_labels: NDArray[np.int64]
    test: dict[str, NDArray[np.float32]]
    test_labels: NDArray[np.int64]
    n_classes: int
    val: dict[str, NDArray[np.float32]]
    val_labels: NDArray[np.int64]

    @property
    def dims(self) -> dict[str, int]:
        """Feature dimension of each view."""
        return {v: int(self.train[v].shape[1]) for v in self.views}


def _stratified_split(labels: NDArray[np.int64], fraction: float,
                      rng: np.random.Generator) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Split positions 0..N-1 into (kept, carved): round(fraction * n_c) of each class carved.

    A class never loses all its samples to the carved part (at most n_c - 1 are carved).
    """
    carved = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        take = min(int(round(fraction * idx.size)), idx.size - 1)
        carved.append(idx[:take])
    carved_idx = np.sort(np.concatenate(carved)) if carved else np.zeros(0, np.int64)
    kept_idx = np.setdiff1d(np.arange(labels.size), carved_idx)
    return kept_idx.astype(np.int64), carved_idx.astype(np.int64)


def _check_fractions(test_fraction: float, val_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1) (got {test_fraction})")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1) (got {val_fraction})")


def _finish(name: str, raw: dict[str, NDArray], labels: NDArray, views: tuple[str, ...],
            n_classes: int, test_fraction: float, seed: int,
            val_fraction: float = 0.1) -> MultiViewDataset:
    """Split test (stratified, by seed), carve validation from training, standardise."""
    _check_fractions(test_fraction, val_fraction)
    # Separate streams for the test and validation draws: the test split stays what it was
    # before the validation split existed, for every seed.
    train_idx, test_idx = _stratified_split(labels, test_fraction, np.random.default_rng(seed))
    fit_pos, val_pos = _stratified_split(labels[train_idx], val_fraction,
                                         np.random.default_rng([seed, 1]))
    train_idx, val_idx = train_idx[fit_pos], train_idx[val_pos]
    train, val, test = {}, {}, {}
    for v in views:
        x = raw[v].astype(np.float64)
        mean = x[train_idx].mean(axis=0)
        std = x[train_idx].std(axis=0)
        std = np.where(std > 1e-8, std, 1.0)  # constant features stay at zero
        train[v] = ((x[train_idx] - mean) / std).astype(np.float32)
        val[v] = ((x[val_idx] - mean) / std).astype(np.float32)
        test[v] = ((x[test_idx] - mean) / std).astype(np.float32)
    return MultiViewDataset(name=name, views=views, train=train,
                            train_labels=labels[train_idx].astype(np.int64), test=test,
                            test_labels=labels[test_idx].astype(np.int64), n_classes=n_classes,
                            val=val, val_labels=labels[val_idx].astype(np.int64))


def _select(views: Sequence[str] | None, available: Sequence[str]) -> tuple[str, ...]:
    if views is None:
        return tuple(available)
    chosen = tuple(views)
    if not chosen:
        raise ConfigError("views must name at least one view")
    for v in chosen:
        if v not in available:
            raise ConfigError(f"unknown view {v!r} (valid: {', '.join(available)})")
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"views lists a view twice (got {list(chosen)})")
    return chosen


def load_mfeat(views: Sequence[str] | None = None, seed: int = 0,
               test_fraction: float = 0.2, val_fraction: float = 0.1) -> MultiViewDataset:
    """UCI Multiple Features, shipped in the package (no network)."""
    chosen = _select(views, MFEAT_VIEWS)
    with resources.files("learner").joinpath("data/mfeat.npz").open("rb") as fh:
        archive = np.load(fh)
        raw = {v: archive[v] for v in chosen}
        labels = archive["labels"].astype(np.int64)
    return _finish("mfeat", raw, labels, chosen, 10, test_fraction, seed, val_fraction)


SYNTHETIC_OPTIONS = ("n_samples", "n_classes", "dims", "signal", "noise")


def make_synthetic(n_samples: int = 1200, n_classes: int = 10, dims: Sequence[int] = (32, 32),
                   signal: Sequence[float] = (2.0, 0.5), noise: float = 1.0,
                   views: Sequence[str] | None = None, seed: int = 0,
                   test_fraction: float = 0.2, val_fraction: float = 0.1) -> MultiViewDataset:
    """Views x = signal_m * mu_m[y] + noise * N(0, I): strong and weak modalities on purpose.

    Class means mu_m are Gaussian with per-coordinate scale 4 / sqrt(d_m), so two classes sit
    about 5.7 * signal_m apart in any dimension; classes are balanced (n_samples // n_classes
    each, the rest spread over the first classes).
    """
    dims, signal = tuple(int(d) for d in dims), tuple(float(x) for x in signal)
    if len(dims) != len(signal):
        raise ConfigError(f"synthetic dims and signal must have the same length "
                          f"(got {len(dims)} and {len(signal)})")
    if not dims or min(dims) < 1:
        raise ConfigError(f"synthetic dims must be >= 1 each (got {list(dims)})")
    if min(signal) < 0:
        raise ConfigError(f"synthetic signal must be >= 0 each (got {list(signal)})")
    if not noise >= 0:
        raise ConfigError(f"synthetic noise must be >= 0 (got {noise})")
    if n_classes < 2 or n_samples < 2 * n_classes:
        raise ConfigError(f"synthetic data needs n_classes >= 2 and n_samples >= 2 * n_classes "
                          f"(got n_classes={n_classes}, n_samples={n_samples})")
    names = tuple(views) if views is not None else tuple(f"m{j}" for j in range(len(dims)))
    if len(names) != len(dims):
        raise ConfigError(f"synthetic data has {len(dims)} views; got names {list(names)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"synthetic view names must be distinct (got {list(names)})")
    rng = np.random.default_rng(seed)
    labels = np.arange(n_samples) % n_classes
    rng.shuffle(labels)
    raw = {}
    for name, d, s in zip(names, dims, signal):
        # Class means at a distance ~ 5.7 x signal from each other, whatever the dimension.
        means = rng.normal(size=(n_classes, d)) * (4.0 / np.sqrt(d))
        raw[name] = s * means[labels] + noise * rng.normal(size=(n_samples, d))
    return _finish("synthetic", raw, labels, names, n_classes, test_fraction, seed, val_fraction)


def load_dataset(name: str, views: Sequence[str] | None = None, seed: int = 0,
                 test_fraction: float = 0.2, val_fraction: float = 0.1,
                 **synthetic_kwargs) -> MultiViewDataset:
    """Load a data set by name (`mfeat` or `synthetic`; options apply to `synthetic` only).

    ``val_fraction`` of the training part (per class) becomes the validation split; 0: none.
    """
    if name == "mfeat":
        if synthetic_kwargs:
            raise ConfigError(f"dataset 'mfeat' takes no options (got {', '.join(synthetic_kwargs)})")
        return load_mfeat(views, seed, test_fraction, val_fraction)
    if name == "synthetic":
        unknown = sorted(set(synthetic_kwargs) - set(SYNTHETIC_OPTIONS))
        if unknown:
            raise ConfigError(f"unknown synthetic option {unknown[0]!r} "
                              f"(valid: {', '.join(SYNTHETIC_OPTIONS)})")
        return make_synthetic(views=views, seed=seed, test_fraction=test_fraction,
                              val_fraction=val_fraction, **synthetic_kwargs)
    raise ConfigError(f"dataset must be one of {', '.join(DATASETS)} (got {name!r})")
