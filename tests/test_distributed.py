"""torch.distributed: exchange plans, layout-free random streams, and `train --nproc 2` giving
the in-process run's numbers (2 local gloo processes)."""

from __future__ import annotations

import functools
import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dmmlkd.learner.distributed import block_bounds, make_halo
from dmmlkd.learner.local import LocalData
from dmmlkd.learner.methods import method_names
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


def test_a_block_draws_its_rows_of_the_whole_stream() -> None:
    """LocalData.batch with a layout keeps a block's rows of the draw for every device, and
    leaves the generator where a draw for every device leaves it."""
    parts = [np.arange(10 * k, 10 * k + 3 + k) for k in range(10)]
    data = LocalData.create([np.zeros((100, 1), np.float32)], np.zeros(100, np.int64), parts)
    block = LocalData.create([np.zeros((100, 1), np.float32)], np.zeros(100, np.int64), parts[3:7])
    whole_rng, block_rng = np.random.default_rng(4), np.random.default_rng(4)
    for _ in range(2):
        expected = data.batch(5, whole_rng)
        np.testing.assert_array_equal(block.batch(5, block_rng, (3, 10)), expected[3:7])
    assert whole_rng.random() == block_rng.random()


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
    # An error raised inside the ranks (the partition) comes back as the same one line.
    out = tmp_path / "never"
    code, _, err = cli("train", "--dataset", "mfeat", "--devices", "161", "--nproc", "2",
                       "--out", str(out), "--quiet")
    assert code == 2 and "at most 144 devices" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# Wall-clock columns (everything else, simulated time included, must be equal to the bit).
_TIMING = ["policy_time_s", "train_time_s", "solver_time_s", "policy_policy_time_s",
           "wall_time_s"]
_PARITY_BASE = {"dataset": "synthetic", "devices": 5, "rounds": 3, "n_samples": 150,
                "topology": "erdos-renyi", "missing_rate": 0.3, "battery_scale": 0.9}
_PARITY_CASES = [{"config": {**_PARITY_BASE, "method": m}} for m in method_names()] + [
    # OGM-GE's gradient noise with uneven iteration counts: blocks run different numbers of
    # iterations, and some block has no device updating a modality another block updates.
    {"config": {**_PARITY_BASE, "method": "ogm-ge", "fusion_rule": "all"}, "schedule": True},
    # A diverging run stops in the same round on every process (its loss is nan in round 1).
    {"config": {**_PARITY_BASE, "method": "dmml-kd", "lr": 1.0, "rounds": 6}, "diverges": 1}]
_IDS = [c["config"]["method"] + ("+schedule" if c.get("schedule") else "")
        + ("+diverged" if "diverges" in c else "") for c in _PARITY_CASES]


@functools.cache
def _gloo_tables(world: int) -> list[Any]:
    """Every parity case run with the gloo backend in ``world`` processes, all in one launch."""
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "cases.json").write_text(json.dumps(_PARITY_CASES))
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               f"--nproc-per-node={world}",
                               str(Path(__file__).with_name("parity_ranks.py")),
                               str(tmp / "cases.json"), str(tmp / "out.pkl")],
                              capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        with open(tmp / "out.pkl", "rb") as f:
            return list(pickle.load(f))


def _check_parity(world: int, i: int) -> None:
    from parity_ranks import run_case

    one = run_case(_PARITY_CASES[i])
    rows, rounds, summary = _gloo_tables(world)[i]
    pd.testing.assert_frame_equal(rows, one.rows, check_exact=True)
    pd.testing.assert_frame_equal(rounds.drop(columns=_TIMING, errors="ignore"),
                                  one.rounds.drop(columns=_TIMING, errors="ignore"),
                                  check_exact=True)
    assert json.dumps({k: v for k, v in summary.items() if k not in _TIMING}, sort_keys=True) == \
        json.dumps({k: v for k, v in one.summary.items() if k not in _TIMING}, sort_keys=True)
    case = _PARITY_CASES[i]
    if "diverges" in case:
        assert one.summary["status"] == "diverged" and len(one.rounds) == case["diverges"] + 1
    else:
        assert len(one.rounds) == 3 and one.summary["status"] == "ok"
    if case.get("schedule"):  # the case exercises what it is meant to: some round
        # where the blocks' longest devices run different iteration counts
        longest = one.rows.groupby(["round", "device"])["tau"].max().unstack()
        bounds = block_bounds(longest.shape[1], world)
        per_block = [longest.iloc[:, bounds[r]:bounds[r + 1]].max(axis=1) for r in range(world)]
        assert any((b != per_block[0]).any() for b in per_block[1:])


@pytest.mark.parametrize("i", range(len(_PARITY_CASES)), ids=_IDS)
def test_nproc_2_is_bit_identical_to_in_process_for_every_method(i: int) -> None:
    """Every registered method (and OGM-GE under uneven tau): 2 gloo processes give the
    in-process run's tables to the bit (one launch for all cases, ~20 s)."""
    _check_parity(2, i)


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(_PARITY_CASES)), ids=_IDS)
def test_nproc_3_is_bit_identical_to_in_process_for_every_method(i: int) -> None:
    """The same with 3 processes (blocks of 2, 2 and 1 devices)."""
    _check_parity(3, i)
