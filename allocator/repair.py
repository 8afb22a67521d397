"""Make an iteration table feasible by the problem's own arithmetic, losing as little as possible.

Solvers work with tolerances (HiGHS accepts points within about 1e-7 of a constraint) and with
reductions (a fixed CPU level); the returned table must still pass `violations` exactly. While a
device breaks its budget or deadline, one of its counts is lowered: the one whose removal costs
the least objective per unit of energy saved.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from dmmlkd.allocator.problem import Problem
from dmmlkd.allocator.result import evaluate
from dmmlkd.metrics.energy import fits_budget, fits_deadline


def infeasible_devices(problem: Problem, tau: NDArray[np.integer]) -> NDArray[np.int64]:
    """Indices of devices whose table breaks their energy budget or the deadline."""
    point = problem.operating_point(tau)
    bad = ~fits_budget(point.compute_energy + problem.comm_energy, problem.budget)
    if problem.deadline_s is not None:
        bad |= ~fits_deadline(point.time_s, problem.deadline_s)
    return np.flatnonzero(bad)


def repair(problem: Problem, tau: NDArray[np.integer]) -> NDArray[np.int64]:
    """A feasible table at or below ``tau`` (clipped to the bounds first), greedily."""
    holds = problem.holds
    out = np.where(holds, np.clip(np.rint(tau), problem.tau_min, problem.tau_max), 0).astype(np.int64)
    for k in infeasible_devices(problem, out):
        row_problem = problem.subset([k]).with_(energy_norm_j=problem.energy_scale)
        for _ in range(holds[k].sum() * (problem.tau_max - problem.tau_min) + 1):
            row = out[k:k + 1]
            if infeasible_devices(row_problem, row).size == 0:
                break
            base_energy = row_problem.operating_point(row).compute_energy[0]
            best, best_score = None, np.inf
            for m in np.flatnonzero(holds[k] & (out[k] > problem.tau_min)):
                trial = out.copy()
                trial[k, m] -= 1
                saved = base_energy - row_problem.operating_point(trial[k:k + 1]).compute_energy[0]
                lost = -evaluate(problem, trial).objective
                score = lost / max(saved, 1e-300)
                if best is None or score < best_score:
                    best, best_score = m, score
            if best is None:  # already at tau_min everywhere: Problem guarantees it fits
                break
            out[k, best] -= 1
    return out
