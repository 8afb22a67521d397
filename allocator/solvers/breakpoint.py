"""Device scope, solved exactly by enumerating each device's breakpoint floors (vectorised).

Why it is exact: take an optimal tau* of device k and its floor z = min_m v_m tau*_m. The table
tau(z)_m = max(tau_min, ceil(z / v_m)) is componentwise <= tau*, has the same floor z (the
modality attaining it keeps its count), so it spends no more energy, overshoots (1 + delta) z by
no more, and is feasible. Hence the optimum is among the M x (tau_max - tau_min + 1) candidates
z = v_m t, each completed by tau(z). Devices are independent in this scope, so the whole network
is one vectorised sweep over the candidates.

With CPU levels the same argument holds at each level (a level only changes the energy cap and
the price of energy), so the sweep runs once per level and each device keeps its best level.
"""

from __future__ import annotations

import time

import numpy as np
from numpy.typing import NDArray

from dmmlkd.allocator.problem import CERTIFICATE_RELAX, Problem
from dmmlkd.allocator.result import Allocation, evaluate


def device_best_tables(problem: Problem
                       ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Every device's optimal table (K, M), its objective term (K,) and a certified upper
    bound on that term (K,), over its levels.

    The bound is the enumeration's value under caps widened by `CERTIFICATE_RELAX` (no table
    feasible by the problem's arithmetic is lost to rounding); its table is kept where the
    problem's own arithmetic (`infeasible_devices`) accepts it, else the sweep is rerun under
    caps narrowed by as much, whose tables fit (tau_min everywhere as the last resort).
    """
    from dmmlkd.allocator.repair import infeasible_devices

    tau, bound = _sweep_levels(problem, CERTIFICATE_RELAX)
    # Rounding of the claimed value (a few dozen terms): keep the bound on the safe side.
    bound = bound + 1e-13 * np.abs(bound)
    bad = infeasible_devices(problem, tau)
    if bad.size:
        strict, _ = _sweep_levels(problem, -CERTIFICATE_RELAX)
        tau[bad] = strict[bad]
        still = infeasible_devices(problem, tau)
        tau[still] = np.where(problem.holds[still], problem.tau_min, 0)
    return tau, device_values(problem, tau), bound


def device_values(problem: Problem, tau: NDArray[np.integer]) -> NDArray[np.float64]:
    """Each device's term of the device-scope objective (the objective is their sum)."""
    ev = evaluate(problem, tau)
    over = np.where(problem.holds, ev.progress - (1 + problem.delta) * ev.floor[:, None], 0.0)
    return (problem.weight * ev.floor - problem.mu * np.maximum(over, 0.0).sum(axis=1)
            - problem.epsilon * ev.compute_energy / problem.energy_scale)


def _sweep_levels(problem: Problem, relax: float) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Best table per device over its levels under caps scaled by (1 + relax), and its value."""
    caps = problem.level_caps(relax)
    best_tau = np.zeros(problem.holds.shape, np.int64)
    best_val = np.full(problem.n_devices, -np.inf)
    roomiest = problem.roomiest_levels()
    rows = np.arange(problem.n_devices)
    room_cap = caps.cap[rows, roomiest]
    for level in range(caps.cap.shape[1]):
        scale = np.nan_to_num(caps.scale[:, level], nan=1.0)
        # A level above the roomiest one allowing no more computation, at a higher price per
        # joule, is dominated (skipped: the sweep drops a device with cap -inf at once).
        dominated = (level > roomiest) & (caps.cap[:, level] <= room_cap)
        cap = np.where(dominated, -np.inf, caps.cap[:, level])
        tau, value = _best_at(problem, cap, scale)
        better = value > best_val
        best_tau[better], best_val[better] = tau[better], value[better]
    return best_tau, best_val


def _best_at(problem: Problem, limit: NDArray[np.float64], energy_price: NDArray[np.float64]
             ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Best table of every device when its (top-level) computation energy must stay below
    ``limit`` and costs ``energy_price`` times its value in the tie-break (-inf: infeasible).

    Streams over the candidates (modality j, count t): for each, every device holding j gets
    z = v_j t, its completed table, energy and value, and keeps the best so far. Counts grow
    with t, so a device infeasible at t is dropped for larger t (most of the work, saved).
    """
    K, M = problem.holds.shape
    holds = problem.holds
    tmin, tmax = problem.tau_min, problem.tau_max
    speed = problem.speed
    # (1 - 1e-9) keeps the modality defining the floor at exactly its own count under ceil().
    inv_speed = np.where(holds, (1 - 1e-9) / np.where(holds, speed, 1.0), 0.0)
    eps_all = problem.epsilon / problem.energy_scale * energy_price
    one_delta, mu = 1.0 + problem.delta, problem.mu
    best_val = np.full(K, -np.inf)
    best_tau = np.full((K, M), float(tmin))
    for j in range(M):
        rows = np.flatnonzero(holds[:, j])
        inv_r, eb_r = inv_speed[rows], problem.backward_energy[rows]
        fwd_r, sp_r, lim_r = problem.forward_sum[rows], speed[rows], limit[rows]
        w_r, v_j, eps = problem.weight[rows], speed[rows, j], eps_all[rows]
        for t in range(tmin, tmax + 1):
            floor = v_j * t
            tau = np.ceil(floor[:, None] * inv_r)  # unheld columns: 0 -> tau_min, no cost
            np.maximum(tau, tmin, out=tau)
            local = tau.max(axis=1)
            energy = local * fwd_r + (tau * eb_r).sum(axis=1)
            ok = (local <= tmax) & (energy <= lim_r)
            if not ok.all():
                if not ok.any():
                    break
                rows, inv_r, eb_r, fwd_r, sp_r = rows[ok], inv_r[ok], eb_r[ok], fwd_r[ok], sp_r[ok]
                lim_r, w_r, v_j, eps = lim_r[ok], w_r[ok], v_j[ok], eps[ok]
                floor, tau, energy = floor[ok], tau[ok], energy[ok]
            # Unheld columns have speed 0, so their overshoot is negative and clipped away.
            over = tau * sp_r - (one_delta * floor)[:, None]
            np.maximum(over, 0.0, out=over)
            value = w_r * floor - mu * over.sum(axis=1) - eps * energy
            better = value > best_val[rows]
            chosen = rows[better]
            best_val[chosen] = value[better]
            best_tau[chosen] = tau[better]
    best_tau[~holds] = 0
    return best_tau.astype(np.int64), best_val


def solve_breakpoint(problem: Problem, **_: object) -> Allocation:
    """Exact device-scope solution by breakpoint enumeration (gap 0, certified by the argument above)."""
    if problem.scope != "device":
        raise ValueError("breakpoint enumeration solves the device scope only")
    start = time.perf_counter()
    tau, _values, bound_k = device_best_tables(problem)
    elapsed = time.perf_counter() - start
    # The enumeration is exhaustive over a set containing an optimum: its value is a bound.
    bound = float(bound_k.sum())
    return Allocation(
        problem, tau, solver="heuristic", status="optimal", bound=bound, solve_time_s=elapsed,
        info={"algorithm": "breakpoint enumeration (exact for the device scope)",
              "certificate": "breakpoint enumeration"},
    )
