"""One progress mechanism: tqdm's bar on a terminal, a plain line every few seconds elsewhere.

A log file or CI console gets readable lines (``rounds: 12/30 [00:05<00:07] acc=0.81``) rather
than carriage-return bars, and a run shorter than ``every_s`` prints nothing at all.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

EVERY_S = 5.0  # seconds between plain progress lines when stderr is not a terminal


class _Lines:
    """A file for tqdm that turns each carriage-return refresh into one plain line on stderr."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(total: int, desc: str, unit: str, enabled: bool = True, every_s: float = EVERY_S,
             stream: TextIO | None = None) -> Any:
    """A tqdm bar (``disable=not enabled``); plain lines at most every ``every_s`` s off a terminal.

    Use it as tqdm: ``bar.update(1)``, ``bar.set_postfix(..., refresh=False)`` (a forced refresh
    would print a line), ``bar.close()``.
    """
    from tqdm import tqdm

    stream = stream if stream is not None else sys.stderr
    if stream.isatty():
        return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=not enabled, file=stream)
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=_Lines(stream),
                mininterval=every_s, maxinterval=every_s, miniters=1, delay=every_s, ascii=True,
                dynamic_ncols=False, ncols=100, leave=False,
                bar_format="{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}")
