"""What one study cell does: generate + solve, or one training run. Runs in a worker process."""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

GENERATE_KEYS = ("devices", "modalities", "scope", "budget_scale", "missing_rate", "speed_spread",
                 "energy_spread", "delta", "mu", "epsilon", "tau_min", "tau_max")


def solve_cell(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Generate the instance and solve it; the allocation summary."""
    from allocator import generate_problem, solve

    problem = generate_problem(seed=seed, **{k: params[k] for k in GENERATE_KEYS if k in params})
    alloc = solve(problem, params.get("method", "heuristic"),
                  time_limit=params.get("time_limit", 10.0), mip_gap=params.get("mip_gap", 1e-4))
    out = alloc.summary()
    out.pop("method", None)
    out.pop("scope", None)
    out["total_time_s"] = alloc.total_time_s
    return out


def train_cell(params: dict[str, Any], seed: int, cell_dir: Path | None) -> dict[str, Any]:
    """One learning run (outputs under the cell's folder); the summary, flattened."""
    import torch

    torch.set_num_threads(1)
    from learner.config import config_from_dict
    from studies.training import run_train

    config = config_from_dict({**params, "seed": seed}, "study cell")
    summary = run_train(config, cell_dir, progress=False)
    flat = {k: v for k, v in summary.items()
            if k not in ("modality_accuracy", "dropped_devices", "views", "method", "seed")}
    accs = summary["modality_accuracy"]
    flat.update({f"acc_{v}": a for v, a in accs.items()})
    flat["weakest_view_accuracy"] = min(accs.values())
    flat["dropped"] = len(summary["dropped_devices"])
    return flat


def run_cell(kind: str, params: dict[str, Any], seed: int, cell_id: str,
             cells_dir: str | None) -> dict[str, Any]:
    """Run a cell, never raising: failures come back as status 'error' with the message."""
    t0 = time.perf_counter()
    try:
        if kind == "train":
            out = train_cell(params, seed, Path(cells_dir) / cell_id if cells_dir else None)
            out["status"] = "ok"
        else:
            out = solve_cell(params, seed)
    except Exception as exc:  # noqa: BLE001 - recorded in the results, the study goes on
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        out = {"status": "error", "error": last}
    out["cell_time_s"] = time.perf_counter() - t0
    return out
