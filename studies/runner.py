"""Run a study: every cell x seed in worker processes, durably journalled, resumable.

Each finished cell is appended to ``DIR/cells.jsonl`` (flushed and fsynced) by the parent
process, so a stopped study loses no finished cell and a rerun skips them; ``results.parquet``
is rebuilt from the journal atomically. The spec is stored as ``DIR/spec.toml``; a different
spec in the same folder is refused unless forced.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
import tomli_w

from studies.cells import run_cell
from studies.spec import StudyError, StudySpec, parse_spec
from userio import progress

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

STOP_AFTER_ENV = "DMMLKD_STUDY_STOP_AFTER"  # test hook: simulate Ctrl-C after N new cells


def read_journal(out_dir: Path) -> list[dict[str, Any]]:
    """Finished cells from the journal (a torn last line from a crash is ignored)."""
    path = out_dir / "cells.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _append(fh: Any, row: dict[str, Any]) -> None:
    fh.write(json.dumps(row, default=float) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def write_results(spec: StudySpec, out_dir: Path) -> pd.DataFrame:
    """Rebuild results.parquet from the journal: one row per cell of the current spec."""
    wanted = {c.id for c in spec.cells()}
    rows = {r["cell_id"]: r for r in read_journal(out_dir) if r.get("cell_id") in wanted}
    frame = pd.DataFrame(list(rows.values()))
    tmp = out_dir / ".results.parquet.tmp"
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, out_dir / "results.parquet")
    return frame


def _check_spec(spec: StudySpec, out_dir: Path, force: bool) -> None:
    stored = out_dir / "spec.toml"
    if stored.exists():
        old = tomllib.loads(stored.read_text(encoding="utf-8"))
        if old != spec.raw and not force:
            raise StudyError(f"{out_dir} holds results of a different spec; use another --out "
                             "or --force to run the new spec there")
    tmp = out_dir / ".spec.toml.tmp"
    tmp.write_text(tomli_w.dumps(spec.raw), encoding="utf-8")
    os.replace(tmp, stored)


def run_study(spec: StudySpec, out_dir: Path, jobs: int | None = None, force: bool = False,
              progress: bool = True) -> tuple[int, int, int]:
    """Run the missing cells; returns (cells run now, cells skipped, failures overall)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_spec(spec, out_dir, force)
    done = {r["cell_id"] for r in read_journal(out_dir)}
    todo = [c for c in spec.cells() if c.id not in done]
    skipped = len(spec.cells()) - len(todo)
    stop_after = int(os.environ.get(STOP_AFTER_ENV, "0") or 0)
    jobs = jobs or spec.jobs
    cells_dir = str(out_dir / "cells") if spec.kind == "train" else None
    bar = _bar(len(todo), progress)
    ran = 0
    try:
        with open(out_dir / "cells.jsonl", "a", encoding="utf-8") as journal:
            if jobs <= 1:
                for cell in todo:
                    _record(journal, cell, run_cell(spec.kind, cell.params, cell.seed, cell.id,
                                                    cells_dir))
                    ran += 1
                    bar(1)
                    if stop_after and ran >= stop_after:
                        raise KeyboardInterrupt
            else:
                with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
                    pending = {pool.submit(run_cell, spec.kind, c.params, c.seed, c.id, cells_dir): c
                               for c in todo}
                    try:
                        while pending:
                            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                            for fut in finished:
                                _record(journal, pending.pop(fut), fut.result())
                                ran += 1
                                bar(1)
                                if stop_after and ran >= stop_after:
                                    raise KeyboardInterrupt
                    except BaseException:
                        for fut in pending:
                            fut.cancel()
                        raise
    finally:
        bar(None)
        write_results(spec, out_dir)
    frame = pd.read_parquet(out_dir / "results.parquet")
    failures = int((frame.get("status", pd.Series(dtype=str)) == "error").sum())
    return ran, skipped, failures


def _record(journal: Any, cell: Any, output: dict[str, Any]) -> None:
    _append(journal, {"cell_id": cell.id, "seed": cell.seed, **cell.params, **output})


def _bar(total: int, enabled: bool) -> Any:
    bar = progress(total, "cells", "cell", enabled and total > 0)

    def update(n: int | None) -> None:
        if n is None:
            bar.close()
        else:
            bar.update(n)

    return update


def load_study(out_dir: Path) -> tuple[StudySpec, pd.DataFrame]:
    """The spec and results stored in a study folder."""
    out_dir = Path(out_dir)
    if not (out_dir / "spec.toml").exists() or not (out_dir / "results.parquet").exists():
        raise StudyError(f"{out_dir}: not a study folder (no spec.toml/results.parquet)")
    spec = parse_spec(tomllib.loads((out_dir / "spec.toml").read_text()), str(out_dir))
    return spec, pd.read_parquet(out_dir / "results.parquet")
