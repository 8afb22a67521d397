"""Data sets, Dirichlet partitions and modality availability."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmmlkd.learner.data import BASICMOTIONS_VIEWS, MFEAT_VIEWS, MultiViewDataset, load_dataset
from dmmlkd.learner.errors import ConfigError
from dmmlkd.learner.partition import dirichlet_partition, modality_availability

MFEAT_DIMS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}


@pytest.fixture(scope="module")
def mfeat() -> MultiViewDataset:
    return load_dataset("mfeat")


@pytest.fixture(scope="module")
def mfeat_raw() -> dict[str, np.ndarray]:
    with resources.files("dmmlkd.learner").joinpath("data/mfeat.npz").open("rb") as fh:
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


# --- the user data format (.npz / mapping) -------------------------------------------------


def _user_arrays(n: int = 60, seed: int = 0) -> dict[str, np.ndarray]:
    """A small valid data set: a tabular view, a (C, T) view, a (C, H, W) view, labels 3/7/9."""
    rng = np.random.default_rng(seed)
    labels = np.array([3, 7, 9])[np.arange(n) % 3]
    return {"labels": labels, "view_tab": rng.normal(size=(n, 5)),
            "view_ts": rng.normal(size=(n, 2, 16)).astype(np.float32),
            "view_img": rng.integers(0, 255, size=(n, 1, 6, 6)).astype(np.uint8)}


def test_user_npz_round_trip(tmp_path) -> None:
    # Independent truth: standardisation computed here by hand from the raw arrays and the
    # file's own split (val_fraction 0, so the split is exactly the file's).
    arrays = _user_arrays()
    split = (np.arange(60) % 4 == 0).astype(np.int8)  # 15 test, 45 train
    path = tmp_path / "mine.npz"
    np.savez(path, split=split, class_names=np.array(["three", "seven", "nine"]), **arrays)
    data = load_dataset(str(path), val_fraction=0.0)
    assert data.name == "mine" and data.views == ("tab", "ts", "img") and data.n_classes == 3
    assert data.shapes == {"tab": (5,), "ts": (2, 16), "img": (1, 6, 6)}
    assert data.dims == {"tab": 5, "ts": 32, "img": 36}
    # Labels 3, 7, 9 become classes 0, 1, 2 (sorted order).
    np.testing.assert_array_equal(data.train_labels,
                                  np.searchsorted([3, 7, 9], arrays["labels"][split == 0]))
    np.testing.assert_array_equal(data.test_labels, np.searchsorted([3, 7, 9],
                                                                    arrays["labels"][split == 1]))
    tab = arrays["view_tab"]
    mean, std = tab[split == 0].mean(0), tab[split == 0].std(0)
    np.testing.assert_allclose(data.train["tab"], (tab[split == 0] - mean) / std, atol=1e-5)
    np.testing.assert_allclose(data.test["tab"], (tab[split == 1] - mean) / std, atol=1e-5)
    ts = arrays["view_ts"].astype(np.float64)
    mean_c = ts[split == 0].mean(axis=(0, 2))[None, :, None]  # per channel, over time too
    std_c = ts[split == 0].std(axis=(0, 2))[None, :, None]
    np.testing.assert_allclose(data.test["ts"], (ts[split == 1] - mean_c) / std_c, atol=1e-5)
    assert data.train["img"].dtype == np.float32 and data.train["img"].shape == (45, 1, 6, 6)
    # The same arrays in memory give the same data set; a view subset keeps its order.
    again = load_dataset({**arrays, "split": split}, ["ts", "tab"], val_fraction=0.0)
    assert again.views == ("ts", "tab")
    np.testing.assert_array_equal(again.train["ts"], data.train["ts"])


def test_user_npz_without_split_is_stratified_with_validation(tmp_path) -> None:
    arrays = _user_arrays(n=90)
    data = load_dataset(arrays, seed=2)
    assert len(data.test_labels) == 18 and (np.bincount(data.test_labels) == 6).all()
    assert (np.bincount(data.val_labels) == 2).all()  # 10 % of 24 per class
    assert len(data.train_labels) == 90 - 18 - 6
    # Float labels holding whole numbers are accepted (pandas often writes them so).
    floats = load_dataset({**arrays, "labels": arrays["labels"].astype(float)}, seed=2)
    np.testing.assert_array_equal(floats.train_labels, data.train_labels)


def _write_npz_header_only(path, key: str, shape: tuple[int, ...]) -> None:
    """An npz whose member claims a huge array (header only): refused before loading."""
    import io
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_2_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{key}.npy", buf.getvalue())  # magic + header, no data
        good = io.BytesIO()
        np.save(good, np.zeros(shape[0], np.int64))
        zf.writestr("labels.npy", good.getvalue())


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file path, what the one-line message must contain)."""
    good = _user_arrays()
    cases: dict[str, tuple[dict, str]] = {
        "no_labels": ({k: v for k, v in good.items() if k != "labels"}, "key 'labels' is missing"),
        "lengths": ({**good, "view_ts": good["view_ts"][:50]},
                    "key 'view_ts' has 50 samples but 'labels' has 60"),
        "no_view": ({"labels": good["labels"]}, "no view"),
        "nan": ({**good, "view_tab": np.where(np.eye(60, 5) > 0, np.nan, good["view_tab"])},
                "key 'view_tab' holds NaN or infinite"),
        "inf": ({**good, "view_ts": np.full((60, 2, 16), np.inf, np.float32)},
                "key 'view_ts' holds NaN or infinite"),
        "float_labels": ({**good, "labels": good["labels"] + 0.5}, "key 'labels' must hold integers"),
        "text_labels": ({**good, "labels": np.array(["a", "b"] * 30)}, "key 'labels' must hold integers"),
        "one_class": ({**good, "labels": np.zeros(60, int)}, "need at least 2"),
        "bad_rank": ({**good, "view_tab": np.zeros(60)}, "key 'view_tab' must be (N, d)"),
        "unknown_key": ({**good, "veiw_x": np.zeros((60, 2))}, "unknown key 'veiw_x'"),
        "bad_split": ({**good, "split": np.full(60, 2)}, "key 'split' must hold 0"),
    }
    out: dict[str, tuple[Path, str]] = {}
    for name, (arrays, message) in cases.items():
        path = tmp / f"{name}.npz"
        np.savez(path, **arrays)
        out[name] = (path, message)
    (tmp / "text.npz").write_text("labels,view_a\n1,2\n")
    out["not_npz"] = (tmp / "text.npz", "not a readable .npz")
    np.savez(tmp / "objects.npz", labels=np.arange(60) % 2,
             view_a=np.array([object()] * 60, dtype=object))
    out["objects"] = (tmp / "objects.npz", "key 'view_a' holds Python objects")
    _write_npz_header_only(tmp / "huge.npz", "view_big", (2_000_000, 50_000))
    out["huge"] = (tmp / "huge.npz", "more than the")
    out["missing_file"] = (tmp / "absent.npz", "no such file")
    return out


