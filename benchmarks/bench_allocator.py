"""Allocator benchmarks: model-build, HiGHS and heuristic times and gaps over problem sizes.

Numbers are printed and written as Markdown; nothing here is a timed unit test.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dmmlkd.allocator import generate_problem, solve
from dmmlkd.allocator.io import write_problem
from dmmlkd.userio.options import DEFAULTS


@dataclass
class BenchConfig:
    """What to measure."""

    sizes: tuple[int, ...] = (10, 100, 1_000, 10_000, 100_000)
    scopes: tuple[str, ...] = ("device", "network")
    modalities: int = 4
    time_limit: float | None = DEFAULTS.time_limit
    exact_max_devices: dict[str, int] | None = None
    heuristic_max_devices: dict[str, int] | None = None
    seed: int = 0
    cpu_levels: int = 0  # > 0: the time/frequency model with this many levels per device
    deadline: float | str | None = None  # with levels: deadline as in `generate_problem`

    def exact_limit(self, scope: str) -> int:
        """Largest K for which exact is run in this scope."""
        limits = self.exact_max_devices or {"device": 10_000, "network": 10_000}
        return limits.get(scope, 0)

    def heuristic_limit(self, scope: str) -> int:
        """Largest K for which the heuristic is run in this scope."""
        limits = self.heuristic_max_devices or {"device": 100_000, "network": 100_000}
        return limits.get(scope, 0)


def _pyomo_vs_direct(problem) -> tuple[float, float]:
    """Seconds to build the monolithic MILP through Pyomo (model + load into HiGHS) vs highspy."""
    from pyomo.contrib.solver.solvers.highs import Highs

    from dmmlkd.allocator.matrix import build_highs
    from dmmlkd.allocator.model import build_model

    t0 = time.perf_counter()
    built = build_model(problem)
    Highs().set_instance(built.model)
    pyomo_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_highs(problem)
    direct_s = time.perf_counter() - t0
    return pyomo_s, direct_s


def run_allocator_bench(config: BenchConfig, progress: bool = True) -> pd.DataFrame:
    """One row per (scope, devices): times, objectives, gaps."""
    rows = []
    for scope in config.scopes:
        for K in config.sizes:
            if K > config.heuristic_limit(scope):
                continue
            problem = generate_problem(devices=K, modalities=config.modalities, scope=scope,
                                       seed=config.seed, cpu_levels=config.cpu_levels,
                                       deadline=config.deadline)
            t0 = time.perf_counter()
            heur = solve(problem, "heuristic")
            row = {
                "scope": scope, "devices": K,
                "heuristic_s": time.perf_counter() - t0,
                "heuristic_objective": heur.objective,
                "heuristic_certified_gap": heur.gap,
            }
            if K <= config.exact_limit(scope):
                # The direct highspy twin builds the level-free model only.
                pyomo_s, direct_s = ((math.nan, math.nan) if problem.has_levels
                                     else _pyomo_vs_direct(problem))
                t0 = time.perf_counter()
                exact = solve(problem, "exact", time_limit=config.time_limit)
                row.update({
                    "pyomo_build_s": pyomo_s,
                    "highspy_build_s": direct_s,
                    "exact_total_s": time.perf_counter() - t0,
                    "exact_build_s": exact.build_time_s,
                    "exact_solve_s": exact.solve_time_s,
                    "exact_status": exact.status,
                    "exact_gap": exact.gap,
                    "exact_objective": exact.objective,
                    "heuristic_gap_to_exact": (exact.objective - heur.objective)
                    / max(abs(exact.objective), 1e-12),
                })
            rows.append(row)
            if progress:
                print(_format_row(row), file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def _format_row(row: dict) -> str:
    parts = [f"{row['scope']:>7} K={row['devices']:<7}", f"heur {row['heuristic_s']:.3f}s"]
    if "exact_total_s" in row:
        parts += [
            f"exact {row['exact_total_s']:.2f}s ({row['exact_status']}, gap {row['exact_gap']:.3%})",
            f"heur-vs-exact {row['heuristic_gap_to_exact']:.3%}",
            f"pyomo build {row['pyomo_build_s']:.3f}s vs highspy {row['highspy_build_s']:.3f}s"
            if not math.isnan(row["pyomo_build_s"]) else "",
        ]
    return "  ".join(parts)


def cli_targets(time_limit: float | None = DEFAULTS.time_limit) -> pd.DataFrame:
    """The issue's targets, end to end through the command line from JSON files.

    The last two cases are the time/frequency model: 4 CPU levels per device and a deadline
    of 0.8 x the slowest device's mid-tau time at f_max (issue 9's bench targets).
    """
    cases = [
        ("device", 1_000, "exact", [], 0),
        ("network", 1_000, "exact", ["--time-limit", str(time_limit)], 0),
        ("device", 100_000, "heuristic", [], 0),
        ("network", 1_000, "heuristic", [], 0),
        ("device", 1_000, "exact", [], 4),
        ("device", 100_000, "heuristic", [], 4),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scope, K, solver, extra, levels in cases:
            path = Path(tmp) / f"{scope}-{K}-{levels}.json"
            write_problem(generate_problem(devices=K, modalities=4, scope=scope, seed=1,
                                           cpu_levels=levels,
                                           deadline="0.8x" if levels else None), path)
            # Table output: what a person reads; JSON of 100,000 devices costs ~0.7 s to print.
            cmd = [sys.executable, "-m", "dmmlkd.cli", "solve", str(path), "--solver", solver,
                   *extra]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                  env={**os.environ, "PYTHONHASHSEED": "0"})
            wall = time.perf_counter() - t0
            found = re.search(r": (\w+)\s+objective .* gap (\S+)%", proc.stdout)
            status, gap = (found.group(1), float(found.group(2)) / 100) if found else ("?", math.nan)
            rows.append({"scope": scope, "devices": K, "cpu_levels": levels, "solver": solver,
                         "cli_wall_s": wall, "status": status, "gap": gap})
    return pd.DataFrame(rows)
