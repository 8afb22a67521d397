"""Multi-view data sets: UCI Multiple Features digits, UEA BasicMotions, a controllable
synthetic one, and a user's own ``.npz`` (or in-memory mapping) in one simple format."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npformat
from numpy.typing import NDArray

from dmmlkd.learner.errors import ConfigError

MFEAT_VIEWS = ("fou", "fac", "kar", "pix", "zer", "mor")
BASICMOTIONS_VIEWS = ("acc", "gyro")
DATASETS = ("mfeat", "synthetic", "basicmotions")
VIEW_PREFIX = "view_"
# A user file larger than this (its arrays as stored, read from the npz headers before
# loading) is refused: the loader holds a float64 copy of each view while standardising.
MAX_DATASET_BYTES = 2 * 1024**3


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
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of one sample of each view: (d,), (C, T) or (C, H, W)."""
        return {v: tuple(int(n) for n in self.train[v].shape[1:]) for v in self.views}

    @property
    def dims(self) -> dict[str, int]:
        """Input size of each view (the feature dimension of a (N, d) view; C*T, C*H*W else)."""
        return {v: int(np.prod(shape)) for v, shape in self.shapes.items()}


HUGE = 1e100  # above this a view is rescaled before standardising (its squares would overflow)


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


def _finish(name: str, raw: Mapping[str, NDArray], labels: NDArray, views: tuple[str, ...],
            n_classes: int, test_fraction: float, seed: int,
            val_fraction: float = 0.1, split: NDArray | None = None) -> MultiViewDataset:
    """Split test (stratified, by seed; or as ``split`` says), carve validation from
    training, standardise with the remaining training samples' statistics.

    (N, d) views are standardised per feature; (N, C, ...) views per channel (over samples and
    positions), which keeps a convolution's view of the signal's shape intact.
    """
    _check_fractions(test_fraction, val_fraction)
    if split is not None:
        train_idx, test_idx = np.flatnonzero(split == 0), np.flatnonzero(split == 1)
    else:
        # Separate streams for the test and validation draws: the test split stays what it
        # was before the validation split existed, for every seed.
        train_idx, test_idx = _stratified_split(labels, test_fraction, np.random.default_rng(seed))
    fit_pos, val_pos = _stratified_split(labels[train_idx], val_fraction,
                                         np.random.default_rng([seed, 1]))
    train_idx, val_idx = train_idx[fit_pos], train_idx[val_pos]
    train, val, test = {}, {}, {}
    for v in views:
        x = raw[v].astype(np.float64)
        axes = (0,) if x.ndim == 2 else (0, *range(2, x.ndim))
        if x.size and np.abs(x).max() > HUGE:
            # Squares would overflow (values near 1e300 gave inf std and a run at chance):
            # standardising is scale-free, so divide by each feature's largest magnitude first.
            scale = np.abs(x[train_idx]).max(axis=axes, keepdims=True)
            x = x / np.where(scale > 0, scale, 1.0)
        mean = x[train_idx].mean(axis=axes, keepdims=True)
        std = x[train_idx].std(axis=axes, keepdims=True)
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
    with resources.files("dmmlkd.learner").joinpath("data/mfeat.npz").open("rb") as fh:
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


def load_basicmotions(views: Sequence[str] | None = None, seed: int = 0,
                      val_fraction: float = 0.1) -> MultiViewDataset:
    """UEA BasicMotions (4 activities, 3-axis accelerometer and gyroscope, 100 steps), shipped
    in the package with its official 40/40 train/test split."""
    with resources.files("dmmlkd.learner").joinpath("data/basicmotions.npz").open("rb") as fh:
        arrays = _read_npz(fh, "basicmotions.npz")
    return from_arrays(arrays, views, seed, val_fraction=val_fraction, name="basicmotions")


