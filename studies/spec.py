"""Study specifications: a TOML file with [study], [base], [grid] (and [morris]) tables."""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KINDS = ("solve", "train", "morris")
SOLVE_KEYS = frozenset({
    "devices", "modalities", "scope", "budget_scale", "missing_rate", "speed_spread",
    "energy_spread", "delta", "mu", "epsilon", "tau_min", "tau_max", "method", "time_limit",
    "mip_gap",
})
MORRIS_PARAMETERS = frozenset({"budget_scale", "delta", "mu", "speed_spread", "energy_spread",
                               "missing_rate", "epsilon"})


class StudyError(ValueError):
    """A user-caused study error (bad spec, changed spec); one line, exit code 2."""

    exit_code = 2


def train_keys() -> frozenset[str]:
    """Options a train study may set (the fields of the learner's TrainConfig)."""
    from learner.config import TrainConfig

    return frozenset(f.name for f in fields(TrainConfig)) - {"seed"}


@dataclass(frozen=True)
class Cell:
    """One unit of work: options and a seed, with a stable id."""

    params: dict[str, Any]
    seed: int
    id: str


@dataclass
class StudySpec:
    """A parsed, validated study."""

    name: str
    kind: str
    seeds: list[int]
    jobs: int
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    morris: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def cells(self) -> list[Cell]:
        """Every grid cell x seed (or every Morris design point x seed)."""
        if self.kind == "morris":
            from studies.morris import morris_points

            combos = [dict(p) for p in morris_points(self.morris)]
        else:
            keys = list(self.grid)
            combos = [dict(zip(keys, values))
                      for values in itertools.product(*(self.grid[k] for k in keys))]
        out, seen = [], set()
        for combo in combos:
            params = {**self.base, **combo}
            for seed in self.seeds:
                cid = cell_id(self.kind, params, seed)
                if cid not in seen:  # Morris trajectories can revisit a design point
                    seen.add(cid)
                    out.append(Cell(params, seed, cid))
        return out


def cell_id(kind: str, params: dict[str, Any], seed: int) -> str:
    """Stable id of a cell: a hash of everything that defines its result."""
    text = json.dumps({"kind": kind, "params": params, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def parse_spec(data: dict[str, Any], source: str = "spec") -> StudySpec:
    """Validate a spec dict; StudyError names the field."""
    study = data.get("study")
    if not isinstance(study, dict):
        raise StudyError(f"{source}: missing [study] table")
    unknown_tables = set(data) - {"study", "base", "grid", "morris"}
    if unknown_tables:
        raise StudyError(f"{source}: unknown table [{sorted(unknown_tables)[0]}]")
    kind = study.get("kind", "solve")
    if kind not in KINDS:
        raise StudyError(f"{source}: study.kind must be one of {', '.join(KINDS)} (got {kind!r})")
    seeds = study.get("seeds", [0])
    if isinstance(seeds, int):
        seeds = list(range(seeds))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise StudyError(f"{source}: study.seeds must be a list of integers")
    jobs = study.get("jobs", 1)
    if not isinstance(jobs, int) or jobs < 1:
        raise StudyError(f"{source}: study.jobs must be a positive integer")
    base = data.get("base", {})
    grid = data.get("grid", {})
    if not isinstance(base, dict) or not isinstance(grid, dict):
        raise StudyError(f"{source}: [base] and [grid] must be tables")
    allowed = train_keys() if kind == "train" else SOLVE_KEYS
    for table, values in (("base", base), ("grid", grid)):
        for key in values:
            if key not in allowed:
                raise StudyError(f"{source}: unknown {table} option {key!r} for a {kind} study")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise StudyError(f"{source}: grid.{key} must be a non-empty list")
    morris = data.get("morris", {})
    if kind == "morris":
        ranges = morris.get("ranges", {})
        if not ranges:
            raise StudyError(f"{source}: a morris study needs [morris.ranges]")
        for key, bounds in ranges.items():
            if key not in MORRIS_PARAMETERS:
                raise StudyError(f"{source}: morris.ranges.{key} is not a screened parameter "
                                 f"({', '.join(sorted(MORRIS_PARAMETERS))})")
            if not (isinstance(bounds, list) and len(bounds) == 2 and bounds[0] < bounds[1]):
                raise StudyError(f"{source}: morris.ranges.{key} must be [low, high] with low < high")
        if grid:
            raise StudyError(f"{source}: a morris study takes [morris.ranges], not [grid]")
    return StudySpec(str(study.get("name", "study")), kind, seeds, jobs, base, grid, morris, data)


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study TOML file."""
    p = Path(path)
    if not p.is_file():
        raise StudyError(f"{p}: no such file")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StudyError(f"{p}: not valid TOML ({exc})") from None
    return parse_spec(data, str(p))
