"""Run a study: every cell x seed in worker processes (or on a Dask cluster), journalled, resumable.

Each finished cell is appended to ``DIR/cells.jsonl`` (flushed and fsynced) by the parent
process, so a stopped study loses no finished cell and a rerun skips them; ``results.parquet``
is rebuilt from the journal atomically. The spec is stored as ``DIR/spec.toml``; a different
spec in the same folder is refused unless forced (execution settings such as ``jobs`` and
``cluster`` do not make a spec different). One study at a time holds ``DIR/.lock``.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
import tomli_w

from dmmlkd.studies.cells import FILES_KEY, run_cell, write_files
from dmmlkd.studies.spec import Cell, StudyError, StudySpec, check_cells, parse_spec
from dmmlkd.userio import atomic_write, atomic_write_text, loads_toml, read_toml
from dmmlkd.userio import progress as progress_bar
from dmmlkd.userio.workers import exit_with_parent

STOP_AFTER_ENV = "DMMLKD_STUDY_STOP_AFTER"  # test hook: simulate Ctrl-C after N new cells
PROGRESS_EVERY_S = 5.0  # a plain progress line this often when stderr is not a terminal


class StudyTerminated(KeyboardInterrupt):
    """SIGTERM arrived: the study stopped cleanly (workers ended, journal consistent)."""

    exit_code = 143


def read_journal(out_dir: Path) -> list[dict[str, Any]]:
    """Finished cells from the journal (a torn last line from a crash is ignored).

    Any other line that is not a cell record (binary, not JSON, not an object, no ``cell_id``)
    is a StudyError naming the line: a damaged journal is said, never half-read.
    """
    path = out_dir / "cells.jsonl"
    if not path.exists():
        return []
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StudyError(f"{path}: cannot read ({exc.strerror or exc})") from None
    # The last piece is b"" after a final newline, or else a record cut by a crash: ignored.
    lines = data.split(b"\n")[:-1]
    rows = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("cell_id"), str):
            what = "not JSON text" if row is None else \
                "not a JSON object" if not isinstance(row, dict) else "has no cell_id"
            raise StudyError(f"{path}: line {number} is not a cell record ({what}); remove that "
                             "line (its cell runs again) or choose another --out")
        rows.append(row)
    return rows


def repair_journal(path: Path) -> int:
    """Cut a torn last line (a crash mid-write) so the next record starts on its own line.

    Returns the number of bytes removed.
    """
    if not path.exists():
        return 0
    with open(path, "rb+") as fh:
        data = fh.read()
        if not data or data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
        return len(data) - keep


def _append(fh: TextIO, row: dict[str, Any]) -> None:
    # Hold SIGTERM back while one record is written, so a stop never tears a line.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        fh.write(json.dumps(row, default=float) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def write_results(spec: StudySpec, out_dir: Path) -> pd.DataFrame:
    """Rebuild results.parquet from the journal: one row per cell of the current spec."""
    wanted = {c.id for c in spec.cells()}
    rows = {r["cell_id"]: r for r in read_journal(out_dir) if r.get("cell_id") in wanted}
    frame = pd.DataFrame(list(rows.values()))
    atomic_write(out_dir / "results.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    return frame


def is_study_folder(out_dir: Path) -> bool:
    """``out_dir`` holds a study dmmlkd ran: its lock file and a ``spec.toml`` holding exactly
    the bytes the runner writes (a user's own spec, with comments or its own layout, is not)."""
    stored = out_dir / "spec.toml"
    if not (out_dir / ".lock").is_file() or stored.is_symlink() or not stored.is_file():
        return False
    try:
        text = stored.read_text(encoding="utf-8")
        return tomli_w.dumps(loads_toml(text, str(stored), ValueError)) == text
    except (OSError, ValueError):  # unreadable, not UTF-8, not TOML
        return False


def _check_spec(spec: StudySpec, out_dir: Path, force: bool) -> None:
    stored = out_dir / "spec.toml"
    if (stored.exists() or stored.is_symlink()) and not is_study_folder(out_dir):
        raise StudyError(f"{out_dir}: its spec.toml was not written by dmmlkd study; choose a new "
                         "or empty --out (nothing was changed)")
    if stored.exists():
        try:
            same = parse_spec(read_toml(stored, StudyError), str(stored)).identity() \
                == spec.identity()
        except StudyError:  # unreadable, or written by a version with other rules
            same = False
        if not same and not force:
            raise StudyError(f"{out_dir} holds results of a different spec; use another --out "
                             "or --force to run the new spec there")
    atomic_write_text(stored, tomli_w.dumps(spec.raw))


@contextmanager
def study_lock(out_dir: Path) -> Iterator[None]:
    """Hold DIR/.lock for the whole run; a second study on the folder is refused at once."""
    fh = open(out_dir / ".lock", "a")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StudyError(f"{out_dir}: another study is running in this folder; wait for it "
                             "to finish or use another --out") from None
        yield
    finally:
        fh.close()  # closing releases the lock


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into StudyTerminated in the main thread while a study runs."""
    def handler(signum: int, frame: Any) -> None:
        raise StudyTerminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Progress:
    """Cells done: the shared progress bar (userio.progress: a bar on a terminal, a plain line
    every few seconds elsewhere) with the failure count beside it."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.failed = 0
        self.bar = progress_bar(total, "cells", "cell", enabled=enabled and total > 0,
                                every_s=PROGRESS_EVERY_S)

    def update(self, failed: bool = False) -> None:
        """One more cell finished."""
        if failed:
            self.failed += 1
            self.bar.set_postfix(failed=self.failed, refresh=False)
        self.bar.update(1)

    def write(self, line: str) -> None:
        """A message that does not break the bar."""
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        """End the bar."""
        self.bar.close()


@contextmanager
def _executor(jobs: int, cluster: str | None) -> Iterator[Executor | None]:
    """None (run in this process), a spawn process pool, or a Dask cluster's executor.

    On any exit (end, error, Ctrl-C, SIGTERM) every worker it started is ended.
    """
    if cluster:
        with _dask_executor(cluster, jobs) as executor:
            yield executor
        return
    if jobs <= 1:
        yield None
        return
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"),
                               initializer=exit_with_parent, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        # ProcessPoolExecutor has no public way to stop running workers before Python 3.14.
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


@contextmanager
def _dask_executor(cluster: str, jobs: int) -> Iterator[Executor]:
    """A Dask client's executor: a LocalCluster of `jobs` processes, or a running scheduler."""
    import logging
    import re

    if cluster != "local" and not re.fullmatch(r"([a-z][a-z0-9+]*://)?[^\s/:]+:\d{1,5}", cluster):
        raise StudyError(f"--cluster must be 'local' or a scheduler address such as "
                         f"tcp://host:8786 (got {cluster!r})")
    from dask.distributed import Client, LocalCluster

    local = None
    try:
        if cluster == "local":
            local = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                 dashboard_address=None, silence_logs=logging.ERROR)
            client = Client(local)
        else:
            client = Client(cluster, timeout="10s")
    except (OSError, ValueError, TypeError) as exc:  # unreachable, refused, malformed
        if local is not None:
            local.close()
        raise StudyError(f"cannot reach the Dask scheduler at {cluster!r} ({exc})") from None
    try:
        yield client.get_executor(pure=False)
    finally:
        client.close()
        if local is not None:
            local.close()


