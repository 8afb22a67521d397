"""In-process scale: sparse gossip, edge-list graphs, neighbour-only generator training and
sampled evaluation, each checked against the dense O(K^2) construction it replaces."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dmmlkd.learner.config import TrainConfig
from dmmlkd.learner.errors import ConfigError
from dmmlkd.learner.evaluate import consensus_network, device_accuracy, eval_devices, evaluate
from dmmlkd.learner.generator import Generator, train_generator
from dmmlkd.learner.gossip import gossip_average, metropolis_weights, mixing
from dmmlkd.learner.loop import build, run
from dmmlkd.learner.models import predict
from dmmlkd.learner.partition import dirichlet_partition
from dmmlkd.learner.topology import Topology, edges_connected, is_connected, make_topology
from dmmlkd.metrics.accuracy import accuracy


@st.composite
def graphs_with_mask(draw):
    n = draw(st.integers(2, 12))
    bits = draw(st.lists(st.booleans(), min_size=n * n, max_size=n * n))
    upper = np.triu(np.array(bits, bool).reshape(n, n), 1)
    mask = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool)
    return upper | upper.T, mask


def _topology(adj: np.ndarray) -> Topology:
    return Topology.from_adjacency("hand", adj, np.zeros((len(adj), 2)))


# --- graphs as edge lists ------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(graphs_with_mask())
def test_edge_list_round_trips_and_connectivity_matches_bfs(graph) -> None:
    adj, _ = graph
    topo = _topology(adj)
    np.testing.assert_array_equal(topo.adjacency, adj)
    np.testing.assert_array_equal(topo.sparse_adjacency().toarray(), adj)
    np.testing.assert_array_equal(topo.degree, adj.sum(1))
    for k in range(len(adj)):
        np.testing.assert_array_equal(topo.neighbors(k), np.flatnonzero(adj[k]))
    assert edges_connected(len(adj), topo.edges) == is_connected(adj)


def test_random_graphs_equal_their_dense_construction() -> None:
    """The edge-list builders give the graphs of the dense K x K draws they replace."""
    n, seed = 300, 3
    rng = np.random.default_rng(seed)
    rng.uniform(0.0, 100.0, size=(n, 2))
    prob = 2 * math.log(n) / n
    upper = np.triu(rng.random((n, n)) < prob, 1)
    np.testing.assert_array_equal(make_topology("erdos-renyi", n, seed).adjacency, upper | upper.T)
    geo = make_topology("geometric", n, seed, radius_m=12.0)
    d = np.sqrt(((geo.positions_m[:, None] - geo.positions_m[None]) ** 2).sum(-1))
    np.testing.assert_array_equal(geo.adjacency, (d <= 12.0) & ~np.eye(n, dtype=bool))


def test_large_ring_needs_no_dense_matrix() -> None:
    topo = make_topology("ring", 100_000)
    assert topo.edges.shape == (100_000, 2) and topo.neighbor_table.shape == (100_000, 2)
    assert edges_connected(100_000, topo.edges)
    assert set(topo.neighbors(0)) == {1, 99_999}


# --- sparse Metropolis gossip --------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(graphs_with_mask(), st.booleans())
def test_mixing_is_the_dense_metropolis_matrix(graph, masked: bool) -> None:
    adj, mask = graph
    m = mask if masked else None
    mix = mixing(_topology(adj).neighbor_table, m)
    np.testing.assert_allclose(mix.dense(), metropolis_weights(adj, m), rtol=0, atol=1e-15)


@settings(max_examples=40, deadline=None)
@given(graphs_with_mask(), st.integers(0, 10_000))
def test_sparse_gossip_equals_dense_product(graph, seed: int) -> None:
    adj, mask = graph
    x = torch.as_tensor(np.random.default_rng(seed).normal(size=(len(adj), 3, 2)))
    table = _topology(adj).neighbor_table
    sparse = gossip_average(x, mixing(table, mask))
    torch.testing.assert_close(sparse, gossip_average(x, metropolis_weights(adj, mask)))
    held = torch.as_tensor(mask)
    torch.testing.assert_close(sparse[~held], x[~held], rtol=0, atol=0)  # non-holders untouched


def test_sparse_gossip_of_a_block_is_bitwise_the_full_step() -> None:
    """A device's result does not depend on which other devices are computed (distributed)."""
    from dmmlkd.learner.gossip import gossip_rows

    topo = make_topology("erdos-renyi", 40, seed=2)
    mix = mixing(topo.neighbor_table, np.random.default_rng(0).random(40) < 0.7)
    x = torch.randn(40, 5, 3, generator=torch.Generator().manual_seed(0))
    full = gossip_average(x, mix)
    rows = np.arange(13, 29)
    part = gossip_rows(x[rows], mix, rows, source=x)
    assert torch.equal(part, full[rows])


