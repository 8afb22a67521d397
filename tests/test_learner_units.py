"""Learner building blocks against hand computations and invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from learner.data import load_dataset
from learner.errors import ConfigError
from learner.gossip import gossip_average, metropolis_weights
from learner.partition import dirichlet_partition, modality_availability
from learner.topology import is_connected, make_topology
from metrics.balance import balance, device_imbalance, network_imbalance, network_progress
from metrics.energy import computation_energy_j
from metrics.variation import SpeedTracker, parameter_variation


@st.composite
def graphs(draw):
    n = draw(st.integers(2, 9))
    upper = np.triu(np.array(draw(st.lists(st.booleans(), min_size=n * n, max_size=n * n)))
                    .reshape(n, n), 1)
    adj = upper | upper.T
    mask = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    return adj, mask


@settings(max_examples=60, deadline=None)
@given(graphs())
def test_metropolis_weights_doubly_stochastic_symmetric(g) -> None:
    adj, mask = g
    for m in (None, mask):
        w = metropolis_weights(adj, m)
        np.testing.assert_allclose(w.sum(axis=0), 1.0)
        np.testing.assert_allclose(w.sum(axis=1), 1.0)
        np.testing.assert_allclose(w, w.T)
        assert (w >= -1e-12).all()


@settings(max_examples=40, deadline=None)
@given(graphs(), st.integers(0, 1000))
def test_gossip_preserves_holder_average_and_leaves_others(g, seed) -> None:
    adj, mask = g
    x = torch.as_tensor(np.random.default_rng(seed).normal(size=(adj.shape[0], 3, 2)))
    y = gossip_average(x, metropolis_weights(adj, mask))
    if mask.any():
        torch.testing.assert_close(y[torch.as_tensor(mask)].mean(0), x[torch.as_tensor(mask)].mean(0))
    torch.testing.assert_close(y[torch.as_tensor(~mask)], x[torch.as_tensor(~mask)])


def test_repeated_gossip_converges_to_average_on_connected_graph() -> None:
    topo = make_topology("ring", 7, seed=1)
    x = torch.randn(7, 5, dtype=torch.float64)
    w = metropolis_weights(topo.adjacency)
    y = x.clone()
    for _ in range(300):
        y = gossip_average(y, w)
    torch.testing.assert_close(y, x.mean(0, keepdim=True).expand_as(x))


def test_parameter_variation_by_hand() -> None:
    start = np.array([3.0, 4.0])  # norm 5
    end = np.array([3.0, 4.0]) + np.array([0.6, 0.8])  # change of norm 1
    assert parameter_variation(start, end, 2) == pytest.approx(1.0 / (5.0 * 2))
    assert np.isnan(parameter_variation(start, end, 0))


def test_speed_tracker_ema_and_prior() -> None:
    tracker = SpeedTracker(2, 2, beta=0.5)
    holds = np.array([[True, True], [True, False]])
    assert (tracker.speed(holds)[holds] == 1.0).all()  # nothing measured: prior 1
    tracker.update(np.array([[0.2, np.nan], [0.4, np.nan]]))
    sp = tracker.speed(holds)
    assert sp[0, 0] == pytest.approx(0.2) and sp[0, 1] == pytest.approx(0.3)  # prior = mean
    assert sp[1, 1] == 0.0
    tracker.update(np.array([[0.4, 0.1], [np.nan, np.nan]]))
    assert tracker.speed(holds)[0, 0] == pytest.approx(0.3)  # 0.5 * 0.4 + 0.5 * 0.2
    assert tracker.speed(holds)[0, 1] == pytest.approx(0.1)


def test_balance_and_imbalance_by_hand() -> None:
    speed = np.array([[0.1, 0.3], [0.2, 0.0]])
    holds = np.array([[True, True], [True, False]])
    np.testing.assert_allclose(balance(speed, holds), [[0.5, 1.5], [1.0, 0.0]])
    prog = speed * np.array([[6, 2], [3, 0]])  # [[0.6, 0.6], [0.6, 0]]
    np.testing.assert_allclose(device_imbalance(prog, holds), [1.0, 1.0])
    np.testing.assert_allclose(network_progress(prog, holds), [0.6, 0.6])
    assert network_imbalance(prog, holds) == pytest.approx(1.0)


def test_computation_energy_by_hand() -> None:
    tau = np.array([[3, 1]])
    holds = np.array([[True, True]])
    # L = 3 forward passes of both encoders (0.1 + 0.2) plus 3 x 1 + 1 x 2 backward.
    assert computation_energy_j(tau, holds, [[0.1, 0.2]], [[1.0, 2.0]])[0] == pytest.approx(
        3 * 0.3 + 3 * 1.0 + 1 * 2.0)


@pytest.mark.parametrize("alpha", [0.1, 1.0, 1000.0])
def test_dirichlet_partition_covers_every_sample_once(alpha: float) -> None:
    labels = np.repeat(np.arange(10), 50)
    parts = dirichlet_partition(labels, 7, alpha, min_samples=10, seed=3)
    joined = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(joined, np.arange(labels.size))
    assert min(p.size for p in parts) >= 10


def test_large_alpha_is_close_to_iid() -> None:
    labels = np.repeat(np.arange(10), 100)
    parts = dirichlet_partition(labels, 4, 1e5, seed=0)
    for p in parts:
        counts = np.bincount(labels[p], minlength=10)
        assert counts.min() >= 0.7 * counts.mean()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 6), st.floats(0.0, 0.95), st.integers(0, 99))
def test_availability_invariants(k: int, m: int, rate: float, seed: int) -> None:
    holds = modality_availability(k, [f"v{j}" for j in range(m)], "random", rate, seed=seed)
    assert holds.any(axis=1).all() and holds.any(axis=0).all()


@pytest.mark.parametrize("name,degree", [("ring", 2), ("torus", 4), ("complete", 8)])
def test_topologies_regular_degrees(name: str, degree: int) -> None:
    topo = make_topology(name, 9, seed=0)
    assert (topo.adjacency == topo.adjacency.T).all() and not topo.adjacency.diagonal().any()
    assert (topo.adjacency.sum(axis=1) == degree).all() and is_connected(topo.adjacency)


@pytest.mark.parametrize("name", ["erdos-renyi", "geometric"])
def test_random_topologies_connected(name: str) -> None:
    for seed in range(5):
        assert is_connected(make_topology(name, 12, seed=seed).adjacency)


def test_mfeat_shapes_and_standardisation() -> None:
    data = load_dataset("mfeat")
    assert data.dims == {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
    assert len(data.train_labels) + len(data.test_labels) == 2000
    assert (np.bincount(np.concatenate([data.train_labels, data.test_labels])) == 200).all()
    np.testing.assert_allclose(data.train["fac"].mean(axis=0), 0.0, atol=1e-4)


@pytest.mark.parametrize("call,message", [
    (lambda: load_dataset("mfeat", ["fac", "nope"]), "unknown view 'nope'"),
    (lambda: dirichlet_partition(np.zeros(100, int), 3, -1.0), "alpha must be > 0"),
    (lambda: dirichlet_partition(np.zeros(100, int), 50, 1.0), "devices=50 need"),
    (lambda: make_topology("star", 5), "topology must be one of"),
    (lambda: make_topology("torus", 7), "torus needs"),
])
def test_config_errors_name_the_field(call, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()
