"""dmmlkd.flower: the allocator as a Flower strategy, dmmlkd's learner as a ClientApp.

Independent truths: the allocator solved again on the state the strategy handed its policy
(per-node configurations), the energy and time formulas written out by hand from the fleet's
cycles, frequencies and upload costs (the ledger), Flower's own FedAvg run without the wrapper
(a uniform policy must give bit-identical global arrays), the batteries the fleet started
with (no node spends more), and the user's files (never touched).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flwr.app import ConfigRecord, Message
from flwr.serverapp.strategy import FedAvg

from dmmlkd.allocator import solve
from dmmlkd.bridge.dvfs import DvfsAllocatorPolicy, build_dvfs_problem
from dmmlkd.flower.app import CONTROL_POLICY, make_strategy, run_flower
from dmmlkd.flower.client import Fleet, array_record, initial_arrays, make_client_app
from dmmlkd.flower.inline import InlineGrid
from dmmlkd.flower.profile import NodeProfile
from dmmlkd.flower.strategy import CPU_KEY, PLAN_KEY, TAU_PREFIX, AllocatorStrategy
from dmmlkd.learner.config import TrainConfig
from dmmlkd.learner.policy import PolicyDecision, RoundState
from dmmlkd.metrics.energy import DEFAULT_CAPACITANCE
from dmmlkd.userio import MANIFEST
from dmmlkd.userio.options import AllocatorOptions


def tiny(**kw: Any) -> TrainConfig:
    """Synthetic data, 4 nodes, 2 rounds: the smallest run with distinct nodes."""
    base: dict[str, Any] = {"dataset": "synthetic", "devices": 4, "rounds": 2, "n_samples": 400}
    return TrainConfig(**{**base, **kw}).validate()


class RecordingGrid(InlineGrid):
    """An InlineGrid that keeps every train message it delivered and every reply."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.sent: list[tuple[int, int, dict[str, Any]]] = []  # (round, node, its plan)
        self.got: list[Message] = []

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        messages = list(messages)
        # Copied now: Flower's FedAvg reuses one config record across rounds.
        self.sent += [(int(m.content["config"]["server-round"]), m.metadata.dst_node_id,
                       dict(m.content[PLAN_KEY])) for m in messages
                      if m.metadata.message_type == "train" and PLAN_KEY in m.content]
        replies = list(super().send_and_receive(messages, timeout=timeout))
        self.got += [r for r in replies if r.metadata.message_type == "train"]
        return replies


