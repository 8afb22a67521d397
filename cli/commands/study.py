"""`dmmlkd study SPEC --out DIR`: run a resumable sweep or sensitivity study."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dmmlkd.cli.options import add_config_flags, config_overrides

MAX_FAILURE_LINES = 20  # beyond this, the rest are counted (all are in results.parquet)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `study`."""
    p = sub.add_parser("study", help="run a sweep / Morris / Sobol study from a TOML spec "
                                     "(resumable)")
    p.add_argument("spec", help="study TOML file (see studies/examples/)")
    p.add_argument("--out", required=True, help="output folder (rerun to resume)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="worker processes (default: the spec's study.jobs)")
    p.add_argument("--cluster", default=None, metavar="local|ADDRESS",
                   help="run cells on Dask: 'local' (a LocalCluster of --jobs processes) or a "
                        "scheduler address such as tcp://host:8786")
    p.add_argument("--force", action="store_true", help="accept a changed spec in --out")
    p.add_argument("--quiet", action="store_true", help="no progress (bar or lines)")
    # A train study's [base] options as flags (written into the stored spec); seeds: the spec's.
    add_config_flags(p, skip=("seed",), title="run configuration of a train study's [base]")
    return p


def check_study_out(out: Path) -> None:
    """Refuse an --out that is a file, a folder of someone else's files, or not writable."""
    from dmmlkd.studies.runner import is_study_folder
    from dmmlkd.studies.spec import StudyError
    from dmmlkd.userio import check_creatable, probe_writable

    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise StudyError(f"{out}: exists and is not a folder; choose another --out")
        # A study folder holds spec.toml; before its first spec is stored, only the runner's
        # lock and temporary files (a study starting there now must meet the lock, not this).
        foreign = [p.name for p in out.iterdir()
                   if p.name not in (".lock", "cells.jsonl") and not p.name.endswith(".tmp")]
        if foreign and not is_study_folder(out):
            raise StudyError(f"{out}: holds files but no study dmmlkd ran (its spec.toml and "
                             ".lock); choose a new or empty --out (nothing was changed)")
        probe_writable(out, out)
        return
    check_creatable(out)


def run(args: argparse.Namespace) -> int:
    """Run missing cells, rebuild results, indices, figures and report; exit 1 when cells failed."""
    from dmmlkd.learner.config import Rule, check_value
    from dmmlkd.studies.report import finish_study
    from dmmlkd.studies.runner import StudyTerminated, failure_line, load_study, run_study
    from dmmlkd.studies.spec import load_spec

    spec = load_spec(args.spec, base=config_overrides(args))
    if args.jobs is not None:
        from dmmlkd.studies.limits import MAX_JOBS

        check_value("jobs", args.jobs, Rule("worker processes", low=1, high=MAX_JOBS))
    out = Path(args.out)
    check_study_out(out)
    printed: set[str] = set()

    def on_failure(cell_id: str, line: str) -> None:
        printed.add(cell_id)
        if len(printed) <= MAX_FAILURE_LINES:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)  # between progress lines, never inside the bar

    try:
        ran, skipped, failures = run_study(spec, out, args.jobs, args.force,
                                           progress=not args.quiet,
                                           cluster=args.cluster, on_failure=on_failure)
    except StudyTerminated:
        print(f"dmmlkd study: terminated; finished cells are kept in {out / 'cells.jsonl'}, "
              "rerun the same command to resume", file=sys.stderr)
        return 143
    spec, results = load_study(out)
    if "status" in results:
        # Failed cells are not retried on resume: say the earlier ones again so none is silent.
        factors = [*spec.base, *spec.grid, *spec.sensitivity.get("ranges", {})]
        for record in results[results["status"] == "error"].to_dict("records"):
            if record["cell_id"] not in printed:
                on_failure(record["cell_id"], failure_line(
                    record["cell_id"], {k: record[k] for k in factors if k in record},
                    int(record["seed"]), str(record.get("error", ""))))
        if len(printed) > MAX_FAILURE_LINES:
            print(f"... and {len(printed) - MAX_FAILURE_LINES} more failed cells (column 'error' "
                  f"of {out / 'results.parquet'})", file=sys.stderr)
    from dmmlkd.studies.diverged import describe

    diverged = describe(results, list(spec.grid))
    if diverged:  # results, not failures (exit code unchanged), but never silent
        shown = "; ".join(diverged[:MAX_FAILURE_LINES])
        more = f" and {len(diverged) - MAX_FAILURE_LINES} more" if len(diverged) > MAX_FAILURE_LINES else ""
        print(f"dmmlkd study: {len(diverged)} cells diverged (left out of means and figures, "
              f"listed in report.md): {shown}{more}", file=sys.stderr)
    figures, report = finish_study(out)
    print(f"study {spec.name!r}: {ran} cells run, {skipped} already done, {failures} failed"
          f"{f', {len(diverged)} diverged' if diverged else ''}; "
          f"{len(results)} rows in {out / 'results.parquet'}, {len(figures)} figures, {report}")
    return 1 if failures else 0
