"""The resource allocator: per device and modality, how many local iterations to run next round.

    >>> from dmmlkd.allocator import generate_problem, solve
    >>> problem = generate_problem(devices=20, modalities=4, scope="network", seed=1)
    >>> allocation = solve(problem, solver="heuristic")
    >>> allocation.status, allocation.gap < 0.01
"""

from dmmlkd.allocator.errors import ProblemError
from dmmlkd.allocator.generate import generate_problem
from dmmlkd.allocator.problem import Problem
from dmmlkd.allocator.result import Allocation, evaluate, violations
from dmmlkd.allocator.solvers import METHODS, solve
from dmmlkd.userio.options import SOLVERS, AllocatorOptions

__all__ = [
    "METHODS",
    "SOLVERS",
    "Allocation",
    "AllocatorOptions",
    "Problem",
    "ProblemError",
    "evaluate",
    "generate_problem",
    "solve",
    "violations",
]
