"""Morris elementary-effects screening through SALib: the design and the indices.

SALib's sampler (Campolongo et al.: random start on the level grid, one factor per step, random
step directions) and its ``analyze`` (mu, mu*, sigma, bootstrap CI of mu*) are used as they are:
they are maintained, tested against the literature, and our former hand-written copy only
duplicated them. What is ours is the plumbing: every design row is a cell that records its
(trajectory, step), and the outputs are put back in design order by that place, not by matching
rounded factor values.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd


def problem(table: dict[str, Any]) -> dict[str, Any]:
    """The SALib problem of a [morris]/[sobol] table: factors in sorted order with their bounds."""
    names = sorted(table["ranges"])
    return {"num_vars": len(names), "names": names,
            "bounds": [[float(b) for b in table["ranges"][n]] for n in names]}


def morris_matrix(morris: dict[str, Any]) -> np.ndarray:
    """SALib's Morris design in the factors' own units: (trajectories x (k + 1), k)."""
    from SALib.sample import morris as morris_sample

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SALib warns about odd level counts; the spec chose them
        return morris_sample.sample(problem(morris), int(morris.get("trajectories", 10)),
                                    num_levels=int(morris.get("levels", 4)),
                                    seed=int(morris.get("seed", 0)))


def morris_design(morris: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, int]]]:
    """Every design point with its place: ({factor: value}, {"trajectory": t, "step": s})."""
    names = problem(morris)["names"]
    k = len(names)
    return [({n: float(v) for n, v in zip(names, row)}, {"trajectory": i // (k + 1), "step": i % (k + 1)})
            for i, row in enumerate(morris_matrix(morris))]


def analyse(results: pd.DataFrame, morris: dict[str, Any], outputs: tuple[str, ...],
            ) -> pd.DataFrame:
    """Tidy Morris indices (output, parameter, mu, mu_star, mu_star_conf, sigma, trajectories).

    Each design point's output is its mean over seeds; a trajectory with a failed or missing
    step is left out (its elementary effects are undefined).
    """
    from SALib.analyze import morris as morris_analyze

    prob = problem(morris)
    k = prob["num_vars"]
    r = int(morris.get("trajectories", 10))
    x = morris_matrix(morris)
    ok = results[results.get("status", pd.Series("ok", index=results.index)) != "error"]
    rows = []
    for out in outputs:
        if out not in ok or "trajectory" not in ok:
            continue
        by_place = ok.groupby(["trajectory", "step"])[out].mean()
        index = pd.MultiIndex.from_product([range(r), range(k + 1)], names=["trajectory", "step"])
        y = by_place.reindex(index).to_numpy(float).reshape(r, k + 1)
        keep = np.isfinite(y).all(axis=1)
        if keep.sum() < 2:
            continue
        xs = x.reshape(r, k + 1, k)[keep].reshape(-1, k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            si = morris_analyze.analyze(prob, xs, y[keep].reshape(-1),
                                        num_resamples=int(morris.get("resamples", 100)),
                                        num_levels=int(morris.get("levels", 4)),
                                        seed=int(morris.get("seed", 0)))
        for i, name in enumerate(prob["names"]):
            rows.append({"output": out, "parameter": name, "mu": float(si["mu"][i]),
                         "mu_star": float(si["mu_star"][i]),
                         "mu_star_conf": float(si["mu_star_conf"][i]),
                         "sigma": float(si["sigma"][i]), "trajectories": int(keep.sum())})
    return pd.DataFrame(rows)
