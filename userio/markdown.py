"""Markdown tables: how reports, benchmarks and the command line print a table."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # no pandas import at run time: userio stays cheap to import
    import pandas as pd


def to_markdown(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A Markdown table without extra dependencies."""
    cols = list(frame.columns)

    def cell(v: object) -> str:
        if isinstance(v, float):
            if math.isnan(v):
                return ""
            return format(v, floatfmt)
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in frame.iterrows():
        lines.append("| " + " | ".join(cell(r[c]) for c in cols) + " |")
    return "\n".join(lines)
