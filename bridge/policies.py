"""Allocation policies for the learning loop: the allocator wired to the learner's state.

The learner never imports the allocator. It calls ``policy(state)`` each round with a
`learner.policy.RoundState` (measured smoothed speeds, batteries, per-iteration energies, ...);
the policies here turn that state into an allocation `Problem`, solve it, and hand back the
iteration table. Devices that cannot pay the cheapest round are left out and reported.

A policy carries one `AllocatorOptions` (solver, scope, delta, mu, epsilon, time limit, MIP
gap; defaults in `dmmlkd.userio.options`); the tau range is the round state's (the learner's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dmmlkd.allocator import AllocatorOptions, Problem, solve
from dmmlkd.learner.policy import PolicyDecision, RoundState
from dmmlkd.metrics.energy import cheapest_round_j, fits_budget
from dmmlkd.userio.options import BUDGET_RULES, DEFAULTS

__all__ = ["BUDGET_RULES", "AllocatorPolicy", "build_problem", "measured_speeds", "round_budget"]


def round_budget(battery_j: NDArray[np.float64], round_index: int, rounds_total: int,
                 rule: str = "even") -> NDArray[np.float64]:
    """This round's budget: remaining battery spread evenly over the remaining rounds, or all."""
    remaining = max(rounds_total - round_index, 1)
    if rule == "even":
        return np.asarray(battery_j, float) / remaining
    if rule == "all":
        return np.asarray(battery_j, float).copy()
    raise ValueError(f"budget rule must be one of {BUDGET_RULES} (got {rule!r})")


def build_problem(state: RoundState, options: AllocatorOptions = DEFAULTS,
                  budget_rule: str = "even",
                  ) -> tuple[Problem | None, NDArray[np.int64], list[int]]:
    """The round's allocation problem over the devices that can take part.

    Returns (problem or None when nobody can train, indices of the devices in it, dropped
    devices). A device is dropped when its battery cannot pay tau_min on its modalities plus
    communication. When the even share of its battery is below that cheapest round but the
    battery itself is not, the device gets the cheapest round (it would otherwise idle with
    energy it can never use in time).
    """
    holds = np.asarray(state.holds, bool)
    battery = np.asarray(state.battery_j, float)
    forward = np.where(holds, np.asarray(state.forward_j, float), 0.0)
    backward = np.where(holds, np.asarray(state.backward_j, float), 0.0)
    comm = np.asarray(state.comm_j, float)
    cheapest = cheapest_round_j(holds, forward, backward, comm, state.tau_min)
    active = np.asarray(state.active, bool) & holds.any(axis=1)
    budget = round_budget(battery, state.round, state.rounds_total, budget_rule)
    can_pay = fits_budget(cheapest, battery)
    dropped = [int(k) for k in np.flatnonzero(active & ~can_pay)]
    members = np.flatnonzero(active & can_pay)
    if members.size == 0:
        return None, members, dropped
    # Raised to the cheapest round, but never above what the battery can pay.
    budget = np.minimum(np.maximum(budget, cheapest), battery)
    speed = measured_speeds(state)
    problem = Problem(
        modalities=tuple(state.modalities),
        devices=tuple(state.devices[k] for k in members),
        holds=holds[members], speed=speed[members], forward_energy=forward[members],
        backward_energy=backward[members], comm_energy=comm[members],
        budget=budget[members],
        scope=options.scope, tau_min=state.tau_min, tau_max=state.tau_max,
        delta=options.delta, mu=options.mu, epsilon=options.epsilon,
    )
    return problem, members, dropped


@dataclass(frozen=True)
class AllocatorPolicy:
    """Each round: build the problem from the measured state, solve it, return tau."""

    options: AllocatorOptions = DEFAULTS
    budget_rule: str = "even"

    def __call__(self, state: RoundState) -> PolicyDecision:
        """Solve this round's allocation problem (the loop times the call itself)."""
        o = self.options
        problem, members, dropped = build_problem(state, o, self.budget_rule)
        tau = np.zeros(np.asarray(state.holds).shape, dtype=np.int64)
        if problem is None:
            return PolicyDecision(tau, {"solver": o.solver, "status": "no device can train"},
                                  dropped)
        alloc = solve(problem, o.solver, **o.solve_options())
        tau[members] = alloc.tau
        s = alloc.summary()
        info = {
            "solver": o.solver, "scope": o.scope, "status": s["status"],
            "objective": s["objective"], "gap": s["gap"], "solver_time_s": alloc.total_time_s,
            "imbalance_network": s["imbalance_network"],
            "imbalance_device_mean": s["imbalance_device_mean"],
        }
        predicted = np.zeros(tau.shape)
        predicted[members] = alloc.evaluation.progress
        return PolicyDecision(tau, info, dropped, predicted_progress=predicted)


def measured_speeds(state: RoundState) -> NDArray[np.float64]:
    """The round's speeds as the allocator sees them: a held modality not measured yet (or at 0)
    gets a tiny positive speed (the allocator needs v > 0); unheld ones 0."""
    holds = np.asarray(state.holds, bool)
    speed = np.asarray(state.speed, float)
    return np.where(holds & (speed > 0), speed, np.where(holds, 1e-6, 0.0))
