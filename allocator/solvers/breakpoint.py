"""Device scope, solved exactly by enumerating each device's breakpoint floors (vectorised).

Why it is exact: take an optimal tau* of device k and its floor z = min_m v_m tau*_m. The table
tau(z)_m = max(tau_min, ceil(z / v_m)) is componentwise <= tau*, has the same floor z (the
modality attaining it keeps its count), so it spends no more energy, overshoots (1 + delta) z by
no more, and is feasible. Hence the optimum is among the M x (tau_max - tau_min + 1) candidates
z = v_m t, each completed by tau(z). Devices are independent in this scope, so the whole network
is one (K, C, M) array computation, chunked to bound memory.
"""

from __future__ import annotations

import time

import numpy as np
from numpy.typing import NDArray

from allocator.problem import Problem
from allocator.result import ENERGY_RTOL, Allocation

# Devices per chunk: (chunk x candidates x modalities) float64 arrays stay around 50 MB.
_CHUNK_ELEMENTS = 6_000_000


def min_counts_for_floor(
    floor: NDArray[np.float64], speed: NDArray[np.float64], tau_min: int
) -> NDArray[np.float64]:
    """Smallest counts with v * tau >= floor and tau >= tau_min (float array, may exceed tau_max)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = floor / speed
    # A relative tolerance keeps the modality that defines the floor at exactly its own count.
    need = np.ceil(ratio - 1e-9 * np.maximum(1.0, np.abs(ratio)))
    return np.maximum(need, tau_min)


def device_best_tables(problem: Problem) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Optimal tau (K, M) of every device and its objective contribution (K,)."""
    K, M = problem.holds.shape
    steps = np.arange(problem.tau_min, problem.tau_max + 1, dtype=float)
    C = M * steps.size
    chunk = max(1, _CHUNK_ELEMENTS // (C * M))
    tau_out = np.zeros((K, M), dtype=np.int64)
    value_out = np.full(K, -np.inf)
    eps_scale = problem.epsilon / problem.energy_scale
    for start in range(0, K, chunk):
        sl = slice(start, min(K, start + chunk))
        holds = problem.holds[sl]
        speed = problem.speed[sl]
        # Candidate floors z = v_m * t for held m: shape (k, C); unheld ones are masked out.
        floors = (speed[:, :, None] * steps[None, None, :]).reshape(-1, C)
        cand_ok = np.repeat(holds, steps.size, axis=1)
        safe_speed = np.where(holds, speed, 1.0)
        tau = min_counts_for_floor(floors[:, :, None], safe_speed[:, None, :], problem.tau_min)
        tau = np.where(holds[:, None, :], tau, 0.0)  # (k, C, M)
        ok = cand_ok & (tau.max(axis=2) <= problem.tau_max)
        compute = tau.max(axis=2) * problem.forward_sum[sl, None] + (
            tau * problem.backward_energy[sl, None, :]
        ).sum(axis=2)
        total = compute + problem.comm_energy[sl, None]
        ok &= total <= problem.budget[sl, None] * (1 + ENERGY_RTOL) + 1e-12
        progress = tau * speed[:, None, :]
        floor = np.where(holds[:, None, :], progress, np.inf).min(axis=2)
        over = np.maximum(progress - (1 + problem.delta) * floor[:, :, None], 0.0)
        over = np.where(holds[:, None, :], over, 0.0).sum(axis=2)
        value = problem.weight[sl, None] * floor - problem.mu * over - eps_scale * compute
        value = np.where(ok, value, -np.inf)
        best = value.argmax(axis=1)
        rows = np.arange(best.size)
        tau_out[sl] = tau[rows, best].astype(np.int64)
        value_out[sl] = value[rows, best]
    return tau_out, value_out


def solve_breakpoint(problem: Problem, **_: object) -> Allocation:
    """Exact device-scope solution by breakpoint enumeration (gap 0, certified by the argument above)."""
    if problem.scope != "device":
        raise ValueError("breakpoint enumeration solves the device scope only")
    start = time.perf_counter()
    tau, value = device_best_tables(problem)
    elapsed = time.perf_counter() - start
    # The enumeration is exhaustive over a set containing an optimum: its value is a bound.
    bound = float(value.sum())
    return Allocation(
        problem, tau, method="heuristic", status="optimal", bound=bound, solve_time_s=elapsed,
        info={"algorithm": "breakpoint enumeration (exact for the device scope)"},
    )
