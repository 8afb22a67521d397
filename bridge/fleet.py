"""The allocator for fleets (`dmml-kd-fleet`): each device's battery planned over the horizon.

Each round, for every device present and not run out:

1. **Options.** Every uniform round it could run (`learner.schedules.uniform_options`): tau from
   tau_min to tau_max on all its views, each at its lowest CPU level meeting the deadline
   (straggler-aware: an option that misses the deadline is not taken; a device that cannot meet
   it even with tau_min at f_max runs tau_min at f_max, late, as in `dmml-kd-balance-dvfs`).
2. **Horizon plan** (Wang et al., JSAC 2019: with a resource budget, choose the local
   iterations per round by pricing computation against communication). A round with tau
   iterations is worth u(tau) = tau^gamma (``returns`` = gamma in (0, 1]: diminishing returns of
   local steps between two gossip exchanges) and costs c(tau) = compute at its level + the
   broadcast. With battery B and R rounds left in which the device is expected to be present
   (its presence rate so far times the rounds left), n(tau) = min(R, B / c(tau)) rounds are
   affordable; the plan is the tau maximising n(tau) u(tau). An ample battery gives the largest
   tau whose even share pays (what `uniform-pacing` does); a binding one gives the tau with the
   most utility per joule, where compute energy balances the broadcast's.
3. **Sit out when that buys more later.** When n < R, the device takes part in a share n / R of
   its rounds, spread over the horizon by a credit counter (start: 1, so it trains in its first
   round): it skips a round rather than paying the broadcast for too few iterations.
4. **Views.** ``split = "uniform"``: tau on every held view; ``"balance"``: the paper's balance
   objective (the allocator, device scope, with levels and the deadline) on the planned energy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dmmlkd.allocator import solve
from dmmlkd.bridge.dvfs import levels_problem
from dmmlkd.learner.policy import PolicyDecision, RoundState
from dmmlkd.learner.schedules import uniform_options
from dmmlkd.metrics.energy import budget_limit_j
from dmmlkd.userio.options import DEFAULTS, AllocatorOptions

SPLITS = ("uniform", "balance")


def horizon_plan(cost_j: NDArray[np.float64], allowed: NDArray[np.bool_], taus: NDArray[np.int64],
                 battery_j: NDArray[np.float64], rounds_left: NDArray[np.float64],
                 returns: float) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Per device the option (index into ``taus``, -1: none affordable) maximising
    min(rounds_left, battery / cost) x tau^returns, and that many rounds (K,)."""
    affordable = allowed & (cost_j <= budget_limit_j(battery_j)[:, None])
    n = np.minimum(rounds_left[:, None], battery_j[:, None] / np.maximum(cost_j, 1e-300))
    value = np.where(affordable, n * taus[None, :].astype(float) ** returns, -np.inf)
    # Ties (an ample battery reaches R with several taus): the largest tau, i.e. the last.
    best = value.shape[1] - 1 - np.argmax(value[:, ::-1], axis=1)
    best = np.where(affordable.any(axis=1), best, -1)
    rows = np.arange(cost_j.shape[0])
    return best, np.where(best >= 0, n[rows, np.maximum(best, 0)], 0.0)


@dataclass
class FleetAllocatorPolicy:
    """Horizon-aware, deadline-aware allocation for fleets with batteries that run out."""

    returns: float = 1.0  # gamma: a round of tau local iterations is worth tau^gamma (tuned)
    split: str = "uniform"  # "uniform" or "balance" (the paper's objective over the views)
    # The allocator's options (solver, delta, mu, time limit); the scope is always "device"
    # here: each device's planned round is split over its own views.
    options: AllocatorOptions = DEFAULTS
    seen: NDArray[np.float64] | None = field(default=None, init=False)  # rounds observed
    present: NDArray[np.float64] | None = field(default=None, init=False)  # rounds present
    credit: NDArray[np.float64] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)} (got {self.split!r})")
        if not 0.0 < self.returns <= 1.0:
            raise ValueError(f"returns must be in (0, 1] (got {self.returns})")

    def __call__(self, state: RoundState) -> PolicyDecision:
        """This round's tau and CPU levels."""
        holds = np.asarray(state.holds, bool)
        K = holds.shape[0]
        if self.seen is None or self.present is None or self.credit is None:
            self.seen, self.present, self.credit = np.zeros(K), np.zeros(K), np.ones(K)
        on = np.asarray(state.active, bool) & holds.any(axis=1)
        # Presence so far (churn): the rounds a device can expect to be there (>= this one).
        self.seen += 1.0
        self.present += on
        rate = self.present / self.seen
        rounds_left = 1.0 + rate * max(state.rounds_total - state.round - 1, 0)
        opts = uniform_options(state)
        allowed = opts.on_time.copy()
        late = on & ~opts.on_time[:, 0]  # cannot meet the deadline even with tau_min at f_max
        allowed[late, 0] = True
        battery = np.asarray(state.battery_j, float)
        best, n = horizon_plan(opts.cost_j, allowed, opts.taus, battery, rounds_left, self.returns)
        duty = np.clip(n / rounds_left, 0.0, 1.0)
        go = on & (best >= 0) & (self.credit >= 1.0 - 1e-9)
        # Spend a participation; accrue this round's share (a device trains in a share `duty`).
        self.credit = np.where(on, np.where(go, self.credit - 1.0, self.credit) + duty, self.credit)
        rows = np.arange(K)
        pick = np.maximum(best, 0)
        tau_dev = np.where(go, opts.taus[pick], 0)
        assert state.cpu_hz is not None
        cpu = np.where(go, opts.cpu_hz[rows, pick], state.cpu_hz)
        tau = np.where(holds & go[:, None], tau_dev[:, None], 0).astype(np.int64)
        info: dict[str, Any] = {"policy": "dmml-kd-fleet", "sitting_out": int((on & ~go).sum()),
                                "planned_rounds_mean": float(n[on].mean()) if on.any() else 0.0,
                                "planned_tau_mean": float(tau_dev[go].mean()) if go.any() else 0.0}
        if self.split == "balance":
            self._balance(state, tau, cpu, go & ~late, opts.cost_j[rows, pick], info)
        return PolicyDecision(tau, info, cpu_hz=cpu)

    def _balance(self, state: RoundState, tau: NDArray[np.int64], cpu: NDArray[np.float64],
                 members_mask: NDArray[np.bool_], budget: NDArray[np.float64],
                 info: dict[str, Any]) -> None:
        """The paper's balance objective over each member's views on its planned energy, with
        levels and the deadline (in place on tau and cpu)."""
        members = np.flatnonzero(members_mask)
        if members.size == 0:
            return
        # Each device's planned round split over its own views: the device scope.
        problem = levels_problem(state, members, budget[members], self.options, scope="device")
        alloc = solve(problem, self.options.solver, **self.options.solve_options())
        tau[members] = alloc.tau
        cpu[members] = alloc.cpu_hz
        info.update(status=alloc.summary()["status"], solver_time_s=alloc.total_time_s)
