"""The round loop: energy accounting, drop-outs, measured speeds, reproducibility, policies."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import dmmlkd.learner.loop as loop
from dmmlkd.bridge.training import run_train_full
from dmmlkd.learner.config import TrainConfig
from dmmlkd.learner.loop import build, run
from dmmlkd.learner.methods import MethodSpec, get_method, method_names, register_method
from dmmlkd.learner.policy import PolicyDecision, RoundState
from dmmlkd.learner.schedules import uniform_policy
from dmmlkd.metrics.variation import parameter_variation


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
        {"round": 2, "device": "dev1", "reason": "policy: cannot pay the cheapest round",
         "depleted": True}]
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
        return PolicyDecision(np.where(state.holds, 2, 0), {"status": "ok", "loss": 7.0},
                              predicted_progress=np.full(state.holds.shape, 0.25))

    result = run(synthetic(rounds=3), record, progress=False)
    assert [s.round for s in states] == [0, 1, 2]
    first = states[0]
    K, M = first.holds.shape
    assert first.speed.shape == first.forward_j.shape == first.backward_j.shape == (K, M)
    assert first.comm_j.shape == first.battery_j.shape == first.active.shape == (K,)
    assert (first.last_tau == 0).all() and (states[1].last_tau == np.where(first.holds, 2, 0)).all()
    assert (first.speed[first.holds] == 1.0).all()  # prior before anything is measured
    assert states[2].battery_j.sum() < first.battery_j.sum()
    assert set(result.rounds["status"]) == {"ok"}
    # A policy's info never overwrites the loop's own columns; its predicted progress is kept.
    assert (result.rounds["policy_loss"] == 7.0).all() and (result.rounds["loss"] != 7.0).all()
    assert (result.rows["predicted_progress"] == 0.25).all()
    # Per-round times in the history, their totals in the summary.
    assert result.rounds["policy_time_s"].sum() == pytest.approx(result.summary["policy_time_s"])
    assert result.rounds["train_time_s"].sum() == pytest.approx(result.summary["train_time_s"])
    assert result.summary["policy_time_s"] < result.summary["train_time_s"]


def test_policy_info_must_be_scalars() -> None:
    def tabled(state: RoundState) -> PolicyDecision:
        return PolicyDecision(np.where(state.holds, 2, 0), {"table": [1, 2]})

    with pytest.raises(ValueError, match="'table' is not a scalar"):
        run(synthetic(rounds=1), tabled, progress=False)


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
    state = RoundState(round=0, rounds_total=1, devices=["a", "b", "c", "d"],
                       modalities=list(s.data.views), holds=s.holds, speed=np.ones(s.holds.shape),
                       battery_j=battery, forward_j=s.profile.forward_j,
                       backward_j=s.profile.backward_j, comm_j=s.profile.comm_j,
                       active=np.ones(4, bool), adjacency=s.topology.adjacency, tau_min=1,
                       tau_max=20, local_iters=5, last_tau=np.zeros(s.holds.shape, int))
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
    # Same battery for every method: uniform dmml-kd spends all of it, nobody spends more, and
    # what was charged is what the executed passes cost.
    battery = finals["battery_total_j"]
    np.testing.assert_allclose(finals.query("method == 'dmml-kd'")["energy_used_j"],
                               finals.query("method == 'dmml-kd'")["battery_total_j"], rtol=1e-9)
    assert (finals["energy_used_j"] <= battery * (1 + 1e-9)).all()
    np.testing.assert_allclose(finals["executed_energy_j"], finals["energy_used_j"], rtol=1e-9)
    paired = __import__("pandas").read_csv(out / "paired.csv")
    assert set(paired["method"]) == {"dmml-kd-balance"} and set(paired["reference"]) == {"dmml-kd"}
    weak = paired.query("metric == 'weakest_view_accuracy'").iloc[0]
    by_seed = finals.pivot(index="seed", columns="method", values="weakest_view_accuracy")
    assert weak.mean_diff == pytest.approx((by_seed["dmml-kd-balance"] - by_seed["dmml-kd"]).mean())
    assert weak.seeds == 2 and weak.ci_low <= weak.mean_diff <= weak.ci_high
    assert "Paired differences against dmml-kd" in stdout
    code, _, err = cli("compare", "--dataset", "synthetic", "--methods", "dmml-kd", "--reference",
                       "dpsgd", "--out", str(tmp_path / "bad"))
    assert code == 2 and "reference 'dpsgd' is not among the methods" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    assert (out / "figures" / "curves.png").exists() and (out / "figures" / "tau_heatmap.png").exists()


def test_demo_allocation_part(cli) -> None:
    code, stdout, _ = cli("demo", "--skip-learning", "--alloc-devices", "12", "--time-limit", "5")
    assert code == 0 and "| network | heuristic |" in stdout



@pytest.mark.parametrize("fusion_rule", ["all", "training"])
@pytest.mark.parametrize("policy", ["uniform", "uneven", "allocator", "idle"])
def test_executed_energy_equals_charged_energy(fusion_rule: str, policy: str) -> None:
    """Energy derived from the executed passes (counted in local training) equals the energy
    charged from the policy's tau, per device and round, for every kind of schedule."""
    def idle_device_0(state: RoundState) -> PolicyDecision:
        decision = uniform_policy(state)
        decision.tau[0] = 0  # active but given nothing: it must neither pay nor gossip
        return decision

    cfg = synthetic(rounds=3, fusion_rule=fusion_rule,
                    method="dmml-kd-balance" if policy == "allocator" else "dmml-kd")
    chosen = {"uniform": None, "uneven": uneven_tau, "idle": idle_device_0}
    result = run_train_full(cfg) if policy == "allocator" else run(cfg, chosen[policy], progress=False)
    rows = result.rows
    np.testing.assert_allclose(rows["executed_energy_j"], rows["energy_j"], rtol=1e-9, atol=0)
    np.testing.assert_allclose(result.rounds["executed_energy_j"], result.rounds["energy_used_j"],
                               rtol=1e-9)
    assert result.summary["executed_energy_j"] == pytest.approx(result.summary["energy_used_j"],
                                                                rel=1e-9)
    assert result.summary["energy_used_j"] > 0
    # The counts behind it: backward passes are tau; forward passes tau ("training") or L_k.
    assert (rows["backward_passes"] == rows["tau"]).all()
    if fusion_rule == "training":
        assert (rows["forward_passes"] == rows["tau"]).all()
    if policy == "idle":
        assert (rows.query("device == 'dev0'")["executed_energy_j"] == 0).all()