def test_broken_files_refused_in_python(tmp_path) -> None:
    for path, message in _bad_files(tmp_path).values():
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_dataset(str(path))
    ok = tmp_path / "ok.npz"
    np.savez(ok, **_user_arrays())
    with pytest.raises(ConfigError, match=r"unknown view 'nope' \(valid: tab, ts, img\)"):
        load_dataset(str(ok), ["tab", "nope"])
    with pytest.raises(ConfigError, match="dataset must be one of .* or a path to an .npz"):
        load_dataset("mnist")


def test_broken_files_refused_by_the_command_line(tmp_path, cli) -> None:
    # Each broken file through `dmmlkd train`: exit 2, one line naming the key, no traceback,
    # and the --out folder is never created.
    files = _bad_files(tmp_path)
    ok = tmp_path / "ok.npz"
    np.savez(ok, **_user_arrays())
    runs = [(str(path), [], message) for path, message in files.values()]
    runs.append((str(ok), ["--views", "tab,absent"], "unknown view 'absent'"))
    for dataset, extra, message in runs:
        out = tmp_path / "out"
        code, stdout, err = cli("train", "--dataset", dataset, "--devices", "2", "--rounds", "1",
                                "--quiet", "--out", str(out), *extra)
        assert code == 2, (dataset, err)
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
        assert stdout == "" and not out.exists()


def test_broken_file_refused_in_a_real_process(tmp_path) -> None:
    # The same as a user runs it, in its own process (one case: a process start costs seconds;
    # every case goes through the same CLI path in the test above).
    path, message = _bad_files(tmp_path)["nan"]
    proc = subprocess.run([sys.executable, "-m", "dmmlkd.cli", "train", "--dataset", str(path),
                           "--devices", "2", "--rounds", "1", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


# --- BasicMotions --------------------------------------------------------------------------


def test_basicmotions_shipped_with_its_official_split() -> None:
    with resources.files("dmmlkd.learner").joinpath("data/basicmotions.npz").open("rb") as fh:
        raw = dict(np.load(fh))
    assert raw["view_acc"].shape == raw["view_gyro"].shape == (80, 3, 100)
    np.testing.assert_array_equal(raw["split"], np.repeat([0, 1], 40))
    assert (np.bincount(raw["labels"][:40]) == 10).all() and (np.bincount(raw["labels"][40:]) == 10).all()
    assert list(raw["class_names"]) == ["Standing", "Running", "Walking", "Badminton"]
    data = load_dataset("basicmotions")
    assert data.views == BASICMOTIONS_VIEWS and data.shapes == {"acc": (3, 100), "gyro": (3, 100)}
    assert len(data.test_labels) == 40 and len(data.val_labels) == 4 and len(data.train_labels) == 36
    # The test split is the archive's TEST part (in file order, standardised per channel).
    acc = raw["view_acc"].astype(np.float64)
    train_rows = np.concatenate([data.train["acc"], data.val["acc"]])
    assert train_rows.shape[0] == 40
    order = np.argsort(raw["labels"][40:], kind="stable")
    np.testing.assert_array_equal(data.test_labels[order], raw["labels"][40:][order])
    z = data.test["acc"].astype(np.float64)
    for c in range(3):  # per channel an increasing affine map of the raw values
        slope, _ = np.polyfit(acc[40:, c].ravel(), z[:, c].ravel(), 1)
        assert slope > 0
        np.testing.assert_allclose(np.corrcoef(acc[40:, c].ravel(), z[:, c].ravel())[0, 1], 1.0,
                                   atol=1e-6)
