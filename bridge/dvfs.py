"""The allocator choosing tau AND CPU frequency each round (`dmml-kd-balance-dvfs`).

Each round's problem is `dmmlkd.bridge.policies.build_problem`'s (members, measured speeds, budgets),
extended with the time/frequency model of issue 9 (`allocator.Problem` fields ``cpu_levels_hz``,
``cycles_forward``/``cycles_backward``, ``batch_size``, ``capacitance``, ``comm_time_s``,
``deadline_s``). The round budget of a device is what the allocator-free control `uniform-dvfs`
spends on it this round (uniform tau at its lowest level meeting the deadline), capped by the
battery's even share: the allocator redistributes the control's energy over modalities and
levels, so it never spends more than the control and never runs past the deadline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dmmlkd.allocator import AllocatorOptions, Problem, solve
from dmmlkd.bridge.policies import build_problem, measured_speeds
from dmmlkd.learner import clock
from dmmlkd.learner.policy import PolicyDecision, RoundState
from dmmlkd.learner.schedules import uniform_dvfs_policy
from dmmlkd.metrics.energy import DEFAULT_CAPACITANCE, computation_energy_j, round_cycles
from dmmlkd.userio.options import DEFAULTS


def control_round_energy(state: RoundState) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """What `uniform-dvfs` would spend this round per device (J) and at which frequency (Hz)."""
    decision = uniform_dvfs_policy(state)
    assert decision.cpu_hz is not None and state.cpu_hz is not None
    scale = clock.energy_scale(decision.cpu_hz, state.cpu_hz)
    compute = computation_energy_j(decision.tau, state.holds, state.forward_j, state.backward_j)
    trains = decision.tau.max(axis=1) > 0
    return np.where(trains, scale * compute + state.comm_j, 0.0), decision.cpu_hz


def build_dvfs_problem(state: RoundState, options: AllocatorOptions = DEFAULTS,
                       budget_rule: str = "even",
                       ) -> tuple[Problem | None, NDArray[np.int64], list[int], NDArray[np.int64]]:
    """The round's problem with levels and deadline.

    Returns (problem or None, member indices, dropped devices, late devices): a late device
    cannot fit tau_min before the deadline even at f_max; it is left out of the problem and
    runs tau_min at f_max (the loop logs it as late).
    """
    base, members, dropped = build_problem(state, options, budget_rule)
    if base is None:
        return None, members, dropped, np.zeros(0, np.int64)
    assert state.cycles_forward is not None and state.cycles_backward is not None
    assert state.cpu_levels_hz is not None and state.comm_time_s is not None
    cheapest = round_cycles(np.where(state.holds, state.tau_min, 0), state.holds,
                            state.batch_size, state.cycles_forward, state.cycles_backward)
    fastest = clock.device_time_s(cheapest, np.asarray(state.cpu_levels_hz).max(axis=1),
                                  state.comm_time_s)
    on_time = clock.meets_deadline(fastest, state.deadline_s)[members]
    late, members = members[~on_time], members[on_time]
    if members.size == 0:
        return None, members, dropped, late
    control, _ = control_round_energy(state)
    # The control's energy, within the battery's share (base.budget is aligned with members).
    budget = np.minimum(base.budget[on_time], control[members])
    problem = levels_problem(state, members, budget, options)
    return problem, members, dropped, late


def levels_problem(state: RoundState, members: NDArray[np.int64], budget: NDArray[np.float64],
                   options: AllocatorOptions = DEFAULTS, scope: str | None = None) -> Problem:
    """The allocation problem of ``members`` (rows of the state) with their CPU levels, cycles,
    communication time and the round deadline, on the round budgets ``budget`` (one per member)."""
    assert state.cycles_forward is not None and state.cycles_backward is not None
    assert state.cpu_levels_hz is not None and state.comm_time_s is not None
    return Problem(
        modalities=tuple(state.modalities), devices=tuple(state.devices[k] for k in members),
        holds=np.asarray(state.holds, bool)[members], speed=measured_speeds(state)[members],
        comm_energy=np.asarray(state.comm_j, float)[members], budget=budget,
        scope=scope or options.scope, tau_min=state.tau_min, tau_max=state.tau_max,
        delta=options.delta, mu=options.mu, epsilon=options.epsilon, deadline_s=state.deadline_s,
        cpu_levels_hz=np.asarray(state.cpu_levels_hz, float)[members],
        cycles_forward=np.asarray(state.cycles_forward, float)[members],
        cycles_backward=np.asarray(state.cycles_backward, float)[members],
        batch_size=np.full(members.size, float(state.batch_size)),
        capacitance=np.full(members.size, DEFAULT_CAPACITANCE),
        comm_time_s=np.asarray(state.comm_time_s, float)[members],
    )


@dataclass(frozen=True)
class DvfsAllocatorPolicy:
    """Each round: the allocator picks tau and a CPU level per device under budget and deadline."""

    options: AllocatorOptions = DEFAULTS
    budget_rule: str = "even"

    def __call__(self, state: RoundState) -> PolicyDecision:
        """Solve this round's problem with levels; tau, frequencies, what to log."""
        t0 = time.perf_counter()
        o = self.options
        problem, members, dropped, late = build_dvfs_problem(state, o, self.budget_rule)
        holds = np.asarray(state.holds, bool)
        assert state.cpu_hz is not None
        tau = np.zeros(holds.shape, np.int64)
        cpu = np.asarray(state.cpu_hz, float).copy()
        tau[late] = np.where(holds[late], state.tau_min, 0)
        info: dict[str, Any] = {"solver": o.solver, "late_devices_planned": int(late.size)}
        if problem is None:
            return PolicyDecision(tau, {**info, "status": "no device can train"}, dropped, cpu_hz=cpu)
        alloc = solve(problem, o.solver, **o.solve_options())
        tau[members] = alloc.tau
        cpu[members] = alloc.cpu_hz
        s = alloc.summary()
        info.update({"scope": o.scope, "status": s["status"], "objective": s["objective"],
                     "gap": s["gap"], "solver_time_s": alloc.total_time_s,
                     "policy_time_s": time.perf_counter() - t0,
                     "mean_level_fraction": float(np.mean(cpu[members] / state.cpu_hz[members]))})
        return PolicyDecision(tau, info, dropped, cpu_hz=cpu)
