"""One `solve(problem, method=...)` facade over every allocation method (one file each)."""

from __future__ import annotations

from collections.abc import Callable

from allocator.errors import ProblemError
from allocator.problem import Problem
from allocator.result import Allocation


def _heuristic(problem: Problem, **options: object) -> Allocation:
    if problem.scope == "device":
        from allocator.solvers.breakpoint import solve_breakpoint

        return solve_breakpoint(problem, **options)
    from allocator.solvers.lagrangian import solve_lagrangian

    return solve_lagrangian(problem, **options)


def _exact(problem: Problem, **options: object) -> Allocation:
    from allocator.solvers.exact import solve_exact

    return solve_exact(problem, **options)


def _proportional(problem: Problem, **options: object) -> Allocation:
    from allocator.solvers.proportional import solve_proportional

    return solve_proportional(problem, **options)


def _uniform(problem: Problem, **options: object) -> Allocation:
    from allocator.solvers.uniform import solve_uniform

    return solve_uniform(problem, **options)


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
    return METHODS[method](problem, time_limit=time_limit, mip_gap=mip_gap)
