"""The no-balance baseline: the same tau for every held modality, as large as energy allows."""

from __future__ import annotations

import time

import numpy as np

from dmmlkd.allocator.problem import Problem
from dmmlkd.allocator.result import Allocation


def solve_uniform(problem: Problem, **_: object) -> Allocation:
    """Per device the largest common tau in [tau_min, tau_max] within its budget."""
    start = time.perf_counter()
    per_iter = problem.forward_sum + problem.backward_energy.sum(axis=1)
    room = problem.level_caps().cap[:, 0]  # the shared budget rule, less communication
    t = np.floor(room / per_iter)
    t = np.clip(t, problem.tau_min, problem.tau_max)
    tau = np.where(problem.holds, t[:, None], 0).astype(np.int64)
    return Allocation(
        problem, tau, solver="uniform", status="feasible", solve_time_s=time.perf_counter() - start
    )
