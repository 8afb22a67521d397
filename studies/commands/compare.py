"""`dmmlkd compare`: several methods under the same data, partition, topology and battery."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `compare`."""
    p = sub.add_parser("compare", help="compare learning methods over seeds (tables + figures)")
    p.add_argument("--config", default=None, help="TOML: a [train] table (+ optional [compare])")
    p.add_argument("--methods", default=None,
                   help="comma-separated (default dpsgd,dmml-kd,ogm-ge,dmml-kd-balance)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 2)")
    p.add_argument("--jobs", type=int, default=None, help="parallel processes (default 2)")
    p.add_argument("--out", default="runs/compare", help="output folder")
    for flag, kind in (("--dataset", str), ("--views", str), ("--devices", int), ("--rounds", int),
                       ("--local-iters", int), ("--alpha", float), ("--missing-rate", float),
                       ("--topology", str), ("--solver", str), ("--scope", str),
                       ("--battery", float), ("--deadline", str)):
        p.add_argument(flag, type=kind, default=None)
    return p


def run(args: argparse.Namespace) -> int:
    """Run every method x seed, write tables and figures, print the final table."""
    import tomllib

    from learner.config import load_config
    from studies.compare import DEFAULT_METHODS, default_jobs, run_comparison, write_comparison

    overrides = {"dataset": args.dataset, "devices": args.devices, "rounds": args.rounds,
                 "local_iters": args.local_iters, "alpha": args.alpha,
                 "missing_rate": args.missing_rate, "topology": args.topology,
                 "solver": args.solver, "scope": args.scope, "battery_j": args.battery,
                 "deadline": args.deadline}
    if args.views:
        overrides["views"] = [v.strip() for v in args.views.split(",") if v.strip()]
    section: dict[str, Any] = {}
    if args.config:
        from pathlib import Path

        section = tomllib.loads(Path(args.config).read_text()).get("compare", {}) \
            if Path(args.config).is_file() else {}
    base = load_config(args.config, overrides)
    methods = (args.methods.split(",") if args.methods
               else section.get("methods", list(DEFAULT_METHODS)))
    n_seeds = args.seeds or section.get("seeds", 2)
    seeds = list(range(n_seeds)) if isinstance(n_seeds, int) else list(n_seeds)
    from learner.methods import get_method

    for m in methods:
        get_method(m)
    jobs = args.jobs or default_jobs()
    history, rows, finals = run_comparison(base, methods, seeds, jobs,
                                           progress=sys.stderr.isatty())
    table = write_comparison(args.out, base, methods, seeds, history, rows, finals)
    print(f"{len(methods)} methods x {len(seeds)} seeds, results in {args.out}/\n")
    print(table)
    return 0
