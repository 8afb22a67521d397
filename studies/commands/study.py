"""`dmmlkd study SPEC --out DIR`: run a resumable sensitivity study."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `study`."""
    p = sub.add_parser("study", help="run a sweep / Morris study from a TOML spec (resumable)")
    p.add_argument("spec", help="study TOML file (see studies/examples/)")
    p.add_argument("--out", required=True, help="output folder (rerun to resume)")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: spec)")
    p.add_argument("--force", action="store_true", help="accept a changed spec in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    return p


def check_study_out(out: Path) -> None:
    """Refuse an --out that is a file, a folder of someone else's files, or not writable."""
    from studies.spec import StudyError
    from userio import probe_writable

    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise StudyError(f"{out}: exists and is not a folder; choose another --out")
        if any(out.iterdir()) and not (out / "spec.toml").is_file():
            raise StudyError(f"{out}: holds files but no study (no spec.toml); choose a new or "
                             "empty --out (nothing was changed)")
        probe_writable(out, out)
        return
    ancestor = out.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise StudyError(f"{out}: cannot be created ({ancestor} is not a folder)")
    probe_writable(ancestor, out)


def run(args: argparse.Namespace) -> int:
    """Run missing cells, rebuild results and figures; exit 1 when cells failed."""
    from learner.config import Rule, check_value
    from studies.plots import draw
    from studies.runner import load_study, run_study
    from studies.spec import load_spec

    if args.jobs is not None:
        check_value("jobs", args.jobs, Rule("worker processes", low=1, high=1024))
    spec = load_spec(args.spec)
    out = Path(args.out)
    check_study_out(out)
    ran, skipped, failures = run_study(spec, out, args.jobs, args.force, progress=not args.quiet)
    spec, results = load_study(out)
    figures = draw(spec, results, out)
    print(f"study {spec.name!r}: {ran} cells run, {skipped} already done, {failures} failed; "
          f"{len(results)} rows in {out / 'results.parquet'}, {len(figures)} figures")
    return 1 if failures else 0
