"""Local training, the round loop, energy accounting, balanced policies and the train CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from learner.config import TrainConfig
from learner.local import LocalData, Optimizer, local_training
from learner.loop import build, run, uniform_policy
from learner.models import Network
from studies.training import run_train_full


def tiny_setup(seed: int = 0):
    rng = np.random.default_rng(seed)
    views = [rng.normal(size=(60, 5)).astype(np.float32), rng.normal(size=(60, 3)).astype(np.float32)]
    labels = rng.integers(0, 3, size=60)
    parts = [np.arange(0, 30), np.arange(30, 60)]
    net = Network.create(2, [5, 3], 3, hidden=8, embed=6, feature=4, seed=seed)
    return net, LocalData.create(views, labels, parts)


def snapshot(net: Network) -> list[dict[str, torch.Tensor]]:
    return [{k: t.detach().clone() for k, t in b.items()} for b in net.blocks] + [
        {k: t.detach().clone() for k, t in net.shared.items()}]


def changed(a: dict, b: dict, device: int) -> bool:
    return any(not torch.equal(a[k][device], b[k][device]) for k in a)


def test_encoder_updates_only_in_its_first_tau_iterations() -> None:
    net, data = tiny_setup()
    holds = np.ones((2, 2), bool)
    active = np.ones(2, bool)
    opt = Optimizer(lr=0.1)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    # Device 0: modality 0 tau = 2, modality 1 tau = 0. Device 1: tau (1, 3).
    tau = np.array([[2, 0], [1, 3]])
    before = snapshot(net)
    history = []
    orig_step = opt.step

    def recording_step(params, mask):
        orig_step(params, mask)
        history.append(snapshot(net))

    opt.step = recording_step  # type: ignore[method-assign]
    local_training(net, data, tau, holds, active, opt, rng, gen, batch_size=8)
    # 3 modality/shared steps per iteration (block0, block1, shared); L = 3 iterations.
    per_iter = [history[3 * i + 2] for i in range(3)]
    states = [before] + per_iter
    for i in range(1, 4):
        prev, cur = states[i - 1], states[i]
        assert changed(prev[0], cur[0], 0) == (i <= 2)  # device 0, modality 0, tau 2
        assert not changed(prev[1], cur[1], 0)  # device 0, modality 1, tau 0: never
        assert changed(prev[0], cur[0], 1) == (i <= 1)  # device 1, modality 0, tau 1
        assert changed(prev[1], cur[1], 1)  # device 1, modality 1, tau 3
        assert changed(prev[2], cur[2], 1)  # shared blocks: every iteration up to L = 3
        assert changed(prev[2], cur[2], 0) == (i <= 2)  # device 0 has L = 2


def test_measured_variation_matches_the_formula() -> None:
    net, data = tiny_setup(1)
    before = snapshot(net)
    tau = np.array([[2, 1], [3, 2]])
    res = local_training(net, data, tau, np.ones((2, 2), bool), np.ones(2, bool), Optimizer(),
                         np.random.default_rng(1), torch.Generator().manual_seed(1), batch_size=8)
    for m in range(2):
        for k in range(2):
            start = torch.cat([before[m][n][k].reshape(-1) for n in before[m]])
            end = torch.cat([net.blocks[m][n][k].detach().reshape(-1) for n in before[m]])
            expected = float((end - start).norm() / (start.norm() * tau[k, m]))
            assert res.variation[k, m] == pytest.approx(expected, rel=1e-5)


def synthetic(**kw) -> TrainConfig:
    base = dict(dataset="synthetic", devices=4, rounds=4, n_samples=600, topology="ring")
    return TrainConfig(**{**base, **kw})


def test_energy_accounting_matches_formula() -> None:
    cfg = synthetic(rounds=2, local_iters=3)
    result = run(cfg, progress=False)
    s = build(cfg)
    prof = s.profile
    tau = np.where(s.holds, 3, 0)
    per_round = (tau.max(1) * prof.forward_j.sum(1) + (tau * prof.backward_j).sum(1) + prof.comm_j)
    assert result.summary["energy_used_j"] == pytest.approx(2 * per_round.sum(), rel=1e-9)
    last = result.rows[result.rows["round"] == 1].groupby("device")["battery_j"].first()
    np.testing.assert_allclose(last.to_numpy(), s.battery_j - 2 * per_round, rtol=1e-9)


def test_device_without_battery_drops_and_is_reported() -> None:
    cfg = synthetic(rounds=3)
    s = build(cfg)
    cheapest = s.profile.cheapest_round(s.holds, 1)
    # A battery that pays one cheapest round on every device but not two.
    result = run(synthetic(rounds=3, battery_j=float(cheapest.max() * 1.5), local_iters=1),
                 progress=False)
    drops = result.summary["dropped_devices"]
    assert drops and all(d["round"] >= 1 for d in drops)
    assert result.rounds["active_devices"].iloc[-1] < 4


def test_short_synthetic_run_learns_and_is_reproducible() -> None:
    a = run(synthetic(rounds=5), progress=False).summary
    b = run(synthetic(rounds=5), progress=False).summary
    assert a["consensus_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert a["accuracy"] == b["accuracy"] and a["modality_accuracy"] == b["modality_accuracy"]


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


def test_uniform_policy_respects_battery() -> None:
    cfg = synthetic(rounds=1)
    s = build(cfg)
    from learner.loop import RoundState

    battery = s.profile.cheapest_round(s.holds, 1) * 1.01
    state = RoundState(0, 1, ["a", "b", "c", "d"], list(s.data.views), s.holds,
                       np.ones(s.holds.shape), battery, s.profile.forward_j, s.profile.backward_j,
                       s.profile.comm_j, np.ones(4, bool), s.topology.adjacency, 1, 20, 5,
                       np.zeros(s.holds.shape, int))
    decision = uniform_policy(state)
    assert (decision.tau[s.holds] == 1).all()


def test_train_cli_writes_outputs(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stdout, err = cli("train", "--dataset", "synthetic", "--devices", "3", "--rounds", "2",
                            "--out", str(out), "--quiet")
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"config.toml", "rounds.parquet", "history.csv",
                                               "summary.json"}
    summary = json.loads((out / "summary.json").read_text())
    for key in ("method", "rounds", "accuracy", "consensus_accuracy", "modality_accuracy",
                "energy_used_j", "dropped_devices", "wall_time_s"):
        assert key in summary
    # The saved config reruns to the same numbers.
    code, stdout2, _ = cli("train", "--config", str(out / "config.toml"), "--quiet")
    assert json.loads(stdout2)["accuracy"] == summary["accuracy"]


@pytest.mark.parametrize("args,message", [
    (["--views", "fac,nope"], "unknown view 'nope'"),
    (["--alpha", "0"], "alpha must be > 0"),
    (["--devices", "900"], "devices=900 need"),
    (["--topology", "torus", "--devices", "7"], "torus needs"),
    (["--method", "magic"], "method must be one of"),
])
def test_train_cli_bad_values_exit_2(cli, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "bad"
    code, stdout, err = cli("train", *args, "--rounds", "1", "--out", str(out), "--quiet")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


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
