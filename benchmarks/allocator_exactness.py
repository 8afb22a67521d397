"""Knife-edge instances and independent oracles for the allocator's certificates (issue 17).

Usage (from the repository root):
    python -m dmmlkd.benchmarks.allocator_exactness [SEEDS] [DEVICES_FOR_DP]
Prints every instance where a solver's answer breaks a rule below, then ``bad N``.

The rules (docs/formulation.md, "Exactness"):
* a returned table is never over a budget or the deadline beyond 1e-9 relative;
* every bound (certificate) is >= the oracle's optimum, so the reported gap is never below the
  true gap, and the heuristic's bound is >= every feasible table's objective;
* ``exact`` labelled ``optimal`` is at the oracle's optimum (within the requested gap).

The oracles share no code with the allocator: they enumerate every table of a device, score
it at every CPU level with the energy, time and objective written out here, and keep the
feasible ones (``device_tables``). Device scope: devices are independent, so the optimum is the
sum over devices of each one's best table (a multiple-choice knapsack whose coupling row -- the
energy tie-break normaliser -- is a constant), fine for hundreds of devices. Network scope:
brute force over the product of the devices' feasible tables (tiny instances).
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dmmlkd.allocator import Allocation, Problem, ProblemError, generate_problem, solve

RTOL = 1e-9  # the stated tolerance: cost <= budget (1 + RTOL) + ATOL
ATOL = 1e-12
# Float noise allowed in comparing a bound with the oracle's optimum (values are sums of a few
# dozen products: 1e-12 relative is far above their rounding and far below any real error).
NOISE = 1e-12


def knife_edge(seed: int, scope: str, devices: int | None = None, levels: bool | None = None
               ) -> Problem | None:
    """A hard instance: budgets (and the deadline) at a random table's cost +/- 1e-7 relative
    (or just inside / just outside the 1e-9 tolerance), zero forward energies, speed ratios up
    to 1e4. ``None`` when the drawn budget cannot pay tau_min (the generator's rejection)."""
    rng = np.random.default_rng(seed)
    K = int(devices if devices is not None else rng.integers(1, 4))
    M = int(rng.integers(1, 4))
    with_levels = bool(rng.random() < 0.4) if levels is None else levels
    holds = rng.random((K, M)) < 0.7
    holds[np.arange(K), rng.integers(0, M, K)] = True
    tau_max = int(rng.integers(2, 6))
    if devices is None and holds.sum() > 4:
        tau_max = min(tau_max, 3)
    # Speeds over four decades, some exactly equal (ties in the breakpoints).
    speed = 10 ** rng.choice(np.array([-2.0, -1.0, 0.0, 1.0, 2.0]), (K, M))
    speed *= np.where(rng.random((K, M)) < 0.5, 1.0, rng.uniform(0.5, 2.0, (K, M)))
    zero_forward = rng.random((K, M)) < rng.choice(np.array([0.0, 0.5, 1.0]))
    table = rng.integers(1, tau_max + 1, (K, M))
    offsets = np.array([-1e-7, 0.0, 1e-7, -5e-10, 5e-10, -2e-9, 0.0])
    # A budget below the cheapest round is rejected (ProblemError): with many devices, keep
    # the offsets of tau_min tables non-negative so that the instance exists.
    at_min = (np.where(holds, table, 1) == 1).all(axis=1)
    offset = np.where(at_min, np.abs(rng.choice(offsets, K)), rng.choice(offsets, K))
    delta = float(rng.choice([0.0, 0.1, 0.3]))
    mu = float(rng.choice([0.5, 5.0]))
    names: dict[str, Any] = dict(modalities=tuple(f"m{j}" for j in range(M)),
                                 devices=tuple(f"d{k}" for k in range(K)))
    try:
        if not with_levels:
            fwd = np.where(zero_forward, 0.0, rng.uniform(0.01, 1, (K, M)))
            bwd = rng.uniform(0.01, 1, (K, M)) * rng.choice(np.array([1.0, 1e-3]), (K, 1))
            comm = rng.uniform(0, 0.5, K) * (rng.random(K) < 0.7)
            local = np.where(holds, table, 0).max(axis=1)
            cost = local * np.where(holds, fwd, 0).sum(axis=1) + (
                np.where(holds, table * bwd, 0)).sum(axis=1) + comm
            budget = cost * (1 + offset)
            return Problem(**names, holds=holds, speed=speed, forward_energy=fwd,
                           backward_energy=bwd, comm_energy=comm, budget=budget, scope=scope,
                           tau_max=tau_max, delta=delta, mu=mu)
        n_levels = int(rng.integers(1, 4))
        top = rng.uniform(0.5e9, 2e9, K)
        hz = top[:, None] * np.sort(rng.uniform(0.3, 1.0, (K, n_levels)), axis=1)
        hz[:, -1] = top
        cf = np.where(zero_forward, 0.0, rng.uniform(1e4, 1e6, (K, M)))
        cb = rng.uniform(1e4, 1e6, (K, M))
        batch = rng.integers(1, 64, K).astype(float)
        kappa = np.full(K, 1e-28)
        comm = rng.uniform(0, 0.05, K)
        comm_s = rng.uniform(0, 0.01, K)
        local = np.where(holds, table, 0).max(axis=1)
        cycles = batch * (local * np.where(holds, cf, 0).sum(axis=1)
                          + np.where(holds, table * cb, 0).sum(axis=1))
        pick = rng.integers(0, n_levels, K)
        f = hz[np.arange(K), pick]
        # The cheapest round runs at the lowest level: price the budget there for tau_min
        # tables, and only put the deadline on a device whose table is not tau_min.
        pick = np.where(at_min, 0, pick)
        f = hz[np.arange(K), pick]
        budget = (kappa * f**2 * cycles + comm) * (1 + offset)
        deadline = None
        if rng.random() < 0.7 and not at_min.all():
            j = int(rng.choice(np.flatnonzero(~at_min)))
            deadline = float((cycles[j] / f[j] + comm_s[j]) * (1 + rng.choice(offsets)))
        return Problem(**names, holds=holds, speed=speed, comm_energy=comm, budget=budget,
                       cpu_levels_hz=hz, cycles_forward=cf, cycles_backward=cb, batch_size=batch,
                       capacitance=kappa, comm_time_s=comm_s, deadline_s=deadline, scope=scope,
                       tau_max=tau_max, delta=delta, mu=mu)
    except ProblemError:
        return None


@dataclass
class DeviceTables:
    """Every feasible table of one device (held modalities only) with its cheapest energy."""

    tau: NDArray[np.float64]  # (n, held)
    energy: NDArray[np.float64]  # (n,) computation energy at the cheapest feasible level


def device_tables(problem: Problem, k: int) -> DeviceTables:
    """All tables of device k within the bounds that fit its budget (and the deadline) at some
    level, each with the least computation energy over those levels (written out here)."""
    held = np.flatnonzero(problem.holds[k])
    counts = np.arange(problem.tau_min, problem.tau_max + 1, dtype=float)
    tau = np.array(list(itertools.product(counts, repeat=held.size)), dtype=float)
    local = tau.max(axis=1)
    room = problem.budget[k] * (1 + RTOL) + ATOL
    if problem.cpu_levels_hz is None:
        fwd, bwd = problem.forward_energy[k, held], problem.backward_energy[k, held]
        energy = local * fwd.sum() + tau @ bwd
        ok = energy + problem.comm_energy[k] <= room
        return DeviceTables(tau[ok], energy[ok])
    assert problem.cycles_forward is not None and problem.cycles_backward is not None
    assert problem.batch_size is not None and problem.capacitance is not None
    assert problem.comm_time_s is not None
    cycles = problem.batch_size[k] * (local * problem.cycles_forward[k, held].sum()
                                      + tau @ problem.cycles_backward[k, held])
    best = np.full(tau.shape[0], np.inf)
    for f in problem.cpu_levels_hz[k]:
        if not np.isfinite(f):
            continue
        energy = problem.capacitance[k] * f**2 * cycles
        ok = energy + problem.comm_energy[k] <= room
        if problem.deadline_s is not None:
            ok &= cycles / f + problem.comm_time_s[k] <= problem.deadline_s * (1 + RTOL) + ATOL
        best = np.where(ok, np.minimum(best, energy), best)
    ok = np.isfinite(best)
    return DeviceTables(tau[ok], best[ok])


def device_scope_optimum(problem: Problem) -> float:
    """The device-scope optimum: each device's best feasible table, summed (exact DP)."""
    eps = problem.epsilon / problem.budget.sum()
    total = 0.0
    for k in range(problem.n_devices):
        t = device_tables(problem, k)
        held = np.flatnonzero(problem.holds[k])
        progress = t.tau * problem.speed[k, held]
        floor = progress.min(axis=1)
        over = np.maximum(progress - (1 + problem.delta) * floor[:, None], 0).sum(axis=1)
        total += float((problem.weight[k] * floor - problem.mu * over - eps * t.energy).max())
    return total


def network_scope_optimum(problem: Problem) -> float:
    """The network-scope optimum by brute force over the product of the devices' tables."""
    eps = problem.epsilon / problem.budget.sum()
    n = problem.holds.sum(axis=0)
    held_mods = np.flatnonzero(n > 0)
    # Per device: its contribution to every G_m and its energy, for each feasible table.
    contrib, energy = [], []
    for k in range(problem.n_devices):
        t = device_tables(problem, k)
        held = np.flatnonzero(problem.holds[k])
        g = np.zeros((t.tau.shape[0], problem.n_modalities))
        g[:, held] = t.tau * problem.speed[k, held] / n[held]
        contrib.append(g)
        energy.append(t.energy)
    G = contrib[0]
    E = energy[0]
    for g, e in zip(contrib[1:], energy[1:]):
        G = (G[:, None, :] + g[None, :, :]).reshape(-1, problem.n_modalities)
        E = (E[:, None] + e[None, :]).reshape(-1)
    G = G[:, held_mods]
    z = G.min(axis=1)
    over = np.maximum(G - (1 + problem.delta) * z[:, None], 0).sum(axis=1)
    return float((z - problem.mu * over - eps * E).max())


def optimum(problem: Problem) -> float:
    """The oracle's optimum of the problem (its scope)."""
    if problem.scope == "device":
        return device_scope_optimum(problem)
    return network_scope_optimum(problem)


def breaches(problem: Problem, alloc: Allocation, best: float, mip_gap: float) -> list[str]:
    """What an answer does wrong against the oracle's optimum ``best`` (empty: nothing)."""
    out = []
    tol = NOISE * max(1.0, abs(best))
    tau = alloc.tau.astype(float)
    for k in range(problem.n_devices):
        held = np.flatnonzero(problem.holds[k])
        row = tau[k, held]
        if problem.cpu_levels_hz is None:
            e = row.max() * problem.forward_energy[k, held].sum() + row @ problem.backward_energy[k, held]
            fits = e + problem.comm_energy[k] <= problem.budget[k] * (1 + RTOL) + ATOL
        else:
            t = device_tables(problem, k)
            fits = bool((t.tau == row).all(axis=1).any())
        if not fits:
            out.append(f"device {k} over its budget or the deadline")
    if alloc.objective > best + tol:
        out.append(f"objective {alloc.objective!r} above the optimum {best!r}")
    if not alloc.bound >= best - tol:
        out.append(f"bound {alloc.bound!r} below the optimum {best!r}")
    if alloc.status == "optimal" and best - alloc.objective > mip_gap * max(abs(best), 1e-12) + tol:
        out.append(f"'optimal' at {alloc.objective!r}, optimum {best!r}")
    return out


def check(seeds: int = 200, dp_devices: int = 200, echo: bool = True) -> tuple[int, int]:
    """Check exact and heuristic on ``seeds`` knife-edge instances per scope, and the device
    scope on ``dp_devices``-device instances against the DP; return (answers checked,
    breaches), printing each breach when ``echo``."""
    bad = checked = 0
    cases: list[tuple[int, str, int | None]] = [
        (s, scope, None) for scope in ("device", "network") for s in range(seeds)]
    cases += [(s, "device", dp_devices) for s in range(max(1, seeds // 20))]
    for seed, scope, devices in cases:
        problem = knife_edge(seed, scope, devices)
        if problem is None:
            continue
        best = optimum(problem)
        for method in ("exact", "heuristic"):
            if devices is not None and method == "exact" and problem.has_levels:
                continue  # a few hundred level MILPs: slow on the shared machine
            alloc = solve(problem, method, mip_gap=1e-9, time_limit=60)
            checked += 1
            for text in breaches(problem, alloc, best, 1e-9):
                bad += 1
                if echo:
                    print(f"{scope} seed={seed} devices={problem.n_devices} {method} "
                          f"{alloc.status}: {text}", flush=True)
    return checked, bad


def main(seeds: int = 200, dp_devices: int = 200) -> int:
    """Print every breach and the count; return the count."""
    checked, bad = check(seeds, dp_devices)
    print(f"checked {checked} answers, bad {bad}")
    return bad



def tiny_levels_problem(seed: int) -> Problem | None:
    """A 2-4 device network instance with CPU levels and a deadline, small enough for brute
    force (at most 9 held pairs); None when the draw is infeasible or too large."""
    rng = np.random.default_rng(seed)
    try:
        problem = generate_problem(
            devices=int(rng.integers(2, 5)), modalities=3, scope="network", seed=seed,
            cpu_levels=int(rng.integers(2, 5)), deadline=f"{rng.uniform(0.5, 1.2)!r}x",
            tau_max=int(rng.integers(3, 6)), budget_scale=float(rng.uniform(0.3, 1.5)))
    except ProblemError:
        return None
    return problem if problem.holds.sum() <= 9 else None


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