@pytest.mark.parametrize("rounds", [4, 5])
def test_random_schedule_spends_exactly_uniforms_energy(rounds: int) -> None:
    """Views of unequal cost (dims 160 and 8): each round moves ± 1 iteration between a device's
    views at random; each pair of rounds, and the run, costs exactly what uniform costs (the
    last pair included, where the battery holds exactly what is left)."""
    cfg = synthetic(rounds=rounds, synthetic_dims=[160, 8], local_iters=3)
    uniform = run(cfg, progress=False)
    rand = run(replace(cfg, method="random-schedule"), progress=False)
    s = build(cfg)
    assert s.profile.forward_j[0, 0] > 1.5 * s.profile.forward_j[0, 1]  # the views cost differently
    tau = rand.rows.pivot_table(index=["device", "round"], columns="modality", values="tau")
    rnd = tau.index.get_level_values("round")
    early = tau[rnd < 4]
    assert set(early.stack()) == {2, 4}  # local_iters ± 1 in every paired round
    assert ((early["m0"] - 3) == -(early["m1"] - 3)).all()  # one view up, the other down
    pairs = early.groupby([early.index.get_level_values("device"), rnd[rnd < 4] // 2]).sum()
    assert (pairs == 6).all().all()  # each view: exactly 2 x local_iters over a pair
    assert (tau[rnd == 4] == 3).all().all()  # an odd last round is uniform
    assert early["m0"].nunique() == 2 and len({tuple(g) for _, g in early.groupby(level=0)["m0"]}) > 1
    per_round = rand.rows.groupby("round")["energy_j"].sum()
    uni_round = uniform.rows.groupby("round")["energy_j"].sum()
    assert not np.allclose(per_round, uni_round)  # single rounds differ ...
    np.testing.assert_allclose(per_round.groupby(per_round.index // 2).sum(),
                               uni_round.groupby(uni_round.index // 2).sum(), rtol=1e-12)
    assert rand.summary["energy_used_j"] == pytest.approx(uniform.summary["energy_used_j"], rel=1e-12)
    assert rand.summary["energy_used_j"] == pytest.approx(rand.summary["battery_total_j"], rel=1e-9)
    assert not rand.summary["dropped_devices"]


def test_random_schedule_spread_is_validated() -> None:
    with pytest.raises(ValueError, match="schedule_spread"):
        run(synthetic(method="random-schedule", local_iters=1), progress=False)


def test_modality_dropout_method_drops_views_and_nothing_else() -> None:
    s = build(synthetic(method="modality-dropout"))
    assert loop.effective_dropout(s) == 0.5  # the tuned default (docs/results.md)
    assert loop.effective_dropout(build(synthetic(method="modality-dropout", modality_dropout=0.1))) == 0.1
    assert loop.effective_dropout(build(synthetic(method="modality-dropout", dropout_rate=0.3))) == 0.3
    assert loop.effective_dropout(build(synthetic(dropout_rate=0.5))) == 0.0  # dmml-kd: no dropout
    assert loop.effective_dropout(build(synthetic())) == 0.0
    a = run(synthetic(rounds=2), progress=False)
    b = run(synthetic(rounds=2, method="modality-dropout"), progress=False)
    assert a.summary["energy_used_j"] == b.summary["energy_used_j"]
    assert (a.rows["tau"] == b.rows["tau"]).all() and a.summary["accuracy"] != b.summary["accuracy"]


def test_summary_reports_validation_metrics_from_the_validation_split() -> None:
    result = run(synthetic(rounds=2), progress=False)
    s, val = result.setup, result.summary["validation"]
    assert 40 <= s.data.val_labels.size <= 60  # ~10% of the 480 training samples, per class
    test_rows = {r.tobytes() for r in s.data.test["m0"]}
    assert not any(r.tobytes() in test_rows for r in s.data.val["m0"])  # disjoint from test
    # By hand: the consensus model is the device average of every block (all devices active).
    from dmmlkd.learner.models import Network, predict

    mean = lambda b: {k: t.detach().mean(0, keepdim=True) for k, t in b.items()}  # noqa: E731
    consensus = Network([mean(b) for b in s.net.blocks], mean(s.net.shared), s.net.n_classes,
                        s.net.feature)
    views = [torch.as_tensor(s.data.val[v]) for v in s.data.views]
    logits = predict(consensus, views, torch.ones(1, 2, dtype=torch.bool))[0]
    expected = float((logits.argmax(-1).numpy() == s.data.val_labels).mean())
    assert val["consensus_accuracy"] == pytest.approx(expected, abs=1e-6)
    only = predict(consensus, views, torch.tensor([[False, True]]))[0]
    assert val["modality_accuracy"]["m1"] == pytest.approx(
        float((only.argmax(-1).numpy() == s.data.val_labels).mean()), abs=1e-6)
    assert val["consensus_accuracy"] != result.summary["consensus_accuracy"] or \
        val["accuracy"] != result.summary["accuracy"]  # a different split, different numbers
    assert run(synthetic(rounds=1, val_fraction=0.0), progress=False).summary["validation"] is None


def test_confidence_signal_feeds_the_speeds() -> None:
    result = run(synthetic(rounds=2, signal="confidence"), progress=False)
    rows = result.rows.set_index(["round", "device", "modality"])
    first, second = rows.xs(0, level="round"), rows.xs(1, level="round")
    # The first measurement is taken as is (speed_beta only mixes later ones).
    np.testing.assert_allclose(second["speed"], first["confidence"], rtol=1e-12)
    assert ((first["confidence"] > 0) & (first["confidence"] < 1)).all()
    with pytest.raises(ValueError, match="signal must be one of"):
        run(synthetic(signal="loss"), progress=False)
