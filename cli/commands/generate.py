"""`dmmlkd generate`: a random, seeded, realistic allocation instance."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `generate`."""
    p = sub.add_parser("generate", help="write a random seeded allocation problem",
                       description="Generate an allocation problem whose energies come from the "
                       "physical model (CPU frequency, cycles, Shannon-rate links).")
    p.add_argument("--devices", type=int, default=10, metavar="K")
    p.add_argument("--modalities", type=int, default=4, metavar="M")
    p.add_argument("--scope", choices=["device", "network"], default="device")
    p.add_argument("--budget-scale", type=float, default=1.0, metavar="X",
                   help="budget relative to running every modality at mid tau (default 1)")
    p.add_argument("--missing-rate", type=float, default=0.0, metavar="R")
    p.add_argument("--speed-spread", type=float, default=1.0, help="decades between modality speeds")
    p.add_argument("--energy-spread", type=float, default=1.0, help="decades between modality costs")
    p.add_argument("--delta", type=float, default=0.1)
    p.add_argument("--mu", type=float, default=5.0)
    p.add_argument("--epsilon", type=float, default=1e-3)
    p.add_argument("--tau-min", type=int, default=1)
    p.add_argument("--tau-max", type=int, default=20)
    p.add_argument("--cpu-levels", type=int, default=0, metavar="N",
                   help="give every device N CPU levels (k/N x its f_max; default 0: no "
                   "time/frequency model)")
    p.add_argument("--deadline-scale", type=float, default=None, metavar="X",
                   help="round deadline = X x the slowest device's time at mid tau and f_max "
                   "(needs --cpu-levels)")
    p.add_argument("--seed", type=int, default=0, help="random seed in [0, 2**32 - 1]")
    p.add_argument("--format", choices=["toml", "json", "npz"], default=None,
                   help="default: from --out's suffix (.npz, .json), else toml; npz (columnar, "
                   "fast to read for large problems) needs --out")
    p.add_argument("--out", default=None, help="file to write (default: stdout)")
    return p


def run(args: argparse.Namespace) -> int:
    """Generate and write."""
    from dmmlkd.allocator import generate_problem
    from dmmlkd.allocator.errors import ProblemError
    from dmmlkd.allocator.io import atomic_write_text, dumps_problem, format_of, write_problem_npz

    fmt = args.format or format_of(args.out)
    if fmt == "npz" and not args.out:
        raise ProblemError("--format npz writes a binary file: give --out FILE.npz")

    problem = generate_problem(
        devices=args.devices, modalities=args.modalities, scope=args.scope,
        budget_scale=args.budget_scale, missing_rate=args.missing_rate, seed=args.seed,
        speed_spread=args.speed_spread, energy_spread=args.energy_spread, delta=args.delta,
        mu=args.mu, epsilon=args.epsilon, tau_min=args.tau_min, tau_max=args.tau_max,
        cpu_levels=args.cpu_levels, deadline_scale=args.deadline_scale,
    )
    if fmt == "npz":
        write_problem_npz(problem, args.out)
        print(f"wrote {args.out}: {problem.summary()}", file=sys.stderr)
        return 0
    text = dumps_problem(problem, fmt)
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}: {problem.summary()}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