def run_study(spec: StudySpec, out_dir: Path, jobs: int | None = None, force: bool = False,
              progress: bool = True, cluster: str | None = None,
              on_failure: Callable[[str, str], None] | None = None) -> tuple[int, int, int]:
    """Run the missing cells; returns (cells run now, cells skipped, failures overall).

    progress: show progress (a bar on a terminal, plain lines every few seconds elsewhere).
    on_failure(cell_id, line) hears of each failed cell as it ends (default: printed).
    """
    out_dir = Path(out_dir)
    # Every cell's configuration first: a bad value is refused before anything runs or is written.
    check_cells(spec)
    # Workers next: an unreachable scheduler is refused before anything is written.
    with _executor(jobs or spec.jobs, cluster or spec.cluster) as executor:
        out_dir.mkdir(parents=True, exist_ok=True)
        with study_lock(out_dir), _sigterm_raises():
            _check_spec(spec, out_dir, force)
            repair_journal(out_dir / "cells.jsonl")
            done = {r["cell_id"] for r in read_journal(out_dir)}
            cells = spec.cells()
            todo = [c for c in cells if c.id not in done]
            ran = _run_cells(spec, todo, out_dir, executor, progress, on_failure)
    frame = read_table(out_dir / "results.parquet")
    failures = int((frame.get("status", pd.Series(dtype=str)) == "error").sum())
    return ran, len(cells) - len(todo), failures


