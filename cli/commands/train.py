"""`dmmlkd train`: one decentralized multi-modal learning run."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `train`."""
    p = sub.add_parser("train", help="one DMML-KD learning run (flags override --config)",
                       description="Decentralized multi-modal learning over a device graph with "
                       "energy accounting; writes config.toml, rounds.parquet, history.csv and "
                       "summary.json into --out (a new or empty folder, or one dmmlkd wrote).")
    p.add_argument("--config", default=None, help="TOML file ([train] table or top level)")
    p.add_argument("--dataset", help="mfeat, basicmotions, synthetic, or PATH.npz of your own "
                   "(docs/data.md)")
    p.add_argument("--val-fraction", type=float, dest="val_fraction",
                   help="share of each class's training samples held out for validation (0.1)")
    p.add_argument("--views", help="comma-separated views, e.g. fac,zer")
    p.add_argument("--devices", type=int)
    p.add_argument("--rounds", type=int)
    p.add_argument("--local-iters", type=int, dest="local_iters")
    p.add_argument("--alpha", type=float, help="Dirichlet label skew (large = IID)")
    p.add_argument("--missing-rate", type=float, dest="missing_rate")
    p.add_argument("--topology", help="ring, torus, erdos-renyi, geometric, complete")
    p.add_argument("--method", help="dpsgd, dmml-kd, dmml-kd-balance, ogm-ge, ...")
    p.add_argument("--solver", help="allocator for dmml-kd-balance: exact, heuristic, "
                   "proportional, uniform")
    p.add_argument("--scope", help="allocator scope: device or network")
    p.add_argument("--battery", type=float, dest="battery_j", help="J per device (default: "
                   "exactly enough for uniform --local-iters every round)")
    p.add_argument("--seed", type=int, help="0 <= seed < 2**32")
    p.add_argument("--eval-every", type=int, dest="eval_every",
                   help="evaluate device models every N rounds (and the last; consensus: every round)")
    p.add_argument("--eval-devices", type=int, dest="eval_devices",
                   help="device models evaluated: a seeded sample of N active devices (0: all)")
    p.add_argument("--nproc", type=int, default=1,
                   help="run as N local processes with torch.distributed (gloo); same results")
    p.add_argument("--deadline", help="round deadline: auto (uniform tau at f_max, the default), "
                   "none, or seconds")
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    return p


def run(args: argparse.Namespace) -> int:
    """Resolve the config, check memory and --out, train, write outputs, print the summary
    (a diverged run: its one-line reason, exit 1)."""
    from dmmlkd.learner.config import Rule, check_value, load_config
    from dmmlkd.learner.resources import check_memory
    from dmmlkd.userio import check_out_dir

    overrides = {k: getattr(args, k) for k in (
        "dataset", "devices", "rounds", "local_iters", "alpha", "missing_rate", "topology",
        "method", "solver", "scope", "battery_j", "seed", "val_fraction", "eval_every",
        "eval_devices", "deadline")}
    if args.views is not None:
        overrides["views"] = [v.strip() for v in args.views.split(",")]
    config = load_config(args.config, overrides)
    check_value("nproc", args.nproc, Rule("local processes", low=1, high=1024))
    check_memory(config)
    if args.out is not None:
        check_out_dir(args.out)
    if args.nproc != 1:
        from dmmlkd.bridge.distributed_entry import launch

        summary = launch(config, args.out, args.nproc)
    else:
        from dmmlkd.bridge.training import run_train  # torch is imported only once the checks passed

        summary = run_train(config, args.out, progress=not args.quiet)
    if summary.get("status") == "diverged":  # outputs are written; the run is not a result
        print(summary["reason"], file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=1))
    return 0
