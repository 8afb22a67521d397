"""Time and frequency (issue 9): does the allocator with CPU levels reach dmml-kd's accuracy
on less energy, no more simulated time, and no more energy than the allocator-free control?

    .venv/bin/python -m dmmlkd.benchmarks.dvfs --csv out/dvfs.csv   (5 seeds, 3 pairs)

Every method runs on the same data, partition, topology, battery and deadline (``auto``: the
round time of uniform tau at f_max). Prints a markdown table of paired differences against
``dmml-kd`` (mean over seeds and a 95% t-interval) and the issue's target per view pair; writes
one CSV row per run.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from dmmlkd.learner.config import TrainConfig
from dmmlkd.studies.compare import run_comparison

METHODS = ("dmml-kd", "uniform-dvfs", "dmml-kd-balance", "dmml-kd-balance-dvfs")
REFERENCE = "dmml-kd"
TOLERANCE = 0.005  # "reaches dmml-kd's final consensus accuracy" within half a point
ENERGY_TARGET = 0.65


def run_pair(views: list[str], seeds: list[int], methods: list[str], jobs: int, rounds: int,
             devices: int, alpha: float) -> pd.DataFrame:
    """One row per method x seed: final metrics and the energy/time to reach the target."""
    base = replace(TrainConfig(), dataset="mfeat", views=views, devices=devices, rounds=rounds,
                   alpha=alpha, deadline="auto", signal="variation",
                   dropout_rate=0.3).validate()  # the settings docs/dvfs.md was measured with
    history, _, _ = run_comparison(base, methods, seeds, jobs, progress=sys.stderr.isatty())
    rows = []
    for seed in seeds:
        ref = history[(history.method == REFERENCE) & (history.seed == seed)]
        target = float(ref["consensus_accuracy"].iloc[-1]) - TOLERANCE
        for method in methods:
            h = history[(history.method == method) & (history.seed == seed)].sort_values("round")
            acc_cols = [f"acc_{v}" for v in views]
            last = h.iloc[-1]
            reached = h[h["consensus_accuracy"] >= target]
            first = reached.iloc[0] if len(reached) else None
            rows.append({
                "pair": "+".join(views), "method": method, "seed": seed,
                "consensus_accuracy": float(last["consensus_accuracy"]),
                "accuracy": float(last["accuracy"]),
                "weakest_view_accuracy": float(min(last[c] for c in acc_cols)),
                "energy_used_j": float(last["energy_used_j"]),
                "sim_time_s": float(last["sim_time_s"]),
                "late_devices": int(h["late_devices"].sum()),
                "target": target,
                "round_to_target": int(first["round"]) + 1 if first is not None else np.nan,
                "energy_to_target_j": float(first["energy_used_j"]) if first is not None else np.nan,
                "time_to_target_s": float(first["sim_time_s"]) if first is not None else np.nan,
            })
    return pd.DataFrame(rows)


def mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds (the interval is the mean itself for one seed); seeds
    without a value (nan: the target never reached) are left out."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if not len(values):
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if len(values) < 2 or np.allclose(values, values[0]):
        return mean, mean, mean
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def paired(runs: pd.DataFrame, other: str = REFERENCE) -> pd.DataFrame:
    """Per pair and method, paired over seeds against ``other``: consensus and weakest-view
    differences (points), energy and simulated-time ratios, final and to-target."""
    out: list[dict[str, Any]] = []
    for (pair, method), group in runs.groupby(["pair", "method"], sort=False):
        ref = runs[(runs.pair == pair) & (runs.method == other)].set_index("seed")
        g = group.set_index("seed").loc[ref.index]
        row: dict[str, Any] = {"pair": pair, "method": method, "vs": other, "seeds": len(g)}
        for name, values in (
            ("d_consensus_pts", 100 * (g.consensus_accuracy - ref.consensus_accuracy)),
            ("d_weakest_pts", 100 * (g.weakest_view_accuracy - ref.weakest_view_accuracy)),
            ("energy_ratio", g.energy_used_j / ref.energy_used_j),
            ("time_ratio", g.sim_time_s / ref.sim_time_s),
            ("energy_to_target_ratio", g.energy_to_target_j / ref.energy_to_target_j),
            ("time_to_target_ratio", g.time_to_target_s / ref.time_to_target_s),
        ):
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = mean_ci(values.to_numpy())
        row["reached"] = int(g.round_to_target.notna().sum())
        out.append(row)
    return pd.DataFrame(out)


def verdict(runs: pd.DataFrame, method: str = "dmml-kd-balance-dvfs") -> pd.DataFrame:
    """The issue's target, per pair and seed: final consensus within 0.5 point of dmml-kd's;
    energy <= 0.65x dmml-kd's (read two ways: the whole run's energy, and the energy spent when
    the target accuracy is first reached, against dmml-kd's whole run); simulated time <=
    dmml-kd's; energy <= uniform-dvfs's (whole run, and to the target)."""
    rows = []
    for (pair, seed), g in runs.groupby(["pair", "seed"]):
        by = g.set_index("method")
        m, ref, ctl = by.loc[method], by.loc[REFERENCE], by.loc["uniform-dvfs"]
        rows.append({
            "pair": pair, "seed": seed,
            "consensus_ok": bool(m.consensus_accuracy >= ref.consensus_accuracy - TOLERANCE),
            "energy_ok": bool(m.energy_used_j <= ENERGY_TARGET * ref.energy_used_j),
            "energy_to_target_ok": bool(m.energy_to_target_j <= ENERGY_TARGET * ref.energy_used_j),
            "time_ok": bool(m.sim_time_s <= ref.sim_time_s * (1 + 1e-9)),
            "time_to_target_ok": bool(m.time_to_target_s <= ref.sim_time_s * (1 + 1e-9)),
            "vs_control_ok": bool(m.energy_used_j <= ctl.energy_used_j * (1 + 1e-9)),
            "vs_control_to_target_ok": bool(m.energy_to_target_j
                                            <= ctl.energy_to_target_j * (1 + 1e-9)),
        })
    return pd.DataFrame(rows)


def fmt(row: pd.Series, name: str, digits: int = 3) -> str:
    return (f"{row[name]:.{digits}f} [{row[name + '_lo']:.{digits}f}, "
            f"{row[name + '_hi']:.{digits}f}]")


def markdown(runs: pd.DataFrame) -> str:
    """The tables for docs/dvfs.md."""
    lines = ["| pair | method | consensus | weakest view | energy (J) | sim. time (s) |",
             "|---|---|---|---|---|---|"]
    for (pair, method), g in runs.groupby(["pair", "method"], sort=False):
        lines.append(f"| {pair} | {method} | {g.consensus_accuracy.mean():.4f} | "
                     f"{g.weakest_view_accuracy.mean():.4f} | {g.energy_used_j.mean():.3f} | "
                     f"{g.sim_time_s.mean():.3f} |")
    lines += ["", f"Paired against {REFERENCE} over seeds: mean [95% CI].", "",
              "Energy/time to target: spent when the consensus accuracy first reaches dmml-kd's "
              "final minus 0.5 point, over dmml-kd's own (seeds that reached it).", "",
              "| pair | method | Δ consensus (pts) | Δ weakest (pts) | energy ratio | time ratio "
              "| energy to target | time to target | reached |",
              "|---|---|---|---|---|---|---|---|---|"]
    for _, r in paired(runs).iterrows():
        if r.method == REFERENCE:
            continue
        lines.append(f"| {r.pair} | {r.method} | {fmt(r, 'd_consensus_pts', 2)} | "
                     f"{fmt(r, 'd_weakest_pts', 2)} | {fmt(r, 'energy_ratio')} | "
                     f"{fmt(r, 'time_ratio')} | {fmt(r, 'energy_to_target_ratio')} | "
                     f"{fmt(r, 'time_to_target_ratio')} | {r.reached}/{r.seeds} |")
    if "dmml-kd-balance-dvfs" in set(runs.method) and "uniform-dvfs" in set(runs.method):
        lines += ["", "Paired against uniform-dvfs (the allocator-free control):", "",
                  "| pair | method | Δ consensus (pts) | Δ weakest (pts) | energy ratio | "
                  "time ratio |", "|---|---|---|---|---|---|"]
        for _, r in paired(runs, "uniform-dvfs").iterrows():
            if r.method != "dmml-kd-balance-dvfs":
                continue
            lines.append(f"| {r.pair} | {r.method} | {fmt(r, 'd_consensus_pts', 2)} | "
                         f"{fmt(r, 'd_weakest_pts', 2)} | {fmt(r, 'energy_ratio')} | "
                         f"{fmt(r, 'time_ratio')} |")
        v = verdict(runs)
        lines += ["", "dmml-kd-balance-dvfs against the target, seeds meeting it / seeds. Final "
                  "consensus within 0.5 point of dmml-kd's; energy <= 0.65x dmml-kd's whole run "
                  "(whole run / spent when the target accuracy is first reached); sim. time <= "
                  "dmml-kd's whole run (whole run / to the target); energy <= uniform-dvfs's "
                  "(whole run / to the target).", "",
                  "| pair | consensus | energy: run / to target | time: run / to target "
                  "| vs uniform-dvfs: run / to target |", "|---|---|---|---|---|"]
        for pair, g in v.groupby("pair"):
            n = len(g)
            lines.append(f"| {pair} | {g.consensus_ok.sum()}/{n} | {g.energy_ok.sum()}/{n} / "
                         f"{g.energy_to_target_ok.sum()}/{n} | {g.time_ok.sum()}/{n} / "
                         f"{g.time_to_target_ok.sum()}/{n} | {g.vs_control_ok.sum()}/{n} / "
                         f"{g.vs_control_to_target_ok.sum()}/{n} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables, write the CSV."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", default="fac+zer,kar+zer,pix+mor",
                   help="view pairs, e.g. fac+zer,kar+zer")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--csv", default="out/dvfs.csv", help="per-run rows (CSV)")
    p.add_argument("--from-csv", default=None, help="print the tables of an earlier run's CSV")
    args = p.parse_args(argv)
    if args.from_csv:
        print(markdown(pd.read_csv(args.from_csv)))
        return 0
    methods = args.methods.split(",")
    if REFERENCE not in methods:
        methods.insert(0, REFERENCE)
    runs = pd.concat([run_pair(pair.split("+"), list(range(args.seeds)), methods, args.jobs,
                               args.rounds, args.devices, args.alpha)
                      for pair in args.pairs.split(",")], ignore_index=True)
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    runs.to_csv(args.csv, index=False)
    print(markdown(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
