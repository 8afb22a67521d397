"""`dmmlkd demo` (what `make run` runs): the main job on the embedded mfeat data.

1. Learning plus allocation: dpsgd, dmml-kd, ogm-ge and dmml-kd-balance on mfeat's strong
   (fac) and weak (zer) views, 8 heterogeneous devices (CPU speeds, links), label skew
   alpha = 0.5, the same battery for every method (``--missing-rate`` for devices holding
   different view sets); tables and figures in --out.
2. Allocation alone: every allocation solver on a generated instance, both scopes.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from dmmlkd.userio.options import DEFAULTS


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `demo`."""
    p = sub.add_parser("demo", help="the main job: learning-plus-allocation comparison on mfeat, "
                       "then an allocation comparison (about 1 min of CPU time)",
                       description="About 66 s of CPU time (58 s learning in --jobs parallel "
                       "processes, 8 s allocation with a 10 s exact limit): roughly a minute on "
                       "2 idle cores, several on a busy machine.")
    p.add_argument("--out", default="runs/demo", help="output folder of the learning comparison "
                   "(new, empty, or written by dmmlkd before)")
    p.add_argument("--seeds", type=int, default=2, help="number of seeds: 0, 1, ... (default 2)")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--missing-rate", type=float, default=0.0,
                   help="share of (device, view) pairs missing (default 0: all views held)")
    p.add_argument("--jobs", type=int, default=None)
    p.add_argument("--alloc-devices", type=int, default=200)
    p.add_argument("--time-limit", type=float, default=DEFAULTS.time_limit,
                   help=f"exact solver limit in seconds (default {DEFAULTS.time_limit:g})")
    p.add_argument("--skip-learning", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    return p


def allocation_comparison(devices: int, modalities: int, seed: int, time_limit: float) -> str:
    """Solve one generated instance per scope with every solver; a Markdown table."""
    import pandas as pd

    from dmmlkd.allocator import SOLVERS, generate_problem, solve
    from dmmlkd.userio import to_markdown

    rows = []
    for scope in ("device", "network"):
        problem = generate_problem(devices=devices, modalities=modalities, scope=scope, seed=seed)
        for solver in SOLVERS:
            alloc = solve(problem, solver, time_limit=time_limit)
            s = alloc.summary()
            rows.append({
                "scope": scope, "solver": solver, "status": s["status"],
                "objective": s["objective"], "gap": s["gap"],
                "imbalance_network": s["imbalance_network"],
                "imbalance_device_mean": s["imbalance_device_mean"],
                "energy_j": s["energy_total_j"], "time_s": alloc.total_time_s,
            })
    return to_markdown(pd.DataFrame(rows))


def run(args: argparse.Namespace) -> int:
    """Check every option and --out, then run both parts and print their tables."""
    from dmmlkd.cli.commands.compare import compare_options
    from dmmlkd.learner.config import Rule, TrainConfig, check_value
    from dmmlkd.learner.resources import check_memory
    from dmmlkd.studies.compare import DEFAULT_METHODS, default_jobs
    from dmmlkd.userio import check_out_dir

    check_value("alloc_devices", args.alloc_devices, Rule("devices", low=1, high=100_000))
    check_value("time_limit", args.time_limit, Rule("seconds", low=0, low_open=True, high=1e6))
    t0 = time.perf_counter()
    if not args.skip_learning:
        base = TrainConfig(dataset="mfeat", views=["fac", "zer"], devices=args.devices,
                           rounds=args.rounds, alpha=0.5,
                           missing_rate=args.missing_rate).validate()
        options = compare_options({}, ",".join(DEFAULT_METHODS), args.seeds, args.jobs,
                                  default_jobs(), "demo")
        check_memory(base, runs=len(options.methods) * len(options.seeds), processes=options.jobs)
        check_out_dir(args.out)
        from dmmlkd.studies.compare import run_comparison, write_comparison

        print(f"[1/2] learning + allocation on mfeat (fac strong, zer weak), {args.devices} "
              f"devices (CPUs 0.5-2 GHz), alpha 0.5, {args.missing_rate:.0%} views missing, "
              f"{args.rounds} rounds, {args.seeds} seeds, same battery ...", flush=True)
        history, rows, finals = run_comparison(base, options.methods, options.seeds, options.jobs,
                                               progress=not args.quiet)
        table = write_comparison(args.out, base, options.methods, options.seeds,
                                 history, rows, finals)
        print(table)
        print(f"\nfigures: {args.out}/figures/ (curves.png, tau_heatmap.png); "
              f"tables: {args.out}/final.csv, history.parquet\n")
    print(f"[2/2] allocation on a generated instance: {args.alloc_devices} devices, 4 modalities "
          f"(exact time limit {args.time_limit:g} s)", flush=True)
    print(allocation_comparison(args.alloc_devices, 4, 0, args.time_limit))
    print(f"\ndone in {time.perf_counter() - t0:.0f} s")
    return 0
