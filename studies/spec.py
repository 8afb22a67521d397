"""Study specifications: a TOML file with [study], [base], [grid] (or [morris] / [sobol]) tables."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dmmlkd.studies.cells import GENERATE_KEYS, SOLVER_KEYS
from dmmlkd.studies.limits import MAX_JOBS, MAX_SEEDS, check_study_size
from dmmlkd.userio.errors import UserError

KINDS = ("solve", "train", "morris", "sobol")
SENSITIVITY_KINDS = ("morris", "sobol")
STUDY_KEYS = frozenset({"name", "kind", "seeds", "jobs", "cluster"})
# Where and how fast a study runs, not what it computes: left out of the spec's identity.
EXECUTION_KEYS = ("jobs", "cluster")
# What a solve cell takes: generate_problem's options and how the instance is solved.
SOLVE_KEYS = frozenset(GENERATE_KEYS + SOLVER_KEYS)
# Old option names: refused with a line naming the new one.
RENAMED_SOLVE_KEYS = {"method": "solver"}
# The models a sensitivity study can vary, the factors each accepts, and the outputs analysed.
MODEL_FACTORS: dict[str, frozenset[str]] = {
    "solve": frozenset({"budget_scale", "delta", "mu", "speed_spread", "energy_spread",
                        "missing_rate", "epsilon"}),
    # Analytic test functions (studies.cells.ANALYTIC): indices known in closed form.
    "ishigami": frozenset({"x1", "x2", "x3"}),
}
MODEL_OUTPUTS: dict[str, tuple[str, ...]] = {
    "solve": ("objective", "imbalance_network", "energy_total_j"),
    "ishigami": ("y",),
}
MORRIS_PARAMETERS = MODEL_FACTORS["solve"]
MORRIS_KEYS = frozenset({"model", "trajectories", "levels", "seed", "resamples", "ranges"})
SOBOL_KEYS = frozenset({"model", "samples", "seed", "second_order", "resamples", "conf_level",
                        "ranges"})


class StudyError(UserError):
    """A user-caused study error (bad spec, changed spec, busy folder); one line, exit code 2."""


def train_keys() -> frozenset[str]:
    """Options a train study may set (the fields of the learner's TrainConfig)."""
    from dmmlkd.learner.config import TrainConfig

    return frozenset(f.name for f in fields(TrainConfig)) - {"seed"}


@dataclass(frozen=True)
class Cell:
    """One unit of work: options, a seed, its place in a design (e.g. trajectory and step), an id."""

    params: dict[str, Any]
    seed: int
    id: str
    design: dict[str, int] = field(default_factory=dict)


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
    sobol: dict[str, Any] = field(default_factory=dict)
    cluster: str | None = None
    source: str = "spec"  # where it was read from, for messages

    @property
    def model(self) -> str:
        """What one cell computes: 'solve', 'train' or an analytic function's name."""
        if self.kind in SENSITIVITY_KINDS:
            return str(self.sensitivity.get("model", "solve"))
        return self.kind

    @property
    def sensitivity(self) -> dict[str, Any]:
        """The [morris] or [sobol] table (empty for a grid study)."""
        return self.morris if self.kind == "morris" else self.sobol if self.kind == "sobol" else {}

    @property
    def outputs(self) -> tuple[str, ...]:
        """The result columns a sensitivity analysis looks at."""
        return MODEL_OUTPUTS.get(self.model, ())

    def identity(self) -> dict[str, Any]:
        """The spec without its execution settings: two specs with equal identity give equal rows."""
        study = {k: v for k, v in self.raw.get("study", {}).items() if k not in EXECUTION_KEYS}
        return {**self.raw, "study": study}

    def design(self) -> list[tuple[dict[str, Any], dict[str, int]]]:
        """(factor values, place in the design) for every design point, in design order."""
        if self.kind == "morris":
            from dmmlkd.studies.morris import morris_design

            return morris_design(self.morris)
        if self.kind == "sobol":
            from dmmlkd.studies.sobol import sobol_design

            return sobol_design(self.sobol)
        keys = list(self.grid)
        return [(dict(zip(keys, values)), {})
                for values in itertools.product(*(self.grid[k] for k in keys))]

    def cells(self) -> list[Cell]:
        """Every design point x seed (grid cells, Morris trajectory steps or Sobol points)."""
        out, seen = [], set()
        for combo, place in self.design():
            params = {**self.base, **combo}
            for seed in self.seeds:
                cid = cell_id(self.model, params, seed, place)
                if cid not in seen:
                    seen.add(cid)
                    out.append(Cell(params, seed, cid, place))
        return out


def cell_id(kind: str, params: dict[str, Any], seed: int,
            design: dict[str, int] | None = None) -> str:
    """Stable id of a cell: a hash of everything that defines its result (and its design place)."""
    record: dict[str, Any] = {"kind": kind, "params": params, "seed": seed}
    if design:
        record["design"] = design
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _int_at_least(table: dict[str, Any], key: str, default: int, low: int, where: str) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise StudyError(f"{where}.{key} must be an integer >= {low} (got {value!r})")
    return value


def _parse_sensitivity(data: dict[str, Any], kind: str, source: str) -> dict[str, Any]:
    table = data.get(kind, {})
    where = f"{source}: {kind}"
    if not isinstance(table, dict):
        raise StudyError(f"{where} must be a table")
    allowed = MORRIS_KEYS if kind == "morris" else SOBOL_KEYS
    for key in table:
        if key not in allowed:
            raise StudyError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(allowed))})")
    model = table.get("model", "solve")
    if model not in MODEL_FACTORS:
        raise StudyError(f"{where}.model must be one of {', '.join(MODEL_FACTORS)} (got {model!r})")
    ranges = table.get("ranges", {})
    if not isinstance(ranges, dict) or not ranges:
        raise StudyError(f"{source}: a {kind} study needs [{kind}.ranges]")
    for key, bounds in ranges.items():
        if key not in MODEL_FACTORS[model]:
            raise StudyError(f"{where}.ranges.{key} is not a factor of the {model} model "
                             f"({', '.join(sorted(MODEL_FACTORS[model]))})")
        if not (isinstance(bounds, list) and len(bounds) == 2
                and all(isinstance(b, (int, float)) and not isinstance(b, bool)
                        and math.isfinite(b) for b in bounds) and bounds[0] < bounds[1]):
            raise StudyError(f"{where}.ranges.{key} must be [low, high] with low < high, finite")
    _int_at_least(table, "seed", 0, 0, where)
    _int_at_least(table, "resamples", 100, 10, where)
    if kind == "morris":
        _int_at_least(table, "levels", 4, 2, where)
        _int_at_least(table, "trajectories", 10, 2, where)
    else:
        samples = _int_at_least(table, "samples", 64, 4, where)
        if samples & (samples - 1):
            raise StudyError(f"{where}.samples must be a power of two (Sobol sequence; got "
                             f"{samples})")
        if not isinstance(table.get("second_order", False), bool):
            raise StudyError(f"{where}.second_order must be true or false")
        conf = table.get("conf_level", 0.95)
        if isinstance(conf, bool) or not isinstance(conf, float) or not 0 < conf < 1:
            raise StudyError(f"{where}.conf_level must be a number in (0, 1)")
    return table


