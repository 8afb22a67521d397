"""Network scope: Lagrangian relaxation of the |M| modality floors, repair and local search.

The network scope couples devices only through the floor constraints z <= G_m <= (1+delta) z + s_m.
Dualising them with prices pi_m = lambda_m - rho_m leaves one small problem per device,

    max_{tau, L}  sum_m (pi_m / n_m) v_km tau_km - eps' (L F_k + sum_m eb_km tau_km)
    s.t.          L F_k + sum_m eb_km tau_km <= budget_k - comm_k,  tau_min <= tau_km <= L,

solved for every device at once (integer L enumerated, tau relaxed: a fractional knapsack), so
the dual function d(pi) = sum_k h_k(pi) is an upper bound on the MILP for every feasible pi. A
Kelley cutting-plane method with a trust region minimises d over the (|M|-dimensional) feasible
price set; the master LP's cut multipliers mix the device solutions into a fractional primal
point that balances the floors. Rounding it down, filling the bottleneck modality by progress
per joule, swapping iterations toward the bottleneck and trimming overshoot gives the integer
table. The best dual value is the certified bound reported with it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linprog

from dmmlkd.allocator.problem import CERTIFICATE_RELAX, Problem
from dmmlkd.allocator.result import Allocation, evaluate

_MAX_CUTS = 60
# Up to this many device x modality cells the fractional responses are kept (their mix is a
# second primal start; 60 cuts of 200,000 cells are 96 MB).
_MIX_CELLS = 200_000
# The dual stops once the bound could improve by less than this share of the gap between it
# and the value of the integer responses' best mix (a tighter bound would not change what the
# gap certifies by more than that share).
_GAP_SHARE = 0.05


@dataclass
class DualResult:
    """Outcome of the dual minimisation: best bound, its prices, and a fractional primal."""

    bound: float
    prices: NDArray[np.float64]
    tau_fractional: NDArray[np.float64] | None  # the cut mix (small instances only)
    iterations: int
    # Every evaluated price's integer device responses (C of (K, M)), and each one's network
    # progress (C, M): the material of the primal (`balanced_assignment`).
    integer_tau: list[NDArray[np.integer]]
    integer_progress: NDArray[np.float64]


def device_subproblems(
    problem: Problem, unit_price: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Each device's relaxed best response to progress prices: fractional tau (K, M) and its
    value (K,), a bound on the device's integer best response; and an integer response (K, M)
    that fits the device's budget (and deadline), for the primal.

    ``unit_price[m]`` is the value of one unit of v * tau on modality m (pi_m / n_m). With CPU
    levels each device takes its best level (the maximum of the per-level relaxations).
    """
    # Widened caps for the bound: no table feasible by the problem's arithmetic is lost to
    # rounding. The integer response uses the caps as stated.
    caps = problem.level_caps(CERTIFICATE_RELAX)
    strict = problem.level_caps().cap
    best_tau = np.zeros(problem.holds.shape)
    best_int = np.where(problem.holds, problem.tau_min, 0).astype(np.int64)
    best_val = np.full(problem.n_devices, -np.inf)
    for level in range(caps.cap.shape[1]):
        price = np.nan_to_num(caps.scale[:, level], nan=1.0)
        tau, value, integer = _subproblem_at(problem, unit_price, caps.cap[:, level], price,
                                             strict[:, level])
        better = value > best_val
        best_tau[better], best_val[better] = tau[better], value[better]
        best_int[better] = integer[better]
    return best_tau, best_val, best_int