def _run_cells(spec: StudySpec, todo: list[Cell], out_dir: Path, executor: Executor | None,
               progress: bool, on_failure: Callable[[str, str], None] | None) -> int:
    stop_after = int(os.environ.get(STOP_AFTER_ENV, "0") or 0)
    bar = Progress(len(todo), enabled=progress)
    model = spec.model
    ran = 0
    try:
        with open(out_dir / "cells.jsonl", "a", encoding="utf-8") as journal:

            def finish(cell: Cell, output: dict[str, Any]) -> None:
                nonlocal ran
                _record(journal, cell, output, out_dir)
                ran += 1
                failed = output.get("status") == "error"
                bar.update(failed)
                if failed:
                    line = failure_line(cell.id, cell.params, cell.seed, output.get("error", ""))
                    if on_failure is None:
                        bar.write(line)
                    else:
                        on_failure(cell.id, line)
                if stop_after and ran >= stop_after:
                    raise KeyboardInterrupt

            if executor is None:
                for cell in todo:
                    finish(cell, run_cell(model, cell.params, cell.seed))
            else:
                pending: dict[Future[dict[str, Any]], Cell] = {
                    executor.submit(run_cell, model, c.params, c.seed): c for c in todo}
                try:
                    while pending:
                        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in finished:
                            finish(pending.pop(fut), fut.result())
                finally:
                    for fut in pending:
                        fut.cancel()
    finally:
        bar.close()
        write_results(spec, out_dir)
    return ran


def failure_line(cell_id: str, params: dict[str, Any], seed: int, error: str) -> str:
    """One line saying which cell failed and why."""
    where = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in params.items())
    return f"cell {cell_id} ({where}, seed={seed}) failed: {error}"


def _record(journal: TextIO, cell: Cell, output: dict[str, Any], out_dir: Path) -> None:
    files = output.pop(FILES_KEY, None)
    if files:  # the worker's outputs come back with the result: no shared filesystem needed
        write_files(files, out_dir / "cells" / cell.id)
    _append(journal, {"cell_id": cell.id, "seed": cell.seed, **cell.design, **cell.params,
                      **output})


def load_study(out_dir: Path) -> tuple[StudySpec, pd.DataFrame]:
    """The spec and results stored in a study folder."""
    out_dir = Path(out_dir)
    if not (out_dir / "spec.toml").exists() or not (out_dir / "results.parquet").exists():
        raise StudyError(f"{out_dir}: not a study folder (no spec.toml/results.parquet)")
    spec = parse_spec(read_toml(out_dir / "spec.toml", StudyError), str(out_dir))
    return spec, read_table(out_dir / "results.parquet")


def read_table(path: Path) -> pd.DataFrame:
    """A parquet table of ours; StudyError naming the file when it is damaged or unreadable."""
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types; each is one line here
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StudyError(f"{path}: cannot read this table ({reason}); rerun the command that "
                         "wrote it") from None
