"""`dmmlkd compare`: several methods under the same data, partition, topology and battery."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from dmmlkd.cli.options import add_config_flags, config_overrides

COMPARE_KEYS = ("methods", "seeds", "jobs", "reference")  # what a [compare] table may hold
MAX_SEEDS = 10_000
MAX_JOBS = 1024


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `compare`."""
    p = sub.add_parser("compare", help="compare learning methods over seeds (tables + figures)")
    p.add_argument("--config", default=None,
                   help="TOML: a [train] table (+ optional [compare] with methods, seeds, jobs)")
    p.add_argument("--methods", default=None, metavar="A,B,...",
                   help="learning methods to compare, comma-separated (default dpsgd,dmml-kd,"
                        "ogm-ge,dmml-kd-balance,random-schedule,modality-dropout)")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="number of seeds: 0, 1, ..., N-1 (default 2)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="parallel worker processes (default 2)")
    p.add_argument("--out", default="runs/compare",
                   help="output folder (new, empty, or written by dmmlkd before)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    p.add_argument("--reference", default=None,
                   help="method the others are paired against in paired.csv (default dmml-kd)")
    # The methods and seeds are the comparison's own (--methods, --seeds).
    add_config_flags(p, skip=("seed", "method"))
    return p


@dataclass
class CompareOptions:
    """Methods, seeds and worker processes of a comparison, checked."""

    methods: list[str]
    seeds: list[int]
    jobs: int


def compare_options(section: dict[str, Any], methods_flag: str | None, seeds_flag: int | None,
                    jobs_flag: int | None, default_jobs: int, source: str) -> CompareOptions:
    """Flags over the [compare] table over defaults; ConfigError naming the option otherwise."""
    from dmmlkd.learner.config import SEED_LIMIT, Rule, check_value
    from dmmlkd.learner.errors import ConfigError
    from dmmlkd.learner.methods import get_method
    from dmmlkd.studies.compare import DEFAULT_METHODS

    unknown = sorted(set(section) - set(COMPARE_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown option 'compare.{unknown[0]}' "
                          f"(valid: {', '.join(COMPARE_KEYS)})")
    if methods_flag is not None:
        methods: Any = [m.strip() for m in methods_flag.split(",")]
    else:
        methods = section.get("methods", list(DEFAULT_METHODS))
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise ConfigError(f"methods must be a list of names (got {methods!r})")
    check_value("methods", methods, Rule("methods", nonempty=True))
    repeated = sorted({m for m in methods if methods.count(m) > 1})
    if repeated:
        raise ConfigError(f"methods must not repeat a method (got {repeated[0]!r} twice)")
    for m in methods:
        get_method(m)
    seeds: Any = seeds_flag if seeds_flag is not None else section.get("seeds", 2)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        check_value("seeds", seeds, Rule("number of seeds", low=1, high=MAX_SEEDS))
        seeds = list(range(seeds))
    elif isinstance(seeds, list) and all(isinstance(s, int) and not isinstance(s, bool)
                                         for s in seeds):
        check_value("seeds", seeds, Rule("seeds", low=0, high=SEED_LIMIT, high_open=True,
                                         nonempty=True))
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds must not repeat a seed (got {seeds!r})")
    else:
        raise ConfigError(f"seeds must be a number of seeds or a list of seeds (got {seeds!r})")
    jobs: Any = jobs_flag if jobs_flag is not None else section.get("jobs", default_jobs)
    if not isinstance(jobs, int) or isinstance(jobs, bool):
        raise ConfigError(f"jobs must be an integer (got {jobs!r})")
    check_value("jobs", jobs, Rule("worker processes", low=1, high=MAX_JOBS))
    return CompareOptions(methods, seeds, jobs)


def run(args: argparse.Namespace) -> int:
    """Check everything, run every method x seed, write tables and figures, print the table."""
    from dmmlkd.learner.config import config_from_dict
    from dmmlkd.learner.errors import ConfigError
    from dmmlkd.learner.resources import check_memory
    from dmmlkd.studies.compare import default_jobs
    from dmmlkd.userio import check_out_dir, read_toml

    overrides = config_overrides(args)
    data = read_toml(args.config, ConfigError) if args.config else {}
    from dmmlkd.userio.toml import check_tables

    check_tables(data, "train", ("compare",), args.config or "config", ConfigError)
    section = data.get("compare", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{args.config}: [compare] must be a table")
    train = data["train"] if isinstance(data.get("train"), dict) else \
        {k: v for k, v in data.items() if k != "compare"}
    source = args.config or "config"
    base = config_from_dict({**train, **overrides}, source)
    options = compare_options(section, args.methods, args.seeds, args.jobs, default_jobs(), source)
    check_memory(base, runs=len(options.methods) * len(options.seeds), processes=options.jobs)
    check_out_dir(args.out)
    from dmmlkd.studies.compare import run_comparison, write_comparison  # torch: after the checks

    reference: str | None = args.reference or section.get("reference", "dmml-kd")
    if reference not in options.methods:
        if args.reference or "reference" in section:
            raise ConfigError(f"reference {reference!r} is not among the methods "
                              f"({', '.join(options.methods)})")
        reference = None  # the default reference is not compared: no paired table
    history, rows, finals = run_comparison(base, options.methods, options.seeds, options.jobs,
                                           progress=not args.quiet)
    table = write_comparison(args.out, base, options.methods, options.seeds, history, rows, finals,
                             reference)
    print(f"{len(options.methods)} methods x {len(options.seeds)} seeds, results in {args.out}/\n")
    print(table)
    from dmmlkd.studies.diverged import describe

    gone = describe(finals, ["method"])
    if gone:  # said on stderr too: a script reading only the exit code and stderr sees it
        print(f"dmmlkd compare: {len(gone)} of {len(finals)} runs diverged and are left out of "
              f"the means: {'; '.join(gone)}", file=sys.stderr)
    return 0
