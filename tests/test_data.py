"""Data sets, Dirichlet partitions and modality availability."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learner.data import MFEAT_VIEWS, MultiViewDataset, load_dataset
from learner.errors import ConfigError
from learner.partition import dirichlet_partition, modality_availability

MFEAT_DIMS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}


@pytest.fixture(scope="module")
def mfeat() -> MultiViewDataset:
    return load_dataset("mfeat")


@pytest.fixture(scope="module")
def mfeat_raw() -> dict[str, np.ndarray]:
    with resources.files("learner").joinpath("data/mfeat.npz").open("rb") as fh:
        archive = np.load(fh)
        return {name: archive[name] for name in archive.files}


# --- mfeat ---------------------------------------------------------------------------------


def test_config_error_is_a_value_error_with_exit_code_2() -> None:
    assert issubclass(ConfigError, ValueError) and ConfigError.exit_code == 2


def test_mfeat_archive_is_the_uci_layout(mfeat_raw) -> None:
    assert set(mfeat_raw) == {*MFEAT_DIMS, "labels"}
    for view, dim in MFEAT_DIMS.items():
        assert mfeat_raw[view].shape == (2000, dim) and mfeat_raw[view].dtype == np.float32
    # The UCI file order: 200 samples of each digit, in order.
    np.testing.assert_array_equal(mfeat_raw["labels"], np.repeat(np.arange(10), 200))


def test_mfeat_shapes_classes_and_split(mfeat) -> None:
    assert mfeat.views == MFEAT_VIEWS and mfeat.n_classes == 10
    assert mfeat.dims == MFEAT_DIMS
    # 20 % test (40 per class); 10 % of the remaining 160 per class = 16 validation.
    assert len(mfeat.train_labels) == 1440 and len(mfeat.val_labels) == 160
    assert len(mfeat.test_labels) == 400
    every = np.concatenate([mfeat.train_labels, mfeat.val_labels, mfeat.test_labels])
    assert (np.bincount(every) == 200).all()
    assert (np.bincount(mfeat.test_labels, minlength=10) == 40).all()  # stratified 20 %
    assert (np.bincount(mfeat.val_labels, minlength=10) == 16).all()  # stratified 10 % of train
    for v in mfeat.views:
        assert mfeat.train[v].dtype == np.float32 and mfeat.test[v].dtype == np.float32
        assert mfeat.val[v].dtype == np.float32
        assert mfeat.train[v].shape == (1440, MFEAT_DIMS[v])
        assert mfeat.val[v].shape == (160, MFEAT_DIMS[v])
        assert mfeat.test[v].shape == (400, MFEAT_DIMS[v])


def _raw_positions(data: MultiViewDataset, raw: np.ndarray, view: str) -> dict[str, np.ndarray]:
    """Which raw row each sample of each split is (independent of the loader's indices).

    Standardisation is one increasing affine map per feature for all splits: recover it by
    sorting (as in the standardisation test), invert it, and match rows to the raw archive.
    mfeat holds a few identical digits: a match is the first raw row with the same content.
    """
    parts = {"train": data.train[view], "val": data.val[view], "test": data.test[view]}
    z = np.concatenate(list(parts.values())).astype(np.float64)
    back = raw.copy()
    for col in np.flatnonzero(raw.std(axis=0) > 0):
        slope, intercept = np.polyfit(np.sort(raw[:, col]), np.sort(z[:, col]), 1)
        back[:, col] = (z[:, col] - intercept) / slope
    dist = (back ** 2).sum(1)[:, None] + (raw ** 2).sum(1)[None] - 2 * back @ raw.T
    nearest = dist.argmin(axis=1)
    np.testing.assert_allclose(back, raw[nearest], atol=1e-3 * np.abs(raw).max())
    bounds = np.cumsum([0] + [len(p) for p in parts.values()])
    return {name: nearest[bounds[i]:bounds[i + 1]] for i, name in enumerate(parts)}


def test_validation_split_disjoint_stratified_and_seeded(mfeat_raw) -> None:
    # Independent truth: the raw archive rows. Mapped back, the three splits must together be
    # the 2,000 digits once each (as a multiset of row contents: mfeat has duplicate digits),
    # and the validation labels must be those rows' labels.
    raw, labels = mfeat_raw["fac"].astype(np.float64), mfeat_raw["labels"]
    _, first, content = np.unique(raw, axis=0, return_index=True, return_inverse=True)
    content = content.ravel()
    seen = []
    for seed in (0, 3):
        data = load_dataset("mfeat", ["fac"], seed=seed)
        pos = _raw_positions(data, raw, "fac")
        used = np.concatenate(list(pos.values()))
        np.testing.assert_array_equal(np.bincount(content[used], minlength=first.size),
                                      np.bincount(content, minlength=first.size))
        np.testing.assert_array_equal(labels[pos["val"]], data.val_labels)
        np.testing.assert_array_equal(labels[pos["test"]], data.test_labels)
        assert (np.bincount(labels[pos["val"]], minlength=10) == 16).all()  # stratified
        # No validation digit is also a training or test digit (unless it is a duplicate).
        val_c = set(content[pos["val"]].tolist())
        dup = set(np.flatnonzero(np.bincount(content) > 1).tolist())
        assert not (val_c & set(content[pos["test"]].tolist())) - dup
        assert not (val_c & set(content[pos["train"]].tolist())) - dup
        seen.append(set(pos["val"].tolist()))
        # The test split is the one drawn before validation existed: the same as val_fraction=0.
        no_val = load_dataset("mfeat", ["fac"], seed=seed, val_fraction=0.0)
        assert no_val.val_labels.size == 0 and no_val.val["fac"].shape == (0, 216)
        np.testing.assert_array_equal(no_val.test_labels, data.test_labels)
        assert len(no_val.train_labels) == 1600
    assert seen[0] != seen[1]  # the seed moves the validation split
    a, b = load_dataset("mfeat", ["fac"], seed=5), load_dataset("mfeat", ["fac"], seed=5)
    np.testing.assert_array_equal(a.val["fac"], b.val["fac"])
    np.testing.assert_array_equal(a.val_labels, b.val_labels)


def test_validation_split_standardised_with_fit_part_only(mfeat) -> None:
    # Statistics come from `train` (the part the devices learn from), not train + val.
    for v in ("fou", "zer"):
        np.testing.assert_allclose(mfeat.train[v].astype(np.float64).mean(axis=0), 0.0, atol=1e-4)
        assert np.abs(mfeat.val[v].mean(axis=0)).max() > 1e-3


def test_validation_split_keeps_every_class_in_training() -> None:
    # 3 classes x 4 samples, 25 % test -> 3 training samples per class; val 0.9 would round to
    # all 3, but a class never loses its last training sample.
    data = load_dataset("synthetic", n_samples=12, n_classes=3, seed=0, test_fraction=0.25,
                        val_fraction=0.9)
    assert (np.bincount(data.train_labels, minlength=3) == 1).all()
    assert (np.bincount(data.val_labels, minlength=3) == 2).all()


# --- synthetic -----------------------------------------------------------------------------


def _nearest_mean_accuracy(data: MultiViewDataset, view: str) -> float:
    """Nearest class mean (from training data) accuracy on the test set."""
    means = np.stack([data.train[view][data.train_labels == c].mean(axis=0)
                      for c in range(data.n_classes)])
    d = ((data.test[view][:, None, :] - means[None]) ** 2).sum(axis=-1)
    return float((d.argmin(axis=1) == data.test_labels).mean())


def test_synthetic_shapes_names_and_seed() -> None:
    data = load_dataset("synthetic", seed=1)
    assert data.views == ("m0", "m1") and data.dims == {"m0": 32, "m1": 32}
    assert data.n_classes == 10
    assert len(data.train_labels) + len(data.val_labels) + len(data.test_labels) == 1200
    assert (np.bincount(data.test_labels) == 24).all()
    again = load_dataset("synthetic", seed=1)
    np.testing.assert_array_equal(data.train["m1"], again.train["m1"])
    other = load_dataset("synthetic", seed=2)
    assert not np.array_equal(data.train["m1"], other.train["m1"])
    named = load_dataset("synthetic", views=["img", "audio", "imu"], dims=(4, 8, 16),
                         signal=(1.0, 1.0, 1.0), n_classes=3, n_samples=300)
    assert named.dims == {"img": 4, "audio": 8, "imu": 16} and named.n_classes == 3
    np.testing.assert_allclose(named.train["imu"].mean(axis=0), 0.0, atol=1e-5)


def test_synthetic_has_a_strong_and_a_weak_view() -> None:
    data = load_dataset("synthetic", seed=0)
    strong, weak = _nearest_mean_accuracy(data, "m0"), _nearest_mean_accuracy(data, "m1")
    assert strong > 0.9 and 0.15 < weak < strong - 0.3  # weak is above chance (0.1) but far behind
    pure_noise = load_dataset("synthetic", signal=(0.0, 0.0), seed=0)
    assert _nearest_mean_accuracy(pure_noise, "m0") < 0.25


# --- Dirichlet partitions ------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.sampled_from([0.05, 0.3, 1.0, 10.0, 1e4]), st.integers(0, 10_000))
def test_dirichlet_partition_covers_every_index_once(k: int, alpha: float, seed: int) -> None:
    labels = np.random.default_rng(seed).integers(0, 6, size=400)
    parts = dirichlet_partition(labels, k, alpha, min_samples=5, seed=seed)
    assert len(parts) == k
    joined = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(joined, np.arange(labels.size))
    assert min(p.size for p in parts) >= 5


def test_dirichlet_partition_is_seeded() -> None:
    labels = np.repeat(np.arange(10), 60)
    a = dirichlet_partition(labels, 5, 0.5, seed=7)
    b = dirichlet_partition(labels, 5, 0.5, seed=7)
    c = dirichlet_partition(labels, 5, 0.5, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_dirichlet_large_alpha_balanced_small_alpha_skewed() -> None:
    labels = np.repeat(np.arange(10), 200)
    for part in dirichlet_partition(labels, 5, 1e5, seed=0):
        counts = np.bincount(labels[part], minlength=10)
        assert counts.min() >= 0.8 * counts.mean()  # each class ~ 40 per device
        assert abs(part.size - 400) <= 40
    skewed = dirichlet_partition(labels, 5, 0.05, seed=0)
    top_share = [np.bincount(labels[p], minlength=10).max() / p.size for p in skewed]
    assert np.mean(top_share) > 0.3  # IID would give 0.1


@pytest.mark.parametrize("call,message", [
    (lambda: dirichlet_partition(np.zeros(100, int), 3, -1.0), r"alpha must be > 0 \(got -1.0\)"),
    (lambda: dirichlet_partition(np.zeros(100, int), 3, 0.0), "alpha must be > 0"),
    (lambda: dirichlet_partition(np.zeros(100, int), 11, 1.0), "devices=11 need 110 samples"),
    (lambda: dirichlet_partition(np.zeros(100, int), 0, 1.0), "devices must be >= 1"),
    (lambda: dirichlet_partition(np.repeat(np.arange(10), 10), 10, 0.01, max_tries=20),
     "could not give every one of 10 devices 10 samples"),
])
def test_partition_config_errors(call, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()


# --- modality availability -----------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 15), st.integers(1, 6), st.floats(0.0, 0.99), st.integers(0, 10_000))
def test_random_availability_invariants(k: int, m: int, rate: float, seed: int) -> None:
    holds = modality_availability(k, [f"v{j}" for j in range(m)], "random", rate, seed=seed)
    assert holds.shape == (k, m) and holds.dtype == bool
    assert holds.any(axis=1).all() and holds.any(axis=0).all()
    again = modality_availability(k, [f"v{j}" for j in range(m)], "random", rate, seed=seed)
    np.testing.assert_array_equal(holds, again)


def test_random_availability_missing_rate_is_respected() -> None:
    views = ["a", "b", "c", "d"]
    assert modality_availability(7, views, "random", 0.0).all()
    holds = modality_availability(500, views, "random", 0.3, seed=1)
    assert abs((~holds).mean() - 0.3) < 0.03
    assert modality_availability(4, views).all()  # mode "all"


def test_pattern_availability_is_cycled() -> None:
    views = ["fou", "fac", "mor"]
    holds = modality_availability(5, views, "pattern", pattern=[["fou", "mor"], ["fac"], "mor"])
    expected = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 0]], bool)
    np.testing.assert_array_equal(holds, expected)


@pytest.mark.parametrize("kwargs,message", [
    ({"mode": "pattern"}, "needs a pattern"),
    ({"mode": "pattern", "pattern": [["a"], ["zz"]]}, "unknown view 'zz'"),
    ({"mode": "pattern", "pattern": [["a"], []]}, "gives a device no view"),
    ({"mode": "pattern", "pattern": [["a"]]}, "no device holds view 'b'"),
    ({"mode": "random", "missing_rate": 1.0}, "missing_rate must be in"),
    ({"mode": "sometimes"}, "availability mode must be"),
])
def test_availability_config_errors(kwargs, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        modality_availability(4, ["a", "b"], **kwargs)
