"""Morris elementary-effects screening (small, NumPy): design points and mu*, sigma."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def _design(k: int, trajectories: int, levels: int, seed: int) -> np.ndarray:
    """Unit-cube trajectories (r, k + 1, k): each step moves one factor by +-Delta."""
    rng = np.random.default_rng(seed)
    delta = levels / (2.0 * (levels - 1))
    grid = np.arange(levels) / (levels - 1)
    starts = grid[grid <= 1 - delta + 1e-12]
    out = np.empty((trajectories, k + 1, k))
    for r in range(trajectories):
        x = rng.choice(starts, size=k)
        out[r, 0] = x
        for step, i in enumerate(rng.permutation(k), start=1):
            x = x.copy()
            x[i] = x[i] + delta if x[i] + delta <= 1 + 1e-12 else x[i] - delta
            out[r, step] = x
    return out


def _factors(morris: dict[str, Any]) -> list[str]:
    return sorted(morris["ranges"])


def morris_points(morris: dict[str, Any]) -> list[tuple[tuple[str, float], ...]]:
    """Design points in the parameters' own units (as hashable (name, value) tuples)."""
    names = _factors(morris)
    unit = _design(len(names), int(morris.get("trajectories", 10)), int(morris.get("levels", 4)),
                   int(morris.get("seed", 0)))
    lows = np.array([morris["ranges"][n][0] for n in names], float)
    highs = np.array([morris["ranges"][n][1] for n in names], float)
    values = lows + unit * (highs - lows)
    return [tuple((n, round(float(v), 12)) for n, v in zip(names, point))
            for traj in values for point in traj]


def elementary_effects(points: np.ndarray, outputs: np.ndarray, lows: np.ndarray,
                       highs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mu, mu*, sigma per factor from trajectories points (r, k+1, k) and outputs (r, k+1).

    Effects are per unit of the normalised factor (range scaled to [0, 1]).
    """
    r, steps, k = points.shape
    unit = (points - lows) / (highs - lows)
    effects = [[] for _ in range(k)]
    for t in range(r):
        for s in range(1, steps):
            diff = unit[t, s] - unit[t, s - 1]
            i = int(np.argmax(np.abs(diff)))
            effects[i].append((outputs[t, s] - outputs[t, s - 1]) / diff[i])
    ee = [np.asarray(e, float) for e in effects]
    mu = np.array([e.mean() for e in ee])
    mu_star = np.array([np.abs(e).mean() for e in ee])
    sigma = np.array([e.std(ddof=1) if e.size > 1 else 0.0 for e in ee])
    return mu, mu_star, sigma


def analyse(results: pd.DataFrame, morris: dict[str, Any],
            outputs: tuple[str, ...] = ("objective", "imbalance_network", "energy_total_j"),
            ) -> pd.DataFrame:
    """Tidy Morris indices (output, parameter, mu, mu_star, sigma), averaged over seeds."""
    names = _factors(morris)
    r = int(morris.get("trajectories", 10))
    k = len(names)
    design = np.array([[v for _, v in p] for p in morris_points(morris)]).reshape(r, k + 1, k)
    lows = np.array([morris["ranges"][n][0] for n in names], float)
    highs = np.array([morris["ranges"][n][1] for n in names], float)
    ok = results[results["status"] != "error"]
    key = ok[names].round(12).apply(tuple, axis=1)
    rows = []
    for out in outputs:
        by_point = ok.assign(_key=key).groupby("_key")[out].mean()
        values = np.array([by_point.get(tuple(p), np.nan) for p in design.reshape(-1, k)])
        values = values.reshape(r, k + 1)
        keep = np.isfinite(values).all(axis=1)
        if not keep.any():
            continue
        mu, mu_star, sigma = elementary_effects(design[keep], values[keep], lows, highs)
        for i, name in enumerate(names):
            rows.append({"output": out, "parameter": name, "mu": mu[i], "mu_star": mu_star[i],
                         "sigma": sigma[i]})
    return pd.DataFrame(rows)
