"""`dmmlkd bench allocator`: print (and optionally save) allocator benchmark numbers."""

from __future__ import annotations

import argparse
import platform
import time
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `bench`."""
    p = sub.add_parser("bench", help="benchmarks (numbers printed, never timed tests)")
    p.add_argument("target", choices=["allocator", "learner"], help="what to benchmark")
    p.add_argument("--sizes", default="10,100,1000,10000,100000",
                   help="comma-separated device counts")
    p.add_argument("--scopes", default="device,network")
    p.add_argument("--modalities", type=int, default=4)
    p.add_argument("--time-limit", type=float, default=10.0, help="exact solver limit (s)")
    p.add_argument("--exact-max", type=int, default=10_000,
                   help="largest device count given to exact")
    p.add_argument("--network-max", type=int, default=100_000,
                   help="largest device count for the network scope")
    p.add_argument("--no-targets", action="store_true",
                   help="skip the end-to-end CLI target checks")
    p.add_argument("--out", default=None, help="write the results as Markdown here")
    p.add_argument("--seed", type=int, default=0)
    from studies.bench_learner import add_arguments as add_learner_arguments

    add_learner_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the sweep and the end-to-end targets; print Markdown tables."""
    if args.target == "learner":
        from studies.bench_learner import run_cli as run_learner_bench

        return run_learner_bench(args)
    from allocator import ProblemError
    from allocator.io import atomic_write_text
    from studies.bench import BenchConfig, cli_targets, run_allocator_bench, to_markdown

    try:
        sizes = tuple(int(s) for s in args.sizes.split(","))
    except ValueError:
        raise ProblemError(f"--sizes must be comma-separated integers (got {args.sizes!r})") from None
    scopes = tuple(s.strip() for s in args.scopes.split(","))
    config = BenchConfig(
        sizes=sizes, scopes=scopes, modalities=args.modalities, time_limit=args.time_limit,
        exact_max_devices={"device": args.exact_max, "network": args.exact_max},
        heuristic_max_devices={"device": max(sizes), "network": args.network_max},
        seed=args.seed,
    )
    t0 = time.perf_counter()
    table = run_allocator_bench(config)
    parts = [
        f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}"
        f", exact time limit {args.time_limit:g} s, {args.modalities} modalities, seed {args.seed}.",
        "",
        to_markdown(table),
    ]
    if not args.no_targets:
        parts += ["", "End-to-end targets through `dmmlkd solve FILE.json`:", "",
                  to_markdown(cli_targets(args.time_limit))]
    parts += ["", f"(total benchmark time {time.perf_counter() - t0:.0f} s)"]
    text = "\n".join(parts)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    return 0
