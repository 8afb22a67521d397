"""Issue 19: the second pass on files, sizes, silence and tracebacks, through the real command line.

Independent truths: the bytes of the user's files (written here, compared after), ``stat``
modes, the process table (``/proc``: are the workers still there?), the journal's cell ids,
numbers computed here by hand from the journal, and the field the test itself made absurd.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_run import assert_one_line_error, dmmlkd

from dmmlkd.userio import MANIFEST

ROOT = Path(__file__).resolve().parents[1]
TRAIN_TINY = ["train", "--dataset", "synthetic", "--devices", "2", "--rounds", "1", "--quiet"]




def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (symlinks as their target text)."""
    return {p.relative_to(folder).as_posix(): (os.readlink(p).encode() if p.is_symlink()
                                               else p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink()}


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Path]:
    """A private 128 KiB tmpfs (root only): a small disk to fill, or to remount read-only."""
    where = tmp_path / "mnt"
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs",
                                            str(where)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)


def remount_read_only(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True, capture_output=True)


# ------------------------------------------------------------------ files lost or damaged

@pytest.mark.parametrize("entry", ["../victim.txt", "ABS", "sub/../../victim.txt", "link/victim.txt"])
def test_manifest_entries_outside_the_folder_make_it_not_ours(entry: str, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file\n")
    out = tmp_path / "out"
    assert dmmlkd(*TRAIN_TINY, "--out", str(out)).returncode == 0
    if entry == "ABS":
        entry = str(victim)
    if entry.startswith("link/"):
        (out / "link").symlink_to(tmp_path)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["files"][entry] = hashlib.sha256(victim.read_bytes()).hexdigest()
    (out / MANIFEST).write_text(json.dumps(manifest))
    before = tree(out)
    proc = dmmlkd(*TRAIN_TINY, "--out", str(out))
    assert_one_line_error(proc, str(out), "did not write")
    assert victim.read_text() == "the user's file\n"
    assert tree(out) == before


def test_study_out_dot_among_the_users_spec_and_report_is_refused(tmp_path: Path) -> None:
    (tmp_path / "spec.toml").write_text(
        "# my sweep: keep this comment\n[study]\nkind = \"solve\"\n\n[grid]\ndevices = [2, 3]\n")
    (tmp_path / "report.md").write_text("# My report\n")
    before = tree(tmp_path)
    proc = dmmlkd("study", "spec.toml", "--out", ".", "--quiet", cwd=tmp_path)
    assert_one_line_error(proc, "no study dmmlkd ran")
    assert tree(tmp_path) == before


def test_a_study_folder_of_ours_still_resumes(tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text("[study]\nkind = \"solve\"\n\n[grid]\ndevices = [2, 3]\n")
    out = tmp_path / "s"
    assert dmmlkd("study", str(spec), "--out", str(out), "--quiet").returncode == 0
    (out / "notes.md").write_text("mine\n")  # a note beside a study of ours is left alone
    proc = dmmlkd("study", str(spec), "--out", str(out), "--quiet")
    assert proc.returncode == 0 and "0 cells run, 2 already done" in proc.stdout
    assert (out / "notes.md").read_text() == "mine\n"


def test_generate_never_replaces_a_file_dmmlkd_did_not_write(tmp_path: Path) -> None:
    thesis = tmp_path / "thesis.toml"
    thesis.write_text("title = 'my thesis'\n")
    link = tmp_path / "link.toml"
    link.symlink_to(thesis)
    before = tree(tmp_path)
    for target in (thesis, link):
        assert_one_line_error(dmmlkd("generate", "--out", str(target)), str(target))
    assert_one_line_error(dmmlkd("generate", "--out", str(link), "--force"), "symbolic link")
    assert tree(tmp_path) == before and link.is_symlink()
    # Its own output is replaced on a rerun; once edited, it is the user's.
    own = tmp_path / "p.json"
    assert dmmlkd("generate", "--out", str(own), "--seed", "1").returncode == 0
    assert dmmlkd("generate", "--out", str(own), "--seed", "2").returncode == 0
    own.write_text(own.read_text().replace("\"scope\"", " \"scope\""))
    edited = own.read_bytes()
    assert_one_line_error(dmmlkd("generate", "--out", str(own)), "--force")
    assert own.read_bytes() == edited
    proc = dmmlkd("generate", "--out", str(thesis), "--force")
    assert proc.returncode == 0 and "[problem]" in thesis.read_text()


def test_bench_checks_out_before_the_benchmark(tmp_path: Path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# notes\n")
    args = ["bench", "allocator", "--sizes", "2", "--scopes", "device", "--no-targets"]
    proc = dmmlkd(*args, "--out", str(notes))
    assert_one_line_error(proc, str(notes), "--force")
    assert proc.stdout == "" and notes.read_text() == "# notes\n"  # refused before any run
    out = tmp_path / "bench.md"
    assert dmmlkd(*args, "--out", str(out)).returncode == 0
    assert dmmlkd(*args, "--out", str(out)).returncode == 0  # its own file: replaced
    assert "Machine:" in out.read_text()


def test_generate_and_bench_files_are_0644_under_umask_022(tmp_path: Path) -> None:
    assert dmmlkd("generate", "--out", str(tmp_path / "p.toml")).returncode == 0
    assert dmmlkd("bench", "allocator", "--sizes", "2", "--scopes", "device", "--no-targets",
                  "--out", str(tmp_path / "b.md")).returncode == 0
    for name in ("p.toml", "b.md"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


# ------------------------------------------------------------------------------ unbounded

STUDY_TOO_BIG = {
    "seeds": ("[study]\nkind = \"solve\"\nseeds = 1000000000\n[grid]\ndevices = [2]\n",
              "study.seeds"),
    "sobol": ("[study]\nkind = \"sobol\"\n[sobol]\nsamples = 1073741824\n[sobol.ranges]\n"
              "delta = [0.0, 1.0]\n", "sobol.samples"),
    "morris": ("[study]\nkind = \"morris\"\n[morris]\ntrajectories = 100000000\n"
               "[morris.ranges]\ndelta = [0.0, 1.0]\n", "morris.trajectories"),
    "jobs": ("[study]\nkind = \"solve\"\njobs = 100000\n[grid]\ndevices = [2]\n", "study.jobs"),
    "cells": ("[study]\nkind = \"solve\"\nseeds = 10000\n[grid]\ndevices = [2, 3]\n"
              f"mu = {list(range(1, 101))}\n", "2,000,000 cells"),
}


@pytest.mark.parametrize("case", sorted(STUDY_TOO_BIG))
def test_study_sizes_are_refused_before_anything_is_built(case: str, tmp_path: Path) -> None:
    body, fragment = STUDY_TOO_BIG[case]
    (tmp_path / "s.toml").write_text(body)
    # 2 GiB of address space: a study that built its cells or design first would die of
    # MemoryError (a traceback), not print one line.
    proc = dmmlkd("study", "s.toml", "--out", "o", cwd=tmp_path, memory_limit=2 * 2**30)
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, fragment", [
    (["generate", "--cpu-levels", "100000000"], "cpu_levels"),
    (["generate", "--devices", "100000", "--cpu-levels", "1000"], "lower devices or cpu_levels"),
    (["generate", "--speed-spread", "400"], "speed_spread"),
    (["generate", "--energy-spread", "400"], "energy_spread"),
    (["generate", "--tau-max", "1000000000000"], "tau_max"),
    (["bench", "allocator", "--exact-max", "-1"], "--exact-max"),
    (["bench", "allocator", "--network-max", "-1"], "--network-max"),
])
def test_allocator_sizes_are_refused_with_one_line(args: list[str], fragment: str) -> None:
    assert_one_line_error(dmmlkd(*args, memory_limit=2 * 2**30), fragment)


def test_solve_refuses_a_time_limit_that_is_not_a_number(tmp_path: Path) -> None:
    problem = tmp_path / "p.toml"
    assert dmmlkd("generate", "--out", str(problem)).returncode == 0
    for value in ("nan", "inf", "-1"):
        assert_one_line_error(dmmlkd("solve", str(problem), "--time-limit", value), "time_limit")


def test_a_generated_tau_range_is_one_solve_accepts(tmp_path: Path) -> None:
    problem = tmp_path / "p.toml"
    assert dmmlkd("generate", "--out", str(problem), "--tau-max", "100000").returncode == 0
    assert dmmlkd("solve", str(problem)).returncode == 0


def _pids_of_children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
@pytest.mark.parametrize("command", ["study", "compare"])
def test_workers_exit_when_their_parent_is_killed(command: str, tmp_path: Path) -> None:
    spec = tmp_path / "t.toml"
    spec.write_text("[study]\nkind = \"train\"\nseeds = 2\njobs = 2\n[base]\n"
                    "dataset = \"synthetic\"\ndevices = 2\nrounds = 40\nn_samples = 200\n"
                    "[grid]\nlocal_iters = [1, 2, 3]\n")
    args = (["study", str(spec), "--out", str(tmp_path / "s"), "--quiet"] if command == "study"
            else ["compare", "--dataset", "synthetic", "--devices", "2", "--rounds", "200",
                  "--methods", "dpsgd,dmml-kd", "--seeds", "3", "--jobs", "2", "--quiet",
                  "--out", str(tmp_path / "c")])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen([sys.executable, "-m", "dmmlkd.cli", *args], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        workers: set[int] = set()
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline:  # two pool workers started
            time.sleep(0.5)
            workers = {c for c in _pids_of_children(parent.pid)
                       if "resource_tracker" not in Path(f"/proc/{c}/cmdline").read_text()}
        assert len(workers) >= 2, "the pool never started"
        time.sleep(3)  # let them take up work
        assert parent.poll() is None, "finished before the kill: make the work longer"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 30
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.5)
        alive = [w for w in workers if _alive(w)]
    finally:
        parent.kill()
    for w in alive:  # pragma: no cover - clean up after a failure
        os.kill(w, signal.SIGKILL)
    assert not alive, f"workers {alive} outlived their parent"
    if command == "study":  # the resume gives every cell exactly once
        proc = dmmlkd("study", str(spec), "--out", str(tmp_path / "s"), "--quiet")
        assert proc.returncode == 0, proc.stderr
        ids = [json.loads(line)["cell_id"] for line in
               (tmp_path / "s" / "cells.jsonl").read_text().splitlines()]
        assert len(ids) == len(set(ids)) == 6
        assert len(pd.read_parquet(tmp_path / "s" / "results.parquet")) == 6


# ------------------------------------------------------------------------------- silent

def test_an_unknown_table_beside_train_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[train]\ndataset = \"synthetic\"\ndevices = 2\nrounds = 1\n\n"
                      "[comapre]\nseeds = 5\n")
    for command in ("train", "compare"):
        proc = dmmlkd(command, "--config", str(config), "--quiet", "--out", str(tmp_path / "o"))
        assert_one_line_error(proc, "[comapre]")
    assert not (tmp_path / "o").exists()


def test_the_same_key_in_base_and_grid_is_refused(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text("[study]\nkind = \"solve\"\n[base]\ndevices = 3\n"
                                     "[grid]\ndevices = [2, 4]\n")
    assert_one_line_error(dmmlkd("study", "s.toml", "--out", "o", cwd=tmp_path),
                          "'devices' is in both [base] and [grid]")


def test_unknown_top_level_keys_of_a_problem_file_are_refused(tmp_path: Path) -> None:
    problem = {"problem": {"modalities": ["a"]},
               "devices": [{"modalities": ["a"], "speed": [1.0], "forward_energy": [1.0],
                            "backward_energy": [1.0], "comm_energy": 1.0, "budget": 100.0}]}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(problem))
    assert dmmlkd("solve", str(path)).returncode == 0
    path.write_text(json.dumps({**problem, "device": []}))
    assert_one_line_error(dmmlkd("solve", str(path)), "unknown top-level key 'device'")


def _views(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    return labels, rng.normal(size=(n, 8)) + 2.0 * labels[:, None]


def test_npz_views_with_huge_values_train_like_their_ordinary_scale(tmp_path: Path) -> None:
    labels, x = _views()
    np.savez(tmp_path / "huge.npz", labels=labels, view_a=x * 1e300)
    np.savez(tmp_path / "plain.npz", labels=labels, view_a=x)
    summaries = []
    for name in ("huge", "plain"):
        proc = dmmlkd("train", "--dataset", str(tmp_path / f"{name}.npz"), "--devices", "2",
                      "--rounds", "3", "--quiet")
        assert proc.returncode == 0 and "Warning" not in proc.stderr, proc.stderr
        summaries.append(json.loads(proc.stdout))
    # Standardising is scale-free: the same run, to float32 rounding; well above chance (1/3).
    assert abs(summaries[0]["consensus_accuracy"] - summaries[1]["consensus_accuracy"]) <= 0.02
    assert summaries[1]["consensus_accuracy"] > 0.8


def test_an_npz_view_without_features_is_one_line(tmp_path: Path) -> None:
    labels, x = _views()
    np.savez(tmp_path / "d.npz", labels=labels, view_a=np.zeros((len(labels), 0)), view_b=x)
    proc = dmmlkd("train", "--dataset", str(tmp_path / "d.npz"), "--devices", "2", "--quiet")
    assert_one_line_error(proc, "view_a", "no features", "(300, 0)")


# ----------------------------------------------------------------- tracebacks -> one line

def test_generate_onto_a_folder_or_an_unwritable_place_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(dmmlkd("generate", "--out", "/"), "is a folder")
    # /proc takes no new files even from root (a permission check would not see that).
    assert_one_line_error(dmmlkd("generate", "--out", "/proc/dmmlkd-p.toml"), "cannot write")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(dmmlkd("generate", "--out", str(blocker / "p.toml")), "not a folder")


def test_a_read_only_mount_is_refused_before_the_work(mount: Path) -> None:
    remount_read_only(mount)
    assert_one_line_error(dmmlkd("generate", "--out", str(mount / "p.toml")), "cannot write")
    proc = dmmlkd("bench", "allocator", "--sizes", "2", "--no-targets", "--out",
                  str(mount / "b.md"))
    assert_one_line_error(proc, "cannot write")
    assert proc.stdout == ""  # before the benchmark, not after it
    assert_one_line_error(dmmlkd(*TRAIN_TINY, "--out", str(mount / "run")), "cannot write")


def test_a_full_disk_is_one_line_and_leaves_nothing(mount: Path) -> None:
    # 2,000 devices are ~750 KB of TOML; the disk has 128 KiB: said before writing.
    proc = dmmlkd("generate", "--devices", "2000", "--out", str(mount / "p.toml"))
    assert_one_line_error(proc, str(mount / "p.toml"), "needs about")
    assert list(mount.iterdir()) == []


def test_a_write_that_fails_midway_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes the write fail partway (EFBIG), as a disk filling up meanwhile would.
    proc = dmmlkd("generate", "--devices", "2000", "--out", str(tmp_path / "p.toml"),
                  file_limit=100_000)
    assert_one_line_error(proc, str(tmp_path / "p.toml"), "cannot write")
    assert list(tmp_path.iterdir()) == []
    # A run's folder the same: the whole run, then one line and no half-written folder.
    proc = dmmlkd(*TRAIN_TINY, "--out", str(tmp_path / "run"), file_limit=2_000)
    assert_one_line_error(proc, str(tmp_path / "run"), "cannot write the results")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def solve_study(tmp_path: Path) -> Path:
    (tmp_path / "s.toml").write_text("[study]\nkind = \"solve\"\nseeds = 2\n[grid]\n"
                                     "devices = [2, 3]\n")
    assert dmmlkd("study", "s.toml", "--out", "o", "--quiet", cwd=tmp_path).returncode == 0
    return tmp_path


@pytest.mark.parametrize("bad, what", [(b"\x00\xff\xfe binary", "not JSON text"),
                                       (b"[1, 2]", "not a JSON object"),
                                       (b'{"seed": 0}', "has no cell_id")])
def test_a_damaged_journal_line_is_one_line(solve_study: Path, bad: bytes, what: str) -> None:
    journal = solve_study / "o" / "cells.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([lines[0], bad + b"\n", *lines[1:]]))
    proc = dmmlkd("study", "s.toml", "--out", "o", "--quiet", cwd=solve_study)
    assert_one_line_error(proc, "cells.jsonl: line 2", what)


def test_a_torn_last_journal_line_is_still_repaired(solve_study: Path) -> None:
    journal = solve_study / "o" / "cells.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:-1]) + lines[-1][:20])  # a crash mid-write
    proc = dmmlkd("study", "s.toml", "--out", "o", "--quiet", cwd=solve_study)
    assert proc.returncode == 0 and "1 cells run, 3 already done" in proc.stdout


def test_a_malformed_cluster_address_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text("[study]\nkind = \"solve\"\n[grid]\ndevices = [2]\n")
    proc = dmmlkd("study", "s.toml", "--out", "o", "--cluster", "not a url", cwd=tmp_path)
    assert_one_line_error(proc, "--cluster", "not a url")
    assert not (tmp_path / "o").exists()


def test_plot_on_a_corrupt_table_is_one_line(solve_study: Path, tmp_path: Path) -> None:
    (solve_study / "o" / "results.parquet").write_bytes(b"PAR1 not really")
    assert_one_line_error(dmmlkd("plot", str(solve_study / "o")), "results.parquet")
    compare = tmp_path / "c"
    assert dmmlkd("compare", "--dataset", "synthetic", "--devices", "2", "--rounds", "1",
                  "--methods", "dpsgd", "--seeds", "1", "--jobs", "1", "--quiet",
                  "--out", str(compare)).returncode == 0
    (compare / "history.parquet").write_bytes(b"\x00" * 64)
    assert_one_line_error(dmmlkd("plot", str(compare)), "history.parquet")


@pytest.mark.parametrize("args, flag", [(["train", "--devices", "x"], "--devices"),
                                        (["compare", "--seeds", "1.5"], "--seeds"),
                                        (["generate", "--budget-scale", "lots"], "--budget-scale"),
                                        (["solve", "f.toml", "--method", "best"], "--method")])
def test_argparse_mistakes_are_one_line_naming_the_flag(args: list[str], flag: str) -> None:
    assert_one_line_error(dmmlkd(*args), flag)


# -------------------------------------------------------------- what a user reads and sees

def test_compare_figures_are_paper_ready(tmp_path: Path) -> None:
    out = tmp_path / "c"
    proc = dmmlkd("compare", "--dataset", "synthetic", "--devices", "2", "--rounds", "3",
                  "--methods", "dpsgd,dmml-kd,ogm-ge", "--seeds", "2", "--jobs", "1", "--quiet",
                  "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    for fmt in ("png", "pdf", "svg"):
        assert (out / "figures" / f"curves.{fmt}").stat().st_size > 0
    svg = (out / "figures" / "curves.svg").read_text()  # text stays text (svg.fonttype none)
    for label in ("consensus accuracy", "energy left in all batteries (J)", "band: ± 1 sd",
                  "mean over 2 seeds", "dpsgd", "ogm-ge"):
        assert label in svg, label
    for raw in ("acc zer", "energy left j", "consensus_accuracy"):
        assert raw not in svg
    # whole-number round ticks only (0, 1, 2), never 0.5
    ticks = re.findall(r'<g id="xtick_\d+">.*?<text[^>]*>([^<]*)</text>', svg, re.S)
    assert ticks and all(t.strip().lstrip("−-").isdigit() for t in ticks), ticks


def test_study_force_removes_the_old_specs_figures_only(tmp_path: Path) -> None:
    base = "[base]\ndataset = \"synthetic\"\ndevices = 2\nrounds = 1\nn_samples = 200\n"
    (tmp_path / "a.toml").write_text("[study]\nkind = \"train\"\n" + base
                                     + "[grid]\nmethod = [\"dpsgd\", \"dmml-kd\"]\n")
    (tmp_path / "b.toml").write_text("[study]\nkind = \"train\"\n" + base
                                     + "[grid]\nlocal_iters = [1, 2]\n")
    proc = dmmlkd("study", "a.toml", "--out", "o", "--quiet", cwd=tmp_path)
    figures = tmp_path / "o" / "figures"
    # A train study sweeping only `method` draws a figure (one marker per method).
    assert proc.returncode == 0 and "1 figures" in proc.stdout
    assert sorted(p.name for p in figures.glob("train_by_method.*")) == \
        ["train_by_method.pdf", "train_by_method.png", "train_by_method.svg"]
    (figures / "mine.png").write_bytes(b"the user's figure")
    assert dmmlkd("study", "b.toml", "--out", "o", "--quiet", "--force",
                  cwd=tmp_path).returncode == 0
    assert sorted(p.name for p in figures.iterdir() if not p.name.startswith(".")) == \
        ["mine.png", "train_vs_local_iters.pdf", "train_vs_local_iters.png",
         "train_vs_local_iters.svg"]


def test_diverged_cells_are_listed_and_left_out_of_the_means(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(
        "[study]\nkind = \"train\"\nseeds = 3\n[base]\ndataset = \"synthetic\"\ndevices = 2\n"
        "rounds = 1\nn_samples = 200\n[grid]\nmethod = [\"dpsgd\"]\n")
    assert dmmlkd("study", "s.toml", "--out", "o", "--quiet", cwd=tmp_path).returncode == 0
    journal = tmp_path / "o" / "cells.jsonl"
    rows = [json.loads(line) for line in journal.read_text().splitlines()]
    # The learner marks a run whose loss became NaN/inf so (summary "status"/"diverged_round");
    # here the journal says it of seed 1, with an absurd accuracy that must not be averaged in.
    rows[1].update(status="diverged", diverged_round=4, consensus_accuracy=-100.0)
    journal.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = dmmlkd("study", "s.toml", "--out", "o", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0 and "1 diverged" in proc.stdout
    assert "method=dpsgd, seed 1: diverged at round 4" in proc.stderr
    report = (tmp_path / "o" / "report.md").read_text()
    assert "## Diverged cells" in report and "seed 1: diverged at round 4" in report
    mean = (rows[0]["consensus_accuracy"] + rows[2]["consensus_accuracy"]) / 2
    line = next(x for x in report.splitlines() if x.startswith("| dpsgd"))
    assert "1 diverged (seed 1)" in line and f"{mean:.4g} ±" in line


def test_compare_tables_leave_diverged_runs_out() -> None:
    from dmmlkd.studies.compare import final_table, paired_differences

    finals = pd.DataFrame({
        "method": ["dmml-kd", "dpsgd"] * 3, "seed": [0, 0, 1, 1, 2, 2],
        "status": ["ok", "ok", "ok", "diverged", "ok", "ok"],
        "diverged_round": [math.nan, math.nan, math.nan, 15.0, math.nan, math.nan],
        "consensus_accuracy": [0.9, 0.8, 0.7, math.nan, 0.5, 0.2]})
    table = final_table(finals).set_index("method")
    assert table.loc["dpsgd", "status"] == "1 diverged (seed 1)"
    assert table.loc["dpsgd", "seeds"] == 2
    assert table.loc["dpsgd", "consensus_accuracy"].startswith("0.5000 ± 0.3000")  # (0.8+0.2)/2
    assert table.loc["dmml-kd", "status"] == "ok"
    paired = paired_differences(finals).set_index("metric")
    # Seeds 0 and 2 only: (0.8 - 0.9 + 0.2 - 0.5) / 2 = -0.2; diverged_round is no metric.
    assert paired.loc["consensus_accuracy", "seeds"] == 2
    assert paired.loc["consensus_accuracy", "mean_diff"] == pytest.approx(-0.2)
    assert "diverged_round" not in paired.index
    # A summary without the key (before the learner says so) is an ordinary run.
    assert final_table(finals.drop(columns=["status", "diverged_round"])).shape[0] == 2


def test_basicmotions_on_four_devices_says_what_works(tmp_path: Path) -> None:
    proc = dmmlkd("train", "--dataset", "basicmotions", "--devices", "4", "--rounds", "1",
                  "--quiet")
    assert_one_line_error(proc, "at most 3 devices", "min_samples = 8 works for 4 devices")
    config = tmp_path / "bm.toml"
    config.write_text("[train]\ndataset = \"basicmotions\"\ndevices = 4\nrounds = 1\n"
                      "min_samples = 8\n")
    assert dmmlkd("train", "--config", str(config), "--quiet").returncode == 0
    assert dmmlkd("train", "--dataset", "basicmotions", "--devices", "3", "--rounds", "1",
                  "--quiet").returncode == 0
