"""What a solve will need, checked before anything big is allocated (one line when too much).

The solvers enumerate iteration counts (the device scope's breakpoints per count), so their
work grows with the count range T = tau_max - tau_min + 1. The network heuristic's dual holds
(devices x modalities) arrays and keeps one integer response table per evaluated price. A
two-device problem with tau_max = 1e9 once took 24 GB before the kernel stopped it; now it is
refused here.
"""

from __future__ import annotations

from dmmlkd.allocator.errors import ProblemError
from dmmlkd.allocator.problem import Problem
from dmmlkd.userio import available_memory_bytes

# Counts are enumerated: beyond this range a solve is refused (no model needs a billion
# local iterations per round; the learner's own bound is far lower).
MAX_COUNT_RANGE = 100_000
_FLOAT = 8
_DUAL_ARRAYS = 40  # (K, M) float arrays alive at once in the dual's device subproblems
_DUAL_RESPONSES = 201  # integer response tables kept (one per dual evaluation, 4 bytes a cell)
_PYOMO_BYTES_PER_PAIR = 4_000  # Pyomo components + HiGHS copy per (device, modality) pair



def estimate_bytes(problem: Problem, solver: str) -> int:
    """Peak bytes a solve with ``solver`` needs, generously."""
    K, M = problem.holds.shape
    levels = problem.n_levels
    base = 40 * K * M * _FLOAT  # the problem, tables and their copies
    if solver in ("heuristic", "exact") and problem.scope == "network":
        base += _DUAL_ARRAYS * K * M * _FLOAT + _DUAL_RESPONSES * K * M * 4
    if solver == "exact" and problem.scope == "network":
        base += _PYOMO_BYTES_PER_PAIR * (int(problem.holds.sum()) + K * levels)
    return base


def check_resources(problem: Problem, solver: str) -> None:
    """Refuse, naming the field, a solve that would enumerate too much or exceed memory."""
    T = problem.tau_max - problem.tau_min + 1
    if T > MAX_COUNT_RANGE:
        raise ProblemError(
            f"tau_max - tau_min + 1 = {T:,} counts to enumerate is more than the solvers "
            f"allow ({MAX_COUNT_RANGE:,}): lower tau_max")
    need = estimate_bytes(problem, solver)
    have = available_memory_bytes()
    if have is not None and need > have:
        field = "devices"
        raise ProblemError(
            f"this solve needs about {need / 2**30:.1f} GiB but the machine has "
            f"{have / 2**30:.1f} GiB available: lower {field} ({solver}, {problem.scope} scope, "
            f"{problem.n_devices:,} devices, tau range {T:,})")