# --- generator training over neighbours only -----------------------------------------------


def _dense_generator_step(generator, w, b, adj, active, steps, batch, lr, gen):
    """The replaced O(K^2 B) implementation: every generator against every classifier."""
    from dmmlkd.learner.generator import _adam_step

    K = w.shape[0]
    listen = torch.as_tensor((adj | np.eye(K, dtype=bool)) & active[None, :] & active[:, None],
                             dtype=torch.float32)
    weights = listen / listen.sum(dim=1, keepdim=True).clamp(min=1.0)
    mask = torch.as_tensor(active, dtype=torch.float32)
    for _ in range(steps):
        labels = torch.randint(0, generator.n_classes, (K, batch), generator=gen)
        feats = generator.sample(labels, gen)
        logits = torch.einsum("kbf,jfc->kjbc", feats, w) + b[None, :, None, :]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                             labels[:, None, :].expand(K, K, batch).reshape(-1),
                             reduction="none").reshape(K, K, batch).mean(-1)
        loss = ((weights * ce).sum(dim=1) * mask).sum()
        for p in generator.params.values():
            p.grad = None
        loss.backward()
        _adam_step(generator, mask, lr)


@pytest.mark.parametrize("name", ["ring", "erdos-renyi"])
def test_neighbour_generator_training_equals_dense(name: str) -> None:
    K, C, f = 12, 5, 8
    topo = make_topology(name, K, seed=1)
    active = np.ones(K, bool)
    active[[3, 7]] = False
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(K, f, C, generator=g), torch.randn(K, C, generator=g)
    sparse, dense = (Generator.create(K, C, f, noise_dim=4, hidden=6, seed=2) for _ in range(2))
    train_generator(sparse, w, b, topo.neighbor_table, active, 3, 7, 0.01,
                    torch.Generator().manual_seed(5))
    _dense_generator_step(dense, w, b, topo.adjacency, active, 3, 7, 0.01,
                          torch.Generator().manual_seed(5))
    for key in sparse.params:
        torch.testing.assert_close(sparse.params[key], dense.params[key], rtol=1e-5, atol=1e-6)
        assert torch.equal(sparse.params[key][3], Generator.create(K, C, f, 4, 6, 2).params[key][3])


def test_generator_block_draws_the_same_numbers_as_the_whole() -> None:
    K, C = 10, 4
    whole = Generator.create(K, C, 6, noise_dim=3, hidden=5, seed=0)
    block = Generator({k: v.detach()[4:7].clone() for k, v in whole.params.items()}, C, 3,
                      layout=(4, K))
    labels = torch.randint(0, C, (K, 8), generator=torch.Generator().manual_seed(1))
    full = whole.sample(labels, torch.Generator().manual_seed(9))
    part = block.sample(labels[4:7], torch.Generator().manual_seed(9))
    assert torch.equal(part, full[4:7])


# --- evaluation ----------------------------------------------------------------------------


def _cfg(**kw) -> TrainConfig:
    base = dict(dataset="synthetic", devices=9, rounds=3, n_samples=700, topology="ring")
    return TrainConfig(**{**base, **kw})


def test_device_accuracy_in_chunks_equals_one_prediction_per_device(monkeypatch) -> None:
    import dmmlkd.learner.evaluate as ev

    s = build(_cfg())
    views = [torch.as_tensor(s.data.test[v]) for v in s.data.views]
    y = s.data.test_labels
    # Oracle: the K x N x C logits the old evaluation built in one go.
    logits = predict(s.net, views, torch.as_tensor(s.holds))
    expected = [accuracy(logits[k], y) for k in range(9)]
    monkeypatch.setattr(ev, "_CHUNK_FLOATS", 1)  # one device per chunk
    rows = np.arange(9)
    np.testing.assert_array_equal(device_accuracy(s.net, s.holds, views, y, rows), expected)
    active = np.ones(9, bool)
    active[4] = False
    out = evaluate(s, active, views, y, devices=np.array([1, 4, 6]))
    assert out["evaluated"] == 2 and np.isnan(out["device"][[0, 2, 3, 4, 5, 7, 8]]).all()
    assert out["accuracy"] == pytest.approx((expected[1] + expected[6]) / 2)


def test_consensus_is_the_mean_over_active_holders() -> None:
    s = build(_cfg())
    with torch.no_grad():
        for t in s.net.parameters():
            t.add_(torch.randn(t.shape, generator=torch.Generator().manual_seed(t.numel())))
    active = np.ones(9, bool)
    active[2] = False
    c = consensus_network(s, active)
    torch.testing.assert_close(c.shared["wf"][0], s.net.shared["wf"].detach()[active].mean(0))
    torch.testing.assert_close(c.blocks[1]["w1"][0], s.net.blocks[1]["w1"].detach()[active].mean(0))