def _subproblem_at(
    problem: Problem, unit_price: NDArray[np.float64], cap: NDArray[np.float64],
    energy_price: NDArray[np.float64], strict_cap: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """The relaxed best response when the top-level computation energy must stay <= ``cap``
    and its tie-break price is ``energy_price`` times the plain one (value -inf: infeasible),
    and an integer response under ``strict_cap`` (default ``cap``): at the relaxation's L, the
    items by gain per joule, each as many whole units as the budget left pays (the fractional
    item rounded down, its remainder spent on the next items).

    For a fixed L it is a fractional knapsack (items by gain per joule, each capped at
    L - tau_min extra units). Its value V(L) is the value of an LP whose right-hand side is
    affine in L, hence concave in L; the integer L maximising it is next to the real maximiser,
    which sits where the slope changes sign, at one of the breakpoints L_j (the L at which the
    j best items exactly fill the budget). So each device evaluates three integer L instead of
    all tau_max - tau_min + 1 (issue 17: 5x less work per dual evaluation).
    """
    holds = problem.holds
    K, M = holds.shape
    tmin, tmax = problem.tau_min, problem.tau_max
    eps = problem.epsilon / problem.energy_scale * energy_price
    eb = np.where(holds, problem.backward_energy, 0.0)
    F = problem.forward_sum
    gain = np.where(holds, unit_price[None, :] * problem.speed - eps[:, None] * eb, 0.0)
    base = cap - tmin * eb.sum(axis=1)  # budget after tau_min everywhere, before L F
    feasible = base - tmin * F >= 0
    useful = holds & (gain > 0)
    ratio = np.where(useful, gain / np.where(holds, eb, 1.0), -np.inf)
    order = np.argsort(-ratio, axis=1)
    g_s = np.take_along_axis(np.where(useful, gain, 0.0), order, axis=1)
    eb_s = np.take_along_axis(np.where(useful, eb, 0.0), order, axis=1)
    r_s = np.take_along_axis(np.where(useful, ratio, 0.0), order, axis=1)
    n_useful = useful.sum(axis=1)
    E = np.cumsum(eb_s, axis=1)  # energy per extra unit of L of the j best items (j = 1..M)
    G = np.cumsum(g_s, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Largest L the budget allows at all, and the breakpoints L_j (non-increasing in j).
        l_cap = np.where(F > 0, np.floor(np.maximum(base, 0.0) / np.where(F > 0, F, 1.0)
                                         * (1 + 1e-12)), tmax)
        breaks = (base[:, None] + tmin * E) / (E + F[:, None])
    l_hi = np.clip(np.minimum(l_cap, tmax), tmin, tmax)
    # Slope of V(L) - eps F L on the interval where exactly j items are full (j = 0..M):
    # j = 0 (L > L_1): -r_1 F; 0 < j < n: G_j - r_{j+1} (F + E_j); j = n: G_n.
    j_idx = np.arange(M + 1)
    G0 = np.concatenate([np.zeros((K, 1)), G], axis=1)
    E0 = np.concatenate([np.zeros((K, 1)), E], axis=1)
    r_next = np.concatenate([r_s, np.zeros((K, 1))], axis=1)
    slope = G0 - np.where(j_idx[None, :] < n_useful[:, None], r_next, 0.0) * (
        F[:, None] + E0) - (eps * F)[:, None]
    slope = np.where(j_idx[None, :] <= n_useful[:, None], slope, -np.inf)
    # Moving right in L, j falls from n to 0 and the slope falls (concavity): the real
    # maximiser is L_j for the smallest j whose interval still rises (tau_min: none rises).
    rising = slope > 0
    j_star = np.where(rising.any(axis=1), np.argmax(rising, axis=1), -1)
    breaks0 = np.concatenate([np.full((K, 1), np.inf), breaks], axis=1)  # L_0 = +inf
    rows = np.arange(K)
    l_star = np.where(j_star >= 0, breaks0[rows, np.maximum(j_star, 0)], tmin)
    l_star = np.clip(np.nan_to_num(l_star, nan=tmin, posinf=tmax), tmin, l_hi)
    # V(L) for a fixed L: item j (by ratio) gets clip((room - (L - tau_min) E_{j-1}) / eb_j,
    # 0, L - tau_min) extra units (the items before it take L - tau_min each first).
    e_prev = E0[:, :M]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_eb = np.where(eb_s > 0, 1.0 / eb_s, 0.0)
    const = tmin * gain.sum(axis=1)

    def extra_at(L: NDArray[np.float64]) -> NDArray[np.float64]:
        c = (L - tmin)[:, None]
        room = np.maximum(base - L * F, 0.0)[:, None]
        return np.clip((room - c * e_prev) * inv_eb, 0.0, c)

    best_val = np.full(K, -np.inf)
    best_L = np.full(K, float(tmin))
    low = np.floor(l_star - 1e-9)
    for shift in (0.0, 1.0, 2.0):
        L = np.clip(low + shift, tmin, l_hi)
        value = (extra_at(L) * g_s).sum(axis=1) + const - eps * L * F
        better = value > best_val
        best_val = np.where(better, value, best_val)
        best_L = np.where(better, L, best_L)
    tau = np.empty((K, M))
    np.put_along_axis(tau, order, extra_at(best_L), axis=1)
    tau = np.where(holds, tmin + tau, 0.0)
    # Integer response: whole units in the same order, under the stated cap.
    room = (cap if strict_cap is None else strict_cap) - tmin * eb.sum(axis=1) - best_L * F
    units = np.zeros((K, M))
    c = best_L - tmin
    for j in range(M):
        e = eb_s[:, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            can = np.floor(np.maximum(room, 0.0) / e * (1 - 1e-12))
        take = np.where(e > 0, np.clip(can, 0.0, c), 0.0)
        units[:, j] = take
        room = room - take * e
    unsorted = np.empty((K, M))
    np.put_along_axis(unsorted, order, units, axis=1)
    integer: NDArray[np.int64] = np.where(holds, tmin + unsorted, 0).astype(np.int64)
    return tau, np.where(feasible, best_val, -np.inf), integer


def _network_progress(problem: Problem, tau: NDArray[np.floating] | NDArray[np.integer]
                      ) -> NDArray[np.float64]:
    return (problem.speed * tau).sum(axis=0) / np.maximum(problem.holders, 1)


def dual_feasible(pi: NDArray[np.float64], delta: float, mu: float) -> NDArray[np.float64]:
    """Prices moved (by LP-tolerance amounts) into the exact dual-feasible set
    pi_m >= -mu, sum(pi) - 1 >= delta sum(max(0, -pi_m)), where d(pi) is a bound."""
    pi = np.maximum(np.asarray(pi, float), -mu)
    for _ in range(4):
        deficit = 1.0 + delta * np.maximum(-pi, 0.0).sum() - pi.sum()
        if deficit <= 0:
            return pi
        top = int(np.argmax(pi))
        pi = pi.copy()
        pi[top] += deficit * (1 + 1e-9) + 1e-15
    return pi


def minimise_dual(problem: Problem, max_iter: int = 200, tol: float = 1e-6) -> DualResult:
    """Minimise the Lagrangian dual over prices with a trust-region cutting-plane method."""
    held_mods = problem.holders > 0
    M = int(held_mods.sum())
    n = problem.holders[held_mods].astype(float)
    delta, mu = problem.delta, problem.mu

    # Fractional responses are kept for the mixed primal on small instances only (memory).
    keep_fractional = problem.n_devices * problem.n_modalities <= _MIX_CELLS
    int_dtype = np.int16 if problem.tau_max < 2**15 else np.int32
    integer_tau: list[NDArray[np.integer]] = []
    integer_progress: list[NDArray[np.float64]] = []

    def evaluate_dual(pi: NDArray[np.float64]
                      ) -> tuple[float, NDArray[np.float64], NDArray[np.float64] | None]:
        pi = dual_feasible(pi, delta, mu)
        price = np.zeros(problem.n_modalities)
        price[held_mods] = pi / n
        tau, value, integer = device_subproblems(problem, price)
        grad = _network_progress(problem, tau)[held_mods]
        integer_tau.append(integer.astype(int_dtype))
        integer_progress.append(_network_progress(problem, integer))
        # The float sum of K values, kept on the safe side of its rounding.
        return (float(value.sum() + 1e-12 * np.abs(value).sum()), grad,
                tau if keep_fractional else None)

    # Start: equal prices summing to 1 (delta * sum(u) = 0 <= sum(pi) - 1 = 0).
    center = np.full(M, 1.0 / M)
    d0, g0, t0 = evaluate_dual(center)
    cuts_pi, cuts_d, cuts_g, cuts_tau = [center], [d0], [g0], [t0]
    best_d, best_pi = d0, center
    radius = max(1.0, 2.0 / M)
    it = 0
    weights = np.array([1.0])
    for it in range(1, max_iter + 1):  # noqa: B007 - reported after the loop
        # Variables: pi (M), u (M), theta. Minimise theta.
        c = np.zeros(2 * M + 1)
        c[-1] = 1.0
        rows, rhs = [], []
        for p_i, d_i, g_i in zip(cuts_pi, cuts_d, cuts_g):
            # theta >= d_i + g_i (pi - p_i)  <=>  g_i pi - theta <= g_i p_i - d_i
            rows.append(np.concatenate([g_i, np.zeros(M), [-1.0]]))
            rhs.append(float(g_i @ p_i - d_i))
        n_cuts = len(rows)
        # u_m >= -pi_m  <=>  -pi_m - u_m <= 0
        for m in range(M):
            r = np.zeros(2 * M + 1)
            r[m], r[M + m] = -1.0, -1.0
            rows.append(r)
            rhs.append(0.0)
        # delta * sum(u) <= sum(pi) - 1
        r = np.concatenate([-np.ones(M), np.full(M, delta), [0.0]])
        rows.append(r)
        rhs.append(-1.0)
        # sum(pi) - 1 <= delta * M * mu (the rho_m <= mu cap on the overshoot prices)
        rows.append(np.concatenate([np.ones(M), np.zeros(M), [0.0]]))
        rhs.append(1.0 + delta * M * mu)
        bounds = [
            (max(-mu, best_pi[m] - radius), best_pi[m] + radius) for m in range(M)
        ] + [(0.0, None)] * M + [(None, None)]
        res = linprog(c, A_ub=np.array(rows), b_ub=np.array(rhs), bounds=bounds, method="highs")
        if res.status != 0:
            break
        pi = res.x[:M]
        model_value = res.x[-1]
        marg = -np.asarray(res.ineqlin.marginals[:n_cuts])
        weights = marg / marg.sum() if marg.sum() > 0 else np.eye(1, n_cuts, n_cuts - 1)[0]
        predicted = best_d - model_value
        # Large instances stop when the bound cannot move much relative to the gap the
        # integer responses already leave (checked every other cut: a small LP over the
        # responses); small ones run to the tolerance (cheap, and the cuts feed the mix).
        if not keep_fractional and it % 2 == 0 and len(integer_progress) >= 8:
            primal = _mix_weights(problem, np.array(integer_progress))[1]
            if predicted <= _GAP_SHARE * (best_d - primal):
                break
        if predicted <= tol * max(1.0, abs(best_d)):
            if radius >= 1e3:
                break
            radius *= 4.0  # the trust region, not the model, limited the step
            continue
        d, g, tau = evaluate_dual(pi)
        if d < best_d - 0.1 * predicted:
            best_d, best_pi = d, pi  # serious step: move the centre
            radius = min(radius * 2.0, 1e4)
        else:
            radius = max(radius * 0.5, 1e-6)
        cuts_pi.append(pi)
        cuts_d.append(d)
        cuts_g.append(g)
        cuts_tau.append(tau)
        if len(cuts_pi) > _MAX_CUTS:  # keep the bundle bounded: drop the least-used old cut
            w_full = np.concatenate([weights, [0.0]])
            drop = int(np.argmin(w_full[:-1]))
            for lst in (cuts_pi, cuts_d, cuts_g, cuts_tau):
                del lst[drop]
            weights = np.delete(w_full, drop)
    tau_mix = None
    if keep_fractional:
        tau_mix = np.zeros(problem.holds.shape)
        w = weights[: len(cuts_tau)]
        if w.size != len(cuts_tau) or not np.isfinite(w).all() or w.sum() <= 0:
            w = np.zeros(len(cuts_tau))
            w[-1] = 1.0
        for w_i, t_i in zip(w, cuts_tau):
            if w_i > 0:
                tau_mix += w_i * t_i
    full_pi = np.zeros(problem.n_modalities)
    full_pi[held_mods] = best_pi
    return DualResult(bound=best_d, prices=full_pi, tau_fractional=tau_mix, iterations=it,
                      integer_tau=integer_tau, integer_progress=np.array(integer_progress))


class _State:
    """Integer table under repair, with its energies and network progress kept incrementally."""

    def __init__(self, problem: Problem, tau: NDArray[np.int64]) -> None:
        self.p = problem
        self.tau = tau.astype(np.int64)
        # The shared budget rule (metrics.energy.budget_limit_j) less communication.
        self.limit = problem.level_caps().cap[:, 0]
        self.n = np.maximum(problem.holders, 1).astype(float)
        self.refresh()

    @property
    def top_count(self) -> NDArray[np.int64]:
        """How many held modalities of each device run L_k iterations."""
        return (np.where(self.p.holds, self.tau, -1) == self.L[:, None]).sum(axis=1)

    @property
    def second(self) -> NDArray[np.int64]:
        """Largest count strictly below L_k per device (tau_min when none)."""
        below = np.where(self.p.holds & (self.tau < self.L[:, None]), self.tau, self.p.tau_min)
        return below.max(axis=1)

    def refresh(self) -> None:
        p = self.p
        self.L = self.tau.max(axis=1)
        self.energy = self.L * p.forward_sum + (self.tau * p.backward_energy).sum(axis=1)
        self.G = (p.speed * self.tau).sum(axis=0) / self.n

    def change(self, rows: NDArray[np.int64], m: int, step: int) -> None:
        """Add ``step`` iterations of modality m on some devices, updating the sums in place."""
        p = self.p
        self.tau[rows, m] += step
        self.G[m] += step * p.speed[rows, m].sum() / self.n[m]
        self.L[rows] = self.tau[rows].max(axis=1)
        self.energy[rows] = self.L[rows] * p.forward_sum[rows] + (
            self.tau[rows] * p.backward_energy[rows]
        ).sum(axis=1)

    def add_cost(self, m: int) -> NDArray[np.float64]:
        """Energy of one more iteration of modality m on each device (inf where impossible)."""
        p = self.p
        t = self.tau[:, m]
        cost = p.backward_energy[:, m] + np.where(t >= self.L, p.forward_sum, 0.0)
        ok = p.holds[:, m] & (t < p.tau_max) & (self.energy + cost <= self.limit)
        return np.where(ok, cost, np.inf)


def _held_min(problem: Problem, G: NDArray[np.float64]) -> tuple[int, float, float]:
    held = problem.holders > 0
    order = np.argsort(np.where(held, G, np.inf))
    first = int(order[0])
    second = float(G[order[1]]) if held.sum() > 1 else math.inf
    return first, float(G[first]), second


def fill_bottleneck(state: _State) -> None:
    """Raise the lowest network progress by progress per joule, in batches, until stuck.

    Each modality keeps a ranking of devices by progress per joule of one more iteration,
    built once and consumed in order; only the devices about to receive an iteration are
    re-checked against their budget (their costs may have moved since the ranking). A ranking
    is rebuilt when used up, so a pass costs O(batch x M) instead of a full O(K log K) sort
    (which made 100,000 devices take minutes: one sort per added iteration near balance).
    """
    p = state.p
    orders: dict[int, NDArray[np.int64]] = {}
    pointer: dict[int, int] = {}

    def rebuild(m: int) -> None:
        cost = state.add_cost(m)
        rows = np.flatnonzero(np.isfinite(cost))
        value = p.speed[rows, m] / cost[rows]
        orders[m], pointer[m] = rows[np.argsort(-value, kind="stable")], 0

    for _ in range(10 * p.n_devices * p.n_modalities * (p.tau_max - p.tau_min + 1) + 100):
        m, g_min, g_next = _held_min(p, state.G)
        if m not in orders or pointer[m] >= orders[m].size:
            rebuild(m)
            if orders[m].size == 0:
                return
        need = (g_next - g_min) * state.n[m] if math.isfinite(g_next) else math.inf
        order, start = orders[m], pointer[m]
        # Look ahead far enough to cover the need, but batches of at most 1/8 of the ranking
        # (small batches near balance keep the choice of device sharp).
        span = max(1, order.size // 8)
        rows = order[start:start + span]
        t = state.tau[rows, m]
        cost = p.backward_energy[rows, m] + np.where(t >= state.L[rows], p.forward_sum[rows], 0.0)
        ok = (t < p.tau_max) & (state.energy[rows] + cost <= state.limit[rows])
        if not ok.any():
            pointer[m] = start + rows.size
            continue
        good = np.flatnonzero(ok)
        gains = np.cumsum(p.speed[rows[good], m])
        count = min(int(np.searchsorted(gains, need, side="left")) + 1, good.size)
        state.change(rows[good[:count]], m, +1)
        pointer[m] = start + int(good[count - 1]) + 1


def swap_toward_bottleneck(state: _State, max_rounds: int | None = None) -> None:
    """Move iterations from non-bottleneck modalities to the bottleneck on the same devices.

    Each round picks the modality pair whose best single move raises the minimum most, then
    applies that move on as many devices as keep the order (the bottleneck stays below the
    next-lowest modality and the donor stays above it), so large networks need few rounds.
    """
    p = state.p
    eps_scale = p.epsilon / p.energy_scale
    if max_rounds is None:
        # Each round is O(K): bound the total work. From a balanced assignment few rounds are
        # needed (issue 17: 40 at 100,000 devices; 5,000 up to 800 devices).
        max_rounds = min(5_000, max(20, 4_000_000 // max(p.n_devices, 1)))
    for _ in range(max_rounds):
        m, g_min, g_next = _held_min(p, state.G)
        best_val, best = 0.0, None
        top_count, second = state.top_count, state.second
        for m2 in range(p.n_modalities):
            if m2 == m or p.holders[m2] == 0:
                continue
            can = p.holds[:, m] & p.holds[:, m2] & (state.tau[:, m] < p.tau_max)
            can &= state.tau[:, m2] > p.tau_min
            if not can.any():
                continue
            # L after the move: only the donor column can have been the unique maximum.
            L_new = np.maximum(state.L, state.tau[:, m] + 1)
            donor_top = (state.tau[:, m2] == state.L) & (top_count == 1)
            lowered = np.maximum(np.maximum(state.tau[:, m] + 1, state.tau[:, m2] - 1), second)
            L_new = np.where(donor_top, lowered, L_new)
            e_delta = (p.backward_energy[:, m] - p.backward_energy[:, m2]
                       + (L_new - state.L) * p.forward_sum)
            can &= state.energy + e_delta <= state.limit
            drop = p.speed[:, m2] / state.n[m2]
            rise = p.speed[:, m] / state.n[m]
            # A single move must raise the minimum: m2 must stay above the new level of m.
            new_min = np.minimum(g_min + rise, np.minimum(g_next, state.G[m2] - drop))
            gain = np.where(can, new_min - g_min - eps_scale * e_delta, -np.inf)
            k = int(np.argmax(gain))
            if gain[k] > best_val + 1e-15:
                best_val, best = gain[k], (m2, gain, rise, drop)
        if best is None:
            return
        m2, gain, rise, drop = best
        order = np.argsort(-gain)
        order = order[gain[order] > 1e-15]
        cum_rise = np.cumsum(rise[order])
        cum_drop = np.cumsum(drop[order])
        room = max(g_next - g_min, float(rise[order[0]]))
        keep = (cum_rise <= room + 1e-15) & (state.G[m2] - cum_drop >= g_min + cum_rise - 1e-15)
        count = max(1, int(np.argmin(keep)) if not keep.all() else keep.size)
        chosen = order[:count]
        state.change(chosen, m, +1)
        state.change(chosen, m2, -1)
        fill_bottleneck(state)


def trim_overshoot(state: _State) -> None:
    """Remove iterations that only add overshoot penalty and energy (keep G_m >= (1+delta) z)."""
    p = state.p
    for _ in range(100_000):
        _, z, _ = _held_min(p, state.G)
        target = (1 + p.delta) * z
        over = (p.holders > 0) & (state.G > target + 1e-15)
        if not over.any():
            return
        moved = False
        for m in np.flatnonzero(over):
            drop = p.speed[:, m] / state.n[m]
            can = p.holds[:, m] & (state.tau[:, m] > p.tau_min)
            # Dropping below the floor would lower z: forbid.
            can &= state.G[m] - drop >= z - 1e-15
            if not can.any():
                continue
            k = int(np.argmax(np.where(can, p.backward_energy[:, m], -np.inf)))
            state.change(np.array([k]), int(m), -1)
            moved = True
        if not moved:
            return


def polish(problem: Problem, tau: NDArray[np.int64], max_moves: int = 1_000
           ) -> NDArray[np.int64]:
    """Best-improvement local search on small instances: every single-device move (one
    iteration more, one less, or one moved between two modalities) scored by the exact
    objective, the best improving one applied, until none improves.

    Fill, swap and trim each chase one term (the bottleneck, the overshoot); on a few devices
    a move that trades floor for overshoot can win (issue 17: the heuristic was 1.2-41% below
    brute force on some 2-4-device instances with CPU levels).
    """
    p = problem
    K, M = p.holds.shape
    eye = np.eye(M, dtype=np.int64)
    moves = [eye, -eye] + [eye[b] - eye[a] for a in range(M) for b in range(M) if a != b]
    D = np.vstack([np.atleast_2d(x) for x in moves])  # (nd, M)
    limit = p.level_caps().cap[:, 0]
    n = np.maximum(p.holders, 1).astype(float)
    held_mod = p.holders > 0
    eps = p.epsilon / p.energy_scale
    one_delta = 1.0 + p.delta
    changed = D != 0
    allowed = ~(changed[None, :, :] & ~p.holds[:, None, :]).any(axis=2)  # (K, nd)
    tau = tau.astype(np.int64).copy()
    for _ in range(max_moves):
        current = evaluate(p, tau)
        rows = tau[:, None, :] + D[None, :, :]  # (K, nd, M)
        ok = allowed & np.where(p.holds[:, None, :], (rows >= p.tau_min) & (rows <= p.tau_max),
                                True).all(axis=2)
        local = np.where(p.holds[:, None, :], rows, 0).max(axis=2)
        energy = local * p.forward_sum[:, None] + (rows * p.backward_energy[:, None, :]).sum(
            axis=2)
        ok &= energy <= limit[:, None]
        G = current.network_progress
        G_new = np.nan_to_num(G)[None, None, :] + D[None, :, :] * (p.speed / n)[:, None, :]
        z = np.where(held_mod, G_new, np.inf).min(axis=2)
        over = np.where(held_mod, np.maximum(G_new - one_delta * z[:, :, None], 0.0), 0.0)
        own = np.where(p.holds, tau, 0).max(axis=1) * p.forward_sum + (
            tau * p.backward_energy).sum(axis=1)
        total = current.compute_energy.sum() - own[:, None] + energy
        value = np.where(ok, z - p.mu * over.sum(axis=2) - eps * total, -np.inf)
        k, d = np.unravel_index(int(np.argmax(value)), value.shape)
        best_value = value[k, d]
        apply: list[tuple[int, NDArray[np.int64]]] = [(int(k), D[d])]
        if K <= _TRANSFER_DEVICES:
            # Transfers: one iteration of modality m from device a to device b (moves the
            # modality's progress between devices; no single-device move does).
            add_ok, add_e = ok[:, :M], energy[:, :M] - own[:, None]  # (K, M): +1 on m
            cut_ok, cut_e = ok[:, M:2 * M], energy[:, M:2 * M] - own[:, None]  # -1 on m
            gain = p.speed / n  # (K, M)
            dG = gain[None, :, :] - gain[:, None, :]  # (a, b, m)
            G_t = np.nan_to_num(G)[None, None, None, :] + dG[..., None] * eye[None, None]
            z_t = np.where(held_mod, G_t, np.inf).min(axis=3)
            over_t = np.where(held_mod, np.maximum(G_t - one_delta * z_t[..., None], 0.0),
                              0.0).sum(axis=3)
            ok_t = cut_ok[:, None, :] & add_ok[None, :, :] & ~np.eye(K, dtype=bool)[..., None]
            e_t = current.compute_energy.sum() + cut_e[:, None, :] + add_e[None, :, :]
            value_t = np.where(ok_t, z_t - p.mu * over_t - eps * e_t, -np.inf)
            a, b, m = np.unravel_index(int(np.argmax(value_t)), value_t.shape)
            if value_t[a, b, m] > best_value:
                best_value = value_t[a, b, m]
                apply = [(int(a), -eye[m]), (int(b), eye[m])]
        if not best_value > current.objective + 1e-12 * max(abs(current.objective), 1e-12):
            break
        for row, step in apply:
            tau[row] += step
    return tau


# Up to this many devices `polish` also tries every transfer of one iteration between two
# devices (K x K x M candidates).
_TRANSFER_DEVICES = 60


# Up to this many device x modality cells the heuristic ends with `polish` (each of its moves
# looks at K x M (M + 1) candidates).
_POLISH_CELLS = 4_000
# Up to this many cells every distinct integer response of the dual is a start.
_MULTISTART_CELLS = 200


def improve(problem: Problem, tau: NDArray[np.int64]) -> NDArray[np.int64]:
    """Repair-and-improve an integer table (fill, swap, trim, and on small instances polish),
    keeping the best one seen."""
    state = _State(problem, tau)
    best = state.tau.copy()
    best_obj = evaluate(problem, best).objective
    for step in (fill_bottleneck, swap_toward_bottleneck, trim_overshoot):
        step(state)
        obj = evaluate(problem, state.tau).objective
        if obj >= best_obj:
            best, best_obj = state.tau.copy(), obj
        else:
            state = _State(problem, best.copy())
    if problem.n_devices * problem.n_modalities <= _POLISH_CELLS:
        polished = polish(problem, best)
        if evaluate(problem, polished).objective >= best_obj:
            best = polished
    return best


def round_down(problem: Problem, tau_frac: NDArray[np.float64]) -> NDArray[np.int64]:
    """Integer table below a fractional one (energy can only drop), clipped to the bounds."""
    tau = np.floor(tau_frac + 1e-9)
    tau = np.clip(tau, problem.tau_min, problem.tau_max)
    return np.where(problem.holds, tau, 0).astype(np.int64)


def _mix_weights(problem: Problem, G: NDArray[np.float64]
                 ) -> tuple[NDArray[np.float64], float]:
    """Weights over integer responses (rows of G, their network progress (C, M)) that maximise
    z - mu sum s of the weighted progress, and that value (-inf when the LP fails)."""
    held = problem.holders > 0
    G = G[:, held]
    C, M = G.shape
    # Variables w (C), z, s (M). Maximise z - mu sum s (the energy tie-break is left to trim).
    c = np.concatenate([np.zeros(C), [-1.0], np.full(M, problem.mu)])
    A = np.zeros((2 * M, C + 1 + M))
    A[:M, :C] = -G.T  # z - sum w G_m <= 0
    A[:M, C] = 1.0
    A[M:, :C] = G.T  # sum w G_m - (1 + delta) z - s_m <= 0
    A[M:, C] = -(1.0 + problem.delta)
    A[M:, C + 1:] = -np.eye(M)
    eq = np.concatenate([np.ones(C), [0.0], np.zeros(M)])[None, :]
    res = linprog(c, A_ub=A, b_ub=np.zeros(2 * M), A_eq=eq, b_eq=[1.0],
                  bounds=[(0, None)] * (C + 1 + M), method="highs")
    if res.status != 0:
        w = np.zeros(C)
        w[-1] = 1.0
        return w, -math.inf
    w = np.maximum(res.x[:C], 0.0)
    return w / w.sum(), float(-res.fun)


def balanced_assignment(problem: Problem, dual: DualResult, seed: int = 0) -> NDArray[np.int64]:
    """An integer table made of whole device responses: weights over the evaluated prices'
    integer responses that maximise the objective of their expected network progress (a small
    LP over the responses, `_mix_weights`), then each device plays one response drawn with
    those weights.

    Every device's table is an integer best response to some prices (no rounding loss on
    the device), and with many devices the drawn mix has the LP's balance up to sampling noise
    (issue 17: rounding the fractional mix down lost 2-4% of progress at 100,000 devices).
    """
    w, _ = _mix_weights(problem, dual.integer_progress)
    rng = np.random.default_rng(seed)
    pick = rng.choice(w.size, size=problem.n_devices, p=w)
    out = np.empty(problem.holds.shape, np.int64)
    for i in np.flatnonzero(w > 0):
        rows = pick == i
        out[rows] = dual.integer_tau[i][rows]
    return np.where(problem.holds, out, 0)


def solve_lagrangian(problem: Problem, **_: object) -> Allocation:
    """Network-scope heuristic with a certified bound (Lagrangian dual + repair + local search)."""
    if problem.scope != "network":
        raise ValueError("the Lagrangian heuristic solves the network scope")
    start = time.perf_counter()
    dual = minimise_dual(problem)
    # With CPU levels: repair and search at each device's roomiest level (the tie-break alone
    # never pays for a smaller room); the reported level is then the cheapest that fits.
    fixed = problem.at_levels(problem.roomiest_levels())
    starts = [balanced_assignment(fixed, dual)]
    if dual.tau_fractional is not None:
        starts.append(round_down(fixed, dual.tau_fractional))
    if problem.n_devices * problem.n_modalities <= _MULTISTART_CELLS:
        # Tiny instances: every distinct integer response is a start too (local search from
        # one start got stuck 8-41% below the optimum on some 2-4-device instances).
        distinct = {t.tobytes(): t for t in dual.integer_tau}
        starts += [np.asarray(t, np.int64) for t in distinct.values()]
    tables = [improve(fixed, t) for t in starts]
    tau = max(tables, key=lambda t: evaluate(fixed, t).objective)
    elapsed = time.perf_counter() - start
    return Allocation(
        problem,
        tau,
        solver="heuristic",
        status="feasible",
        bound=dual.bound,
        solve_time_s=elapsed,
        info={"algorithm": "lagrangian", "dual_iterations": dual.iterations,
              "certificate": "lagrangian dual bound",
              "prices": dual.prices.tolist()},
    )
