"""`dmmlkd solve FILE`: solve an allocation problem file and print the result."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from dmmlkd.cli.options import DeprecatedAlias
from dmmlkd.userio.options import DEFAULTS, SCOPES, SOLVE_TIME_LIMIT_S, SOLVERS


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `solve`."""
    p = sub.add_parser("solve", help="solve an allocation problem file (TOML, JSON or .npz)",
                       description="Solve an allocation problem: per device and modality, how "
                       "many local iterations to run next round.")
    p.add_argument("file", help="problem file (.toml, .json, or columnar .npz)")
    p.add_argument("--solver", default=DEFAULTS.solver, choices=SOLVERS,
                   help=f"the allocator's algorithm (default {DEFAULTS.solver})")
    p.add_argument("--method", dest="solver", choices=SOLVERS, action=DeprecatedAlias,
                   help="old name of --solver (prints a deprecation line)")
    p.add_argument("--scope", choices=SCOPES, help="override the file's scope")
    p.add_argument("--time-limit", type=float, default=SOLVE_TIME_LIMIT_S, metavar="S",
                   help="seconds for the exact solver (best solution and honest gap after it; "
                   f"default {SOLVE_TIME_LIMIT_S:g}, printed with the status)")
    p.add_argument("--mip-gap", type=float, default=DEFAULTS.mip_gap, metavar="G",
                   help=f"relative gap at which exact stops (default {DEFAULTS.mip_gap:g})")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table",
                   help="output: a readable table, the JSON record, or one CSV row per "
                   "device and modality")
    return p


def _fmt(x: float, spec: str = ".6g") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def render_table(allocation: Any, max_devices: int = 25) -> str:
    """A readable summary: status line, objective/bound/gap, balance, then the tau table."""
    p = allocation.problem
    s = allocation.summary()
    limit = allocation.info.get("time_limit_s")
    limit_text = f" (time limit {limit:g} s)" if limit is not None else ""
    certificate = allocation.info.get("certificate")
    lines = [
        f"{p.summary()}",
        f"solver {s['solver']}: {s['status']}{limit_text}   objective {_fmt(s['objective'])}   "
        f"bound {_fmt(s['bound'])}   gap {_fmt(s['gap'], '.4%')}"
        + (f"   certificate: {certificate}" if certificate else ""),
        f"time: build {s['build_time_s']:.3f} s, solve {s['solve_time_s']:.3f} s   "
        f"energy {s['energy_total_j']:.4g} J of {s['budget_total_j']:.4g} J budget",
        f"imbalance (max/min progress): worst device {_fmt(s['imbalance_device'], '.3f')}, "
        f"mean device {_fmt(s['imbalance_device_mean'], '.3f')}, "
        f"network {_fmt(s['imbalance_network'], '.3f')}",
    ]
    if p.has_levels:
        deadline = "none" if p.deadline_s is None else f"{p.deadline_s:.4g} s"
        lines.append(f"round time (slowest device) {_fmt(s['round_time_s'], '.4g')} s, "
                     f"deadline {deadline}")
    lines += [
        "",
    ]
    width = max(6, *(len(m) for m in p.modalities))
    name_w = max(6, *(len(d) for d in p.devices[:max_devices]))
    header = f"{'device':<{name_w}} " + " ".join(f"{m:>{width}}" for m in p.modalities)
    timed = p.has_levels
    lines.append(header + f" {'energy_J':>10} {'budget_J':>10}"
                 + (f" {'cpu_GHz':>8} {'time_s':>10}" if timed else ""))
    for k in range(min(p.n_devices, max_devices)):
        cells = [
            f"{allocation.tau[k, j]:>{width}d}" if p.holds[k, j] else f"{'-':>{width}}"
            for j in range(p.n_modalities)
        ]
        lines.append(
            f"{p.devices[k]:<{name_w}} " + " ".join(cells)
            + f" {allocation.energy[k]:>10.4g} {p.budget[k]:>10.4g}"
            + (f" {allocation.cpu_hz[k] / 1e9:>8.3f} {allocation.time_s[k]:>10.4g}" if timed else "")
        )
    if p.n_devices > max_devices:
        lines.append(f"... {p.n_devices - max_devices} more devices (use --format csv for all)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Read, solve, print."""
    from dmmlkd.allocator import solve
    from dmmlkd.allocator.io import read_problem

    problem = read_problem(args.file)
    if args.scope:
        problem = problem.with_(scope=args.scope)
    allocation = solve(problem, args.solver, time_limit=args.time_limit, mip_gap=args.mip_gap)
    if args.format == "json":
        print(json.dumps(allocation.to_dict(), indent=1))
    elif args.format == "csv":
        print(allocation.to_frame().to_csv(index=False), end="")
    else:
        print(render_table(allocation))
    return 0
