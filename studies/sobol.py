"""Variance-based (Sobol) sensitivity through SALib: the design, the indices and their convergence.

SALib's Sobol-sequence Saltelli design is laid out in blocks of ``k + 2`` rows (``2k + 2`` with
second-order indices) per base sample; every row is a cell that records its ``sample`` (row)
number. The first ``n`` blocks of a Sobol sequence are themselves a valid design for ``N = n``
(n a power of two), which gives the convergence of the indices from the computed cells alone.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from dmmlkd.studies.morris import problem


def sobol_matrix(sobol: dict[str, Any]) -> np.ndarray:
    """SALib's Saltelli/Sobol design in the factors' own units: (N x (k + 2) or N x (2k + 2), k)."""
    from SALib.sample import sobol as sobol_sample

    return sobol_sample.sample(problem(sobol), int(sobol.get("samples", 64)),
                               calc_second_order=bool(sobol.get("second_order", False)),
                               seed=int(sobol.get("seed", 0)))


def sobol_design(sobol: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, int]]]:
    """Every design point with its place: ({factor: value}, {"sample": row})."""
    names = problem(sobol)["names"]
    return [({n: float(v) for n, v in zip(names, row)}, {"sample": i})
            for i, row in enumerate(sobol_matrix(sobol))]


def block_size(sobol: dict[str, Any]) -> int:
    """Rows per base sample: k + 2, or 2k + 2 with second-order indices."""
    k = len(sobol["ranges"])
    return 2 * k + 2 if sobol.get("second_order", False) else k + 2


def _outputs_by_sample(results: pd.DataFrame, sobol: dict[str, Any], out: str) -> np.ndarray:
    """One value per design row (mean over seeds; NaN where no successful cell)."""
    ok = results[results.get("status", pd.Series("ok", index=results.index)) != "error"]
    rows = block_size(sobol) * int(sobol.get("samples", 64))
    if out not in ok or "sample" not in ok:
        return np.full(rows, np.nan)
    return ok.groupby("sample")[out].mean().reindex(range(rows)).to_numpy(float)


def _indices(sobol: dict[str, Any], y: np.ndarray, blocks: int) -> dict[str, Any] | None:
    """SALib's analysis of the first `blocks` base samples, blocks with a failed cell left out."""
    from SALib.analyze import sobol as sobol_analyze

    step = block_size(sobol)
    ys = y[: blocks * step].reshape(blocks, step)
    ys = ys[np.isfinite(ys).all(axis=1)]
    if len(ys) < 2:
        return None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # constant outputs give 0/0; reported as NaN
        return sobol_analyze.analyze(problem(sobol), ys.reshape(-1),
                                     calc_second_order=bool(sobol.get("second_order", False)),
                                     num_resamples=int(sobol.get("resamples", 100)),
                                     conf_level=float(sobol.get("conf_level", 0.95)),
                                     seed=int(sobol.get("seed", 0)))


def analyse(results: pd.DataFrame, sobol: dict[str, Any], outputs: tuple[str, ...],
            ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(indices, second-order pairs, convergence) as tidy frames.

    indices: output, parameter, S1, S1_conf, ST, ST_conf, N (base samples), samples (used);
    second order: output, parameter, other, S2, S2_conf (empty unless asked for);
    convergence: the indices' columns for N = 8, 16, ... up to the spec's samples.
    """
    names = problem(sobol)["names"]
    total = int(sobol.get("samples", 64))
    first, second, trend = [], [], []
    for out in outputs:
        y = _outputs_by_sample(results, sobol, out)
        sizes = [n for n in (2 ** p for p in range(3, 40)) if n < total] + [total]
        for n in sizes:
            si = _indices(sobol, y, n)
            if si is None:
                continue
            used = int(np.isfinite(y[: n * block_size(sobol)].reshape(n, -1)).all(axis=1).sum())
            for i, name in enumerate(names):
                row = {"output": out, "parameter": name, "S1": float(si["S1"][i]),
                       "S1_conf": float(si["S1_conf"][i]), "ST": float(si["ST"][i]),
                       "ST_conf": float(si["ST_conf"][i]), "N": n, "samples": used}
                trend.append(row)
                if n == total:
                    first.append(row)
            if n == total and sobol.get("second_order", False):
                for i in range(len(names)):
                    for j in range(i + 1, len(names)):
                        second.append({"output": out, "parameter": names[i], "other": names[j],
                                       "S2": float(si["S2"][i, j]),
                                       "S2_conf": float(si["S2_conf"][i, j])})
    return pd.DataFrame(first), pd.DataFrame(second), pd.DataFrame(trend)
