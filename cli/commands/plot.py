"""`dmmlkd plot DIR`: redraw a study's or a comparison's figures from its tables alone."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `plot`."""
    p = sub.add_parser("plot", help="redraw the figures of a study or compare folder "
                                    "(PNG, PDF, SVG)")
    p.add_argument("dir", help="a `dmmlkd study` or `dmmlkd compare` output folder")
    return p


def run(args: argparse.Namespace) -> int:
    """Redraw and list the figures (a study also gets its indices and report.md again)."""
    from pathlib import Path

    from dmmlkd.studies.spec import StudyError

    folder = Path(args.dir)
    if (folder / "spec.toml").exists():
        from dmmlkd.studies.report import finish_study

        figures, report = finish_study(folder)
        for path in figures:
            print(path)
        print(report)
        return 0
    if (folder / "history.parquet").exists() and (folder / "rows.parquet").exists():
        from dmmlkd.studies.compare import plot_comparison
        from dmmlkd.studies.runner import read_table

        history = read_table(folder / "history.parquet")
        rows = read_table(folder / "rows.parquet")
        views = [c[4:] for c in history.columns if c.startswith("acc_")]
        from dmmlkd.userio.outputs import record_written

        paths = plot_comparison(history, rows, folder / "figures", views)
        # The redrawn figures (PNG, PDF, SVG) stay ours: a later compare --out may replace them.
        record_written(folder, [f for p in paths for f in p.parent.glob(f"{p.stem}.*")])
        for path in paths:
            print(path)
        return 0
    raise StudyError(f"{folder}: neither a study folder (spec.toml) nor a compare folder "
                     "(history.parquet, rows.parquet)")
