"""Where allocation pays: the allocator for fleets against every allocator-free control.

    python -m dmmlkd.benchmarks.map --out runs/map            # the grid run for docs/
    python -m dmmlkd.benchmarks.map --grid room --out runs/map-room  # pairs with room to fuse
    python -m dmmlkd.benchmarks.map --grid full --out runs/map-full  # the documented full grid
    python -m dmmlkd.benchmarks.map --from-csv runs/map/runs.csv --out runs/map   # re-render

Stage 1 tunes `dmml-kd-fleet` (fleet_returns x fleet_split) on the validation split of the
tuning pair (fac+zer, longtail fleet, battery_scale 0.5, seeds 100..102) by the validation
consensus accuracy. Stage 2 runs every cell of fleet x battery x deadline x view pair (pairs
never used for tuning) over seeds 0..S-1, every control and the tuned allocator, and writes
runs.csv (one row per run), map.md (the table) and map.png (heatmaps of allocator - best
control, on consensus accuracy and on energy to target, paired over seeds, 95% t-intervals).

Energy to target: the energy a run had spent when its consensus accuracy first reached the
cell's target on that seed, the lowest final consensus accuracy of all methods there (so
every method reaches it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dmmlkd.learner.config import TrainConfig
from dmmlkd.studies.compare import default_jobs, mean_interval, run_configs

CONTROLS = ("dmml-kd", "uniform-dvfs", "uniform-pacing", "random-schedule", "modality-dropout")
ALLOCATOR = "dmml-kd-fleet"
TUNE_PAIR = ("fac", "zer")
TUNE_GRID: dict[str, tuple[Any, ...]] = {"fleet_returns": (0.5, 1.0), "fleet_split": ("uniform", "balance")}
# The grid run for docs/where-allocation-pays.md and the full documented one.
SMALL: dict[str, Any] = {"fleet": ("uniform", "longtail"), "battery_scale": (1.0, 0.5),
         "deadline": ("auto", "auto:0.5"),
         "pairs": (("kar", "zer"), ("pix", "mor"), ("fou", "kar"))}
# The pairs where fusion has the most room (centralized ceilings, docs/where-allocation-pays.md).
ROOM: dict[str, Any] = {"fleet": ("longtail",), "battery_scale": (1.0, 0.5), "deadline": ("auto",),
                        "pairs": (("fou", "zer"), ("fou", "mor"), ("zer", "mor"))}
FULL: dict[str, Any] = {"fleet": ("uniform", "longtail"), "battery_scale": (1.0, 0.5, 0.25),
                        "deadline": ("auto", "auto:0.5", "auto:0.25"),
                        "pairs": (("fou", "zer"), ("fou", "mor"), ("zer", "mor"), ("fou", "kar"),
                                  ("kar", "zer"), ("pix", "mor"))}
GRIDS = {"small": SMALL, "room": ROOM, "full": FULL}
BASE: dict[str, Any] = {"dataset": "mfeat", "devices": 8, "rounds": 15, "alpha": 0.5}
FULL_BASE: dict[str, Any] = {"dataset": "mfeat", "devices": 16, "rounds": 30, "alpha": 0.5}


def tune(base: TrainConfig, seeds: list[int], jobs: int) -> tuple[dict[str, Any], pd.DataFrame]:
    """The allocator's knobs with the best mean validation consensus accuracy."""
    cfg = replace(base, views=list(TUNE_PAIR), fleet="longtail", battery_scale=0.5)
    combos = [dict(zip(TUNE_GRID, v)) for v in itertools.product(*TUNE_GRID.values())]
    configs = [replace(cfg, method=ALLOCATOR, seed=s, **c).validate() for c in combos for s in seeds]
    _, _, finals = run_configs(configs, jobs, progress=sys.stderr.isatty())
    finals["combo"] = [json.dumps(c) for c in combos for _ in seeds]
    table = finals.groupby("combo")["val_consensus_accuracy"].agg(["mean", "std"]).reset_index()
    best = json.loads(str(table.loc[table["mean"].idxmax(), "combo"]))
    return best, table


def cells(grid: dict[str, Any]) -> list[dict[str, Any]]:
    """Every cell of the grid."""
    return [{"fleet": f, "battery_scale": b, "deadline": d, "pair": "+".join(p)}
            for f, b, d, p in itertools.product(grid["fleet"], grid["battery_scale"],
                                                grid["deadline"], grid["pairs"])]


