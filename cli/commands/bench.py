"""`dmmlkd bench allocator`: print (and optionally save) allocator benchmark numbers."""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Any

from dmmlkd.cli.options import DeprecatedAlias
from dmmlkd.userio.options import DEFAULTS, check_option


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `bench`."""
    p = sub.add_parser("bench", help="benchmarks (numbers printed, never timed tests)")
    p.add_argument("target", choices=["allocator", "learner"], help="what to benchmark")
    p.add_argument("--sizes", default=None,
                   help="allocator: also run the size sweep over these comma-separated device "
                   "counts (e.g. 10,100,1000,10000,100000)")
    p.add_argument("--scopes", default="device,network")
    p.add_argument("--modalities", type=int, default=4)
    p.add_argument("--time-limit", type=float, default=DEFAULTS.time_limit,
                   help=f"exact solver limit in seconds (default {DEFAULTS.time_limit:g})")
    p.add_argument("--exact-max", type=int, default=10_000,
                   help="largest device count given to exact")
    p.add_argument("--network-max", type=int, default=100_000,
                   help="largest device count for the network scope")
    p.add_argument("--no-targets", action="store_true",
                   help="skip the table of targets (issue 17), measured on this machine")
    p.add_argument("--out", default=None, help="write the results as Markdown here (checked "
                   "before the benchmark runs; an existing file only if dmmlkd wrote it)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out file that dmmlkd did not write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu-levels", type=int, default=0, metavar="N",
                   help="allocator: N CPU levels per device (the time/frequency model)")
    p.add_argument("--deadline", default=None, metavar="none|S|Xx",
                   help="allocator: round deadline as in `generate --deadline` (needs levels)")
    p.add_argument("--deadline-scale", dest="deadline", type=lambda x: f"{x}x",
                   action=DeprecatedAlias, new="--deadline Xx", help=argparse.SUPPRESS)
    from dmmlkd.benchmarks.bench_learner import add_arguments as add_learner_arguments

    add_learner_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Measure the targets (and, with --sizes, the size sweep); print Markdown tables."""
    from dmmlkd.allocator import ProblemError

    if not 0 <= args.seed < 2**32:
        raise ProblemError(f"--seed must be in [0, 2**32 - 1] (got {args.seed})")
    if args.out:
        from dmmlkd.userio.atomic import check_free_space
        from dmmlkd.userio.owned import check_replaceable, is_stamped

        out = check_replaceable(args.out, args.force, is_stamped)
        # The tables are a few KiB: a disk without 1 MiB free is said now, not after the run.
        check_free_space(out.absolute().parent, 1 << 20, str(out))
    if args.target == "learner":
        from dmmlkd.benchmarks.bench_learner import run_cli as run_learner_bench

        return run_learner_bench(args)
    from dmmlkd.benchmarks.bench_allocator import BenchConfig, run_allocator_bench, targets
    from dmmlkd.userio import to_markdown

    try:
        sizes = tuple(int(s) for s in (args.sizes or "10").split(","))
    except ValueError:
        raise ProblemError(f"--sizes must be comma-separated integers (got {args.sizes!r})") from None
    scopes = tuple(s.strip() for s in args.scopes.split(","))
    unknown = [s for s in scopes if s not in ("device", "network")]
    if unknown or not scopes:
        raise ProblemError(f"--scopes must list device and/or network (got {args.scopes!r})")
    if any(k < 1 for k in sizes):
        raise ProblemError(f"--sizes must be positive device counts (got {args.sizes!r})")
    if args.modalities < 1:
        raise ProblemError(f"--modalities must be >= 1 (got {args.modalities})")
    check_option("time_limit", args.time_limit, ProblemError)
    for flag, value in (("--exact-max", args.exact_max), ("--network-max", args.network_max)):
        if value < 0:
            raise ProblemError(f"{flag} must be a device count >= 0 (got {value})")
    config = BenchConfig(
        sizes=sizes, scopes=scopes, modalities=args.modalities, time_limit=args.time_limit,
        exact_max_devices={"device": args.exact_max, "network": args.exact_max},
        heuristic_max_devices={"device": max(sizes), "network": args.network_max},
        seed=args.seed, cpu_levels=args.cpu_levels, deadline=args.deadline,
    )
    # Refuse bad level arguments before the sweep (generate_problem's checks, one line).
    from dmmlkd.allocator import generate_problem

    generate_problem(devices=1, modalities=args.modalities, seed=args.seed,
                     cpu_levels=args.cpu_levels, deadline=args.deadline)
    t0 = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    parts = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
        f"average {load:.1f} at the start (other work on the machine inflates wall times; CPU "
        f"seconds are given beside them), Python {platform.python_version()}."
    ]
    if not args.no_targets:
        parts += ["", "Targets (issue 17):", "", to_markdown(targets())]
    if args.sizes:
        table = run_allocator_bench(config)
        parts += [
            "", f"Size sweep: exact time limit {args.time_limit:g} s, {args.modalities} "
            f"modalities, seed {args.seed}"
            + (f", {args.cpu_levels} CPU levels, deadline {args.deadline}"
               if args.cpu_levels else "") + ".",
            "",
            to_markdown(table),
        ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    parts += ["", f"(total benchmark time {time.perf_counter() - t0:.0f} s; load average "
              f"{load:.1f} at the end)"]
    text = "\n".join(parts)
    print(text)
    if args.out:
        from dmmlkd.userio.owned import write_stamped

        write_stamped(args.out, text + "\n", "bench", "<!--")
    return 0