def _read_npz(source: Any, where: str, max_bytes: int = MAX_DATASET_BYTES) -> dict[str, NDArray]:
    """Every array of an npz, after checking from the headers that it is not too large."""
    try:
        with zipfile.ZipFile(source) as archive:
            total = 0
            for info in archive.infolist():
                key = info.filename.removesuffix(".npy")
                with archive.open(info) as member:
                    version = npformat.read_magic(member)
                    read_header = (npformat.read_array_header_1_0 if version == (1, 0)
                                   else npformat.read_array_header_2_0)
                    shape, _, dtype = read_header(member)
                if dtype.hasobject:
                    raise ConfigError(f"{where}: key {key!r} holds Python objects; store numbers "
                                      f"(or fixed-width strings) only")
                total += int(np.prod(shape)) * dtype.itemsize
            if total > max_bytes:
                raise ConfigError(f"{where}: arrays take {total / 1024**3:.1f} GiB, more than the "
                                  f"{max_bytes / 1024**3:.1f} GiB limit; subsample or reduce it")
        if hasattr(source, "seek"):
            source.seek(0)
        with np.load(source, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ConfigError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise ConfigError(f"{where}: not a readable .npz archive ({exc})") from None


def load_npz(path: str | Path, views: Sequence[str] | None = None, seed: int = 0,
             test_fraction: float = 0.2, val_fraction: float = 0.1,
             max_bytes: int = MAX_DATASET_BYTES) -> MultiViewDataset:
    """A user's ``.npz`` in the format of :func:`from_arrays` (errors name the file and key)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"dataset {str(p)!r}: no such file")
    with p.open("rb") as fh:
        arrays = _read_npz(fh, str(p), max_bytes)
    return from_arrays(arrays, views, seed, test_fraction, val_fraction, name=p.stem, where=str(p))


def from_arrays(arrays: Mapping[str, Any], views: Sequence[str] | None = None, seed: int = 0,
                test_fraction: float = 0.2, val_fraction: float = 0.1, name: str = "arrays",
                where: str = "dataset") -> MultiViewDataset:
    """A data set from arrays: ``labels`` (N,) integers, ``view_<name>`` (N, d), (N, C, T) or
    (N, C, H, W) per view, optional ``split`` (N,) with 0 train / 1 test (else a stratified
    split by seed) and optional ``class_names`` (one per class). Labels may be any integers;
    they are mapped to 0..C-1 in sorted order."""
    if "labels" not in arrays:
        raise ConfigError(f"{where}: key 'labels' is missing (an (N,) array of integer classes)")
    known = {"labels", "split", "class_names"}
    for key in arrays:
        if key not in known and not key.startswith(VIEW_PREFIX):
            raise ConfigError(f"{where}: unknown key {key!r} (views are named "
                              f"'{VIEW_PREFIX}<name>'; other keys: labels, split, class_names)")
    labels = np.asarray(arrays["labels"])
    if labels.ndim != 1 or labels.size == 0:
        raise ConfigError(f"{where}: key 'labels' must be a non-empty (N,) array "
                          f"(got shape {labels.shape})")
    if labels.dtype.kind == "f" and np.isfinite(labels).all() and (labels == np.round(labels)).all():
        labels = labels.astype(np.int64)  # whole numbers saved as floats (e.g. from pandas)
    if labels.dtype.kind not in "iu":
        raise ConfigError(f"{where}: key 'labels' must hold integers (got dtype {labels.dtype})")
    classes, labels = np.unique(labels, return_inverse=True)
    labels = labels.ravel().astype(np.int64)
    if classes.size < 2:
        raise ConfigError(f"{where}: key 'labels' has {classes.size} class; need at least 2")
    n = labels.size
    available = tuple(k[len(VIEW_PREFIX):] for k in arrays if k.startswith(VIEW_PREFIX))
    if not available:
        raise ConfigError(f"{where}: no view: name each view's array '{VIEW_PREFIX}<name>'")
    chosen = _select(views, available)
    raw = {}
    for v in chosen:
        key = VIEW_PREFIX + v
        x = np.asarray(arrays[key])
        if x.ndim not in (2, 3, 4):
            raise ConfigError(f"{where}: key {key!r} must be (N, d), (N, C, T) or (N, C, H, W) "
                              f"(got shape {x.shape})")
        if x.shape[0] != n:
            raise ConfigError(f"{where}: key {key!r} has {x.shape[0]} samples but 'labels' has {n}")
        if x.dtype.kind not in "iufb":
            raise ConfigError(f"{where}: key {key!r} must hold numbers (got dtype {x.dtype})")
        if 0 in x.shape[1:]:
            raise ConfigError(f"{where}: key {key!r} has no features (shape {x.shape}); "
                              "each sample needs at least one value")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise ConfigError(f"{where}: key {key!r} holds NaN or infinite values "
                              f"({int((~np.isfinite(x)).sum())} of {x.size})")
        raw[v] = x
    split = None
    if "split" in arrays:
        split = np.asarray(arrays["split"])
        if split.shape != (n,):
            raise ConfigError(f"{where}: key 'split' must be (N,) = ({n},) (got shape {split.shape})")
        if split.dtype.kind not in "iufb" or not np.isin(split, (0, 1)).all():
            raise ConfigError(f"{where}: key 'split' must hold 0 (train) or 1 (test) only")
        split = split.astype(np.int64)
        if not (split == 0).any() or not (split == 1).any():
            raise ConfigError(f"{where}: key 'split' must mark at least one train (0) and one "
                              f"test (1) sample")
    if "class_names" in arrays and np.asarray(arrays["class_names"]).shape != (classes.size,):
        raise ConfigError(f"{where}: key 'class_names' must have one name per class "
                          f"({classes.size}; got shape {np.asarray(arrays['class_names']).shape})")
    return _finish(name, raw, labels, chosen, int(classes.size), test_fraction, seed,
                   val_fraction, split)


def load_dataset(name: str | Mapping[str, Any], views: Sequence[str] | None = None, seed: int = 0,
                 test_fraction: float = 0.2, val_fraction: float = 0.1,
                 **synthetic_kwargs: Any) -> MultiViewDataset:
    """Load a data set: a name (`mfeat`, `basicmotions`, `synthetic`; options apply to
    `synthetic` only), a path to an ``.npz`` file, or a mapping of arrays (see `from_arrays`).

    ``val_fraction`` of the training part (per class) becomes the validation split; 0: none.
    """
    if isinstance(name, Mapping):
        return from_arrays(name, views, seed, test_fraction, val_fraction)
    if name in ("mfeat", "basicmotions") and synthetic_kwargs:
        raise ConfigError(f"dataset {name!r} takes no options (got {', '.join(synthetic_kwargs)})")
    if name == "mfeat":
        return load_mfeat(views, seed, test_fraction, val_fraction)
    if name == "basicmotions":
        return load_basicmotions(views, seed, val_fraction)
    if name == "synthetic":
        unknown = sorted(set(synthetic_kwargs) - set(SYNTHETIC_OPTIONS))
        if unknown:
            raise ConfigError(f"unknown synthetic option {unknown[0]!r} "
                              f"(valid: {', '.join(SYNTHETIC_OPTIONS)})")
        return make_synthetic(views=views, seed=seed, test_fraction=test_fraction,
                              val_fraction=val_fraction, **synthetic_kwargs)
    if isinstance(name, (str, Path)) and (str(name).endswith(".npz") or Path(name).is_file()):
        if synthetic_kwargs:
            raise ConfigError(f"dataset {str(name)!r} takes no options "
                              f"(got {', '.join(synthetic_kwargs)})")
        return load_npz(name, views, seed, test_fraction, val_fraction)
    raise ConfigError(f"dataset must be one of {', '.join(DATASETS)} or a path to an .npz file "
                      f"(got {name!r})")
