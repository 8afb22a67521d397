"""metrics: parameter variation, speed tracking, balance, imbalance and accuracy, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dmmlkd.metrics.accuracy import accuracy, consensus_distance
from dmmlkd.metrics.balance import balance, device_imbalance, network_imbalance, network_progress, progress
from dmmlkd.metrics.variation import SpeedTracker, flatten_params, parameter_variation

# ---------------------------------------------------------------- parameter variation


def test_parameter_variation_hand_made_delta() -> None:
    start = np.array([3.0, 4.0])  # ||start|| = 5
    end = np.array([3.6, 3.2])  # delta = (0.6, -0.8), ||delta|| = 1
    assert parameter_variation(start, end, tau=2) == pytest.approx(1.0 / (5.0 * 2))


def test_parameter_variation_on_lists_of_tensors() -> None:
    start = [torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([2.0, 2.0])]  # ||.||^2 = 9
    end = [torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([2.0, 3.0])]  # delta (2, 1)
    s, e = flatten_params(start), flatten_params(end)
    assert s.shape == (6,)
    np.testing.assert_array_equal(s, [1, 0, 0, 0, 2, 2])
    assert parameter_variation(s, e, tau=5) == pytest.approx(math.sqrt(5) / (3.0 * 5))


def test_flatten_params_handles_grad_tensors_and_empty() -> None:
    layer = torch.nn.Linear(3, 2)
    flat = flatten_params(layer.parameters())
    assert flat.shape == (3 * 2 + 2,)
    np.testing.assert_allclose(flat[:6], layer.weight.detach().numpy().ravel())
    assert flatten_params([]).shape == (0,)


def test_parameter_variation_edge_cases() -> None:
    assert math.isnan(parameter_variation([1.0, 2.0], [1.0, 3.0], tau=0))
    # ||start|| = 0: the change is absolute, per iteration.
    assert parameter_variation([0.0, 0.0], [3.0, 4.0], tau=2) == pytest.approx(2.5)
    assert parameter_variation([1.0, 1.0], [1.0, 1.0], tau=3) == 0.0
    with pytest.raises(ValueError, match="differ in size"):
        parameter_variation([1.0, 2.0], [1.0], tau=1)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.01, 100.0), st.integers(1, 30))
def test_parameter_variation_is_scale_invariant(seed: int, scale: float, tau: int) -> None:
    rng = np.random.default_rng(seed)
    start, end = rng.normal(size=8) + 0.1, rng.normal(size=8)
    v = parameter_variation(start, end, tau)
    assert v == pytest.approx(parameter_variation(scale * start, scale * end, tau), rel=1e-9)
    assert v * tau == pytest.approx(parameter_variation(start, end, 1), rel=1e-9)


# ---------------------------------------------------------------- speed tracker


def test_speed_tracker_ema_and_prior() -> None:
    tracker = SpeedTracker(n_devices=2, n_modalities=3, beta=0.5)
    holds = np.array([[True, True, False], [True, True, True]])
    # Nothing measured: prior 1.0 on held entries, 0 elsewhere.
    np.testing.assert_array_equal(tracker.speed(holds), [[1, 1, 0], [1, 1, 1]])
    assert not tracker.measured.any()

    nan = np.nan
    tracker.update(np.array([[0.2, nan, nan], [0.4, nan, nan]]))
    np.testing.assert_array_equal(tracker.measured, [[True, False, False], [True, False, False]])
    # First measurement taken as is; unmeasured held entries get mean(0.2, 0.4) = 0.3.
    np.testing.assert_allclose(tracker.speed(holds), [[0.2, 0.3, 0], [0.4, 0.3, 0.3]])

    tracker.update(np.array([[0.6, 1.0, nan], [nan, nan, nan]]))
    # EMA: 0.5 * 0.6 + 0.5 * 0.2 = 0.4; (1, 1) untouched; (0, 1) first value 1.0.
    expected = np.array([[0.4, 1.0, 0.0], [0.4, 0.0, 0.0]])
    np.testing.assert_allclose(tracker.smoothed[tracker.measured], expected[tracker.measured])
    prior = (0.4 + 1.0 + 0.4) / 3
    np.testing.assert_allclose(tracker.speed(holds), [[0.4, 1.0, 0], [0.4, prior, prior]])


def test_speed_tracker_beta_weights_newest() -> None:
    tracker = SpeedTracker(1, 1, beta=0.25)
    for value in (1.0, 2.0, 4.0):
        tracker.update(np.array([[value]]))
    # 1 -> 0.25*2 + 0.75*1 = 1.25 -> 0.25*4 + 0.75*1.25 = 1.9375
    assert tracker.speed(np.array([[True]]))[0, 0] == pytest.approx(1.9375)


def test_speed_tracker_prior_ignores_entries_not_held() -> None:
    tracker = SpeedTracker(1, 2)
    tracker.update(np.array([[5.0, np.nan]]))
    # Device no longer holds modality 0: its old measurement does not make the prior.
    np.testing.assert_allclose(tracker.speed(np.array([[False, True]])), [[0.0, 1.0]])


def test_speed_tracker_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="beta"):
        SpeedTracker(2, 2, beta=0.0)
    with pytest.raises(ValueError, match="shape"):
        SpeedTracker(2, 2).update(np.ones((3, 2)))


# ---------------------------------------------------------------- balance and imbalance


def test_balance_by_hand() -> None:
    speed = np.array([[1.0, 3.0, 9.9], [2.0, 2.0, 2.0], [4.0, 0.0, 0.0]])
    holds = np.array([[True, True, False], [True, True, True], [True, False, False]])
    np.testing.assert_allclose(balance(speed, holds), [[0.5, 1.5, 0], [1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(balance(np.zeros((1, 2)), np.ones((1, 2), bool)), [[0, 0]])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(1, 5))
def test_balance_means_one_over_held(seed: int, k: int, m: int) -> None:
    rng = np.random.default_rng(seed)
    holds = rng.random((k, m)) < 0.7
    holds[np.arange(k), rng.integers(0, m, k)] = True
    b = balance(rng.uniform(0.1, 5.0, (k, m)), holds)
    np.testing.assert_allclose(b.sum(axis=1) / holds.sum(axis=1), 1.0)
    assert (b[~holds] == 0).all()


def test_progress_and_imbalance_by_hand() -> None:
    speed = np.array([[0.1, 0.2, 0.5], [0.3, 0.1, 0.0], [0.2, 0.2, 0.2]])
    tau = np.array([[10, 2, 1], [2, 3, 0], [5, 0, 0]])
    holds = np.array([[True, True, True], [True, True, False], [True, False, False]])
    prog = progress(speed, tau)
    np.testing.assert_allclose(prog, [[1.0, 0.4, 0.5], [0.6, 0.3, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(device_imbalance(prog, holds), [1.0 / 0.4, 0.6 / 0.3, 1.0])
    g = network_progress(prog, holds)
    np.testing.assert_allclose(g, [(1.0 + 0.6 + 1.0) / 3, (0.4 + 0.3) / 2, 0.5])
    assert network_imbalance(prog, holds) == pytest.approx((2.6 / 3) / 0.35)


def test_imbalance_edge_cases() -> None:
    holds = np.array([[True, True], [False, False]])
    prog = np.array([[0.0, 1.0], [0.0, 0.0]])
    imb = device_imbalance(prog, holds)
    assert imb[0] == math.inf and math.isnan(imb[1])
    g = network_progress(np.ones((2, 3)), np.array([[True, False, False], [True, True, False]]))
    assert math.isnan(g[2]) and g[0] == 1.0
    assert network_imbalance(np.ones((2, 3)), np.array([[True, False, False], [True, True, False]])) == 1.0
    assert network_imbalance(prog, holds) == math.inf
    assert math.isnan(network_imbalance(prog, np.zeros((2, 2), bool)))


# ---------------------------------------------------------------- accuracy and consensus


def test_accuracy_from_logits_and_predictions() -> None:
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.3, 0.4], [5.0, 0.0]])
    labels = np.array([1, 0, 0, 1])
    assert accuracy(logits, labels) == 0.5
    assert accuracy(torch.tensor(logits, requires_grad=True), torch.tensor(labels)) == 0.5
    assert accuracy(np.array([1, 0, 0, 1]), labels) == 1.0
    assert accuracy(torch.tensor([0, 0, 0, 0]), labels) == 0.5
    assert math.isnan(accuracy(np.zeros(0, int), np.zeros(0, int)))
    with pytest.raises(ValueError):
        accuracy(np.array([1, 0]), labels)


def test_consensus_distance_by_hand() -> None:
    stacked = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 3.0], [100.0, 100.0]])
    # Rows 0-2: mean (1, 1); squared distances 2, 2, 4 -> mean 8/3.
    mask = np.array([True, True, True, False])
    assert consensus_distance(stacked, mask) == pytest.approx(8 / 3)
    assert consensus_distance(torch.tensor(stacked[:3]).reshape(3, 1, 2)) == pytest.approx(8 / 3)
    assert consensus_distance([torch.tensor(r) for r in stacked[:3]]) == pytest.approx(8 / 3)
    assert consensus_distance(np.ones((4, 7))) == 0.0
    assert math.isnan(consensus_distance(stacked, np.zeros(4, bool)))


def test_paired_differences_by_hand() -> None:
    """Differences (method - reference) per seed 0.01, 0.02, 0.03: mean 0.02, sd 0.01, t(0.975, 2)
    = 4.3027 (tables), half-width 4.3027 x 0.01 / sqrt(3) = 0.024841."""
    import pandas as pd

    from dmmlkd.studies.compare import paired_differences, paired_table

    finals = pd.DataFrame({
        "method": ["ref"] * 3 + ["new"] * 3 + ["one"],
        "seed": [0, 1, 2, 2, 1, 0, 0],  # paired by seed, not by row order
        "acc": [0.50, 0.60, 0.70, 0.73, 0.62, 0.51, 0.9],
    })
    paired = paired_differences(finals, "ref")
    row = paired.query("method == 'new' and metric == 'acc'").iloc[0]
    assert list(paired.columns) == ["method", "reference", "metric", "mean_diff", "ci_low",
                                    "ci_high", "seeds"]
    assert row.reference == "ref" and row.seeds == 3
    assert row.mean_diff == pytest.approx(0.02)
    assert row.ci_low == pytest.approx(0.02 - 0.024841, abs=1e-5)
    assert row.ci_high == pytest.approx(0.02 + 0.024841, abs=1e-5)
    one = paired.query("method == 'one'").iloc[0]  # one common seed: no interval
    assert one.seeds == 1 and one.mean_diff == pytest.approx(0.4) and np.isnan(one.ci_low)
    assert paired_table(paired, ("acc",)).iloc[0]["acc"] == "+2.0 [-0.5, +4.5]"
    with pytest.raises(ValueError, match="reference method 'nope'"):
        paired_differences(finals, "nope")
