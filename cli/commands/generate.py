"""`dmmlkd generate`: a random, seeded, realistic allocation instance."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dmmlkd.cli.options import DeprecatedAlias
from dmmlkd.userio.options import DEFAULTS, SCOPES


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `generate`."""
    p = sub.add_parser("generate", help="write a random seeded allocation problem",
                       description="Generate an allocation problem whose energies come from the "
                       "physical model (CPU frequency, cycles, Shannon-rate links).")
    p.add_argument("--devices", type=int, default=10, metavar="K", help="devices (default 10)")
    p.add_argument("--modalities", type=int, default=4, metavar="M",
                   help="modalities (default 4)")
    p.add_argument("--scope", choices=SCOPES, default=DEFAULTS.scope,
                   help=f"balance per device or over the network (default {DEFAULTS.scope})")
    p.add_argument("--budget-scale", type=float, default=1.0, metavar="X",
                   help="budget relative to running every modality at mid tau (default 1)")
    p.add_argument("--missing-rate", type=float, default=0.0, metavar="R",
                   help="share of (device, modality) pairs not held (default 0)")
    p.add_argument("--speed-spread", type=float, default=1.0, help="decades between modality speeds")
    p.add_argument("--energy-spread", type=float, default=1.0, help="decades between modality costs")
    d = DEFAULTS  # the allocator's option defaults (userio.options.AllocatorOptions)
    p.add_argument("--delta", type=float, default=d.delta,
                   help=f"balance tolerance (default {d.delta:g})")
    p.add_argument("--mu", type=float, default=d.mu,
                   help=f"price of progress beyond (1 + delta) x the floor (default {d.mu:g})")
    p.add_argument("--epsilon", type=float, default=d.epsilon,
                   help=f"weight of the energy tie-break (default {d.epsilon:g})")
    p.add_argument("--tau-min", type=int, default=d.tau_min,
                   help=f"fewest local iterations of a held modality (default {d.tau_min})")
    p.add_argument("--tau-max", type=int, default=d.tau_max,
                   help=f"most local iterations of a modality (default {d.tau_max})")
    p.add_argument("--cpu-levels", type=int, default=0, metavar="N",
                   help="give every device N CPU levels (k/N x its f_max; default 0: no "
                   "time/frequency model)")
    p.add_argument("--deadline", default=None, metavar="none|S|Xx",
                   help="round deadline (needs --cpu-levels): none (default), S seconds, or Xx, "
                   "X times the slowest device's time at mid tau and f_max (e.g. 0.8x)")
    p.add_argument("--deadline-scale", dest="deadline", type=lambda x: f"{x}x",
                   action=DeprecatedAlias, new="--deadline Xx", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help="random seed in [0, 2**32 - 1]")
    p.add_argument("--format", choices=["toml", "json", "npz"], default=None,
                   help="default: from --out's suffix (.npz, .json), else toml; npz (columnar, "
                   "fast to read for large problems) needs --out")
    p.add_argument("--out", default=None, help="file to write (default: stdout); an existing "
                   "file is replaced only if dmmlkd wrote it, unchanged")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out file that dmmlkd did not write")
    return p


def written_by_dmmlkd(path: Path) -> bool:
    """The file reads as a problem and holds exactly the bytes `generate` writes for it (a
    columnar .npz: it reads as a problem file dmmlkd wrote, with its version stamp)."""
    import numpy as np

    from dmmlkd.allocator.io import dumps_problem, format_of, read_problem

    fmt = format_of(path)
    try:
        if fmt == "npz":
            with np.load(path, allow_pickle=False) as data:
                stamped = "dmmlkd_problem_version" in data.files
            return stamped and read_problem(path) is not None
        return dumps_problem(read_problem(path), fmt) == path.read_text(encoding="utf-8")
    except (ValueError, OSError):  # not a problem file (ProblemError is a ValueError), unreadable
        return False


def run(args: argparse.Namespace) -> int:
    """Generate and write."""
    from dmmlkd.allocator import generate_problem
    from dmmlkd.allocator.errors import ProblemError
    from dmmlkd.allocator.io import atomic_write_text, dumps_problem, format_of, write_problem_npz
    from dmmlkd.userio.owned import check_replaceable

    fmt = args.format or format_of(args.out)
    if fmt == "npz" and not args.out:
        raise ProblemError("--format npz writes a binary file: give --out FILE.npz")

    if args.out:
        check_replaceable(args.out, args.force, written_by_dmmlkd)
    problem = generate_problem(
        devices=args.devices, modalities=args.modalities, scope=args.scope,
        budget_scale=args.budget_scale, missing_rate=args.missing_rate, seed=args.seed,
        speed_spread=args.speed_spread, energy_spread=args.energy_spread, delta=args.delta,
        mu=args.mu, epsilon=args.epsilon, tau_min=args.tau_min, tau_max=args.tau_max,
        cpu_levels=args.cpu_levels, deadline=args.deadline,
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