def run_grid(base: TrainConfig, grid: dict[str, Any], seeds: list[int], knobs: dict[str, Any],
             jobs: int) -> pd.DataFrame:
    """One row per cell x method x seed: final metrics and the history for energy to target."""
    configs, keys = [], []
    for cell in cells(grid):
        cfg = replace(base, views=cell["pair"].split("+"), fleet=cell["fleet"],
                      battery_scale=cell["battery_scale"], deadline=cell["deadline"], **knobs)
        for seed in seeds:
            for method in (*CONTROLS, ALLOCATOR):
                configs.append(replace(cfg, method=method, seed=seed).validate())
                keys.append({**cell, "method": method, "seed": seed})
    history, _, finals = run_configs(configs, jobs, progress=sys.stderr.isatty())
    out = pd.concat([pd.DataFrame(keys), finals.drop(columns=["method", "seed"])], axis=1)
    curves = {run: g.sort_values("round")[["consensus_accuracy", "energy_used_j", "sim_time_s"]]
              .to_numpy() for run, g in history.groupby("run")}
    out["curve"] = [json.dumps(curves[i].round(6).tolist()) for i in range(len(out))]
    return out


def to_target(runs: pd.DataFrame) -> pd.DataFrame:
    """Energy and simulated time to the cell's target (lowest final consensus of all methods)."""
    runs = runs.copy()
    group = ["fleet", "battery_scale", "deadline", "pair", "seed"]
    runs["target"] = runs.groupby(group)["consensus_accuracy"].transform("min")
    energy, sim = [], []
    for curve, target in zip(runs["curve"], runs["target"]):
        c = np.asarray(json.loads(curve), float)
        hit = np.flatnonzero(c[:, 0] >= target - 1e-12)
        energy.append(c[hit[0], 1] if hit.size else np.nan)
        sim.append(c[hit[0], 2] if hit.size else np.nan)
    return runs.assign(energy_to_target_j=energy, time_to_target_s=sim)


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Mean of a - b over seeds and its 95% Student-t interval."""
    return mean_interval(a - b)


def verdicts(runs: pd.DataFrame) -> pd.DataFrame:
    """Per cell: the allocator against the best control, on consensus accuracy (higher is
    better; best control = highest mean) and on energy to target (lower is better)."""
    rows = []
    group = ["fleet", "battery_scale", "deadline", "pair"]
    for key, g in runs.groupby(group, sort=False):
        row = dict(zip(group, key))
        alloc = g[g.method == ALLOCATOR].set_index("seed")
        for metric, better in (("consensus_accuracy", max), ("energy_to_target_j", min)):
            means = g[g.method != ALLOCATOR].groupby("method")[metric].mean()
            best = better(means.index, key=lambda m: means[m])
            ctl = g[g.method == best].set_index("seed")
            seeds = alloc.index.intersection(ctl.index)
            mean, lo, hi = paired(alloc.loc[seeds, metric].to_numpy(float),
                                  ctl.loc[seeds, metric].to_numpy(float))
            if metric == "energy_to_target_j":  # as a ratio of the control's, easier to read
                ref = float(ctl.loc[seeds, metric].mean())
                mean, lo, hi = mean / ref, lo / ref, hi / ref
            short = "acc" if metric == "consensus_accuracy" else "ett"
            row.update({f"{short}_best_control": best, f"{short}_diff": mean,
                        f"{short}_lo": lo, f"{short}_hi": hi,
                        f"{short}_alloc": float(alloc[metric].mean()),
                        f"{short}_control": float(means[best])})
            row[f"{short}_verdict"] = ("wins" if (lo > 0 if better is max else hi < 0) else
                                       "loses" if (hi < 0 if better is max else lo > 0) else "ties")
        row["seeds"] = int(len(alloc))
        row["depleted_alloc"] = float(alloc["depleted"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(v: pd.DataFrame, runs: pd.DataFrame) -> str:
    """The table of docs/where-allocation-pays.md."""
    lines = ["| fleet | battery | deadline | pair | consensus: allocator / best control (which) "
             "| Δ pts [95% CI] | | energy to target: allocator / best control (which) "
             "| Δ / control [95% CI] | |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in v.itertuples():
        lines.append(
            f"| {r.fleet} | {r.battery_scale:g} | {r.deadline} | {r.pair} | "
            f"{100 * r.acc_alloc:.1f} / {100 * r.acc_control:.1f} ({r.acc_best_control}) | "
            f"{100 * r.acc_diff:+.1f} [{100 * r.acc_lo:+.1f}, {100 * r.acc_hi:+.1f}] | "
            f"**{r.acc_verdict}** | {r.ett_alloc:.3g} / {r.ett_control:.3g} J "
            f"({r.ett_best_control}) | {100 * r.ett_diff:+.0f}% [{100 * r.ett_lo:+.0f}, "
            f"{100 * r.ett_hi:+.0f}] | **{r.ett_verdict}** |")
    means = runs.groupby(["fleet", "battery_scale", "method"])["consensus_accuracy"].mean()
    lines += ["", "Mean consensus accuracy (%) over pairs, deadlines and seeds:", "",
              "| fleet | battery | " + " | ".join((*CONTROLS, ALLOCATOR)) + " |",
              "|---|---|" + "---|" * (len(CONTROLS) + 1)]
    for (fleet, battery), g in means.groupby(level=[0, 1]):
        g = g.droplevel([0, 1])
        lines.append(f"| {fleet} | {battery:g} | " + " | ".join(
            f"{100 * g.get(m, np.nan):.1f}" for m in (*CONTROLS, ALLOCATOR)) + " |")
    return "\n".join(lines)


def heatmap(v: pd.DataFrame, path: Path) -> None:
    """(allocator - best control) per cell: consensus points and energy-to-target ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    v = v.assign(setting=[f"{r.fleet}, bat {r.battery_scale:g}, {r.deadline}"
                          for r in v.itertuples()])
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.55 * v["setting"].nunique() + 2))
    for ax, (short, title, scale, fmt) in zip(axes, (
            ("acc", "consensus accuracy: allocator - best control (points)", 100, "{:+.1f}"),
            ("ett", "energy to target: (allocator - best control) / control (%)", 100, "{:+.0f}"))):
        val = v.pivot(index="setting", columns="pair", values=f"{short}_diff") * scale
        lo = v.pivot(index="setting", columns="pair", values=f"{short}_lo") * scale
        hi = v.pivot(index="setting", columns="pair", values=f"{short}_hi") * scale
        annot = val.copy().astype(object)
        for i in val.index:
            for j in val.columns:
                annot.loc[i, j] = (fmt.format(val.loc[i, j]) + "\n["
                                   + fmt.format(lo.loc[i, j]) + ", " + fmt.format(hi.loc[i, j]) + "]")
        limit = float(np.nanmax(np.abs(val.to_numpy()))) or 1.0
        cmap = "RdBu" if short == "acc" else "RdBu_r"  # blue: the allocator is better
        sns.heatmap(val, annot=annot, fmt="", cmap=cmap, vmin=-limit, vmax=limit, ax=ax,
                    cbar=False, annot_kws={"fontsize": 7})
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/map")
    parser.add_argument("--grid", choices=tuple(GRIDS), default="small",
                        help="small (the docs' run), room (pairs where fusion has room), full "
                             "(16 devices, 30 rounds)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tune-seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=default_jobs())
    parser.add_argument("--from-csv", default=None, help="re-render from an earlier runs.csv")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.from_csv:
        runs = pd.read_csv(args.from_csv)
        meta = json.loads((Path(args.from_csv).parent / "meta.json").read_text())
    else:
        base = TrainConfig(**(FULL_BASE if args.grid == "full" else BASE)).validate()
        knobs, tuning = tune(base, list(range(100, 100 + args.tune_seeds)), args.jobs)
        runs = run_grid(base, GRIDS[args.grid], list(range(args.seeds)), knobs, args.jobs)
        runs.to_csv(out / "runs.csv", index=False)
        meta = {"knobs": knobs, "tuning": tuning.to_dict("records"),
                "wall_s": time.perf_counter() - t0, "jobs": args.jobs,
                "base": base.to_dict(), "seeds": args.seeds}
        (out / "meta.json").write_text(json.dumps(meta, indent=1))
    v = verdicts(to_target(runs))
    v.to_csv(out / "verdicts.csv", index=False)
    table = markdown(v, runs)
    (out / "map.md").write_text(table + "\n")
    heatmap(v, out / "map.png")
    print(f"tuned on validation: {meta['knobs']}  ({meta['wall_s']:.0f} s wall, "
          f"{meta['jobs']} processes)\n")
    print(table)
    counts = {k: {x: int((v[f'{k}_verdict'] == x).sum()) for x in ('wins', 'ties', 'loses')}
              for k in ("acc", "ett")}
    print(f"\nconsensus accuracy: {counts['acc']}; energy to target: {counts['ett']}")


if __name__ == "__main__":
    main()
