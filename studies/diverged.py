"""Runs whose training diverged (loss NaN/inf): shown in every table, never averaged in.

The learner stops such a run and says so in its summary (``"status": "diverged"``,
``"diverged_round"``); a summary without the key is an ordinary run (``"ok"``). ``compare`` and
the studies read the status here, leave diverged runs out of means, bands and paired
differences, and count and list them instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

DIVERGED = "diverged"
NOT_RESULTS = ("error", DIVERGED)  # statuses whose numbers are not results
STATUS_COLUMNS = ("status", "diverged_round")  # bookkeeping, never a metric to average


def run_status(summary: Mapping[str, Any]) -> str:
    """A training summary's status: ``"diverged"``, or ``"ok"`` (also when the key is absent)."""
    return DIVERGED if summary.get("status") == DIVERGED else "ok"


def diverged_round(summary: Mapping[str, Any]) -> float:
    """The round at which a run diverged (nan for a run that did not)."""
    value = summary.get("diverged_round")
    return float(value) if run_status(summary) == DIVERGED and isinstance(value, (int, float)) \
        else float("nan")


def weakest(accuracies: Iterable[Any]) -> float:
    """The lowest accuracy of a run (nan when none is a finite number, e.g. after divergence)."""
    finite = [float(a) for a in accuracies
              if isinstance(a, (int, float)) and math.isfinite(float(a))]
    return min(finite) if finite else float("nan")


def diverged_mask(frame: pd.DataFrame) -> pd.Series:
    """True for rows of diverged runs (none when the frame has no status column)."""
    if "status" not in frame:
        return pd.Series(False, index=frame.index)
    return frame["status"] == DIVERGED


def usable(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows whose numbers are results: neither failed nor diverged."""
    if "status" not in frame:
        return frame
    return frame[~frame["status"].isin(NOT_RESULTS)]


def describe(frame: pd.DataFrame, keys: Iterable[str]) -> list[str]:
    """One line per diverged run: its keys (method, factors), seed and round."""
    lines = []
    keys = [k for k in keys if k in frame]
    for record in frame[diverged_mask(frame)].to_dict("records"):
        where = ", ".join(f"{k}={record[k]}" for k in keys)
        when = record.get("diverged_round")
        at = f" at round {int(when)}" if isinstance(when, (int, float)) and math.isfinite(when) \
            else ""
        lines.append(f"{where}{', ' if where else ''}seed {record.get('seed')}: diverged{at}")
    return lines