def test_eval_devices_schedule_and_sample() -> None:
    cfg = _cfg(rounds=7, eval_every=3, eval_devices=4, devices=20)
    active = np.ones(20, bool)
    active[:5] = False
    rounds = [t for t in range(7) if eval_devices(cfg, t, active).size]
    assert rounds == [2, 5, 6]  # every 3rd round and the last
    pick = eval_devices(cfg, 2, active)
    assert pick.size == 4 and active[pick].all() and (np.diff(pick) > 0).all()
    np.testing.assert_array_equal(pick, eval_devices(cfg, 2, active))  # seeded
    assert not np.array_equal(pick, eval_devices(_cfg(rounds=7, eval_every=3, eval_devices=4,
                                                      devices=20, seed=1), 2, active))
    np.testing.assert_array_equal(eval_devices(_cfg(eval_devices=0, devices=20), 2, active),
                                  np.flatnonzero(active))


def test_sampled_evaluation_is_reported_and_rounds_without_it_are_nan() -> None:
    result = run(_cfg(rounds=3, eval_every=2, eval_devices=4), progress=False)
    hist = result.rounds
    assert list(hist["evaluated_devices"]) == [0, 4, 4]
    assert math.isnan(hist["accuracy"][0]) and not hist["consensus_accuracy"].isna().any()
    per_device = result.rows.groupby("round")["device_accuracy"].apply(lambda a: a.notna().sum())
    assert list(per_device) == [0, 4 * 2, 4 * 2]  # 2 modality rows per device
    summary = result.summary
    assert (summary["eval_every"], summary["eval_devices"], summary["evaluated_devices"]) == (2, 4, 4)


def test_eval_options_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"eval_every must be in \[1, "):
        _cfg(eval_every=0).validate()
    with pytest.raises(ConfigError, match=r"eval_devices must be in \[0, "):
        _cfg(eval_devices=-1).validate()


def test_mfeat_caps_out_at_160_devices() -> None:
    from dmmlkd.learner.data import load_dataset

    labels = load_dataset("mfeat", val_fraction=0.0).train_labels
    assert labels.size == 1600  # 160 devices x 10 samples by count
    with pytest.raises(ConfigError, match="training set has 1600: at most 160 devices"):
        dirichlet_partition(labels, 161, 1000.0, 10)
    parts = dirichlet_partition(labels, 155, 1000.0, 10)  # the draws need slack: 155 works
    assert min(p.size for p in parts) >= 10 and sum(p.size for p in parts) == 1600
    held_out = load_dataset("mfeat").train_labels  # default validation split 0.1
    with pytest.raises(ConfigError, match="training set has 1440: at most 144 devices"):
        dirichlet_partition(held_out, 145, 1000.0, 10)
    assert len(dirichlet_partition(held_out, 140, 1000.0, 10)) == 140


# --- the learner benchmark -----------------------------------------------------------------


def test_bench_sizes_data_to_25_training_samples_per_device() -> None:
    from dmmlkd.benchmarks.bench_learner import measure, n_samples_for

    for K in (8, 64):
        cfg = _cfg(devices=K, n_samples=n_samples_for(K), min_samples=5)
        s = build(cfg)
        assert abs(s.data.train_labels.size / K - 25) < 0.5  # the sizing, by count
    row = measure(4, 1)
    assert row["devices"] == 4 and row["s_per_round"] > 0 and row["peak_rss_gb"] > 0
    assert row["ms_per_device_round"] == pytest.approx(1e3 * row["s_per_round"] / 4)
    assert 0 < row["cpu_ms_per_device_round"]


def test_bench_targets_read_the_table() -> None:
    import pandas as pd

    from dmmlkd.benchmarks.bench_learner import targets

    frame = pd.DataFrame({"devices": [256, 4_096, 10_000], "rounds": [3, 3, 3],
                          "vs_256": [1.0, 1.2, 1.3], "peak_rss_gb": [1.0, 3.0, 9.5]})
    lines = targets(frame)
    assert "CPU time at 4,096 / at 256 = 1.20 (target <= 1.5): met" in lines[0]
    assert "peak RSS 9.50 GB (target <= 8): NOT met" in lines[1]


def test_bench_learner_cli_errors(cli, tmp_path) -> None:
    code, _, err = cli("bench", "learner", "--learner-sizes", "64,x")
    assert code == 2 and "--learner-sizes must be comma-separated integers" in err
    existing = tmp_path / "mine.md"
    existing.write_text("my notes")
    code, _, err = cli("bench", "learner", "--learner-sizes", "4", "--out", str(existing))
    assert code == 2 and "exists" in err and existing.read_text() == "my notes"
