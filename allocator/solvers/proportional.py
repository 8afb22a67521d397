"""Balance baseline: tau proportional to 1 / b (inverse relative speed), scaled to the budget."""

from __future__ import annotations

import time

import numpy as np
from numpy.typing import NDArray

from dmmlkd.allocator.problem import Problem
from dmmlkd.allocator.result import Allocation
from dmmlkd.metrics.energy import computation_energy_j


def _table(problem: Problem, scale: NDArray[np.float64]) -> NDArray[np.float64]:
    safe = np.where(problem.holds, problem.speed, 1.0)
    tau = np.floor(scale[:, None] / safe + 1e-9)
    tau = np.clip(tau, problem.tau_min, problem.tau_max)
    return np.where(problem.holds, tau, 0.0)


def solve_proportional(problem: Problem, **_: object) -> Allocation:
    """tau[k, m] = floor(s_k / v[k, m]) (so v * tau is equal across modalities), the largest s_k
    that fits the budget found by vectorised bisection."""
    start = time.perf_counter()
    limit = problem.level_caps().cap[:, 0]  # the shared budget rule, less communication

    def fits(scale: NDArray[np.float64]) -> NDArray[np.bool_]:
        tau = _table(problem, scale)
        energy = computation_energy_j(
            tau, problem.holds, problem.forward_energy, problem.backward_energy
        )
        return energy <= limit

    low = np.zeros(problem.n_devices)  # always fits: tau_min everywhere (checked by Problem)
    high = np.full(problem.n_devices, problem.tau_max * float(problem.speed.max()) * 1.01)
    done = fits(high)
    low[done] = high[done]
    for _step in range(60):
        mid = 0.5 * (low + high)
        ok = fits(mid)
        low = np.where(ok, mid, low)
        high = np.where(ok, high, mid)
    tau = _table(problem, low).astype(np.int64)
    return Allocation(
        problem, tau, solver="proportional", status="feasible",
        solve_time_s=time.perf_counter() - start,
    )
