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
    assert len(mfeat.train_labels) == 1600 and len(mfeat.test_labels) == 400
    assert (np.bincount(np.concatenate([mfeat.train_labels, mfeat.test_labels])) == 200).all()
    assert (np.bincount(mfeat.test_labels, minlength=10) == 40).all()  # stratified 20 %
    for v in mfeat.views:
        assert mfeat.train[v].dtype == np.float32 and mfeat.test[v].dtype == np.float32
        assert mfeat.train[v].shape == (1600, MFEAT_DIMS[v])
        assert mfeat.test[v].shape == (400, MFEAT_DIMS[v])


def test_mfeat_standardised_with_training_statistics_only(mfeat, mfeat_raw) -> None:
    for v in ("fou", "mor", "fac"):
        train = mfeat.train[v].astype(np.float64)
        np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-4)
        std = train.std(axis=0)
        assert np.all((np.abs(std - 1.0) < 1e-3) | (std == 0.0))  # constant features stay at 0
        # Train and test together are one increasing affine image of the raw column, per
        # feature: sorting both sides must line them up exactly.
        z = np.sort(np.concatenate([train, mfeat.test[v]]), axis=0)
        raw = np.sort(mfeat_raw[v].astype(np.float64), axis=0)
        varying = raw.std(axis=0) > 0
        for j in np.flatnonzero(varying):
            slope, intercept = np.polyfit(raw[:, j], z[:, j], 1)
            np.testing.assert_allclose(slope * raw[:, j] + intercept, z[:, j], atol=1e-3)
            assert slope > 0
        # The test set is not standardised on its own: its means are not all 0.
        assert np.abs(mfeat.test[v].mean(axis=0)).max() > 1e-3


def test_mfeat_split_is_fixed_by_seed_and_views_selectable() -> None:
    a = load_dataset("mfeat", ["mor", "fou"], seed=3)
    b = load_dataset("mfeat", ["mor", "fou"], seed=3)
    c = load_dataset("mfeat", ["mor", "fou"], seed=4)
    assert a.views == ("mor", "fou") and a.dims == {"mor": 6, "fou": 76}
    np.testing.assert_array_equal(a.train["fou"], b.train["fou"])
    assert not np.array_equal(a.train["fou"], c.train["fou"])


@pytest.mark.parametrize("call,message", [
    (lambda: load_dataset("mfeat", ["fac", "nope"]), r"unknown view 'nope' \(valid: fou, fac"),
    (lambda: load_dataset("mfeat", []), "views must name"),
    (lambda: load_dataset("mfeat", ["fac", "fac"]), "twice"),
    (lambda: load_dataset("mnist"), "dataset must be one of mfeat, synthetic"),
    (lambda: load_dataset("mfeat", noise=2.0), "'mfeat' takes no options"),
    (lambda: load_dataset("mfeat", test_fraction=1.0), "test_fraction"),
    (lambda: load_dataset("synthetic", colour=1), "unknown synthetic option 'colour'"),
    (lambda: load_dataset("synthetic", dims=(8, 8), signal=(1.0,)), "same length"),
    (lambda: load_dataset("synthetic", n_samples=5), "n_samples"),
    (lambda: load_dataset("synthetic", noise=-1.0), "noise must be >= 0"),
    (lambda: load_dataset("synthetic", views=["a"]), "has 2 views"),
])
def test_data_config_errors_name_the_field(call, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()


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
    assert data.n_classes == 10 and len(data.train_labels) + len(data.test_labels) == 1200
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
