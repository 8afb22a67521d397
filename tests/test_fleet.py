"""Fleets (uniform, longtail, trace CSV), batteries that run out, uniform-pacing, the fleet
allocator's horizon plan."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from dmmlkd.bridge.fleet import FleetAllocatorPolicy, horizon_plan
from dmmlkd.bridge.training import run_train_full
from dmmlkd.learner import clock
from dmmlkd.learner.config import TrainConfig
from dmmlkd.learner.errors import ConfigError
from dmmlkd.learner.fleet import longtail_fleet, place_views, read_trace
from dmmlkd.learner.loop import build, round_state, run
from dmmlkd.learner.schedules import uniform_pacing_policy
from dmmlkd.metrics.availability import churn_availability
from dmmlkd.metrics.energy import CPU_RANGE_HZ

TRACE = "device,cpu_hz,battery_j,distance_m,available\n" \
        "a,1e9,0.5,10,1\nb,2e9,0.25,80,10\nc,5e8,1.0,30,011\nd,1.5e9,0.75,20,1\n"


def synthetic(**kw) -> TrainConfig:
    base = dict(dataset="synthetic", devices=4, rounds=4, n_samples=600, topology="ring")
    return TrainConfig(**{**base, **kw})


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.csv"
    path.write_text(text)
    return path


def test_trace_is_read_row_by_row_with_availability_repeated(tmp_path: Path) -> None:
    fleet = read_trace(write(tmp_path, TRACE), 3, 5)  # extra rows are ignored
    assert fleet.cpu_hz is not None and fleet.battery_j is not None
    assert fleet.cpu_hz.tolist() == [1e9, 2e9, 5e8] and fleet.battery_j.tolist() == [0.5, 0.25, 1.0]
    assert fleet.distance_m is not None and fleet.distance_m.tolist() == [10, 80, 30]
    assert fleet.present is not None
    # "1" always, "10" alternating, "011" repeated: rounds 0..4.
    assert fleet.present.T.astype(int).tolist() == [[1, 1, 1, 1, 1], [1, 0, 1, 0, 1],
                                                    [0, 1, 1, 0, 1]]


@pytest.mark.parametrize(("text", "message"), [
    ("device,cpu_hz\na,1e9\n", "line 1: missing column 'battery_j'"),
    ("device,cpu_hz,battery_j,speed\na,1,1,1\n", "line 1: unknown column 'speed'"),
    ("device,cpu_hz,battery_j\na,1e9,1\nb,fast,1\n", "line 3, column cpu_hz: 'fast' is not a "
                                                      "positive number"),
    ("device,cpu_hz,battery_j\na,1e9,-1\nb,1e9,1\n", "line 2, column battery_j: '-1'"),
    ("device,cpu_hz,battery_j\na,1e9,nan\nb,1e9,1\n", "line 2, column battery_j: 'nan'"),
    ("device,cpu_hz,battery_j,available\na,1e9,1,1\nb,1e9,1,1x0\n",
     "line 3, column available: '1x0' is not a string of 0/1"),
    ("device,cpu_hz,battery_j\na,1e9,1\na,1e9,1\n", "line 3, column device: 'a' repeats line 2"),
    ("device,cpu_hz,battery_j\na,1e9,1\nb,1e9\n", "line 3: 2 fields, the header has 3"),
    ("device,cpu_hz,battery_j\na,1e9,1\n", "has 1 device rows, fewer than devices = 2"),
    ("", "empty file"),
])
def test_broken_traces_are_refused_naming_line_and_column(tmp_path: Path, text: str,
                                                          message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_trace(write(tmp_path, text), 2, 3)


def test_train_cli_refuses_a_broken_trace_with_one_line_and_writes_nothing(cli, tmp_path: Path,
                                                                           ) -> None:
    trace = write(tmp_path, "device,cpu_hz,battery_j\na,1e9,1\nb,zero,1\n")
    config = tmp_path / "run.toml"
    config.write_text(f'[train]\ndataset = "synthetic"\ndevices = 2\nrounds = 2\n'
                      f'fleet = "trace:{trace}"\n')
    out = tmp_path / "out"
    code, _, err = cli("train", "--config", str(config), "--out", str(out), "--quiet")
    assert code == 2
    assert err.strip().count("\n") == 0 and "line 3, column cpu_hz" in err
    assert not out.exists()
    config.write_text(f'[train]\ndataset = "synthetic"\ndevices = 5\nrounds = 2\n'
                      f'fleet = "trace:{trace}"\n')
    code, _, err = cli("train", "--config", str(config), "--out", str(out), "--quiet")
    assert code == 2 and "has 2 device rows, fewer than devices = 5" in err


def test_a_trace_fleet_trains_with_its_cpus_batteries_and_absences(tmp_path: Path) -> None:
    trace = write(tmp_path, TRACE)
    cfg = synthetic(fleet=f"trace:{trace}", battery_scale=0.5, rounds=3)
    s = build(cfg)
    np.testing.assert_allclose(s.profile.cpu_hz, [1e9, 2e9, 5e8, 1.5e9])
    np.testing.assert_allclose(s.battery_j, 0.5 * np.array([0.5, 0.25, 1.0, 0.75]))
    result = run(cfg, progress=False)
    rows = result.rows
    trained = rows.groupby(["round", "device"])["tau"].max().unstack()
    # b is absent in round 1, c in round 0 ("10", "011"): no iterations, no energy.
    assert trained.loc[1, "dev1"] == 0 and trained.loc[0, "dev2"] == 0
    assert trained.loc[0, "dev0"] > 0 and trained.loc[1, "dev2"] > 0
    assert result.rounds["present_devices"].tolist()[:2] == [3, 3]
    with pytest.raises(ConfigError, match="battery_j cannot be combined"):
        synthetic(fleet=f"trace:{trace}", battery_j=1.0).validate()


def test_uniform_fleet_draws_exactly_as_before() -> None:
    s = build(synthetic(devices=6, seed=3))
    expected = np.random.default_rng(3 + 104_729).uniform(*CPU_RANGE_HZ, size=6)
    np.testing.assert_array_equal(s.profile.cpu_hz, expected)
    assert s.fleet.present is None


def test_longtail_fleet_is_long_tailed_and_keeps_the_mean_battery() -> None:
    fleet = longtail_fleet(20_000, 3, seed=0)
    assert fleet.cpu_hz is not None and fleet.battery_factor is not None
    lo, hi = np.percentile(fleet.cpu_hz, [5, 95])
    assert 8 < hi / lo < 12  # exp(2 x 1.645 x 0.7) = 10
    assert abs(fleet.battery_factor.mean() - 1.0) < 0.02
    assert (fleet.battery_factor < 0.1).mean() > 0.05  # some start nearly empty


def test_churn_is_stationary_at_come_back_over_leave_plus_come_back() -> None:
    present = churn_availability(20_000, 6, 0.1, 0.5, np.random.default_rng(0))
    np.testing.assert_allclose(present.mean(axis=1), 0.5 / 0.6, atol=0.01)
    # A present device leaves with probability 0.1.
    stay = present[1:][present[:-1]].mean()
    assert abs(stay - 0.9) < 0.01


def test_low_battery_placement_puts_the_last_view_on_the_low_battery_half() -> None:
    holds = np.ones((5, 2), bool)
    out = place_views(holds, np.array([5.0, 1.0, 4.0, 2.0, 3.0]), "low-battery")
    assert out[:, 1].tolist() == [False, True, False, True, True]
    assert out[:, 0].all()


def test_depleted_devices_are_reported_and_accuracy_is_never_nan() -> None:
    cfg = synthetic(rounds=6, battery_scale=0.5)
    result = run(cfg, progress=False)
    s = result.summary
    # Uniform tau costs exactly 1/6 of the full battery per round: half of it pays 3 rounds.
    assert [d["round"] for d in s["depleted_devices"]] == [3, 3, 3, 3]
    assert s["all_depleted_round"] == 3 and "round 3" in s["accuracy_note"]
    h = result.rounds
    assert h["depleted_devices"].tolist() == [0, 0, 0, 4, 4, 4]
    assert np.isfinite(h["accuracy"]).all()
    # The models stop changing when the last device runs out: the last evaluated accuracy.
    assert h["accuracy"].iloc[-1] == h["accuracy"].iloc[2]
    assert h["consensus_accuracy"].iloc[-1] == h["consensus_accuracy"].iloc[2]
    assert np.isfinite(s["validation"]["accuracy"])


def _state(cfg: TrainConfig, battery_share: float, t: int = 0):
    s = build(cfg)
    K, _ = s.holds.shape
    return s, round_state(s, t, np.ones(s.holds.shape), s.battery_j * battery_share,
                          np.ones(K, bool), np.zeros(s.holds.shape, np.int64))


def test_uniform_pacing_is_the_best_uniform_round_its_even_share_pays_by_brute_force() -> None:
    cfg = synthetic(rounds=5, deadline="auto:0.8", local_iters=3, tau_max=8)
    for share in (0.6, 1.0, 3.0):  # some devices sit out, some run tau_min late, some more
        s, state = _state(cfg, share, t=1)
        decision = uniform_pacing_policy(state)
        levels, p = s.profile.levels_hz(), s.profile
        budget = state.battery_j / (cfg.rounds - 1)
        for k in range(s.holds.shape[0]):
            best = (0, None)
            for tau, f in itertools.product(range(cfg.tau_min, cfg.tau_max + 1), levels[k]):
                t_all = np.where(s.holds, tau, 0)
                cpu = p.cpu_hz.copy()
                cpu[k] = f
                time = p.device_time_s(t_all, s.holds, cpu)[k]
                cost = p.round_cost(t_all, s.holds, cpu)[k]
                lowest = [g for g in levels[k] if clock.meets_deadline(
                    p.device_time_s(t_all, s.holds, np.where(np.arange(len(cpu)) == k, g, cpu))[k],
                    s.deadline_s)]
                on_time = clock.meets_deadline(time, s.deadline_s)
                if lowest and f != min(lowest) or not lowest and (tau != cfg.tau_min
                                                                   or f != levels[k][-1]):
                    continue
                if cost <= budget[k] * (1 + 1e-9) and (on_time or not lowest) and tau > best[0]:
                    best = (tau, f)
            assert decision.tau[k].max() == best[0]
            if best[1] is not None:
                assert decision.cpu_hz is not None and decision.cpu_hz[k] == pytest.approx(best[1])


def test_horizon_plan_maximises_rounds_times_utility_by_enumeration() -> None:
    rng = np.random.default_rng(0)
    taus = np.arange(1, 9)
    for _ in range(50):
        K = 3
        cost = 0.2 + rng.random((K, taus.size)) * taus
        cost.sort(axis=1)
        allowed = rng.random((K, taus.size)) < 0.8
        battery = rng.random(K) * 20
        left = rng.integers(1, 10, K).astype(float)
        gamma = float(rng.choice([0.3, 0.5, 1.0]))
        best, n = horizon_plan(cost, allowed, taus, battery, left, gamma)
        for k in range(K):
            values = [(min(left[k], battery[k] / cost[k, i]) * taus[i] ** gamma, i)
                      for i in range(taus.size) if allowed[k, i] and cost[k, i] <= battery[k]]
            if not values:
                assert best[k] == -1
                continue
            top = max(v for v, _ in values)
            assert min(left[k], battery[k] / cost[k, best[k]]) * taus[best[k]] ** gamma \
                == pytest.approx(top)
            assert n[k] == pytest.approx(min(left[k], battery[k] / cost[k, best[k]]))


def test_fleet_allocator_sits_out_when_the_battery_binds_and_never_overspends() -> None:
    cfg = synthetic(method="dmml-kd-fleet", rounds=8, battery_scale=0.3)
    result = run_train_full(cfg)
    h, rows = result.rounds, result.rows
    assert h["sitting_out"].sum() > 0  # some device skipped a round to train more later
    assert (rows["battery_j"] >= -1e-12).all()
    assert result.summary["energy_used_j"] <= result.summary["battery_total_j"] * (1 + 1e-9)
    # A round it trains in runs more iterations than the even share of uniform-pacing would.
    assert h["planned_tau_mean"].max() > 1
    with pytest.raises(ValueError, match="split must be one of"):
        FleetAllocatorPolicy(split="x")


def test_compare_final_csv_carries_the_depleted_count(cli, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[train]\ndataset = "synthetic"\ndevices = 3\nrounds = 4\n'
                      'battery_scale = 0.5\n[compare]\nmethods = ["dmml-kd", "uniform-pacing"]\n'
                      'seeds = 1\njobs = 1\n')
    code, _, err = cli("compare", "--config", str(config), "--out", str(tmp_path / "o"), "--quiet")
    assert code == 0, err
    import pandas as pd

    finals = pd.read_csv(tmp_path / "o" / "final.csv").set_index("method")
    assert finals.loc["dmml-kd", "depleted"] == 3 and finals.loc["uniform-pacing", "depleted"] == 0
    assert np.isfinite(finals["accuracy"]).all()
    # Nothing nan-like leaked as text (diverged_round is empty for runs that did not diverge).
    summary = json.dumps(finals.drop(columns="diverged_round").to_dict())
    assert "NaN" not in summary and (finals["status"] == "ok").all()
