"""The round loop: energy accounting, drop-outs, measured speeds, reproducibility, policies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import learner.loop as loop
from learner.config import TrainConfig
from learner.loop import PolicyDecision, RoundState, build, run, uniform_policy
from learner.methods import MethodSpec, get_method, method_names, register_method
from metrics.variation import parameter_variation
from studies.training import run_train_full


def synthetic(**kw) -> TrainConfig:
    base = dict(dataset="synthetic", devices=4, rounds=4, n_samples=600, topology="ring")
    return TrainConfig(**{**base, **kw})


def uneven_tau(state: RoundState) -> np.ndarray:
    """Different counts per device, modality and round (1..3)."""
    K, M = state.holds.shape
    tau = 1 + (np.arange(K)[:, None] + np.arange(M)[None, :] + state.round) % 3
    return np.where(state.holds & state.active[:, None], tau, 0)


@pytest.mark.parametrize("fusion_rule", ["all", "training"])
def test_energy_accounting_matches_the_formula_by_hand(fusion_rule: str) -> None:
    cfg = synthetic(rounds=2, battery_j=1.0, fusion_rule=fusion_rule)
    result = run(cfg, uneven_tau, progress=False)
    s = build(cfg)
    # Per-iteration energies from first principles: kappa f^2 D_b cycles, cycles = 2 x params.
    params = np.array(s.net.block_sizes(), float)
    forward = 1e-28 * s.profile.cpu_hz[:, None] ** 2 * cfg.batch_size * 2 * params[None, :]
    np.testing.assert_allclose(s.profile.forward_j, np.where(s.holds, forward, 0), rtol=1e-12)
    np.testing.assert_allclose(s.profile.backward_j, 2 * s.profile.forward_j, rtol=1e-12)
    # Communication: p S / (B log2(1 + p g / (N0 B))), S = 32 x broadcast parameters.
    bits = 32 * ((s.holds * params).sum(1) + s.net.shared_size())
    dist = np.where(s.topology.adjacency, s.topology.distances_m, 0).max(1)
    gain = 1e-3 * np.maximum(dist, 1.0) ** -3.0
    noise = 10 ** (-17.4) * 1e-3
    rate = 1e6 * np.log2(1 + 0.1 * gain / (noise * 1e6))
    np.testing.assert_allclose(s.profile.comm_j, 0.1 * bits / rate, rtol=1e-9)
    spent = np.zeros(cfg.devices)
    for t in range(2):
        state = loop.round_state(s, t, np.ones(s.holds.shape), s.battery_j, np.ones(4, bool),
                                 np.zeros(s.holds.shape, np.int64))
        tau = uneven_tau(state)
        f, b = s.profile.forward_j, s.profile.backward_j
        if fusion_rule == "all":  # every held encoder runs forward in all L_k iterations
            compute = tau.max(1) * f.sum(1) + (tau * b).sum(1)
        else:  # a stopped encoder runs no forward pass either
            compute = (tau * (f + b)).sum(1)
        paid = compute + s.profile.comm_j
        rows = result.rows[result.rows["round"] == t].groupby("device")
        np.testing.assert_allclose(rows["energy_j"].first().to_numpy(), paid, rtol=1e-12)
        spent += paid
        np.testing.assert_allclose(rows["battery_j"].first().to_numpy(), 1.0 - spent, rtol=1e-12)
    assert result.summary["energy_used_j"] == pytest.approx(spent.sum(), rel=1e-12)


def test_device_without_battery_drops_is_reported_and_stops() -> None:
    cfg = synthetic(rounds=3, local_iters=1)
    s = build(cfg)
    cheapest = s.profile.cheapest_round(s.holds, 1)
    # A battery that pays one cheapest round on every device but not two on the dearest one.
    battery = float(cheapest.max() * 1.5)
    result = run(synthetic(rounds=3, battery_j=battery, local_iters=1), progress=False)
    drops = result.summary["dropped_devices"]
    dearest = f"dev{int(np.argmax(cheapest))}"
    assert dearest in {d["device"] for d in drops}
    assert all(d["round"] >= 1 and "cannot pay the cheapest round" in d["reason"] for d in drops)
    assert [d["round"] for d in drops if d["device"] == dearest] == [1]
    after = result.rows[(result.rows["device"] == dearest) & (result.rows["round"] >= 1)]
    assert (after["tau"] == 0).all() and (after["energy_j"] == 0).all() and not after["active"].any()
    assert (result.rows["battery_j"] >= 0).all()
    assert result.rounds["active_devices"].iloc[-1] == 4 - len(drops)


def test_dropped_device_stops_training_and_gossiping() -> None:
    """A device told to drop keeps its parameters from then on (no training, no gossip)."""
    seen = []

    def drop_device_1_in_round_2(state: RoundState) -> PolicyDecision:
        decision = uniform_policy(state)
        if state.round == 2:
            decision.dropped.append(1)
            decision.tau[1] = 0
        return decision

    cfg = synthetic(rounds=3)
    original = loop.evaluate

    def spy(s, active, *args, **kwargs):
        seen.append([t.detach()[1].clone() for t in s.net.parameters()])
        return original(s, active, *args, **kwargs)

    loop.evaluate = spy
    try:
        result = run(cfg, drop_device_1_in_round_2, progress=False)
    finally:
        loop.evaluate = original
    assert result.summary["dropped_devices"] == [
        {"round": 2, "device": "dev1", "reason": "policy: cannot pay the cheapest round"}]
    assert all(torch.equal(a, b) for a, b in zip(seen[1], seen[2]))  # frozen from round 2 on
    assert not all(torch.equal(a, b) for a, b in zip(seen[0], seen[1]))  # moved in round 1


def test_overspending_policy_is_reported_not_paid() -> None:
    def greedy(state: RoundState) -> np.ndarray:
        return np.where(state.holds, state.tau_max, 0)

    cfg = synthetic(rounds=2, local_iters=1)
    result = run(cfg, greedy, progress=False)
    drops = result.summary["dropped_devices"]
    first = [d for d in drops if d["round"] == 0]
    assert first and all("policy's tau costs" in d["reason"] for d in first)
    assert result.summary["energy_used_j"] <= result.summary["battery_total_j"]


def test_loop_variation_is_the_formula_on_the_trained_parameters(monkeypatch) -> None:
    captured = []
    original = loop.local_training

    def spy(net, *args, **kwargs):
        start = [[t.detach().clone() for t in b.values()] for b in net.blocks]
        out = original(net, *args, **kwargs)
        end = [[t.detach().clone() for t in b.values()] for b in net.blocks]
        captured.append((start, end, args[1].copy()))  # args: data, tau, ...
        return out

    monkeypatch.setattr(loop, "local_training", spy)

    result = run(synthetic(rounds=2, battery_j=1e9), uneven_tau, progress=False)
    rows = result.rows.set_index(["round", "device", "modality"])
    views = list(result.setup.data.views)
    for t, (start, end, tau) in enumerate(captured):
        for k in range(tau.shape[0]):
            for m, view in enumerate(views):
                s = torch.cat([p[k].reshape(-1) for p in start[m]]).numpy()
                e = torch.cat([p[k].reshape(-1) for p in end[m]]).numpy()
                expected = parameter_variation(s, e, int(tau[k, m]))
                assert rows.loc[(t, f"dev{k}", view), "tau"] == tau[k, m]
                assert rows.loc[(t, f"dev{k}", view), "v"] == pytest.approx(expected, rel=1e-12)


def test_short_synthetic_run_learns_and_is_reproducible() -> None:
    a = run(synthetic(rounds=5), progress=False)
    b = run(synthetic(rounds=5), progress=False)
    assert a.summary["consensus_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert a.summary["accuracy"] > 0.5
    for key in ("accuracy", "consensus_accuracy", "modality_accuracy", "energy_used_j"):
        assert a.summary[key] == b.summary[key]
    assert a.rows.drop(columns=[]).equals(b.rows)
    c = run(synthetic(rounds=5, seed=1), progress=False)
    assert not c.rows["v"].equals(a.rows["v"])


def test_policy_sees_the_round_state_and_times_are_split() -> None:
    states = []

    def record(state: RoundState) -> PolicyDecision:
        states.append(state)
        return PolicyDecision(np.where(state.holds, 2, 0), {"status": "ok", "table": [1, 2]})

    result = run(synthetic(rounds=3), record, progress=False)
    assert [s.round for s in states] == [0, 1, 2]
    first = states[0]
    K, M = first.holds.shape
    assert first.speed.shape == first.forward_j.shape == first.backward_j.shape == (K, M)
    assert first.comm_j.shape == first.battery_j.shape == first.active.shape == (K,)
    assert (first.last_tau == 0).all() and (states[1].last_tau == np.where(first.holds, 2, 0)).all()
    assert (first.speed[first.holds] == 1.0).all()  # prior before anything is measured
    assert states[2].battery_j.sum() < first.battery_j.sum()
    assert set(result.rounds["status"]) == {"ok"} and "table" not in result.rounds
    assert result.summary["policy_time_s"] < result.summary["train_time_s"]


@pytest.mark.parametrize("method", ["dpsgd", "dmml-kd", "ogm-ge", "dmml-kd-nogen", "dmml-kd-nodecomp"])
def test_every_uniform_method_learns(method: str) -> None:
    result = run(synthetic(rounds=3, method=method), progress=False)
    assert result.summary["accuracy"] > 0.4 and result.summary["method"] == method


def test_method_registry() -> None:
    assert {"dpsgd", "dmml-kd", "ogm-ge", "dmml-kd-balance"} <= set(method_names())
    assert not get_method("dpsgd").decomposition and not get_method("dpsgd").kd
    assert get_method("ogm-ge").modulation == "ogm-ge"
    assert get_method("dmml-kd-balance").policy == "external"
    with pytest.raises(ValueError, match="needs an allocation policy"):
        run(synthetic(rounds=1, method="dmml-kd-balance"), progress=False)


def test_registered_method_runs_with_an_external_policy_array() -> None:
    spec = register_method(MethodSpec("test-external", decomposition=True, kd=True, policy="external"))
    assert get_method("test-external") is spec and "test-external" in method_names()
    with pytest.raises(ValueError, match="already registered"):
        register_method(MethodSpec("test-external", decomposition=False, kd=False))
    with pytest.raises(ValueError, match="modulation"):
        register_method(MethodSpec("test-bad", decomposition=False, kd=False, modulation="x"))
    result = run(synthetic(rounds=2, method="test-external"), policy=uneven_tau, progress=False)
    assert result.summary["method"] == "test-external"
    assert sorted(result.rows.query("round == 0")["tau"].unique()) == [1, 2, 3]


def test_uniform_policy_respects_battery() -> None:
    cfg = synthetic(rounds=1)
    s = build(cfg)
    battery = s.profile.cheapest_round(s.holds, 1) * 1.01
    state = RoundState(0, 1, ["a", "b", "c", "d"], list(s.data.views), s.holds,
                       np.ones(s.holds.shape), battery, s.profile.forward_j, s.profile.backward_j,
                       s.profile.comm_j, np.ones(4, bool), s.topology.adjacency, 1, 20, 5,
                       np.zeros(s.holds.shape, int))
    decision = uniform_policy(state)
    assert (decision.tau[s.holds] == 1).all() and not decision.dropped
    state.battery_j = battery * 0.5
    assert uniform_policy(state).dropped == [0, 1, 2, 3]


@pytest.mark.parametrize("solver", ["heuristic", "exact"])
def test_balanced_loop_runs_with_allocator_policies(solver: str) -> None:
    result = run_train_full(synthetic(rounds=3, method="dmml-kd-balance", solver=solver))
    hist = result.rounds
    assert set(hist["status"]) <= {"optimal", "feasible", "time_limit"}
    assert result.summary["energy_used_j"] <= result.summary["battery_total_j"] * (1 + 1e-9)


def test_balanced_method_gives_strong_modality_fewer_iterations() -> None:
    """Synthetic m0 is strong (signal 2), m1 weak (0.5): measured speeds differ, and so do tau."""
    result = run_train_full(synthetic(rounds=6, method="dmml-kd-balance"))
    later = result.rows[result.rows["round"] >= 2]
    v = later.groupby("modality")["v"].mean()
    tau = later.groupby("modality")["tau"].mean()
    assert v["m0"] > v["m1"]
    assert tau["m0"] < tau["m1"]


def test_compare_cli_writes_tables_and_figures(cli, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    code, stdout, err = cli("compare", "--dataset", "synthetic", "--devices", "3", "--rounds", "2",
                            "--seeds", "2", "--methods", "dmml-kd,dmml-kd-balance", "--jobs", "1",
                            "--out", str(out))
    assert code == 0, err
    assert "dmml-kd-balance" in stdout
    finals = __import__("pandas").read_csv(out / "final.csv")
    assert len(finals) == 4 and set(finals["seed"]) == {0, 1}
    # Same battery for every method: energy can only be spent from it.
    assert (finals["energy_used_j"] <= finals["energy_used_j"].max() + 1e-12).all()
    assert (out / "figures" / "curves.png").exists() and (out / "figures" / "tau_heatmap.png").exists()


def test_demo_allocation_part(cli) -> None:
    code, stdout, _ = cli("demo", "--skip-learning", "--alloc-devices", "12", "--time-limit", "5")
    assert code == 0 and "| network | heuristic |" in stdout

