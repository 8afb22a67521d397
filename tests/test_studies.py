"""Studies end to end through the command line: run, resume, failures, spec changes, locks,
signals, progress, Morris (SALib as the oracle)."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dmmlkd.studies.morris import analyse as morris_analyse
from dmmlkd.studies.morris import morris_design, morris_matrix, problem
from dmmlkd.studies.runner import STOP_AFTER_ENV, read_journal

ROOT = Path(__file__).resolve().parents[1]



def dmmlkd(*args: str, timeout: float = 180, **popen: object) -> subprocess.CompletedProcess:
    """The real command line in a fresh process: (returncode, stdout, stderr)."""
    env = dict(os.environ)  # the caller's dmmlkd (installed, or a checkout via PYTHONPATH)
    return subprocess.run([sys.executable, "-m", "dmmlkd.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT, **popen)

SPEC = """
[study]
name = "tiny"
kind = "solve"
seeds = [0, 1]
jobs = 1

[base]
devices = 6
modalities = 3
scope = "network"

[grid]
budget_scale = [0.5, 1.0, 2.0]
solver = ["heuristic", "uniform"]
"""


# Half the cells valid but failing when run: 60 devices need more samples than the synthetic
# training set holds (10 each), found only when the cell partitions its data.
FAILING_AT_RUN_TIME = """
[study]
name = "failing"
kind = "train"
seeds = [0, 1]
jobs = 1

[base]
dataset = "synthetic"
n_samples = 120
rounds = 1
local_iters = 1

