"""Knife-edge exactness check of the allocator against brute force (issue 9).

Usage (from the repository root): .venv/bin/python -m dmmlkd.benchmarks.allocator_exactness SEEDS
Prints every instance where a returned table breaks a budget, beats brute force, has a bound
below the optimum, or is labelled optimal outside the gap; then "bad N". Results are in
docs/formulation.md ("Exactness").
"""

from __future__ import annotations

import sys

import numpy as np

from dmmlkd.allocator import Problem, ProblemError, solve, violations
from dmmlkd.metrics.energy import computation_energy_j

sys.path.insert(0, "tests")
from test_allocator_exactness import brute_force  # noqa: E402


def knife_edge(seed: int, scope: str) -> Problem:
    """Budgets on, 1 ulp around, or up to 1e-7 below the cost of a random table."""
    rng = np.random.default_rng(seed)
    K, M = rng.integers(1, 4), rng.integers(1, 4)
    holds = rng.random((K, M)) < 0.7
    holds[np.arange(K), rng.integers(0, M, K)] = True
    speed = 10 ** rng.uniform(-3, 0, (K, M))
    fwd = rng.uniform(0.01, 1, (K, M)) * (rng.random() < 0.6)
    bwd = rng.uniform(0.01, 1, (K, M))
    comm = rng.uniform(0, 0.5, K)
    tmax = int(rng.integers(2, 6))
    if holds.sum() > 5:
        holds[:, 1:] = False
        holds[:, 0] = True
    if holds.sum() > 4:
        tmax = min(tmax, 4)
    tau = rng.integers(1, tmax + 1, (K, M))
    cost = computation_energy_j(tau, holds, fwd, bwd) + comm
    ulp = rng.integers(-1, 2, K)
    budget = np.array([np.nextafter(c, np.inf if u > 0 else -np.inf) if u else c
                       for c, u in zip(cost, ulp)])
    budget = budget * (1 - rng.choice([0, 0, 1e-8, 3e-8, 1e-7, -1e-8, 1e-10, 2e-9], K))
    return Problem(modalities=tuple(f"m{j}" for j in range(M)),
                   devices=tuple(f"d{k}" for k in range(K)), holds=holds, speed=speed,
                   forward_energy=fwd, backward_energy=bwd, comm_energy=comm, budget=budget,
                   scope=scope, tau_max=tmax, delta=float(rng.choice([0, 0.1, 0.3])),
                   mu=float(rng.choice([0.5, 5])))


def main(seeds: int) -> int:
    bad = 0
    for scope in ("device", "network"):
        for seed in range(seeds):
            try:
                p = knife_edge(seed, scope)
            except ProblemError:
                continue
            best, _ = brute_force(p)
            for method in ("exact", "heuristic"):
                a = solve(p, method, mip_gap=1e-6)
                tol = max(1.0, abs(best))
                wrong = a.status == "optimal" and (a.objective < best - 1e-7 * tol
                                                   or not a.gap <= 1e-6)
                if (violations(p, a.tau) or wrong or a.objective > best + 1e-9 * tol
                        or a.bound < best - 1e-7 * tol):
                    bad += 1
                    print(scope, seed, method, a.status, best, a.objective, a.bound, a.gap)
    print("bad", bad)
    return bad


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
