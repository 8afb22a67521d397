"""The time/frequency model: CPU levels and a round deadline, against brute force and by hand."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from dmmlkd.allocator import Problem, ProblemError, evaluate, solve, violations
from dmmlkd.metrics.energy import fits_budget, fits_deadline


def level_problem(seed: int, scope: str, devices: int = 2, modalities: int = 2,
                  levels: int = 3, tau_max: int = 4) -> Problem:
    """A tiny random instance whose deadline and budgets both bind for some levels."""
    rng = np.random.default_rng(seed)
    K, M = devices, modalities
    freq = np.sort(rng.uniform(0.5e9, 2e9, (K, levels)), axis=1)
    n_levels = rng.integers(1, levels + 1, size=K)  # ragged: some devices have fewer levels
    freq = [list(freq[k, : n_levels[k]]) for k in range(K)]
    cf = rng.uniform(1e5, 1e6, (K, M))
    if seed % 3 == 0:
        cf[:, 0] = 0.0  # zero forward cost (the learner's folded accounting)
    holds = rng.random((K, M)) < 0.8
    holds[:, 0] = True
    comm = rng.uniform(0.01, 0.05, K)
    comm_t = rng.uniform(0.001, 0.01, K)
    top = np.array([max(f) for f in freq])
    mid_cycles = 32 * 3 * (cf + 2 * cf).sum(axis=1)
    budget = comm + 1e-28 * (0.8 * top) ** 2 * mid_cycles * rng.uniform(0.3, 1.5, K)
    slow = (32 * 3 * cf.sum(axis=1) / top + comm_t).max()
    return Problem(
        modalities=tuple(f"m{j}" for j in range(M)), devices=tuple(f"d{k}" for k in range(K)),
        holds=holds, speed=rng.uniform(0.01, 0.1, (K, M)), comm_energy=comm, budget=budget,
        cpu_levels_hz=freq, cycles_forward=cf, batch_size=32, comm_time_s=comm_t,
        deadline_s=float(slow * rng.uniform(1.0, 3.0)), scope=scope, tau_max=tau_max,
        delta=float(rng.choice([0.0, 0.1])), mu=float(rng.choice([0.5, 5.0])),
    )


def feasible_instances(scope: str, count: int) -> list[Problem]:
    out, seed = [], 0
    while len(out) < count:
        try:
            out.append(level_problem(seed, scope))
        except ProblemError:
            pass
        seed += 1
    return out


def brute_force(problem: Problem) -> float:
    """Best objective over every integer table, each at every level of every device."""
    pairs = list(zip(*np.nonzero(problem.holds)))
    best = -np.inf
    levels = problem.cpu_levels_hz
    kappa, batch = problem.capacitance, problem.batch_size
    for combo in itertools.product(range(problem.tau_min, problem.tau_max + 1), repeat=len(pairs)):
        tau = np.zeros(problem.holds.shape, dtype=int)
        for (k, m), t in zip(pairs, combo):
            tau[k, m] = t
        local = tau.max(axis=1)
        cycles = batch * (local * problem.cycles_forward.sum(axis=1)
                          + (tau * problem.cycles_backward).sum(axis=1))
        # Independently of operating_point: try every level per device, keep the cheapest
        # feasible one (energy kappa f^2 C + comm <= budget, C / f + t_comm <= deadline).
        energy = np.full(problem.n_devices, np.inf)
        for k in range(problem.n_devices):
            for f in levels[k][np.isfinite(levels[k])]:
                e = kappa[k] * f**2 * cycles[k]
                if (fits_budget(e + problem.comm_energy[k], problem.budget[k])
                        and fits_deadline(cycles[k] / f + problem.comm_time_s[k], problem.deadline_s)):
                    energy[k] = min(energy[k], e)
        if not np.isfinite(energy).all():
            continue
        ev = evaluate(problem, tau)
        assert ev.compute_energy == pytest.approx(energy, rel=1e-12)
        best = max(best, ev.objective)
    return best


@pytest.mark.parametrize("scope", ["device", "network"])
def test_exact_and_heuristic_with_levels_match_brute_force(scope: str) -> None:
    for problem in feasible_instances(scope, 6):
        best = brute_force(problem)
        exact = solve(problem, "exact", mip_gap=1e-9)
        assert not violations(problem, exact.tau)
        assert exact.status == "optimal"
        assert exact.objective == pytest.approx(best, rel=1e-7, abs=1e-9)
        heur = solve(problem, "heuristic")
        assert not violations(problem, heur.tau)
        assert heur.objective <= best + 1e-9
        if scope == "device":
            assert heur.objective == pytest.approx(best, rel=1e-9, abs=1e-12)
        for alloc in (exact, heur):
            # Feasible in energy and in time at the level it reports.
            f = alloc.cpu_hz
            assert np.all(np.isin(f, problem.cpu_levels_hz[np.isfinite(problem.cpu_levels_hz)]))
            local = alloc.tau.max(axis=1)
            cycles = problem.batch_size * (local * problem.cycles_forward.sum(axis=1)
                                           + (alloc.tau * problem.cycles_backward).sum(axis=1))
            assert np.allclose(alloc.time_s, cycles / f + problem.comm_time_s, rtol=1e-12)
            assert fits_deadline(alloc.time_s, problem.deadline_s).all()
            energy = problem.capacitance * f**2 * cycles + problem.comm_energy
            assert np.allclose(alloc.energy, energy, rtol=1e-12)
            assert fits_budget(alloc.energy, problem.budget).all()


def test_operating_point_by_hand() -> None:
    # One device, one modality, c_f = 1e6, c_b = 2e6, B = 10, kappa = 1e-27, tau = 2:
    # C = 10 (2 * 1e6 + 2 * 2e6) = 6e7 cycles. Levels 1, 2, 3 GHz; t_comm = 0.01 s.
    # Times: 0.07, 0.04, 0.03 s. Deadline 0.05 s -> lowest level meeting it is 2 GHz:
    # energy 1e-27 * (2e9)^2 * 6e7 = 0.24 J, time 0.04 s.
    p = Problem(modalities=("a",), devices=("d",), holds=[[True]], speed=[[0.1]],
                cpu_levels_hz=[[3e9, 1e9, 2e9]], cycles_forward=[[1e6]], batch_size=10,
                capacitance=1e-27, comm_energy=[0.05], comm_time_s=[0.01], budget=[1.0],
                deadline_s=0.05, tau_max=2)
    point = p.operating_point(np.array([[2]]))
    assert point.cpu_hz[0] == 2e9
    assert point.cycles[0] == pytest.approx(6e7)
    assert point.time_s[0] == pytest.approx(0.04)
    assert point.compute_energy[0] == pytest.approx(0.24)
    alloc = solve(p, "exact")
    assert alloc.tau[0, 0] == 2
    assert alloc.to_dict()["cpu_hz"] == {"d": 2e9}
    assert alloc.to_dict()["time_s"]["d"] == pytest.approx(0.04)
    # Derived energies are the top level's: 1e-27 * 9e18 * 10 * 1e6 = 0.09 J per forward pass.
    assert p.forward_energy[0, 0] == pytest.approx(0.09)


def test_no_levels_keeps_the_old_model() -> None:
    from dmmlkd.allocator import generate_problem

    p = generate_problem(devices=5, modalities=3, seed=3)
    alloc = solve(p, "heuristic")
    assert not p.has_levels
    assert np.isnan(alloc.cpu_hz).all() and np.isnan(alloc.time_s).all()
    assert alloc.to_dict()["cpu_hz"] == {d: None for d in p.devices}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"deadline_s": 0.5}, "deadline needs cpu_levels_hz"),
        ({"cycles_forward": [[1.0]]}, "cycles_forward needs cpu_levels_hz"),
        ({"cpu_levels_hz": [[1e9]], "forward_energy": None, "backward_energy": None},
         "cycles_forward is required"),
        ({"cpu_levels_hz": [[-1e9]], "cycles_forward": [[1.0]]}, "finite and > 0"),
        ({"cpu_levels_hz": [[1e9]], "cycles_forward": [[1e6]], "forward_energy": None,
          "backward_energy": None, "deadline_s": 1e-9}, "cannot fit tau_min"),
        ({"cpu_levels_hz": [[1e9]], "cycles_forward": [[1.0]]}, "not both"),
    ],
)
def test_level_fields_are_validated(changes: dict, message: str) -> None:
    base: dict[str, Any] = dict(
        modalities=("a",), devices=("d",), holds=[[True]], speed=[[0.1]],
        forward_energy=[[0.01]], backward_energy=[[0.02]], comm_energy=[0.0], budget=[1.0])
    base.update(changes)
    with pytest.raises(ProblemError, match=message):
        Problem(**base)


@pytest.mark.parametrize("scope", ["device", "network"])
def test_heuristic_within_one_percent_of_exact_with_levels(scope: str) -> None:
    from dmmlkd.allocator import generate_problem

    for seed in range(3):
        problem = generate_problem(devices=12, modalities=4, cpu_levels=4, deadline="0.8x",
                                   seed=seed, scope=scope)
        exact = solve(problem, "exact", time_limit=30, mip_gap=1e-6)
        heur = solve(problem, "heuristic")
        assert exact.status == "optimal"
        assert not violations(problem, heur.tau) and not violations(problem, exact.tau)
        assert heur.objective >= exact.objective - 0.01 * abs(exact.objective)
        assert heur.objective <= exact.objective + 1e-9 * abs(exact.objective)
