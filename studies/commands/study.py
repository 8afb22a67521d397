"""`dmmlkd study SPEC --out DIR`: run a resumable sensitivity study."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `study`."""
    p = sub.add_parser("study", help="run a sweep / Morris study from a TOML spec (resumable)")
    p.add_argument("spec", help="study TOML file (see studies/examples/)")
    p.add_argument("--out", required=True, help="output folder (rerun to resume)")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: spec)")
    p.add_argument("--force", action="store_true", help="accept a changed spec in --out")
    return p


def run(args: argparse.Namespace) -> int:
    """Run missing cells, rebuild results and figures; exit 1 when cells failed."""
    from pathlib import Path

    from studies.plots import draw
    from studies.runner import load_study, run_study
    from studies.spec import load_spec

    spec = load_spec(args.spec)
    out = Path(args.out)
    ran, skipped, failures = run_study(spec, out, args.jobs, args.force,
                                       progress=sys.stderr.isatty())
    spec, results = load_study(out)
    figures = draw(spec, results, out)
    print(f"study {spec.name!r}: {ran} cells run, {skipped} already done, {failures} failed; "
          f"{len(results)} rows in {out / 'results.parquet'}, {len(figures)} figures")
    return 1 if failures else 0
