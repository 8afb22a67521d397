"""`dmmlkd flower`: the allocator as a Flower strategy, in Flower's simulation engine."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dmmlkd.cli.options import add_config_flags, config_overrides


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `flower`."""
    p = sub.add_parser("flower", help="federated learning in Flower with the allocator as the "
                       "strategy, beside plain FedAvg with uniform tau",
                       description="Runs dmmlkd's multimodal learner as Flower ClientApps (the same "
                       "data, partitions and fleet as `dmmlkd train`) with the allocator choosing "
                       "each node's tau per view and CPU level every round, then the same run with "
                       "uniform tau (plain FedAvg) on the same fleet and energy. Writes "
                       "summary.json, ledger.csv, history.csv and config.toml into --out. Needs "
                       "the extra dmmlkd[flower] (docs/flower.md).")
    p.add_argument("--config", default=None, help="TOML file ([train] table or top level)")
    # Flower calls its devices clients: --clients is --devices.
    p.add_argument("--clients", type=int, dest="devices", metavar="N",
                   help="Flower nodes (the devices of the fleet; same as --devices)")
    p.add_argument("--backend", default="ray", help="ray (Flower's simulation engine, default) or "
                   "inline (every node in this process, one after another)")
    p.add_argument("--fraction", type=float, default=1.0,
                   help="share of the nodes FedAvg samples each round (default 1)")
    p.add_argument("--workers", type=int, default=None,
                   help="simulation workers (one CPU each; default: the cores, at most --clients)")
    p.add_argument("--no-control", action="store_true",
                   help="skip the uniform-tau control run (plain FedAvg)")
    p.add_argument("--out", default=None, help="output folder (new, empty, or written by dmmlkd)")
    p.add_argument("--quiet", action="store_true", help="only warnings from Flower")
    add_config_flags(p, skip=("devices",))
    p.set_defaults(_config_flags=[*p.get_default("_config_flags"), "devices"])
    return p


def run(args: argparse.Namespace) -> int:
    """Check everything, run the allocator and the control, write outputs, print the summary."""
    from dmmlkd.learner.config import Rule, check_value, load_config
    from dmmlkd.learner.errors import ConfigError
    from dmmlkd.learner.resources import check_memory
    from dmmlkd.userio import check_out_dir

    config = load_config(args.config, config_overrides(args))
    check_value("backend", args.backend, Rule("engine", choices=("ray", "inline")))
    check_value("fraction", args.fraction, Rule("share of nodes", low=0, low_open=True, high=1))
    if args.workers is not None:
        check_value("workers", args.workers, Rule("workers", low=1, high=1024))
    check_memory(config)
    if args.out is not None:
        check_out_dir(args.out)
    try:
        from dmmlkd.flower.app import compare_runs, outputs_summary, write_outputs
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("flwr", "ray"):
            raise ConfigError(f"dmmlkd flower needs Flower ({exc.name} is not installed): "
                              "pip install 'dmmlkd[flower]'") from None
        raise
    runs = compare_runs(config, args.backend, args.fraction, args.workers,
                        control=not args.no_control, quiet=args.quiet)
    if args.out is not None:
        write_outputs(runs, config, {"backend": args.backend, "fraction": args.fraction,
                                     "workers": args.workers, "control": not args.no_control},
                      args.out)
    print(json.dumps(outputs_summary(runs), indent=1))
    return 0
