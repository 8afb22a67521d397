"""`dmmlkd train`: one decentralized multi-modal learning run."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dmmlkd.cli.options import add_config_flags, config_overrides


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `train`."""
    p = sub.add_parser("train", help="one DMML-KD learning run (flags override --config)",
                       description="Decentralized multi-modal learning over a device graph with "
                       "energy accounting; writes config.toml, rounds.parquet, history.csv and "
                       "summary.json into --out (a new or empty folder, or one dmmlkd wrote).")
    p.add_argument("--config", default=None, help="TOML file ([train] table or top level)")
    p.add_argument("--nproc", type=int, default=1,
                   help="run as N local processes with torch.distributed (gloo); same results")
    p.add_argument("--out", default=None, help="output folder (new, empty, or written by dmmlkd "
                   "before; default: print the summary only)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    add_config_flags(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Resolve the config, check memory and --out, train, write outputs, print the summary
    (a diverged run: its one-line reason, exit 1)."""
    from dmmlkd.learner.config import Rule, check_value, load_config
    from dmmlkd.learner.resources import check_memory
    from dmmlkd.userio import check_out_dir

    overrides = config_overrides(args)
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
