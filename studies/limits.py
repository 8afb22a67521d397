"""How big a study may be: every size that multiplies into work or memory, checked on the spec
before anything is built (no cell list, no design matrix, no worker), with the estimate said.

One place for these numbers: ``studies.spec`` calls :func:`check_study_size` as it parses.
"""

from __future__ import annotations

import math
from typing import Any

MAX_SEEDS = 10_000          # seeds of one study (a count or a list)
MAX_JOBS = 1024             # worker processes
MAX_CELLS = 1_000_000       # cells of one study (design points x seeds)
MAX_SOBOL_SAMPLES = 2**20   # base samples N of a Sobol design
MAX_TRAJECTORIES = 100_000  # Morris trajectories
CELL_BYTES = 2048           # bookkeeping per cell (cell record, journal line, results row)


def _human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def design_points(kind: str, grid: dict[str, list[Any]], table: dict[str, Any]) -> int:
    """Design points of a study, from its spec alone (no design is built)."""
    factors = len(table.get("ranges", {}))
    if kind == "morris":
        return int(table.get("trajectories", 10)) * (factors + 1)
    if kind == "sobol":
        per_sample = 2 * factors + 2 if table.get("second_order", False) else factors + 2
        return int(table.get("samples", 64)) * per_sample
    return math.prod(len(v) for v in grid.values() if isinstance(v, list))


def check_study_size(kind: str, n_seeds: int, grid: dict[str, list[Any]],
                     table: dict[str, Any], source: str, error: type[Exception]) -> None:
    """``error`` (one line with the estimate) when the study would be too big to run."""
    if kind == "sobol" and int(table.get("samples", 64)) > MAX_SOBOL_SAMPLES:
        raise error(f"{source}: sobol.samples = {table['samples']} is too many (at most "
                    f"{MAX_SOBOL_SAMPLES} = 2**20 base samples)")
    if kind == "morris" and int(table.get("trajectories", 10)) > MAX_TRAJECTORIES:
        raise error(f"{source}: morris.trajectories = {table['trajectories']} is too many (at "
                    f"most {MAX_TRAJECTORIES})")
    cells = design_points(kind, grid, table) * n_seeds
    if cells > MAX_CELLS:
        raise error(f"{source}: the study has {cells:,} cells ({design_points(kind, grid, table):,}"
                    f" design points x {n_seeds:,} seeds, about {_human(cells * CELL_BYTES)} of "
                    f"bookkeeping alone); at most {MAX_CELLS:,} cells per study")
