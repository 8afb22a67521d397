"""One `solve(problem, method=...)` facade over every allocation method (one file each)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dmmlkd.allocator.errors import ProblemError
from dmmlkd.allocator.problem import Problem
from dmmlkd.allocator.result import Allocation


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
    return Allocation(problem, alloc.tau, method=alloc.method, status=alloc.status,
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


# Method name -> solver. A new method is one file in this folder and one line here.
METHODS: dict[str, Callable[..., Allocation]] = {
    "exact": _exact,
    "heuristic": _heuristic,
    "proportional": _proportional,
    "uniform": _uniform,
}


def solve(
    problem: Problem,
    method: str = "heuristic",
    *,
    time_limit: float | None = None,
    mip_gap: float = 1e-4,
) -> Allocation:
    """Solve an allocation problem with a named method; every method returns an `Allocation`."""
    if method not in METHODS:
        raise ProblemError(f"method must be one of {', '.join(METHODS)} (got {method!r})")
    if time_limit is not None and time_limit <= 0:
        raise ProblemError(f"time_limit must be > 0 (got {time_limit})")
    if not 0 <= mip_gap < 1:
        raise ProblemError(f"mip_gap must be in [0, 1) (got {mip_gap})")
    from dmmlkd.allocator.resources import check_resources

    check_resources(problem, method)
    alloc = METHODS[method](problem, time_limit=time_limit, mip_gap=mip_gap)
    if method == "exact":
        alloc.info["time_limit_s"] = time_limit
    return verified(alloc, mip_gap)


def verified(alloc: Allocation, mip_gap: float) -> Allocation:
    """The allocation checked by the problem's own arithmetic: repaired when a device breaks
    its budget or deadline, and ``optimal`` only while the gap to the bound is within mip_gap."""
    from dmmlkd.allocator.repair import infeasible_devices, repair

    problem = alloc.problem
    if infeasible_devices(problem, alloc.tau).size:
        fixed = Allocation(problem, repair(problem, alloc.tau), method=alloc.method,
                           status=alloc.status, bound=alloc.bound,
                           solve_time_s=alloc.solve_time_s, build_time_s=alloc.build_time_s,
                           info={**alloc.info, "repaired": True})
        alloc = fixed
    if alloc.status == "optimal" and not alloc.gap <= mip_gap:
        alloc.status = "feasible"
    return alloc
