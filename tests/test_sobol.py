"""Sobol studies: indices on the Ishigami function (known in closed form), SALib as the oracle,
convergence from subsets of the design, and a study end to end with resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from dmmlkd.studies.cells import ishigami
from dmmlkd.studies.runner import STOP_AFTER_ENV, read_journal
from dmmlkd.studies.sobol import analyse, block_size, sobol_design, sobol_matrix

PI = math.pi
RANGES = {"x1": [-PI, PI], "x2": [-PI, PI], "x3": [-PI, PI]}
# Ishigami (a = 7, b = 0.1), closed form (Ishigami & Homma 1990; Saltelli et al. 2008).
S1_TRUE = np.array([0.3139, 0.4424, 0.0])
ST_TRUE = np.array([0.5576, 0.4424, 0.2437])
S13_TRUE = 0.2437


def _results(sobol: dict, seeds: int = 1) -> pd.DataFrame:
    """Rows as the runner journals them (shuffled): sample number, seed, factors, output."""
    rows = []
    for point, place in sobol_design(sobol):
        for seed in range(seeds):
            # Seeds add offsets that cancel in the mean: the analysis must average over seeds.
            rows.append({**point, **place, "seed": seed, "status": "ok",
                         "y": ishigami(**point) + (seed - (seeds - 1) / 2)})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)


def test_ishigami_function_matches_its_definition() -> None:
    from SALib.test_functions import Ishigami

    x = np.random.default_rng(0).uniform(-PI, PI, size=(50, 3))
    np.testing.assert_allclose([ishigami(*row) for row in x], Ishigami.evaluate(x), rtol=1e-12)


def test_ishigami_indices_match_the_closed_form() -> None:
    sobol = {"samples": 1024, "seed": 0, "second_order": True, "ranges": RANGES}
    indices, second, _ = analyse(_results(sobol), sobol, ("y",))
    indices = indices.set_index("parameter").loc[["x1", "x2", "x3"]]
    # Within the bootstrap CI (plus a little: a 95% CI misses now and then).
    assert (np.abs(indices["S1"] - S1_TRUE) <= indices["S1_conf"] + 0.02).all(), indices
    assert (np.abs(indices["ST"] - ST_TRUE) <= indices["ST_conf"] + 0.02).all(), indices
    np.testing.assert_allclose(indices["S1"], S1_TRUE, atol=0.05)
    np.testing.assert_allclose(indices["ST"], ST_TRUE, atol=0.05)
    # Total effect is never below first order (within CIs).
    assert (indices["ST"] + indices["ST_conf"] >= indices["S1"] - indices["S1_conf"]).all()
    pairs = second.set_index(["parameter", "other"])["S2"]
    assert abs(pairs[("x1", "x3")] - S13_TRUE) < 0.05
    assert abs(pairs[("x1", "x2")]) < 0.05 and abs(pairs[("x2", "x3")]) < 0.05


def test_indices_equal_salib_called_directly() -> None:
    from SALib.analyze import sobol as salib_sobol
    from SALib.test_functions import Ishigami

    sobol = {"samples": 128, "seed": 3, "ranges": RANGES, "resamples": 50}
    ours = analyse(_results(sobol, seeds=3), sobol, ("y",))[0].set_index("parameter")
    x = sobol_matrix(sobol)
    problem = {"num_vars": 3, "names": ["x1", "x2", "x3"], "bounds": [RANGES[n] for n in "x1 x2 x3".split()]}
    theirs = salib_sobol.analyze(problem, Ishigami.evaluate(x), calc_second_order=False,
                                 num_resamples=50, seed=3)
    for key in ("S1", "S1_conf", "ST", "ST_conf"):
        np.testing.assert_allclose(ours.loc[["x1", "x2", "x3"], key], theirs[key], rtol=1e-10)


def test_first_blocks_of_the_design_are_the_smaller_design() -> None:
    # Why convergence needs no extra runs: the first n blocks ARE the design for N = n.
    big = sobol_matrix({"samples": 64, "seed": 5, "ranges": RANGES})
    small = sobol_matrix({"samples": 16, "seed": 5, "ranges": RANGES})
    np.testing.assert_array_equal(big[: 16 * block_size({"ranges": RANGES})], small)


def test_convergence_rows_equal_analyses_of_smaller_designs() -> None:
    sobol = {"samples": 64, "seed": 2, "ranges": RANGES}
    _, _, trend = analyse(_results(sobol), sobol, ("y",))
    assert sorted(trend["N"].unique()) == [8, 16, 32, 64]
    small = {**sobol, "samples": 16}
    direct = analyse(_results(small), small, ("y",))[0].set_index("parameter")
    at16 = trend[trend["N"] == 16].set_index("parameter")
    np.testing.assert_allclose(at16.loc[direct.index, ["S1", "ST"]], direct[["S1", "ST"]],
                               rtol=1e-10)


def test_failed_cells_drop_their_block_only() -> None:
    sobol = {"samples": 64, "seed": 0, "ranges": RANGES}
    results = _results(sobol)
    results.loc[results["sample"] == 7, "status"] = "error"  # one cell of block 1
    indices = analyse(results, sobol, ("y",))[0]
    assert (indices["samples"] == 63).all()


SPEC = """
[study]
name = "ishigami"
kind = "sobol"
seeds = [0]

[sobol]
model = "ishigami"
samples = 32
seed = 1
second_order = true

[sobol.ranges]
x1 = [-3.141592653589793, 3.141592653589793]
x2 = [-3.141592653589793, 3.141592653589793]
x3 = [-3.141592653589793, 3.141592653589793]
"""


def test_sobol_study_end_to_end_with_resume(cli, tmp_path: Path, monkeypatch) -> None:
    spec = tmp_path / "ishigami.toml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    cells = 32 * (2 * 3 + 2)
    monkeypatch.setenv(STOP_AFTER_ENV, "40")
    code, _, _ = cli("study", str(spec), "--out", str(out))
    assert code == 130 and len(read_journal(out)) == 40
    monkeypatch.delenv(STOP_AFTER_ENV)
    code, stdout, err = cli("study", str(spec), "--out", str(out))
    assert code == 0, err
    assert f"{cells - 40} cells run, 40 already done" in stdout
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == cells and sorted(results["sample"]) == list(range(cells))
    indices = pd.read_csv(out / "indices.csv")
    assert list(indices.columns[:6]) == ["output", "parameter", "S1", "S1_conf", "ST", "ST_conf"]
    # The study's indices are those of the analysis of its own rows, and ST >= S1 within CIs.
    direct = analyse(results, {"samples": 32, "seed": 1, "second_order": True, "ranges": RANGES},
                     ("y",))[0]
    np.testing.assert_allclose(indices["ST"], direct["ST"], rtol=1e-10)
    assert (indices["ST"] + indices["ST_conf"] >= indices["S1"] - indices["S1_conf"]).all()
    assert (out / "s2.csv").exists() and (out / "convergence.csv").exists()
    for name in ("sobol_indices", "sobol_convergence"):
        for fmt in ("png", "pdf", "svg"):
            assert (out / "figures" / f"{name}.{fmt}").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "| y | x1 |" in report and "figures/sobol_indices.png" in report


def test_sobol_samples_must_be_a_power_of_two(cli, tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC.replace("samples = 32", "samples = 24"))
    code, _, err = cli("study", str(spec), "--out", str(tmp_path / "o"))
    assert code == 2 and "power of two" in err and not (tmp_path / "o").exists()
