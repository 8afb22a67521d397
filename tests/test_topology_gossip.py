"""Device graphs, channel gains and Metropolis–Hastings gossip among modality holders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dmmlkd.learner.errors import ConfigError
from dmmlkd.learner.gossip import gossip_average, metropolis_weights, modality_gossip
from dmmlkd.learner.topology import TOPOLOGIES, Topology, is_connected, make_topology, weakest_link_gain
from dmmlkd.metrics.energy import path_gain


@st.composite
def graphs_with_mask(draw):
    n = draw(st.integers(1, 10))
    bits = draw(st.lists(st.booleans(), min_size=n * n, max_size=n * n))
    upper = np.triu(np.array(bits, bool).reshape(n, n), 1)
    mask = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool)
    return upper | upper.T, mask


def _path(n: int) -> np.ndarray:
    adj = np.zeros((n, n), bool)
    adj[np.arange(n - 1), np.arange(1, n)] = True
    return adj | adj.T


# --- topologies ----------------------------------------------------------------------------


def test_is_connected_on_hand_graphs() -> None:
    assert is_connected(_path(5))
    two_parts = _path(4)
    two_parts[1, 2] = two_parts[2, 1] = False
    assert not is_connected(two_parts)
    assert is_connected(np.zeros((1, 1), bool))
    assert not is_connected(np.zeros((3, 3), bool))


@pytest.mark.parametrize("name,n", [(name, n) for name in TOPOLOGIES for n in (3, 9, 12, 16, 20)
                                     if not (name == "torus" and n == 3)])
def test_topologies_symmetric_connected_placed(name: str, n: int) -> None:
    topo = make_topology(name, n, seed=n)
    adj = topo.adjacency
    assert adj.dtype == bool and adj.shape == (n, n)
    assert (adj == adj.T).all() and not adj.diagonal().any() and is_connected(adj)
    assert topo.positions_m.shape == (n, 2)
    assert ((topo.positions_m >= 0) & (topo.positions_m <= 100.0)).all()
    degree = adj.sum(axis=1)
    if name in ("ring", "torus", "complete"):
        expected = {"ring": 2, "torus": 4, "complete": n - 1}[name]
        assert (degree == expected).all()
    for k in range(n):
        np.testing.assert_array_equal(topo.neighbors(k), np.flatnonzero(adj[k]))


def test_ring_and_torus_link_the_right_devices() -> None:
    ring = make_topology("ring", 6)
    assert set(ring.neighbors(0)) == {1, 5} and set(ring.neighbors(3)) == {2, 4}
    torus = make_topology("torus", 12)  # 3 rows x 4 columns, device = row * 4 + col
    # Device 0 = (0, 0): right (0, 1) = 1, left (0, 3) = 3, down (1, 0) = 4, up (2, 0) = 8.
    assert set(torus.neighbors(0)) == {1, 3, 4, 8}
    # Device 6 = (1, 2): 5, 7, 2, 10.
    assert set(torus.neighbors(6)) == {2, 5, 7, 10}


def test_distances_are_euclidean() -> None:
    topo = Topology.from_adjacency("hand", _path(3), np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 0.0]]))
    np.testing.assert_allclose(topo.distances_m, [[0, 5, 6], [5, 0, 5], [6, 5, 0]])
    assert topo.n_devices == 3


def test_geometric_is_the_unit_disk_graph_of_its_positions() -> None:
    topo = make_topology("geometric", 15, seed=4, side_m=50.0, radius_m=25.0)
    d = topo.distances_m
    expected = (d <= 25.0) & ~np.eye(15, dtype=bool)
    np.testing.assert_array_equal(topo.adjacency, expected)
    assert (topo.positions_m <= 50.0).all()


def test_erdos_renyi_probability_and_seed() -> None:
    assert make_topology("erdos-renyi", 8, p=1.0).adjacency.sum() == 8 * 7
    a = make_topology("erdos-renyi", 30, seed=5)
    b = make_topology("erdos-renyi", 30, seed=5)
    np.testing.assert_array_equal(a.adjacency, b.adjacency)
    np.testing.assert_array_equal(a.positions_m, b.positions_m)
    density = make_topology("erdos-renyi", 60, seed=1, p=0.3).adjacency.sum() / (60 * 59)
    assert abs(density - 0.3) < 0.05


@pytest.mark.parametrize("call,message", [
    (lambda: make_topology("star", 5), "topology must be one of ring, torus"),
    (lambda: make_topology("torus", 7), r"torus needs devices = r x c with r, c >= 3 \(got 7"),
    (lambda: make_topology("ring", 1), "devices must be >= 2"),
    (lambda: make_topology("geometric", 20, radius_m=1.0, max_tries=5), "disconnected"),
    (lambda: make_topology("erdos-renyi", 20, p=1e-3, max_tries=5), "disconnected"),
    (lambda: make_topology("erdos-renyi", 5, p=1.5), r"p must be in \(0, 1\]"),
    (lambda: make_topology("geometric", 5, radius_m=-2.0), "radius_m must be > 0"),
])
def test_topology_config_errors(call, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()


def test_weakest_link_gain_is_min_over_neighbours() -> None:
    topo = make_topology("geometric", 12, seed=2)
    expected = [min(path_gain(topo.distances_m[k, j], 2.5, 1e-2) for j in topo.neighbors(k))
                for k in range(12)]
    np.testing.assert_allclose(weakest_link_gain(topo, exponent=2.5, ref_gain=1e-2), expected)
    hand = Topology.from_adjacency("hand", _path(3), np.array([[0.0, 0.0], [10.0, 0.0], [30.0, 0.0]]))
    # Device 1 must reach device 2 at 20 m: 1e-3 * 20^-3.
    np.testing.assert_allclose(weakest_link_gain(hand), [1e-6, 1e-3 / 8000, 1e-3 / 8000])


# --- Metropolis–Hastings weights -----------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(graphs_with_mask())
def test_metropolis_weights_symmetric_doubly_stochastic(graph) -> None:
    adj, mask = graph
    for m in (None, mask):
        w = metropolis_weights(adj, m)
        np.testing.assert_allclose(w, w.T)
        np.testing.assert_allclose(w.sum(axis=0), 1.0)
        np.testing.assert_allclose(w.sum(axis=1), 1.0)
        assert (w >= 0).all()
        allowed = adj if m is None else adj & m[:, None] & m[None, :]
        off = ~np.eye(len(adj), dtype=bool)
        assert (w[off & ~allowed] == 0).all() and (w[off & allowed] > 0).all()
    w = metropolis_weights(adj, mask)
    np.testing.assert_array_equal(w[~mask], np.eye(len(adj))[~mask])  # non-holders: identity


def test_metropolis_weights_by_hand() -> None:
    # Path 0-1-2: degrees 1, 2, 1; every edge touches device 1, so W = 1/3 on both edges.
    w = metropolis_weights(_path(3))
    np.testing.assert_allclose(w, [[2 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3], [0, 1 / 3, 2 / 3]])
    # Path 0-1-2-3 with device 2 not holding: holders' subgraph is the edge 0-1 and lone 3.
    w = metropolis_weights(_path(4), np.array([True, True, False, True]))
    expected = np.array([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(w, expected)
    # Self loops in the adjacency are ignored.
    loopy = _path(3) | np.eye(3, dtype=bool)
    np.testing.assert_allclose(metropolis_weights(loopy), metropolis_weights(_path(3)))


# --- gossip --------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(graphs_with_mask(), st.integers(0, 10_000))
def test_gossip_keeps_holder_average_and_non_holders(graph, seed: int) -> None:
    adj, mask = graph
    x = torch.as_tensor(np.random.default_rng(seed).normal(size=(len(adj), 3, 2)))
    y = modality_gossip(x, adj, mask)
    assert y.shape == x.shape and y.dtype == x.dtype
    held = torch.as_tensor(mask)
    if mask.any():
        torch.testing.assert_close(y[held].mean(0), x[held].mean(0))
    torch.testing.assert_close(y[~held], x[~held], rtol=0, atol=0)


def test_gossip_average_is_w_times_x() -> None:
    rng = np.random.default_rng(0)
    w = metropolis_weights(make_topology("erdos-renyi", 6, seed=0).adjacency)
    x = torch.as_tensor(rng.normal(size=(6, 2, 3)), dtype=torch.float32)
    expected = torch.stack([sum(float(w[k, j]) * x[j] for j in range(6)) for k in range(6)])
    torch.testing.assert_close(gossip_average(x, w), expected)
    torch.testing.assert_close(gossip_average(x, torch.as_tensor(w)), expected)
    with pytest.raises(ValueError, match="do not match"):
        gossip_average(x, np.eye(5))


def test_repeated_gossip_converges_to_holder_average() -> None:
    topo = make_topology("ring", 10, seed=0)
    holds_m = np.zeros(10, bool)
    holds_m[[2, 3, 4, 5, 6]] = True  # an arc of the ring: a connected holder subgraph
    x = torch.as_tensor(np.random.default_rng(1).normal(size=(10, 4)))
    w = metropolis_weights(topo.adjacency, holds_m)
    y = x.clone()
    for _ in range(400):
        y = gossip_average(y, w)
    held = torch.as_tensor(holds_m)
    torch.testing.assert_close(y[held], x[held].mean(0).expand(5, 4))
    torch.testing.assert_close(y[~held], x[~held], rtol=0, atol=0)


def test_disconnected_holders_average_within_components() -> None:
    topo = make_topology("ring", 6)
    holds_m = np.array([True, True, False, True, True, False])  # components {0, 1} and {3, 4}
    x = torch.arange(6, dtype=torch.float64).reshape(6, 1) ** 2  # 0, 1, 4, 9, 16, 25
    y = x.clone()
    w = metropolis_weights(topo.adjacency, holds_m)
    for _ in range(60):
        y = gossip_average(y, w)
    expected = torch.tensor([[0.5], [0.5], [4.0], [12.5], [12.5], [25.0]], dtype=torch.float64)
    torch.testing.assert_close(y, expected)
