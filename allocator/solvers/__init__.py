"""One `solve(problem, solver=...)` facade over every allocation algorithm (one file each)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from dmmlkd.allocator.errors import ProblemError
from dmmlkd.allocator.problem import Problem
from dmmlkd.allocator.result import Allocation
from dmmlkd.userio.options import DEFAULTS, SOLVERS, check_option


def _heuristic(problem: Problem, **options: Any) -> Allocation:
    if problem.scope == "device":
        from dmmlkd.allocator.solvers.breakpoint import solve_breakpoint

        return solve_breakpoint(problem, **options)
    from dmmlkd.allocator.solvers.lagrangian import solve_lagrangian

    return solve_lagrangian(problem, **options)


def _exact(problem: Problem, **options: Any) -> Allocation:
    from dmmlkd.allocator.solvers.exact import solve_exact

    return solve_exact(problem, **options)


def _at_roomiest(problem: Problem, alloc: Allocation) -> Allocation:
    """Re-score a baseline solved at fixed levels on the problem with levels."""
    return Allocation(problem, alloc.tau, solver=alloc.solver, status=alloc.status,
                      solve_time_s=alloc.solve_time_s, info=alloc.info)


def _proportional(problem: Problem, **options: Any) -> Allocation:
    from dmmlkd.allocator.solvers.proportional import solve_proportional

    # Baselines know no levels: each device runs at its roomiest level.
    return _at_roomiest(problem, solve_proportional(
        problem.at_levels(problem.roomiest_levels()), **options))


def _uniform(problem: Problem, **options: Any) -> Allocation:
    from dmmlkd.allocator.solvers.uniform import solve_uniform

    return _at_roomiest(problem, solve_uniform(
        problem.at_levels(problem.roomiest_levels()), **options))


# Solver name -> function, built from the one list of names (userio.options.SOLVERS): a new
# solver is one file in this folder, one function `_<name>` above and its name in SOLVERS.
METHODS: dict[str, Callable[..., Allocation]] = {name: globals()[f"_{name}"] for name in SOLVERS}


def solve(
    problem: Problem,
    solver: str = DEFAULTS.solver,
    *,
    time_limit: float | None = None,
    mip_gap: float = DEFAULTS.mip_gap,
    method: str | None = None,
) -> Allocation:
    """Solve an allocation problem with a named solver; every solver returns an `Allocation`.

    time_limit: seconds for the exact solver (None: no limit; the learner's policies and the
    study cells pass ``AllocatorOptions.time_limit``). ``method`` is the old name of
    ``solver`` (a DeprecationWarning says so).
    """
    if method is not None:
        warnings.warn("solve(method=...) is now solve(solver=...)", DeprecationWarning,
                      stacklevel=2)
        solver = method
    check_option("solver", solver, ProblemError)
    check_option("time_limit", time_limit, ProblemError)
    check_option("mip_gap", mip_gap, ProblemError)
    from dmmlkd.allocator.resources import check_resources

    check_resources(problem, solver)
    alloc = METHODS[solver](problem, time_limit=time_limit, mip_gap=mip_gap)
    if solver == "exact":
        alloc.info["time_limit_s"] = time_limit
    return verified(alloc, mip_gap)


def verified(alloc: Allocation, mip_gap: float) -> Allocation:
    """The allocation checked by the problem's own arithmetic: repaired when a device breaks
    its budget or deadline, and ``optimal`` only while the gap to the bound is within mip_gap."""
    from dmmlkd.allocator.repair import infeasible_devices, repair

    problem = alloc.problem
    if infeasible_devices(problem, alloc.tau).size:
        fixed = Allocation(problem, repair(problem, alloc.tau), solver=alloc.solver,
                           status=alloc.status, bound=alloc.bound,
                           solve_time_s=alloc.solve_time_s, build_time_s=alloc.build_time_s,
                           info={**alloc.info, "repaired": True})
        alloc = fixed
    if alloc.status == "optimal" and not alloc.gap <= mip_gap:
        alloc.status = "feasible"
    return alloc
