"""`dmmlkd demo`: the main job of `make run` — allocation comparison on a generated instance."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `demo`."""
    p = sub.add_parser("demo", help="generate instances and compare every allocation method")
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--modalities", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=10.0)
    return p


def allocation_comparison(devices: int, modalities: int, seed: int, time_limit: float) -> str:
    """Solve one generated instance per scope with every method; a Markdown table."""
    import pandas as pd

    from allocator import generate_problem, solve
    from studies.bench import to_markdown

    rows = []
    for scope in ("device", "network"):
        problem = generate_problem(devices=devices, modalities=modalities, scope=scope, seed=seed)
        for method in ("exact", "heuristic", "proportional", "uniform"):
            alloc = solve(problem, method, time_limit=time_limit)
            s = alloc.summary()
            rows.append({
                "scope": scope, "method": method, "status": s["status"],
                "objective": s["objective"], "gap": s["gap"],
                "imbalance_network": s["imbalance_network"],
                "imbalance_device_mean": s["imbalance_device_mean"],
                "energy_j": s["energy_total_j"], "time_s": alloc.total_time_s,
            })
    return to_markdown(pd.DataFrame(rows))


def run(args: argparse.Namespace) -> int:
    """Print the allocation comparison."""
    print(f"Allocation on a generated instance: {args.devices} devices, {args.modalities} "
          f"modalities, seed {args.seed} (exact time limit {args.time_limit:g} s)\n")
    print(allocation_comparison(args.devices, args.modalities, args.seed, args.time_limit))
    return 0
