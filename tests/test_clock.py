"""Simulated time and CPU levels: the clock by hand, energy at a level, uniform-dvfs, deadlines."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dmmlkd.learner import clock
from dmmlkd.learner.config import TrainConfig
from dmmlkd.learner.errors import ConfigError
from dmmlkd.learner.loop import build, run
from dmmlkd.learner.policy import PolicyDecision, RoundState
from dmmlkd.learner.schedules import uniform_policy
from dmmlkd.metrics.energy import round_cycles


def synthetic(**kw) -> TrainConfig:
    base = dict(dataset="synthetic", devices=2, rounds=2, n_samples=400, topology="ring")
    return TrainConfig(**{**base, **kw})


def hand_cycles(cfg: TrainConfig, tau: np.ndarray) -> np.ndarray:
    """Cycles of a round from first principles (training fusion rule): each of the tau[k, m]
    iterations runs modality m's forward (2 x params per sample) and backward (2 x forward)
    passes on a batch."""
    s = build(cfg)
    params = np.array(s.net.block_sizes(), float)
    per_iter = cfg.batch_size * (2 * params + 4 * params)  # forward + backward, per batch
    return (np.where(s.holds, tau, 0) * per_iter[None, :]).sum(axis=1)


def test_clock_functions_by_hand() -> None:
    # Two devices: 3e9 and 1e9 cycles at 1.5 GHz and 0.5 GHz, comm 0.25 s and 1 s.
    times = clock.device_time_s([3e9, 1e9], [1.5e9, 0.5e9], [0.25, 1.0])
    np.testing.assert_allclose(times, [2.25, 3.0])
    assert clock.round_time_s(times, [True, True]) == 3.0
    assert clock.round_time_s(times, [True, False]) == 2.25  # an inactive device does not wait
    # A device with no cycles does not train: no time, not even communication.
    np.testing.assert_allclose(clock.device_time_s([0.0, 1e9], [1e9, 1e9], [5.0, 1.0]), [0.0, 2.0])
    # Cycles follow the energy pass rule: L sum cf + sum tau cb with L = max tau.
    cyc = round_cycles([[2, 3]], [[True, True]], 4, [[10.0, 20.0]], [[1.0, 2.0]])
    assert cyc[0] == 4 * (3 * (10 + 20) + 2 * 1 + 3 * 2)
    np.testing.assert_allclose(clock.energy_scale([0.5e9, 2e9], [2e9, 2e9]), [1 / 16, 1.0])
    np.testing.assert_allclose(clock.cpu_levels_hz([2e9], (1.0, 0.25)), [[0.5e9, 2e9]])


def test_clock_of_a_tiny_run_by_hand() -> None:
    cfg = synthetic(rounds=3, local_iters=2)
    result = run(cfg, progress=False)
    s = build(cfg)
    cycles = hand_cycles(cfg, np.full(s.holds.shape, 2))
    np.testing.assert_allclose(s.profile.device_time_s(np.where(s.holds, 2, 0), s.holds),
                               cycles / s.profile.cpu_hz + s.profile.comm_s, rtol=1e-12)
    # Communication time: S / (B log2(1 + p g / (N0 B))), S = 32 x broadcast parameters.
    params = np.array(s.net.block_sizes(), float)
    bits = 32 * ((s.holds * params).sum(1) + s.net.shared_size())
    dist = np.where(s.topology.adjacency, s.topology.distances_m, 0).max(1)
    rate = 1e6 * np.log2(1 + 0.1 * 1e-3 * np.maximum(dist, 1.0) ** -3.0 / (10 ** (-17.4) * 1e-3 * 1e6))
    np.testing.assert_allclose(s.profile.comm_s, bits / rate, rtol=1e-9)
    round_time = max(cycles / s.profile.cpu_hz + bits / rate)  # dmml-kd: every device at f_max
    np.testing.assert_allclose(result.rounds["round_time_s"], round_time, rtol=1e-9)
    np.testing.assert_allclose(result.rounds["sim_time_s"], round_time * np.arange(1, 4), rtol=1e-9)
    assert result.summary["sim_time_s"] == pytest.approx(3 * round_time, rel=1e-9)
    per_device = result.rows[result.rows["round"] == 0].groupby("device")
    np.testing.assert_allclose(per_device["cpu_hz"].first(), s.profile.cpu_hz)
    np.testing.assert_allclose(per_device["time_s"].first(), cycles / s.profile.cpu_hz + bits / rate,
                               rtol=1e-9)


def test_deadline_auto_is_uniform_round_time_and_uniform_meets_it() -> None:
    cfg = synthetic(rounds=2, local_iters=3)
    result = run(cfg, progress=False)
    s = build(cfg)
    expected = max(hand_cycles(cfg, np.full(s.holds.shape, 3)) / s.profile.cpu_hz + s.profile.comm_s)
    assert s.deadline_s == pytest.approx(expected, rel=1e-12)
    assert result.summary["deadline_s"] == s.deadline_s
    assert result.summary["deadline_misses"] == 0
    np.testing.assert_allclose(result.rounds["round_time_s"], s.deadline_s, rtol=1e-12)
    assert build(synthetic(deadline="none")).deadline_s is None
    assert build(synthetic(deadline=0.75)).deadline_s == 0.75


def fixed_fraction_policy(fraction: float):
    """Uniform tau, every device at ``fraction`` x f_max (a level of the default set)."""
    def policy(state: RoundState) -> PolicyDecision:
        decision = uniform_policy(state)
        decision.cpu_hz = fraction * state.cpu_hz
        return decision
    return policy


def test_energy_at_a_lower_level_is_the_square_ratio_of_f_max() -> None:
    cfg = synthetic(rounds=2, method="dmml-kd")
    fast = run(cfg, progress=False)
    slow = run(cfg, fixed_fraction_policy(0.5), progress=False)
    s = build(cfg)
    comm = 2 * s.profile.comm_j.sum()  # two rounds of communication, not frequency dependent
    compute_fast = fast.summary["energy_used_j"] - comm
    assert slow.summary["energy_used_j"] - comm == pytest.approx(0.25 * compute_fast, rel=1e-9)
    # Per device and round, too; and the frequency does not change what is learnt.
    f = fast.rows.groupby(["round", "device"])["energy_j"].first().to_numpy()
    g = slow.rows.groupby(["round", "device"])["energy_j"].first().to_numpy()
    c = np.tile(s.profile.comm_j, 2)
    np.testing.assert_allclose(g - c, 0.25 * (f - c), rtol=1e-9)
    assert slow.summary["consensus_accuracy"] == fast.summary["consensus_accuracy"]
    # Half the frequency: twice the compute time.
    t_fast = fast.rows.groupby(["round", "device"])["time_s"].first().to_numpy()
    t_slow = slow.rows.groupby(["round", "device"])["time_s"].first().to_numpy()
    comm_s = np.tile(s.profile.comm_s, 2)
    np.testing.assert_allclose(t_slow - comm_s, 2 * (t_fast - comm_s), rtol=1e-9)


def brute_lowest_level(cycles, levels, comm, deadline):
    out = []
    for k in range(len(cycles)):
        feasible = [f for f in sorted(levels[k])
                    if deadline is None or cycles[k] / f + comm[k] <= deadline * (1 + 1e-9)]
        out.append(feasible[0] if feasible else max(levels[k]))
    return np.array(out)


def test_lowest_level_meeting_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        K = int(rng.integers(1, 6))
        levels = rng.uniform(0.2e9, 2e9, size=(K, int(rng.integers(1, 5))))
        cycles = rng.uniform(1e8, 2e9, size=K)
        comm = rng.uniform(0, 0.5, size=K)
        deadline = None if rng.random() < 0.1 else float(rng.uniform(0.3, 5))
        got = clock.lowest_level_meeting(cycles, levels, comm, deadline)
        np.testing.assert_array_equal(got, brute_lowest_level(cycles, levels, comm, deadline))
    # Knife edge: a deadline equal to a level's time picks that level.
    assert clock.lowest_level_meeting([2e9], [[1e9, 2e9]], [0.5], 2.5)[0] == 1e9


@pytest.mark.parametrize("deadline", ["auto", 0.15])
def test_uniform_dvfs_meets_the_deadline_at_the_lowest_feasible_level(deadline) -> None:
    cfg = synthetic(devices=4, rounds=2, method="uniform-dvfs", deadline=deadline)
    result = run(cfg, progress=False)
    s = build(cfg)
    levels = s.profile.levels_hz()
    assert result.summary["deadline_misses"] == 0
    assert (result.rounds["round_time_s"] <= s.deadline_s * (1 + 1e-9)).all()
    rows = result.rows.groupby(["round", "device"]).first().reset_index()
    cycles = hand_cycles(cfg, np.where(s.holds, 5, 0))  # uniform tau = local_iters = 5
    want = brute_lowest_level(cycles, levels, s.profile.comm_s, s.deadline_s)
    for _, group in rows.groupby("round"):
        np.testing.assert_allclose(group["cpu_hz"].to_numpy(), want, rtol=1e-12)
    # Same tau as dmml-kd: same learning, less energy, no more time per round.
    base = run(synthetic(devices=4, rounds=2, deadline=deadline), progress=False)
    assert result.summary["consensus_accuracy"] == base.summary["consensus_accuracy"]
    assert result.summary["energy_used_j"] <= base.summary["energy_used_j"]
    if deadline == "auto":
        assert result.summary["sim_time_s"] == pytest.approx(base.summary["sim_time_s"], rel=1e-12)


def test_uniform_dvfs_without_deadline_takes_the_lowest_level() -> None:
    cfg = synthetic(rounds=1, method="uniform-dvfs", deadline="none", cpu_levels=[0.5, 1.0])
    result = run(cfg, progress=False)
    s = build(cfg)
    np.testing.assert_allclose(result.rows.groupby("device")["cpu_hz"].first(), 0.5 * s.profile.cpu_hz)


def test_a_frequency_that_is_not_a_level_is_refused_naming_the_device() -> None:
    def policy(state: RoundState) -> PolicyDecision:
        decision = uniform_policy(state)
        decision.cpu_hz = state.cpu_hz.copy()
        decision.cpu_hz[1] *= 0.6  # levels are 0.25, 0.5, 0.75, 1.0
        return decision

    with pytest.raises(ConfigError, match="dev1.*not one of its CPU levels"):
        run(synthetic(rounds=1), policy, progress=False)


@pytest.mark.parametrize("field, value, message", [
    ("cpu_levels", [0.5, 0.75], "must include 1.0"),
    ("cpu_levels", [0.0, 1.0], r"in \(0, 1\]"),
    ("cpu_levels", [1.0, 1.0], "duplicate"),
    ("cpu_levels", [], "must not be empty"),
    ("deadline", -1.0, "deadline must be"),
    ("deadline", "soon", "deadline must be"),
    ("deadline", float("inf"), "deadline must be a finite number"),
])
def test_bad_time_settings_are_config_errors(field, value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        synthetic(**{field: value}).validate()


def test_deadline_flag_parses_and_bad_values_exit_2(cli, tmp_path) -> None:
    code, _, err = cli("train", "--dataset", "synthetic", "--devices", "2", "--rounds", "1",
                       "--deadline", "-3", "--quiet", "--out", str(tmp_path / "bad"))
    assert code == 2 and err.count("\n") == 1 and "deadline" in err
    assert not (tmp_path / "bad").exists()
    code, out, _ = cli("train", "--dataset", "synthetic", "--devices", "2", "--rounds", "1",
                       "--deadline", "2.5", "--method", "uniform-dvfs", "--quiet",
                       "--out", str(tmp_path / "ok"))
    assert code == 0 and '"deadline_s": 2.5' in out
    assert "deadline = 2.5" in (tmp_path / "ok" / "config.toml").read_text()


def test_levels_brute_force_energy_time_tradeoff() -> None:
    """Over all level choices of a tiny 2-device run, the cheapest choice that meets the
    deadline is what uniform-dvfs picks (energy falls with the level, time rises)."""
    cfg = synthetic(rounds=1, method="uniform-dvfs", deadline=0.15)
    s = build(cfg)
    tau = np.where(s.holds, cfg.local_iters, 0)
    levels = s.profile.levels_hz()
    best = None
    for choice in itertools.product(range(levels.shape[1]), repeat=2):
        f = levels[[0, 1], list(choice)]
        times = s.profile.device_time_s(tau, s.holds, f)
        if clock.round_time_s(times, [True, True]) <= 0.15:
            energy = s.profile.round_cost(tau, s.holds, f).sum()
            if best is None or energy < best[0]:
                best = (energy, f)
    result = run(cfg, progress=False)
    assert best is not None
    # The two devices end up on different levels (the deadline binds differently).
    np.testing.assert_allclose(best[1] / s.profile.cpu_hz, [0.5, 0.75])
    np.testing.assert_allclose(result.rows.groupby("device")["cpu_hz"].first(), best[1])
    assert result.summary["energy_used_j"] == pytest.approx(best[0], rel=1e-12)


# -- the allocator choosing tau and CPU level (studies/dvfs.py) ------------------------------------

def test_allocator_with_levels_is_feasible_in_energy_and_time_every_round() -> None:
    from dmmlkd.bridge.training import run_train_full

    cfg = synthetic(devices=4, rounds=3, method="dmml-kd-balance-dvfs", deadline=0.15)
    result = run_train_full(cfg)
    control = run_train_full(synthetic(devices=4, rounds=3, method="uniform-dvfs", deadline=0.15))
    s = build(cfg)
    levels = s.profile.levels_hz()
    per = result.rows.groupby(["round", "device"]).first()
    ctl = control.rows.groupby(["round", "device"]).first()
    assert result.summary["deadline_misses"] == 0 and not result.summary["dropped_devices"]
    assert (per["time_s"] <= 0.15 * (1 + 1e-9)).all()
    # Never more energy than the allocator-free control, device by device and round by round.
    assert (per["energy_j"].to_numpy() <= ctl["energy_j"].to_numpy() * (1 + 1e-9)).all()
    assert result.summary["energy_used_j"] <= control.summary["energy_used_j"] * (1 + 1e-9)
    # Each device at the lowest of its levels that meets the deadline for its own tau, and
    # energy and time by hand from that tau and frequency.
    tau = result.rows.pivot_table(index=["round", "device"], columns="modality", values="tau")
    tau = tau[list(s.data.views)].to_numpy().reshape(3, 4, -1)
    params = np.array(s.net.block_sizes(), float)
    per_iter = cfg.batch_size * 6 * params  # forward 2x params + backward 4x params per sample
    for t in range(3):
        cycles = (tau[t] * per_iter[None, :]).sum(axis=1)
        want = brute_lowest_level(cycles, levels, s.profile.comm_s, 0.15)
        got = per.loc[t, "cpu_hz"].to_numpy()
        np.testing.assert_allclose(got, want, rtol=1e-12)
        np.testing.assert_allclose(per.loc[t, "time_s"], cycles / got + s.profile.comm_s, rtol=1e-9)
        np.testing.assert_allclose(per.loc[t, "energy_j"], 1e-28 * got**2 * cycles + s.profile.comm_j,
                                   rtol=1e-9)
    assert result.rounds["solver"].eq("heuristic").all()


def tiny_state(deadline: float | None, battery: float = 10.0) -> RoundState:
    """Two devices, two modalities, hand-made numbers (training fusion rule: forward folded)."""
    holds = np.array([[True, True], [True, False]])
    cf = np.zeros((2, 2))
    cb = np.array([[3e5, 6e5], [3e5, 0.0]])  # cycles per sample, forward + backward
    f_max = np.array([2e9, 1e9])
    levels = np.array([[0.5e9, 1e9, 2e9], [0.25e9, 0.5e9, 1e9]])
    batch = 32
    backward_j = 1e-28 * f_max[:, None] ** 2 * batch * cb
    return RoundState(
        round=0, rounds_total=1, devices=["d0", "d1"], modalities=["a", "b"], holds=holds,
        speed=np.array([[0.02, 0.05], [0.03, 0.0]]), battery_j=np.full(2, battery),
        forward_j=np.zeros((2, 2)), backward_j=backward_j, comm_j=np.array([0.01, 0.02]),
        active=np.ones(2, bool), adjacency=~np.eye(2, dtype=bool), tau_min=1, tau_max=6,
        local_iters=3, last_tau=np.zeros((2, 2), np.int64), cpu_hz=f_max, cpu_levels_hz=levels,
        cycles_forward=cf, cycles_backward=cb, batch_size=batch, comm_time_s=np.array([0.01, 0.02]),
        deadline_s=deadline)


@pytest.mark.parametrize("deadline", [None, 0.06, 0.12])
def test_allocator_with_levels_matches_brute_force_on_a_tiny_round(deadline) -> None:
    from dmmlkd.allocator.result import evaluate
    from dmmlkd.bridge.dvfs import DvfsAllocatorPolicy, build_dvfs_problem, control_round_energy

    state = tiny_state(deadline)
    problem, members, _, late = build_dvfs_problem(state)
    assert problem is not None and list(members) == [0, 1] and late.size == 0
    control, control_hz = control_round_energy(state)
    # The control by hand: tau 3 everywhere held, lowest level meeting the deadline.
    cycles = 32 * 3 * np.array([9e5, 3e5])
    times = cycles[:, None] / state.cpu_levels_hz + state.comm_time_s[:, None]
    ok = times <= (deadline if deadline is not None else np.inf) * (1 + 1e-9)
    want_hz = np.array([state.cpu_levels_hz[k][ok[k]].min() for k in range(2)])
    np.testing.assert_allclose(control_hz, want_hz)
    np.testing.assert_allclose(control, 1e-28 * want_hz**2 * cycles + state.comm_j, rtol=1e-12)
    decision = DvfsAllocatorPolicy()(state)
    assert decision.cpu_hz is not None
    # Brute force over every tau table and level: feasible in energy (control's budget) and
    # time, and the best objective (the problem's own, at the chosen level).
    best = -np.inf
    for t0 in itertools.product(range(1, 7), repeat=2):
        for t1 in range(1, 7):
            tau = np.array([list(t0), [t1, 0]])
            for l0, l1 in itertools.product(range(3), repeat=2):
                f = state.cpu_levels_hz[[0, 1], [l0, l1]]
                c = 32 * (tau * state.cycles_backward).sum(axis=1)
                time_ok = deadline is None or (c / f + state.comm_time_s <= deadline * (1 + 1e-9)).all()
                energy_ok = (1e-28 * f**2 * c + state.comm_j <= control * (1 + 1e-9)).all()
                if time_ok and energy_ok:
                    best = max(best, evaluate(problem, tau).objective)
    tau = decision.tau
    c = 32 * (tau * state.cycles_backward).sum(axis=1)
    f = decision.cpu_hz
    assert deadline is None or (c / f + state.comm_time_s <= deadline * (1 + 1e-9)).all()
    assert (1e-28 * f**2 * c + state.comm_j <= control * (1 + 1e-9)).all()
    assert evaluate(problem, tau).objective == pytest.approx(best, rel=1e-9, abs=1e-12)


def test_a_device_that_cannot_meet_the_deadline_runs_tau_min_at_f_max() -> None:
    from dmmlkd.bridge.dvfs import DvfsAllocatorPolicy

    # d1 needs 32 x 3e5 cycles / 1e9 Hz + 0.02 s = 0.0296 s for tau_min at f_max.
    state = tiny_state(0.025)
    decision = DvfsAllocatorPolicy()(state)
    assert decision.tau[1].tolist() == [1, 0] and decision.cpu_hz is not None
    assert decision.cpu_hz[1] == 1e9
    assert decision.info["late_devices_planned"] == 1


def test_benchmark_paired_statistics_by_hand() -> None:
    from benchmarks.dvfs import mean_ci, paired, verdict

    # Mean 2, sd 1, n 3: half-width t(0.975, 2) / sqrt(3) = 4.302653 x 0.577350 = 2.484138.
    mean, lo, hi = mean_ci(np.array([1.0, 2.0, 3.0]))
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - 2.484138, 2.0 + 2.484138), abs=1e-6)
    import pandas as pd

    rows = []
    for seed, (ref_e, ctl_e, m_e) in enumerate([(10.0, 7.0, 6.0), (10.0, 8.0, 7.0)]):
        for method, energy, acc in (("dmml-kd", ref_e, 0.90), ("uniform-dvfs", ctl_e, 0.90),
                                    ("dmml-kd-balance-dvfs", m_e, 0.896)):
            rows.append({"pair": "a+b", "method": method, "seed": seed, "consensus_accuracy": acc,
                         "weakest_view_accuracy": acc - 0.2, "energy_used_j": energy,
                         "sim_time_s": 5.0, "round_to_target": 3, "energy_to_target_j": energy / 2,
                         "time_to_target_s": 2.0})
    runs = pd.DataFrame(rows)
    p = paired(runs).set_index("method")
    # Energy ratios 0.6 and 0.7 against dmml-kd: mean 0.65; consensus -0.4 points each seed.
    assert p.loc["dmml-kd-balance-dvfs", "energy_ratio"] == pytest.approx(0.65)
    assert p.loc["dmml-kd-balance-dvfs", "d_consensus_pts"] == pytest.approx(-0.4)
    v = verdict(runs)
    assert v.consensus_ok.all() and v.vs_control_ok.all() and v.time_ok.all()
    assert v.energy_ok.tolist() == [True, False]  # 6 <= 6.5, 7 > 6.5
    assert v.energy_to_target_ok.all()  # 3 and 3.5 <= 6.5