[grid]
devices = [2, 60]
lr = [0.05, 0.1]
"""


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(SPEC)
    return path


def test_tiny_study_end_to_end(cli, spec_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, err = cli("study", str(spec_file), "--out", str(out))
    assert code == 0, err
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 3 * 2 * 2
    assert set(results["solver"]) == {"heuristic", "uniform"}
    assert {"budget_scale", "seed", "objective", "imbalance_network", "energy_total_j",
            "solve_time_s", "gap", "status"} <= set(results.columns)
    assert (out / "spec.toml").exists()
    assert (out / "figures" / "objective_imbalance_vs_budget_scale.png").exists()
    # More budget never lowers the heuristic's objective here (same instance up to the budget).
    heur = results[results["solver"] == "heuristic"].groupby("budget_scale")["objective"].mean()
    assert heur.is_monotonic_increasing


def test_interrupted_study_resumes_without_duplicates(cli, spec_file: Path, tmp_path: Path,
                                                      monkeypatch) -> None:
    out = tmp_path / "out"
    monkeypatch.setenv(STOP_AFTER_ENV, "5")
    code, _, _ = cli("study", str(spec_file), "--out", str(out))
    assert code == 130
    assert len(read_journal(out)) == 5
    assert len(pd.read_parquet(out / "results.parquet")) == 5  # nothing finished is lost
    monkeypatch.delenv(STOP_AFTER_ENV)
    code, stdout, _ = cli("study", str(spec_file), "--out", str(out))
    assert code == 0 and "7 cells run, 5 already done" in stdout
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 12 and results["cell_id"].is_unique
    assert len(read_journal(out)) == 12
    code, stdout, _ = cli("study", str(spec_file), "--out", str(out))
    assert "0 cells run, 12 already done" in stdout


def test_torn_journal_line_is_repaired_before_appending(cli, spec_file: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert cli("study", str(spec_file), "--out", str(out))[0] == 0
    journal = out / "cells.jsonl"
    text = journal.read_text()
    lost = json.loads(text.splitlines()[-1])["cell_id"]
    journal.write_text(text[: -len(text.splitlines()[-1]) // 2 - 1])  # crash mid-write: no newline
    run = dmmlkd("study", str(spec_file), "--out", str(out))
    assert run.returncode == 0 and "1 cells run, 11 already done" in run.stdout, run.stderr
    lines = journal.read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line is one whole record again
    assert len(rows) == 12 and lost in {r["cell_id"] for r in rows}
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 12 and results["cell_id"].is_unique
    # A second resume finds everything: the repaired record was not glued to a torn one.
    assert "0 cells run, 12 already done" in cli("study", str(spec_file), "--out", str(out))[1]


def test_failing_cell_is_recorded_printed_and_exit_1(cli, tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    # Valid options that fail only when solved (too many counts to enumerate): a bad option
    # value is refused before any cell runs (test_bad_cell_value_refused_before_any_cell).
    spec.write_text(FAILING_AT_RUN_TIME)
    out = tmp_path / "out"
    run = dmmlkd("study", str(spec), "--out", str(out))
    assert run.returncode == 1
    results = pd.read_parquet(out / "results.parquet")
    errors = results[results["status"] == "error"]
    assert len(errors) == 4 and errors["error"].str.contains("devices=60").all()
    assert (results[results["status"] != "error"]["devices"] == 2).all()
    failed = [line for line in run.stderr.splitlines() if " failed: " in line]
    assert len(failed) == 4 and all("devices=60" in line for line in failed)
    assert {line.split()[1] for line in failed} == set(errors["cell_id"])
    assert "Traceback" not in run.stderr
    assert "\r" not in run.stderr  # stderr is a pipe: no bar redraws
    # On resume the failed cells are not rerun, but their reasons are said again.
    code, stdout, err = cli("study", str(spec), "--out", str(out))
    assert code == 1 and "0 cells run" in stdout
    assert len([line for line in err.splitlines() if " failed: " in line]) == 4
    assert "Failed cells" in (out / "report.md").read_text()


def test_changed_spec_refused_unless_forced(cli, spec_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cli("study", str(spec_file), "--out", str(out))
    spec_file.write_text(SPEC.replace("devices = 6", "devices = 7"))
    code, _, err = cli("study", str(spec_file), "--out", str(out))
    assert code == 2 and "different spec" in err and len(err.strip().splitlines()) == 1
    code, stdout, _ = cli("study", str(spec_file), "--out", str(out), "--force")
    assert code == 0 and "12 cells run" in stdout
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 12 and (results["devices"] == 7).all()


def test_progress_lines_when_stderr_is_not_a_terminal(cli, spec_file: Path, tmp_path: Path,
                                                      monkeypatch) -> None:
    from dmmlkd.studies import runner

    monkeypatch.setattr(runner, "PROGRESS_EVERY_S", 0.0)  # a line per cell, not per 5 s
    spec_file.write_text(FAILING_AT_RUN_TIME)
    code, _, err = cli("study", str(spec_file), "--out", str(tmp_path / "out"))
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("cells: ")]
    assert lines and "8/8" in lines[-1] and "failed=4" in lines[-1], err
    assert "\r" not in err


def test_changing_only_jobs_is_the_same_spec(cli, spec_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert cli("study", str(spec_file), "--out", str(out))[0] == 0
    spec_file.write_text(SPEC.replace("jobs = 1", "jobs = 2"))
    run = dmmlkd("study", str(spec_file), "--out", str(out))
    assert run.returncode == 0 and "0 cells run, 12 already done" in run.stdout, run.stderr


def test_second_study_on_a_busy_folder_is_refused(cli, spec_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # Another process holding the folder's lock (flock locks are per open file, so this
    # test's own descriptor counts as "another study").
    with open(out / ".lock", "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        run = dmmlkd("study", str(spec_file), "--out", str(out))
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and str(out) in run.stderr
    assert "another study is running" in run.stderr
    assert not (out / "cells.jsonl").exists() and not (out / "spec.toml").exists()
    assert cli("study", str(spec_file), "--out", str(out))[0] == 0  # free again


SLOW_SPEC = """
[study]
name = "slow"
kind = "solve"
seeds = [0, 1, 2, 3]
[base]
devices = 2000
modalities = 4
scope = "network"
solver = "exact"
time_limit = 120.0
"""


def _children(pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def test_sigterm_ends_workers_and_keeps_the_journal(tmp_path: Path) -> None:
    import psutil

    spec = tmp_path / "slow.toml"
    spec.write_text(SLOW_SPEC)
    out = tmp_path / "out"
    env = dict(os.environ)  # the caller's dmmlkd (installed, or a checkout via PYTHONPATH)
    proc = subprocess.Popen([sys.executable, "-m", "dmmlkd.cli", "study", str(spec), "--out",
                             str(out), "--jobs", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.5)
            workers = [p for p in _children(proc.pid)
                       if "spawn" in " ".join(psutil.Process(p).cmdline())]
        assert len(workers) >= 2, "the pool's workers never started"
        time.sleep(2)  # the workers are inside their (slow) cells now
        busy = dmmlkd("study", str(spec), "--out", str(out))  # a second study: refused
        assert busy.returncode == 2 and "another study is running" in busy.stderr
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (143, 130), err
    assert "Traceback" not in err and "terminated" in err
    time.sleep(0.5)
    assert not [p for p in workers if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE], "orphaned workers"
    text = (out / "cells.jsonl").read_text() if (out / "cells.jsonl").exists() else ""
    assert all(json.loads(line) for line in text.splitlines()) and (not text or text.endswith("\n"))
    assert (out / "results.parquet").exists()


@pytest.mark.parametrize("text,message", [
    ('[study]\nkind = "solve"\nworkers = 4\n', "unknown key study.workers"),
    ('[study]\nkind = "morris"\n[morris]\nlevels = 1\n[morris.ranges]\ndelta = [0.0, 1.0]\n',
     "morris.levels must be an integer >= 2"),
    ('[study]\nkind = "morris"\n[morris]\ntrajectories = 0\n[morris.ranges]\ndelta = [0.0, 1.0]\n',
     "morris.trajectories must be an integer >= 2"),
])
def test_bad_spec_through_the_real_command_line(tmp_path: Path, text: str, message: str) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    run = dmmlkd("study", str(spec), "--out", str(tmp_path / "o"))
    assert run.returncode == 2 and message in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
    assert not (tmp_path / "o").exists()  # refused before any work


@pytest.mark.parametrize("text,message", [
    ("[base]\ndevices = 3\n", "missing [study] table"),
    ('[study]\nkind = "dance"\n', "study.kind must be one of"),
    ('[study]\nkind = "solve"\n[grid]\nbudgte = [1]\n', "unknown grid option 'budgte'"),
    ('[study]\nkind = "morris"\n[morris]\ntrajectory = 5\n[morris.ranges]\ndelta = [0.0, 1.0]\n',
     "unknown key 'trajectory'"),
    ('[study]\nkind = "sobol"\n[sobol]\nsamples = 100\n[sobol.ranges]\ndelta = [0.0, 1.0]\n',
     "sobol.samples must be a power of two"),
    ('[study]\nkind = "sobol"\n[sobol]\nsamples = 64\n[sobol.ranges]\ndelta = [1.0, 0.0]\n',
     "sobol.ranges.delta must be [low, high]"),
    ('[study]\nkind = "sobol"\n[sobol]\nsamples = 64\n', "needs [sobol.ranges]"),
    ('[study]\nkind = "solve"\n[sobol]\nsamples = 64\n', "needs study.kind = \"sobol\""),
])
def test_bad_spec_exit_2(cli, tmp_path: Path, text: str, message: str) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    code, _, err = cli("study", str(spec), "--out", str(tmp_path / "o"))
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # refused before any work


def test_parallel_workers_give_the_same_rows(cli, spec_file: Path, tmp_path: Path) -> None:
    cli("study", str(spec_file), "--out", str(tmp_path / "a"))
    code, _, err = cli("study", str(spec_file), "--out", str(tmp_path / "b"), "--jobs", "2")
    assert code == 0, err
    cols = ["cell_id", "objective", "energy_total_j"]
    a = pd.read_parquet(tmp_path / "a" / "results.parquet")[cols].sort_values("cell_id")
    b = pd.read_parquet(tmp_path / "b" / "results.parquet")[cols].sort_values("cell_id")
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_plot_redraws_from_results(cli, spec_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cli("study", str(spec_file), "--out", str(out))
    for png in (out / "figures").glob("*.png"):
        png.unlink()
    code, stdout, _ = cli("plot", str(out))
    assert code == 0 and (out / "figures" / "objective_imbalance_vs_budget_scale.png").exists()
    for fmt in ("pdf", "svg"):
        assert (out / "figures" / f"objective_imbalance_vs_budget_scale.{fmt}").stat().st_size > 0
    assert (out / "figures" / "objective_imbalance_vs_budget_scale.pdf").read_bytes()[:4] == b"%PDF"
    report = (out / "report.md").read_text()
    assert "figures/objective_imbalance_vs_budget_scale.png" in report and "budget_scale" in report


MORRIS = {"trajectories": 20, "levels": 4, "seed": 1,
          "ranges": {"a": [0.0, 1.0], "b": [0.0, 2.0], "c": [5.0, 6.0]}}


def _morris_results(morris: dict, f, seeds: int = 1, shuffle: bool = True) -> pd.DataFrame:
    """Results rows as the runner journals them: factors, place in the design, seed, output."""
    rows = []
    for point, place in morris_design(morris):
        for seed in range(seeds):
            rows.append({**point, **place, "seed": seed, "status": "ok",
                         "y": f(point) + (seed - (seeds - 1) / 2) * 0.1})
    frame = pd.DataFrame(rows)
    return frame.sample(frac=1.0, random_state=0) if shuffle else frame


def test_morris_ranks_an_analytic_function() -> None:
    # Effects per unit of normalised range: a -> 10 x 1, b -> 1 x 2, c -> 0; linear: sigma 0.
    results = _morris_results(MORRIS, lambda p: 10 * p["a"] + p["b"] + 0 * p["c"], seeds=2)
    indices = morris_analyse(results, MORRIS, ("y",)).set_index("parameter")
    np.testing.assert_allclose(indices.loc[["a", "b", "c"], "mu_star"], [10.0, 2.0, 0.0],
                               atol=1e-9)
    np.testing.assert_allclose(indices["sigma"], 0.0, atol=1e-9)
    np.testing.assert_allclose(indices["mu_star_conf"], 0.0, atol=1e-9)  # every effect equal


def test_morris_agrees_with_salib_on_a_nonlinear_function() -> None:
    from SALib.analyze import morris as salib_morris

    def f(p: dict) -> float:
        return np.sin(3 * p["a"]) * p["b"] ** 2 + p["a"] * p["c"]

    results = _morris_results(MORRIS, f)  # rows shuffled: order comes from (trajectory, step)
    ours = morris_analyse(results, MORRIS, ("y",)).set_index("parameter")
    x = morris_matrix(MORRIS)
    y = np.array([f(dict(zip(["a", "b", "c"], row))) for row in x])
    theirs = salib_morris.analyze(problem(MORRIS), x, y, num_levels=4, seed=1)
    for key in ("mu", "mu_star", "sigma", "mu_star_conf"):
        np.testing.assert_allclose(ours.loc[["a", "b", "c"], key], theirs[key], rtol=1e-12)
    assert (ours["mu_star_conf"] > 0).all()


def test_morris_design_moves_both_ways_one_factor_per_step() -> None:
    x = morris_matrix(MORRIS).reshape(20, 4, 3)
    steps = np.diff((x - [0.0, 0.0, 5.0]) / [1.0, 2.0, 1.0], axis=1)  # unit cube
    moved = np.abs(steps) > 1e-12
    assert (moved.sum(axis=2) == 1).all()  # one factor per step
    delta = 4 / (2 * (4 - 1))
    np.testing.assert_allclose(np.abs(steps[moved]), delta)
    assert (steps[moved] > 0).any() and (steps[moved] < 0).any()  # random directions


def test_morris_study_runs(cli, tmp_path: Path) -> None:
    spec = tmp_path / "m.toml"
    spec.write_text("""
