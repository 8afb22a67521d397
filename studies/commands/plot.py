"""`dmmlkd plot DIR`: redraw a study's figures from its results alone."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `plot`."""
    p = sub.add_parser("plot", help="redraw a study's figures from DIR/results.parquet")
    p.add_argument("dir", help="study output folder")
    return p


def run(args: argparse.Namespace) -> int:
    """Redraw and list the figures."""
    from pathlib import Path

    from studies.plots import draw
    from studies.runner import load_study

    spec, results = load_study(Path(args.dir))
    for path in draw(spec, results, Path(args.dir)):
        print(path)
    return 0
