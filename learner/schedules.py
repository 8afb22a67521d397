"""Allocator-free schedules: controls that move iterations between views without measuring.

`RandomSchedule` is the control for the allocator's claim: it reallocates iterations between a
device's views at random, at exactly the energy of the uniform schedule, so any lift it gives
comes from unequal tau itself (under the "training" fusion rule: implicit modality dropout), not
from measuring anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from dmmlkd.learner import clock
from dmmlkd.learner.policy import PolicyDecision, RoundState
from dmmlkd.metrics.energy import budget_limit_j, computation_energy_j, fits_budget, round_cycles


def uniform_policy(state: RoundState) -> PolicyDecision:
    """Same tau (local_iters) on every held modality, lowered per device as its battery allows."""
    holds = state.holds & state.active[:, None]
    per_iter = np.where(holds, state.forward_j + state.backward_j, 0.0).sum(axis=1)
    # The shared tolerance: a battery sized for exactly k rounds must pay the k-th in full.
    affordable = np.floor((budget_limit_j(state.battery_j) - state.comm_j)
                          / np.maximum(per_iter, 1e-300))
    t = np.minimum(state.local_iters, affordable)
    dropped = [int(k) for k in np.flatnonzero(state.active & (t < state.tau_min))]
    t = np.where(t >= state.tau_min, t, 0)
    return PolicyDecision(np.where(holds, t[:, None], 0).astype(np.int64), {"policy": "uniform"},
                          dropped)


def uniform_dvfs_policy(state: RoundState) -> PolicyDecision:
    """Uniform tau, each device at its lowest CPU level that meets the round deadline."""
    decision = uniform_policy(state)
    assert state.cpu_levels_hz is not None and state.comm_time_s is not None
    assert state.cycles_forward is not None and state.cycles_backward is not None
    cycles = round_cycles(decision.tau, state.holds, state.batch_size, state.cycles_forward,
                          state.cycles_backward)
    decision.cpu_hz = clock.lowest_level_meeting(cycles, state.cpu_levels_hz, state.comm_time_s,
                                                 state.deadline_s)
    decision.info["policy"] = "uniform-dvfs"
    return decision


@dataclass
class RandomSchedule:
    """tau = local_iters ± spread over each device's views, drawn at random, antithetic in pairs.

    Rounds come in pairs (0, 1), (2, 3), ...: in the first round of a pair every device with two
    or more views draws a random split of its views into halves that get local_iters + d and
    local_iters - d (with an odd count, one random view keeps local_iters); in the second round
    each view gets the opposite sign. Views cost different energy per iteration, so no single
    round can both move iterations and cost exactly what uniform costs; a pair can: each view
    runs exactly 2 local_iters iterations over it, so the pair costs exactly two uniform rounds,
    and so does the run (an odd last round is uniform). A device the battery limits below
    local_iters gets the uniform policy's answer, and the second round of a pair keeps its signs
    only when the first one was applied.
    """

    spread: int = 1
    seed: int = 0
    rng: np.random.Generator = field(init=False)
    signs: NDArray[np.int64] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng([self.seed, 7_919])

    def draw(self, holds: NDArray[np.bool_]) -> NDArray[np.int64]:
        """Signs (K, M) in {-1, 0, +1}: per device half its views +1, half -1 (odd: one 0)."""
        K, M = holds.shape
        signs = np.zeros((K, M), np.int64)
        for k in range(K):
            views = self.rng.permutation(np.flatnonzero(holds[k]))
            half = views.size // 2
            signs[k, views[:half]] = 1
            signs[k, views[half:2 * half]] = -1
        return signs

    def __call__(self, state: RoundState) -> PolicyDecision:
        """This round's tau: uniform's, moved by ± spread per the drawn (or mirrored) signs."""
        base = uniform_policy(state)
        holds = state.holds & state.active[:, None]
        full = (base.tau == state.local_iters) | ~holds  # devices the battery does not limit
        full_dev = full.all(axis=1) & holds.any(axis=1)
        d = self.spread
        if state.round % 2 == 0:
            if state.round == state.rounds_total - 1:  # odd last round: uniform
                self.signs = None
                return PolicyDecision(base.tau, {"policy": "random-schedule"}, base.dropped)
            signs = self.draw(holds)
            # Apply the pair only where the battery pays both of its rounds.
            forward, backward = state.forward_j, state.backward_j
            tau_a = np.where(holds, state.local_iters + d * signs, 0)
            tau_b = np.where(holds, state.local_iters - d * signs, 0)
            pair = computation_energy_j(tau_a, holds, forward, backward) \
                + computation_energy_j(tau_b, holds, forward, backward) + 2 * state.comm_j
            ok = full_dev & fits_budget(pair, state.battery_j)
            signs[~ok] = 0
            self.signs = signs
            tau = np.where(holds & (base.tau > 0), base.tau + d * signs, base.tau)
        else:
            # The mirror of the pair's first round: priced on its own (after a first round that
            # favoured the dearer view, uniform alone would no longer fit in the last pair).
            signs = -self.signs if self.signs is not None else np.zeros_like(base.tau)
            mirror = np.where(holds, state.local_iters + d * signs, 0)
            cost = computation_energy_j(mirror, holds, state.forward_j, state.backward_j) \
                + state.comm_j
            use = (signs != 0).any(axis=1) & fits_budget(cost, state.battery_j) & state.active
            tau = np.where(use[:, None], mirror, base.tau)
            dropped = [k for k in base.dropped if not use[k]]
            return PolicyDecision(tau.astype(np.int64), {"policy": "random-schedule"}, dropped)
        return PolicyDecision(tau.astype(np.int64), {"policy": "random-schedule"}, base.dropped)


@dataclass(frozen=True)
class UniformOptions:
    """Every uniform round a device could run: tau on all its views, at the lowest CPU level
    meeting the deadline (shared by `uniform-pacing` and the fleet allocator)."""

    taus: NDArray[np.int64]  # (T,) tau_min .. tau_max
    cpu_hz: NDArray[np.float64]  # (K, T) the level of each option
    cost_j: NDArray[np.float64]  # (K, T) its energy, communication included
    on_time: NDArray[np.bool_]  # (K, T) it meets the deadline (tau_min runs at f_max if none)


def uniform_options(state: RoundState) -> UniformOptions:
    """The (K, T) table of uniform rounds with their levels and energies (vectorised)."""
    assert state.cpu_levels_hz is not None and state.comm_time_s is not None
    assert state.cycles_forward is not None and state.cycles_backward is not None
    assert state.cpu_hz is not None
    holds = state.holds
    K = holds.shape[0]
    taus = np.arange(state.tau_min, state.tau_max + 1)
    per_iter_j = np.where(holds, state.forward_j + state.backward_j, 0.0).sum(axis=1)
    # Uniform tau: L = tau, so the round's cycles (either fusion rule) are tau x one iteration's.
    per_iter_cycles = round_cycles(np.where(holds, 1, 0), holds, state.batch_size,
                                   state.cycles_forward, state.cycles_backward)
    levels = np.asarray(state.cpu_levels_hz, float)  # (K, L) ascending
    cycles = taus[None, :, None] * per_iter_cycles[:, None, None]  # (K, T, 1)
    times = clock.device_time_s(np.broadcast_to(cycles, (K, taus.size, levels.shape[1])),
                                levels[:, None, :], state.comm_time_s[:, None, None])
    ok = clock.meets_deadline(times, state.deadline_s)
    level = np.where(ok.any(axis=2), np.argmax(ok, axis=2), levels.shape[1] - 1)  # lowest ok
    f = np.take_along_axis(levels, level, axis=1)  # (K, T)
    cost = taus[None, :] * per_iter_j[:, None] * clock.energy_scale(f, state.cpu_hz[:, None]) \
        + state.comm_j[:, None]
    return UniformOptions(taus, f, cost, np.asarray(ok.any(axis=2), bool))


def uniform_pacing_policy(state: RoundState) -> PolicyDecision:
    """`uniform-pacing`: each device spends its remaining battery evenly over the remaining
    rounds; the same tau on all its views, as many iterations as that share pays (up to tau_max),
    each at its lowest CPU level meeting the deadline. No solver, no measurement.

    A device whose share cannot pay tau_min (at its lowest level meeting the deadline) sits the
    round out and saves the energy for later rounds; when no level meets the deadline even for
    tau_min, it runs tau_min at f_max (late, logged by the loop).
    """
    holds = np.asarray(state.holds & state.active[:, None], bool)
    opts = uniform_options(state)
    share = budget_limit_j(state.battery_j / max(state.rounds_total - state.round, 1))
    allowed = np.array(opts.on_time, bool)
    allowed[:, 0] = True  # tau_min runs even when late
    trains = np.asarray(holds.any(axis=1), bool)
    ok = allowed & (opts.cost_j <= share[:, None]) & trains[:, None]
    best = np.where(ok.any(axis=1), ok.shape[1] - 1 - np.argmax(ok[:, ::-1], axis=1), -1)
    rows = np.arange(holds.shape[0])
    tau = np.where(best >= 0, opts.taus[np.maximum(best, 0)], 0)
    assert state.cpu_hz is not None
    cpu = np.where(best >= 0, opts.cpu_hz[rows, np.maximum(best, 0)], state.cpu_hz)
    sitting = int((trains & (best < 0)).sum())
    return PolicyDecision(np.where(holds, tau[:, None], 0).astype(np.int64),
                          {"policy": "uniform-pacing", "sitting_out": sitting}, cpu_hz=cpu)