[study]
kind = "morris"
seeds = [0]
[base]
devices = 5
modalities = 2
solver = "heuristic"
[morris]
trajectories = 3
levels = 4
[morris.ranges]
budget_scale = [0.5, 2.0]
delta = [0.0, 0.5]
""")
    out = tmp_path / "out"
    code, _, err = cli("study", str(spec), "--out", str(out))
    assert code == 0, err
    results = pd.read_parquet(out / "results.parquet")
    assert sorted(zip(results["trajectory"], results["step"])) == [(t, s) for t in range(3)
                                                                   for s in range(3)]
    indices = pd.read_parquet(out / "morris.parquet")
    assert set(indices["parameter"]) == {"budget_scale", "delta"}
    assert {"mu", "mu_star", "mu_star_conf", "sigma"} <= set(indices.columns)
    assert (out / "figures" / "morris.png").exists() and (out / "figures" / "morris.pdf").exists()
    assert "mu_star_conf" in (out / "report.md").read_text()


def test_unreachable_dask_scheduler_is_one_line_and_leaves_nothing(spec_file: Path,
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = dmmlkd("study", str(spec_file), "--out", str(out), "--cluster", "tcp://127.0.0.1:9")
    assert run.returncode == 2 and "cannot reach the Dask scheduler" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.slow
def test_dask_local_cluster_gives_the_jobs_1_rows(cli, spec_file: Path, tmp_path: Path) -> None:
    cli("study", str(spec_file), "--out", str(tmp_path / "a"), "--jobs", "1")
    run = dmmlkd("study", str(spec_file), "--out", str(tmp_path / "b"), "--cluster", "local",
                 "--jobs", "2")
    assert run.returncode == 0, run.stderr
    cols = ["cell_id", "seed", "budget_scale", "solver", "objective", "imbalance_network",
            "energy_total_j", "status"]
    a = pd.read_parquet(tmp_path / "a" / "results.parquet")[cols].sort_values("cell_id")
    b = pd.read_parquet(tmp_path / "b" / "results.parquet")[cols].sort_values("cell_id")
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    # Resume is unchanged: the in-process runner finds every Dask-run cell done.
    code, stdout, _ = cli("study", str(spec_file), "--out", str(tmp_path / "b"))
    assert code == 0 and "0 cells run, 12 already done" in stdout


@pytest.mark.slow
def test_dask_train_cells_return_their_files_to_the_parent(cli, tmp_path: Path) -> None:
    spec = tmp_path / "train.toml"
    spec.write_text('[study]\nname = "t"\nkind = "train"\nseeds = [0]\n[base]\n'
                    'dataset = "synthetic"\ndevices = 4\nrounds = 2\n'
                    '[grid]\nmethod = ["dpsgd", "dmml-kd"]\n')
    code, _, err = cli("study", str(spec), "--out", str(tmp_path / "a"))
    assert code == 0, err
    run = dmmlkd("study", str(spec), "--out", str(tmp_path / "b"), "--cluster", "local",
                 "--jobs", "2")
    assert run.returncode == 0, run.stderr
    timing = ["cell_time_s", "wall_time_s", "policy_time_s", "train_time_s"]
    a = pd.read_parquet(tmp_path / "a" / "results.parquet").drop(columns=timing, errors="ignore")
    b = pd.read_parquet(tmp_path / "b" / "results.parquet").drop(columns=timing, errors="ignore")
    pd.testing.assert_frame_equal(a.sort_values("cell_id").reset_index(drop=True),
                                  b.sort_values("cell_id").reset_index(drop=True))
    for cell_id in b["cell_id"]:
        for name in ("summary.json", "config.toml", "rounds.parquet", "history.csv"):
            assert (tmp_path / "b" / "cells" / cell_id / name).stat().st_size > 0
        ours, inline = (json.loads((tmp_path / d / "cells" / cell_id / "summary.json").read_text())
                        for d in "ba")
        assert {k: v for k, v in ours.items() if k not in timing} == \
            {k: v for k, v in inline.items() if k not in timing}


def test_plot_redraws_a_compare_folder_in_three_formats(cli, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    code, _, err = cli("compare", "--dataset", "synthetic", "--devices", "3", "--rounds", "2",
                       "--seeds", "1", "--methods", "dmml-kd,dmml-kd-balance", "--jobs", "1",
                       "--out", str(out), "--quiet")
    assert code == 0, err
    for name in ("curves", "tau_heatmap"):
        for fmt in ("png", "pdf", "svg"):
            (out / "figures" / f"{name}.{fmt}").unlink()
    code, stdout, err = cli("plot", str(out))
    assert code == 0, err
    for name in ("curves", "tau_heatmap"):
        assert str(out / "figures" / f"{name}.png") in stdout
        for fmt in ("png", "pdf", "svg"):
            assert (out / "figures" / f"{name}.{fmt}").stat().st_size > 0


def test_plot_refuses_a_folder_that_is_neither(cli, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = cli("plot", str(tmp_path))
    assert code == 2 and "neither a study folder" in err
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "figures").exists()


def test_style_one_legend_distinct_lines_honest_colour_scale_three_formats(tmp_path: Path) -> None:
    from dmmlkd.studies import style

    plt = style.apply()
    fig, axes = plt.subplots(1, 2)
    markers, dashes = style.line_styles(["exact", "heuristic", "uniform"])
    assert len(set(markers.values())) == 3 and len(set(map(str, dashes.values()))) == 3
    for ax in axes:
        for name in ("exact", "heuristic"):  # identical data: only marker/dash tell them apart
            ax.plot([0, 1], [0, 1], marker=markers[name], dashes=dashes[name] or (None, None),
                    label=name)
        ax.legend()
    style.legend_below(fig, axes)
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["exact", "heuristic"]
    png = style.save(fig, tmp_path / "f.png")
    assert png == tmp_path / "f.png"
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"
    assert b"<svg" in (tmp_path / "f.svg").read_bytes()[:500]
    # A colour scale of non-negative data starts at 0: 5.0 vs 6.0 does not look like 0 vs 1.
    assert style.colour_limits([5.0, 6.0]) == (0.0, 6.0)
    assert style.colour_limits([-1.0, 2.0]) == (-1.0, 2.0)