def parse_spec(data: dict[str, Any], source: str = "spec") -> StudySpec:
    """Validate a spec dict; StudyError names the field."""
    study = data.get("study")
    if not isinstance(study, dict):
        raise StudyError(f"{source}: missing [study] table")
    unknown_tables = set(data) - {"study", "base", "grid", "morris", "sobol"}
    if unknown_tables:
        raise StudyError(f"{source}: unknown table [{sorted(unknown_tables)[0]}]")
    unknown_keys = set(study) - STUDY_KEYS
    if unknown_keys:
        raise StudyError(f"{source}: unknown key study.{sorted(unknown_keys)[0]} "
                         f"(known: {', '.join(sorted(STUDY_KEYS))})")
    kind = study.get("kind", "solve")
    if kind not in KINDS:
        raise StudyError(f"{source}: study.kind must be one of {', '.join(KINDS)} (got {kind!r})")
    seeds = study.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if not 1 <= seeds <= MAX_SEEDS:  # checked before list(range(seeds)) takes the memory
            raise StudyError(f"{source}: study.seeds must be a count in [1, {MAX_SEEDS}] or a "
                             f"list (got {seeds})")
        seeds = list(range(seeds))
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32
                       for s in seeds)):
        raise StudyError(f"{source}: study.seeds must be a list of integers in [0, 2**32)")
    jobs = study.get("jobs", 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= MAX_JOBS:
        raise StudyError(f"{source}: study.jobs must be an integer in [1, {MAX_JOBS}] (got "
                         f"{jobs!r})")
    cluster = study.get("cluster")
    if cluster is not None and (not isinstance(cluster, str) or not cluster.strip()):
        raise StudyError(f"{source}: study.cluster must be \"local\" or a scheduler address")
    base = data.get("base", {})
    grid = data.get("grid", {})
    if not isinstance(base, dict) or not isinstance(grid, dict):
        raise StudyError(f"{source}: [base] and [grid] must be tables")
    for other in SENSITIVITY_KINDS:
        if other in data and kind != other:
            raise StudyError(f"{source}: a [{other}] table needs study.kind = \"{other}\"")
    sensitivity = _parse_sensitivity(data, kind, source) if kind in SENSITIVITY_KINDS else {}
    model = sensitivity.get("model", "solve") if sensitivity else kind
    allowed = train_keys() if model == "train" else SOLVE_KEYS if model == "solve" else frozenset()
    for table, values in (("base", base), ("grid", grid)):
        for key in values:
            if model == "solve" and key in RENAMED_SOLVE_KEYS:
                raise StudyError(f"{source}: {table}.{key} is now {table}.{RENAMED_SOLVE_KEYS[key]} "
                                 f"(the allocator's algorithm is the solver)")
            if key not in allowed:
                raise StudyError(f"{source}: unknown {table} option {key!r} for a {model} study")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise StudyError(f"{source}: grid.{key} must be a non-empty list")
    if kind in SENSITIVITY_KINDS and grid:
        raise StudyError(f"{source}: a {kind} study takes [{kind}.ranges], not [grid]")
    both = sorted(set(base) & set(grid))
    if both:
        raise StudyError(f"{source}: {both[0]!r} is in both [base] and [grid]; keep it in one "
                         "(the grid would silently override the base)")
    if len(seeds) > MAX_SEEDS:
        raise StudyError(f"{source}: study.seeds lists {len(seeds)} seeds (at most {MAX_SEEDS})")
    check_study_size(kind, len(seeds), grid, sensitivity, source, StudyError)
    return StudySpec(str(study.get("name", "study")), kind, seeds, jobs, base, grid,
                     sensitivity if kind == "morris" else {}, data,
                     sensitivity if kind == "sobol" else {}, cluster, source)


def check_cells(spec: StudySpec) -> None:
    """Build and check every cell's configuration before the first one runs.

    The first invalid cell is refused with one StudyError line naming the table and field it
    came from (``[grid] lr = -1: lr must be in (0, 10] (got -1)``); nothing is run or written.
    """
    from dmmlkd.studies.cells import check_cell

    model, seen = spec.model, set()
    for combo, _ in spec.design():
        params = {**spec.base, **combo}
        key = json.dumps(params, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        try:
            check_cell(model, params, spec.seeds[0])  # every seed is in range (checked above)
        except UserError as exc:
            raise StudyError(f"{spec.source}: {_origin(spec, params, str(exc))}{exc}") from None


def _origin(spec: StudySpec, params: dict[str, Any], message: str) -> str:
    """Where the field a message names was set: '[grid] lr = -1: ' (or the whole cell)."""
    for name, value in params.items():
        if message.startswith(f"{name} "):
            table = ("grid" if name in spec.grid else f"{spec.kind}.ranges"
                     if name in spec.sensitivity.get("ranges", {}) else "base")
            return f"[{table}] {name} = {value!r}: "
    where = ", ".join(f"{k}={v!r}" for k, v in params.items())
    return f"cell ({where}): "


def load_spec(path: str | Path, base: dict[str, Any] | None = None) -> StudySpec:
    """Read and validate a study TOML file; ``base`` (command-line flags) overrides [base]."""
    from dmmlkd.userio import read_toml

    data = read_toml(path, StudyError)
    if base:
        data = with_base(data, base, str(path))
    return parse_spec(data, str(path))


def with_base(data: dict[str, Any], base: dict[str, Any], source: str) -> dict[str, Any]:
    """The spec with options given on the command line written into its [base] table (so they
    are part of the stored spec and of a resume's identity); refused for a key of [grid]."""
    study = data.get("study")
    kind = study.get("kind", "solve") if isinstance(study, dict) else None
    if kind != "train":
        raise StudyError(f"{source}: {' '.join('--' + k.replace('_', '-') for k in base)} "
                         "set a learning run's options: only a train study takes them")
    grid = data.get("grid", {})
    for key in base:
        if isinstance(grid, dict) and key in grid:
            raise StudyError(f"{source}: --{key.replace('_', '-')} is swept in [grid]; "
                             "set it there or remove it from the grid")
    table = data.get("base", {})
    if not isinstance(table, dict):
        raise StudyError(f"{source}: [base] and [grid] must be tables")
    return {**data, "base": {**table, **base}}
