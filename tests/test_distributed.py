"""torch.distributed: exchange plans, layout-free random streams, and `train --nproc 2` giving
the in-process run's numbers (2 local gloo processes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dmmlkd.learner.distributed import BlockRng, block_bounds, make_halo
from dmmlkd.learner.topology import make_topology


def test_blocks_are_contiguous_and_balanced() -> None:
    np.testing.assert_array_equal(block_bounds(10, 3), [0, 4, 7, 10])
    np.testing.assert_array_equal(block_bounds(4, 4), [0, 1, 2, 3, 4])


@pytest.mark.parametrize("name,world", [("ring", 2), ("erdos-renyi", 3), ("geometric", 4)])
def test_halo_is_the_neighbours_on_other_ranks(name: str, world: int) -> None:
    topo = make_topology(name, 23, seed=1)
    adj = topo.adjacency
    bounds = block_bounds(23, world)
    halos = [make_halo(topo.neighbor_table, bounds, r) for r in range(world)]
    for r, h in enumerate(halos):
        lo, hi = bounds[r], bounds[r + 1]
        # Brute force from the dense adjacency: neighbours of the block outside the block.
        outside = sorted({int(j) for k in range(lo, hi) for j in np.flatnonzero(adj[k])
                          if not lo <= j < hi})
        assert sorted(np.concatenate(list(h.recv.values())).tolist()) == outside
        np.testing.assert_array_equal(h.ids[: hi - lo], np.arange(lo, hi))
        np.testing.assert_array_equal(h.index[h.ids], np.arange(h.ids.size))
        for q, rows in h.send.items():  # what r sends q is what q expects from r
            np.testing.assert_array_equal(rows + lo, halos[q].recv[r])


def test_block_rng_consumes_the_stream_like_one_process() -> None:
    whole = np.random.default_rng(4)
    block = BlockRng(np.random.default_rng(4), 3, 7, 10)
    for shape in [(10, 5), (10, 2)]:
        expected = whole.random(shape)
        np.testing.assert_array_equal(block.random((4, shape[1])), expected[3:7])


ARGS = ["--dataset", "synthetic", "--devices", "7", "--rounds", "3", "--topology", "erdos-renyi",
        "--method", "dmml-kd-balance", "--missing-rate", "0.3", "--battery-j", "0.03", "--quiet"]


def test_nproc_2_gives_the_in_process_results(cli, tmp_path: Path) -> None:
    """Uneven tau from the allocator (so blocks run different iteration counts), missing
    views (modality dropout draws), KD generator, a random graph crossing the blocks."""
    code, _, err = cli("train", *ARGS, "--out", str(tmp_path / "one"))
    assert code == 0, err
    code, stdout, err = cli("train", *ARGS, "--nproc", "2", "--out", str(tmp_path / "two"))
    assert code == 0, err
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert json.loads(stdout)["accuracy"] == two["accuracy"] and two["nproc"] == 2
    # The tolerances (on this machine the numbers are bit-identical).
    assert abs(one["accuracy"] - two["accuracy"]) <= 0.01
    assert abs(one["consensus_accuracy"] - two["consensus_accuracy"]) <= 0.01
    for v in one["modality_accuracy"]:
        assert abs(one["modality_accuracy"][v] - two["modality_accuracy"][v]) <= 0.01
    assert two["energy_used_j"] == pytest.approx(one["energy_used_j"], rel=1e-6)
    assert one["dropped_devices"] == two["dropped_devices"]
    assert two["executed_energy_j"] == pytest.approx(one["executed_energy_j"], rel=1e-6)
    assert two["sim_time_s"] == pytest.approx(one["sim_time_s"], rel=1e-9)
    assert one["validation"] is not None
    assert abs(one["validation"]["accuracy"] - two["validation"]["accuracy"]) <= 0.01
    assert one["validation"]["modality_accuracy"] == pytest.approx(
        two["validation"]["modality_accuracy"], abs=0.01)
    rows = [pd.read_parquet(tmp_path / d / "rounds.parquet") for d in ("one", "two")]
    longest = rows[0].groupby(["round", "device"])["tau"].max().unstack()
    assert (longest.iloc[:, :4].max(axis=1) != longest.iloc[:, 4:].max(axis=1)).all()  # blocks
    # of devices 0-3 and 4-6 ran different iteration counts in every round
    np.testing.assert_array_equal(rows[0]["tau"], rows[1]["tau"])
    np.testing.assert_allclose(rows[0]["v"], rows[1]["v"], rtol=1e-6)
    np.testing.assert_allclose(rows[0]["energy_j"], rows[1]["energy_j"], rtol=1e-12)


def test_nproc_user_errors_are_one_line(cli, tmp_path: Path) -> None:
    code, _, err = cli("train", "--dataset", "synthetic", "--devices", "3", "--nproc", "4",
                       "--quiet")
    assert code == 2 and "nproc 4 exceeds devices 3" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("train", "--dataset", "synthetic", "--devices", "3", "--method", "ogm-ge",
                       "--nproc", "2", "--quiet")
    assert code == 2 and "not supported with --nproc" in err
    # An error raised inside the ranks (the partition) comes back as the same one line.
    out = tmp_path / "never"
    code, _, err = cli("train", "--dataset", "mfeat", "--devices", "161", "--nproc", "2",
                       "--out", str(out), "--quiet")
    assert code == 2 and "at most 144 devices" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