class Recorder:
    """A policy that records what it saw and answered (wrapping another)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.calls: list[tuple[RoundState, PolicyDecision]] = []

    def __call__(self, state: RoundState) -> PolicyDecision:
        decision = self.policy(state)
        self.calls.append((state, decision))
        return decision


def run_strategy(config: TrainConfig, policy: Any) -> tuple[AllocatorStrategy, RecordingGrid, Fleet, Any]:
    fleet = Fleet.create(config)
    grid = RecordingGrid(make_client_app(config), config.devices)
    strategy = make_strategy(config, fleet, policy)
    result = strategy.start(grid, array_record(initial_arrays(fleet)), num_rounds=config.rounds)
    return strategy, grid, fleet, result


@pytest.mark.parametrize("solver", ["heuristic", "exact"])
def test_each_node_gets_the_allocators_row(solver: str) -> None:
    config = tiny(rounds=3)
    recorder = Recorder(DvfsAllocatorPolicy(options=AllocatorOptions(solver=solver)))
    strategy, grid, fleet, _ = run_strategy(config, recorder)
    s = fleet.setup
    views = list(s.data.views)
    forward, backward = s.profile.planning_energies()
    assert len(recorder.calls) == 3
    differs = False
    for t, (state, _) in enumerate(recorder.calls):
        rows = [int(name[3:]) for name in state.devices]  # devK -> device K of the fleet
        # The state is the fleet's, row for row (battery: full in round 1, the ledger's after).
        assert rows == list(range(config.devices))
        np.testing.assert_array_equal(state.holds, s.holds)
        np.testing.assert_array_equal(state.forward_j, forward)
        np.testing.assert_array_equal(state.backward_j, backward)
        np.testing.assert_array_equal(state.cpu_levels_hz, s.profile.levels_hz())
        assert state.deadline_s == s.deadline_s and state.rounds_total == 3 and state.round == t
        if t == 0:
            np.testing.assert_array_equal(state.battery_j, s.battery_j)
        # The allocator solved again on that state: its table is what each node was sent.
        problem, members, _, late = build_dvfs_problem(state)
        assert problem is not None and late.size == 0
        alloc = solve(problem, solver)
        sent = {node: plan for r, node, plan in grid.sent if r == t + 1}
        assert len(sent) == config.devices
        for i, k in enumerate(members):
            node = 1 + int(k)  # InlineGrid: node id 1 + partition
            record = sent[node]
            assert [record[f"{TAU_PREFIX}{v}"] for v in views] == alloc.tau[i].tolist()
            assert record[CPU_KEY] == pytest.approx(alloc.cpu_hz[i], rel=1e-12)
        differs |= len({tuple(r[f"{TAU_PREFIX}{v}"] for v in views) + (r[CPU_KEY],)
                        for r in sent.values()}) > 1
        # The ledger charges what the allocator planned for each node.
        ledger = strategy.ledger()
        this = ledger[ledger["round"] == t + 1].set_index("node")
        for i, k in enumerate(members):
            assert this.loc[f"dev{k}", "energy_j"] == pytest.approx(alloc.energy[i], rel=1e-9)
            assert this.loc[f"dev{k}", "time_s"] == pytest.approx(alloc.time_s[i], rel=1e-9)
    assert differs  # nodes differ (CPU, data), so does their work
    # Round 2 planned from round 1's reports: the speeds the policy saw are the variations
    # the nodes reported (the first measurement is taken as is).
    state2 = recorder.calls[1][0]
    for reply in grid.got[:config.devices]:
        k = reply.metadata.src_node_id - 1
        v = np.asarray(reply.content["metrics"]["variation"], float)
        np.testing.assert_allclose(state2.speed[k], np.where(v > 0, v, state2.speed[k]), rtol=0)


def test_ledger_is_the_energy_model_by_hand() -> None:
    config = tiny(rounds=3)
    strategy, grid, fleet, _ = run_strategy(config, DvfsAllocatorPolicy())
    s = fleet.setup
    views = list(s.data.views)
    ledger = strategy.ledger()
    assert len(ledger) == 3 * config.devices and (ledger["status"] == "ok").all()
    cf, cb = s.profile.cycles_forward, s.profile.cycles_backward
    assert cf is not None and cb is not None and s.profile.comm_s is not None
    spent = np.zeros(config.devices)
    for _, row in ledger.iterrows():
        k = int(row["node"][3:])
        tau = np.array([row[f"tau_{v}"] for v in views], float)
        # "training" fusion rule: modality m runs tau_m forward and tau_m backward passes.
        cycles = config.batch_size * float((tau * (cf[k] + cb[k])).sum())
        f = row["cpu_hz"]
        energy = DEFAULT_CAPACITANCE * f ** 2 * cycles + s.profile.comm_j[k]
        assert row["energy_j"] == pytest.approx(energy, rel=1e-12)
        assert row["executed_energy_j"] == pytest.approx(energy, rel=1e-12)
        assert row["time_s"] == pytest.approx(cycles / f + s.profile.comm_s[k], rel=1e-12)
        # What the node reports it ran is what it was asked to run.
        assert [row[f"forward_passes_{v}"] for v in views] == tau.astype(int).tolist()
        assert [row[f"backward_passes_{v}"] for v in views] == tau.astype(int).tolist()
        assert f in s.profile.levels_hz()[k]
        spent[k] += energy
        assert row["battery_j"] == pytest.approx(s.battery_j[k] - spent[k], rel=1e-9, abs=1e-15)
        assert row["late"] == (row["time_s"] > s.deadline_s * (1 + 1e-9))
    assert (spent <= s.battery_j * (1 + 1e-9)).all()
    rounds = strategy.rounds()
    by_round = ledger.groupby("round")["time_s"].max()
    np.testing.assert_allclose(rounds["round_time_s"], by_round.to_numpy(), rtol=0)
    assert strategy.totals()["sim_time_s"] == pytest.approx(by_round.sum(), rel=1e-12)


def test_uniform_policy_is_plain_fedavg_bit_for_bit() -> None:
    config = tiny(rounds=3)
    fleet = Fleet.create(config)
    start = initial_arrays(fleet)
    wrapped = make_strategy(config, fleet, CONTROL_POLICY)
    ours = wrapped.start(InlineGrid(make_client_app(config), config.devices),
                         array_record(start), num_rounds=config.rounds)
    plain = FedAvg(fraction_evaluate=0.0, min_available_nodes=config.devices).start(
        InlineGrid(make_client_app(config), config.devices), array_record(start),
        num_rounds=config.rounds, train_config=ConfigRecord({"local-iters": config.local_iters}))
    a = {k: v.numpy() for k, v in ours.arrays.items()}
    b = {k: v.numpy() for k, v in plain.arrays.items()}
    assert a.keys() == b.keys() and len(a) > 10
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    assert any(not np.array_equal(a[k], start[k]) for k in a)  # it did train
    assert (wrapped.ledger()[[c for c in wrapped.ledger() if c.startswith("tau_")]]
            == config.local_iters).all().all()


def test_small_batteries_drop_nodes_and_nobody_overspends() -> None:
    config = tiny(rounds=4)
    fleet = Fleet.create(config)
    # About two rounds of the median node: the dearer nodes run out first.
    config.battery_j = float(np.median(fleet.setup.battery_j)) / 2
    strategy, _, fleet, _ = run_strategy(config, DvfsAllocatorPolicy())
    ledger, totals = strategy.ledger(), strategy.totals()
    assert totals["dropped_nodes"], "some node must leave"
    for d in totals["dropped_nodes"]:
        assert d["reason"] and d["round"] >= 1
        later = ledger[(ledger["node"] == d["node"]) & (ledger["round"] >= d["round"])]
        assert later.empty  # a dropped node is never sent work again
    spent = ledger.groupby("node")["executed_energy_j"].sum()
    for node, used in spent.items():
        assert used <= config.battery_j * (1 + 1e-9), node
    assert (ledger["battery_j"] >= -1e-12).all() and totals["overspent_nodes"] == []


def test_profile_round_trips_through_a_config_record() -> None:
    fleet = Fleet.create(tiny())
    p = fleet.profiles[2]
    q = NodeProfile.from_config(dict(ConfigRecord(p.to_config())))  # type: ignore[arg-type]
    for key in ("name", "views", "comm_j", "comm_s", "battery_j", "batch_size", "num_examples"):
        assert getattr(q, key) == getattr(p, key)
    for key in ("holds", "forward_j", "backward_j", "cycles_forward", "cycles_backward",
                "cpu_levels_hz"):
        np.testing.assert_array_equal(getattr(q, key), getattr(p, key))
    with pytest.raises(ValueError, match="battery-j"):
        NodeProfile.from_config({k: v for k, v in p.to_config().items() if k != "battery-j"})


def test_cli_writes_both_runs(cli, tmp_path: Path) -> None:
    out = tmp_path / "fl"
    code, stdout, err = cli("flower", "--clients", "4", "--rounds", "2", "--views", "fac,zer,mor",
                            "--backend", "inline", "--quiet", "--out", str(out))
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"config.toml", "summary.json", "ledger.csv",
                                               "history.csv", MANIFEST}
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads(stdout) == summary
    assert set(summary) == {"allocator", "uniform", "allocator_minus_uniform"}
    ledger = pd.read_csv(out / "ledger.csv")
    for run in ("allocator", "uniform"):
        s, rows = summary[run], ledger[ledger["run"] == run]
        assert len(rows) == 2 * 4 and s["battery_total_j"] > s["energy_used_j"] > 0
        assert s["energy_used_j"] == pytest.approx(rows["energy_j"].sum(), rel=1e-12)
        assert s["executed_energy_j"] == pytest.approx(s["energy_used_j"], rel=1e-9)
        assert 0 <= s["accuracy"] <= 1 and s["sim_time_s"] > 0
    tau = ledger[ledger["run"] == "allocator"][["tau_fac", "tau_zer", "tau_mor", "cpu_hz"]]
    assert len(tau.drop_duplicates()) > 1  # per-node work differs
    assert (ledger[ledger["run"] == "uniform"][["tau_fac", "tau_zer", "tau_mor"]] == 5).all().all()


def test_cli_user_errors_are_one_line_and_touch_nothing(cli, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    for args, fragment in ((["--backend", "spark"], "backend"), (["--fraction", "0"], "fraction"),
                           (["--clients", "1"], "devices"), (["--workers", "0"], "workers"),
                           ([], "notes.txt")):
        code, _, err = cli("flower", "--dataset", "synthetic", "--rounds", "1", "--quiet",
                           "--out", str(out), *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err
        assert "Traceback" not in err
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_flower_simulation_equals_inline_run() -> None:
    """Flower's simulation engine (Ray workers, replies in any order) gives the inline run's
    numbers: the strategy orders replies by node, nodes seed from (seed, partition, round)."""
    config = tiny(rounds=2)
    ray_run = run_flower(config, backend="ray", quiet=True, workers=2)
    inline = run_flower(config, backend="inline", quiet=True)
    for key in ray_run.arrays:
        assert ray_run.arrays[key].tobytes() == inline.arrays[key].tobytes(), key
    cols = [c for c in inline.ledger if c != "node_id"]  # Flower's node ids are random
    pd.testing.assert_frame_equal(ray_run.ledger[cols], inline.ledger[cols])


def test_example_app_project_runs(tmp_path: Path) -> None:
    """examples/flower: its components, loaded as `flwr run` loads them, with its run config."""
    import importlib
    import sys

    import tomllib
    from flwr.app import Context, RecordDict

    root = Path(__file__).resolve().parents[1] / "examples" / "flower"
    project = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    run_config = {**project["config"], "num-server-rounds": 1, "clients": 3, "views": "fac,zer",
                  "out": str(tmp_path / "out")}
    sys.path.insert(0, str(root))
    try:
        apps = {}
        for role, spec in project["components"].items():
            module, attr = spec.split(":")
            apps[role] = getattr(importlib.import_module(module), attr)
    finally:
        sys.path.remove(str(root))
    grid = InlineGrid(apps["clientapp"], 3, run_config=run_config)
    apps["serverapp"](grid, Context(run_id=0, node_id=0, node_config={}, state=RecordDict(),
                                    run_config=run_config))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["allocator"]
    assert summary["clients"] == 3 and summary["views"] == ["fac", "zer"]
    ledger = pd.read_csv(tmp_path / "out" / "ledger.csv")
    assert len(ledger) == 3 and (ledger["status"] == "ok").all()


def test_sampled_runs_are_paired_and_reproducible() -> None:
    """With FedAvg sampling half the nodes, the allocator's run and the control train the same
    nodes each round, a rerun repeats it, and the battery total is the whole fleet's."""
    config = tiny(rounds=3)
    runs = [run_flower(config, policy, backend="inline", fraction_train=0.5, quiet=True)
            for policy in (DvfsAllocatorPolicy(), CONTROL_POLICY, DvfsAllocatorPolicy())]
    picked = [r.ledger.groupby("round")["node"].apply(tuple).tolist() for r in runs]
    assert picked[0] == picked[1] == picked[2]
    assert all(len(nodes) == 2 for nodes in picked[0]) and len(set(picked[0])) > 1
    pd.testing.assert_frame_equal(runs[0].ledger, runs[2].ledger)
    fleet = Fleet.create(config)
    for r in runs:
        assert r.summary["battery_total_j"] == pytest.approx(float(fleet.setup.battery_j.sum()))
