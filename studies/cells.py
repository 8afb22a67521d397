"""What one study cell does: generate + solve, one training run, or an analytic test function.

Runs in a worker (a local process or a Dask worker): it sets its own seed and thread count and
returns everything as a payload (no shared filesystem assumed); the parent journals it.
"""

from __future__ import annotations

import base64
import math
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmmlkd.userio import atomic_write
from dmmlkd.userio.options import DEFAULTS, AllocatorOptions

if TYPE_CHECKING:
    from dmmlkd.learner.config import TrainConfig

GENERATE_KEYS = ("devices", "modalities", "scope", "budget_scale", "missing_rate", "speed_spread",
                 "energy_spread", "delta", "mu", "epsilon", "tau_min", "tau_max")
SOLVER_KEYS = ("solver", "time_limit", "mip_gap")  # how a cell's instance is solved
FILES_KEY = "_files"  # payload key: a train cell's output files, {relative path: base64 bytes}


def solver_options(params: dict[str, Any]) -> AllocatorOptions:
    """How a solve cell's instance is solved (defaults: the allocator's); UserError if invalid."""
    return DEFAULTS.with_(**{k: params[k] for k in SOLVER_KEYS if k in params})


def generate_options(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """generate_problem's keyword arguments of a solve cell."""
    return {"seed": seed, **{k: params[k] for k in GENERATE_KEYS if k in params}}


def train_config(params: dict[str, Any], seed: int) -> TrainConfig:
    """A train cell's run configuration, validated (ConfigError naming the field)."""
    from dmmlkd.learner.config import config_from_dict

    return config_from_dict({**params, "seed": seed}, "study cell")


def check_cell(model: str, params: dict[str, Any], seed: int) -> None:
    """Build and check a cell's configuration without running it (a UserError naming the
    field): the study checks every cell with it before the first one runs."""
    if model == "train":
        train_config(params, seed)
    elif model not in ANALYTIC:
        from dmmlkd.allocator.generate import check_generate_options

        solver_options(params)
        check_generate_options(**generate_options(params, seed))


def solve_cell(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Generate the instance and solve it; the allocation summary."""
    from dmmlkd.allocator import generate_problem, solve

    options = solver_options(params)
    problem = generate_problem(**generate_options(params, seed))
    alloc = solve(problem, options.solver, **options.solve_options())
    out = alloc.summary()
    out.pop("solver", None)
    out.pop("scope", None)
    out["total_time_s"] = alloc.total_time_s
    return out


def ishigami(x1: float, x2: float, x3: float, a: float = 7.0, b: float = 0.1) -> float:
    """The Ishigami function (a = 7, b = 0.1): S1 = 0.3139, 0.4424, 0; ST = 0.5576, 0.4424, 0.2437."""
    return math.sin(x1) + a * math.sin(x2) ** 2 + b * x3**4 * math.sin(x1)


ANALYTIC = {"ishigami": ishigami}


def analytic_cell(model: str, params: dict[str, Any]) -> dict[str, Any]:
    """An analytic test function at the cell's factors (the seed does not enter)."""
    return {"status": "ok", "y": ANALYTIC[model](**params)}


def train_cell(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """One learning run; the summary, flattened, with the run's output files as a payload."""
    import torch

    torch.set_num_threads(1)
    from dmmlkd.bridge.training import run_train
    from dmmlkd.studies.diverged import diverged_round, run_status, weakest

    config = train_config(params, seed)
    with tempfile.TemporaryDirectory(prefix="dmmlkd-cell-") as tmp:
        run_dir = Path(tmp) / "run"
        summary = run_train(config, run_dir, progress=False)
        files = {str(p.relative_to(run_dir)): base64.b64encode(p.read_bytes()).decode("ascii")
                 for p in sorted(run_dir.rglob("*")) if p.is_file()}
    flat = {k: v for k, v in summary.items()
            if k not in ("modality_accuracy", "dropped_devices", "views", "method", "seed")}
    accs = summary["modality_accuracy"]
    flat.update({f"acc_{v}": a for v, a in accs.items()})
    flat["weakest_view_accuracy"] = weakest(accs.values())
    flat["status"] = run_status(summary)  # "diverged" (loss NaN/inf) or "ok"
    flat["diverged_round"] = diverged_round(summary)
    flat["dropped"] = len(summary["dropped_devices"])
    flat[FILES_KEY] = files
    return flat


def run_cell(kind: str, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Run a cell, never raising: failures come back as status 'error' with the message."""
    t0 = time.perf_counter()
    try:
        if kind == "train":
            out = train_cell(params, seed)
        elif kind in ANALYTIC:
            out = analytic_cell(kind, params)
        else:
            out = solve_cell(params, seed)
    except Exception as exc:  # noqa: BLE001 - recorded in the results, the study goes on
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        out = {"status": "error", "error": last}
    out["cell_time_s"] = time.perf_counter() - t0
    return out


def _bytes_writer(content: bytes) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        tmp.write_bytes(content)

    return write


def write_files(files: dict[str, str], cell_dir: Path) -> None:
    """Write a cell's returned output files under its folder (in the parent process)."""
    for rel, data in files.items():
        path = cell_dir / rel
        if path.resolve().parent != cell_dir.resolve() and cell_dir.resolve() not in path.resolve().parents:
            continue  # never write outside the cell's folder
        atomic_write(path, _bytes_writer(base64.b64decode(data)))
