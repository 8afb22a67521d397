"""Studies end to end through the command line: run, resume, failures, spec changes, Morris."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studies.morris import elementary_effects, morris_points
from studies.runner import STOP_AFTER_ENV, read_journal

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
method = ["heuristic", "uniform"]
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
    assert set(results["method"]) == {"heuristic", "uniform"}
    assert {"budget_scale", "seed", "objective", "imbalance_network", "energy_total_j",
            "solve_time_s", "gap", "status"} <= set(results.columns)
    assert (out / "spec.toml").exists()
    assert (out / "figures" / "objective_imbalance_vs_budget_scale.png").exists()
    # More budget never lowers the heuristic's objective here (same instance up to the budget).
    heur = results[results["method"] == "heuristic"].groupby("budget_scale")["objective"].mean()
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


def test_torn_journal_line_is_ignored(cli, spec_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cli("study", str(spec_file), "--out", str(out))
    with open(out / "cells.jsonl", "a") as fh:
        fh.write('{"cell_id": "abc", "objec')  # a crash mid-write
    code, stdout, _ = cli("study", str(spec_file), "--out", str(out))
    assert code == 0 and "0 cells run" in stdout


def test_failing_cell_is_recorded_and_exit_1(cli, tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC.replace("budget_scale = [0.5, 1.0, 2.0]", "budget_scale = [1.0, -1.0]"))
    out = tmp_path / "out"
    code, stdout, _ = cli("study", str(spec), "--out", str(out))
    assert code == 1
    results = pd.read_parquet(out / "results.parquet")
    errors = results[results["status"] == "error"]
    assert len(errors) == 4 and errors["error"].str.contains("budget_scale").all()
    assert (results[results["status"] != "error"]["budget_scale"] == 1.0).all()


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


@pytest.mark.parametrize("text,message", [
    ("[base]\ndevices = 3\n", "missing [study] table"),
    ('[study]\nkind = "dance"\n', "study.kind must be one of"),
    ('[study]\nkind = "solve"\n[grid]\nbudgte = [1]\n', "unknown grid option 'budgte'"),
])
def test_bad_spec_exit_2(cli, tmp_path: Path, text: str, message: str) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    code, _, err = cli("study", str(spec), "--out", str(tmp_path / "o"))
    assert code == 2 and message in err


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


def test_morris_ranks_an_analytic_function() -> None:
    morris = {"trajectories": 20, "levels": 4, "seed": 1,
              "ranges": {"a": [0.0, 1.0], "b": [0.0, 2.0], "c": [5.0, 6.0]}}
    points = np.array([[v for _, v in p] for p in morris_points(morris)]).reshape(20, 4, 3)
    f = 10 * points[..., 0] + points[..., 1] + 0 * points[..., 2]
    lows, highs = np.array([0.0, 0.0, 5.0]), np.array([1.0, 2.0, 6.0])
    mu, mu_star, sigma = elementary_effects(points, f, lows, highs)
    # Effects per unit of normalised range: a -> 10 x 1, b -> 1 x 2, c -> 0; linear: sigma 0.
    np.testing.assert_allclose(mu_star, [10.0, 2.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(sigma, 0.0, atol=1e-9)


def test_morris_study_runs(cli, tmp_path: Path) -> None:
    spec = tmp_path / "m.toml"
    spec.write_text("""
[study]
kind = "morris"
seeds = [0]
[base]
devices = 5
modalities = 2
method = "heuristic"
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
    indices = pd.read_parquet(out / "morris.parquet")
    assert set(indices["parameter"]) == {"budget_scale", "delta"}
    assert (out / "figures" / "morris.png").exists()
