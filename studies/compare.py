"""Compare learning methods under the same data, partition, topology and battery, over seeds."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tomli_w
from numpy.typing import NDArray

from dmmlkd.learner.config import TrainConfig
from dmmlkd.studies import style
from dmmlkd.studies.diverged import (
    STATUS_COLUMNS,
    describe,
    diverged_mask,
    diverged_round,
    run_status,
    usable,
    weakest,
)
from dmmlkd.studies.spec import StudyError
from dmmlkd.userio import atomic_dir, progress, to_markdown
from dmmlkd.userio.workers import exit_with_parent

DEFAULT_METHODS = ("dpsgd", "dmml-kd", "ogm-ge", "dmml-kd-balance", "random-schedule",
                   "modality-dropout")


def _one(config: TrainConfig) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    import torch

    torch.set_num_threads(1)
    from dmmlkd.bridge.training import run_train_full

    result = run_train_full(config)
    history = result.rounds.assign(method=config.method, seed=config.seed)
    rows = result.rows.assign(method=config.method, seed=config.seed)
    return history, rows, result.summary


def run_comparison(base: TrainConfig, methods: list[str], seeds: list[int], jobs: int = 1,
                   progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every method x seed; returns (per-round history, per-device rows, final summaries)."""
    configs = [replace(base, method=m, seed=s).validate() for s in seeds for m in methods]
    return run_configs(configs, jobs, progress)


def run_configs(configs: list[TrainConfig], jobs: int = 1, progress: bool = True,
                ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Run any list of configurations (one process pool); tables as in `run_comparison`."""
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"),
                                 initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
            outputs = list(_tqdm(pool.map(_one, configs), len(configs), progress))
    else:
        outputs = [_one(c) for c in _tqdm(configs, len(configs), progress)]
    # run: the configuration's position in ``configs`` (two runs may share method and seed).
    # status: "diverged" for a run whose loss became NaN/inf (kept, shown, never averaged in).
    history = pd.concat([o[0].assign(run=i, status=run_status(o[2]))
                         for i, o in enumerate(outputs)], ignore_index=True)
    rows = pd.concat([o[1].assign(run=i) for i, o in enumerate(outputs)], ignore_index=True)
    finals = []
    for cfg, (_, _, summary) in zip(configs, outputs):
        accs = summary["modality_accuracy"]
        finals.append({
            "method": cfg.method, "seed": cfg.seed, "status": run_status(summary),
            "diverged_round": diverged_round(summary), "accuracy": summary["accuracy"],
            "consensus_accuracy": summary["consensus_accuracy"],
            **{f"acc_{v}": a for v, a in accs.items()},
            "weakest_view_accuracy": weakest(accs.values()),
            **_validation_columns(summary.get("validation")),
            "energy_used_j": summary["energy_used_j"],
            "executed_energy_j": summary["executed_energy_j"],
            "battery_total_j": summary["battery_total_j"],
            "sim_time_s": summary["sim_time_s"],  # simulated clock (learner/clock.py)
            "dropped": len(summary["dropped_devices"]),
            "depleted": len(summary.get("depleted_devices", [])),  # ran out for good
            "policy_time_s": summary["policy_time_s"], "train_time_s": summary["train_time_s"],
        })
    return history, rows, pd.DataFrame(finals)


def _validation_columns(val: dict[str, Any] | None) -> dict[str, float]:
    """The final validation metrics as val_* columns (none without a validation split)."""
    if not val:
        return {}
    accs = val["modality_accuracy"]
    return {"val_accuracy": val["accuracy"], "val_consensus_accuracy": val["consensus_accuracy"],
            **{f"val_acc_{v}": a for v, a in accs.items()},
            "val_weakest_view_accuracy": weakest(accs.values())}


def _tqdm(it: Any, total: int, enabled: bool) -> Any:
    bar = progress(total, "runs", "run", enabled)
    for item in it:
        yield item
        bar.update(1)
    bar.close()


def final_table(finals: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds per method (strings, for printing).

    Diverged runs are left out of the means: ``seeds`` counts the runs averaged, ``status``
    says how many diverged and on which seeds.
    """
    cols = [c for c in finals.columns
            if c not in ("method", "seed", "dropped", "depleted", *STATUS_COLUMNS)]
    out = []
    for method, group in finals.groupby("method", sort=False):
        good = usable(group)
        bad = group[diverged_mask(group)]
        row: dict[str, Any] = {"method": method, "seeds": len(good)}
        if "status" in finals:
            row["status"] = "ok" if bad.empty else \
                f"{len(bad)} diverged (seed {', '.join(str(s) for s in bad['seed'])})"
        for c in cols:
            if good.empty:
                row[c] = "n/a"
                continue
            mean, std = good[c].mean(), good[c].std(ddof=0)
            row[c] = f"{mean:.4f} ± {std:.4f}" if "acc" in c else f"{mean:.3g} ± {std:.2g}"
        out.append(row)
    return pd.DataFrame(out)


HEADLINE_METRICS = ("weakest_view_accuracy", "consensus_accuracy", "accuracy")


def mean_interval(d: NDArray[np.float64], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of the finite values of ``d`` (paired differences over seeds) and its Student-t
    interval: (mean, low, high); the interval is nan with fewer than two values."""
    from scipy import stats

    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    mean = float(d.mean()) if d.size else float("nan")
    if d.size < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + confidence / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size))
    return mean, mean - half, mean + half


def paired_differences(finals: pd.DataFrame, reference: str = "dmml-kd",
                       confidence: float = 0.95) -> pd.DataFrame:
    """Every method against ``reference``, seed by seed, for every numeric metric.

    Columns: method, reference, metric, mean_diff (mean over seeds of method - reference on
    the same seed), ci_low, ci_high (Student-t interval of that mean; nan with one seed),
    seeds (how many seeds both ran).
    """
    if reference not in set(finals["method"]):
        raise StudyError(f"reference method {reference!r} is not among the compared methods")
    # A diverged run has no result: the pairs of its seed are left out (counted in `seeds`).
    finals = usable(finals)
    metrics = [c for c in finals.columns if c not in ("method", "seed", *STATUS_COLUMNS)
               and pd.api.types.is_numeric_dtype(finals[c])]
    ref = finals[finals["method"] == reference].set_index("seed")
    out = []
    for method, group in finals.groupby("method", sort=False):
        if method == reference:
            continue
        g = group.set_index("seed")
        seeds = g.index.intersection(ref.index)
        for metric in metrics:
            d = (g.loc[seeds, metric] - ref.loc[seeds, metric]).to_numpy(float)
            mean, low, high = mean_interval(d, confidence)
            out.append({"method": method, "reference": reference, "metric": metric,
                        "mean_diff": mean, "ci_low": low, "ci_high": high,
                        "seeds": int(np.isfinite(d).sum())})
    return pd.DataFrame(out, columns=["method", "reference", "metric", "mean_diff", "ci_low",
                                      "ci_high", "seeds"])


def paired_table(paired: pd.DataFrame, metrics: tuple[str, ...] = HEADLINE_METRICS) -> pd.DataFrame:
    """Paired deltas of the headline metrics as strings: 'mean [low, high]' (points x 100)."""
    rows = []
    for method, group in paired.groupby("method", sort=False):
        g = group.set_index("metric")
        row = {"method": f"{method} - {group['reference'].iloc[0]}",
               "seeds": int(g["seeds"].max())}
        for m in metrics:
            if m in g.index:
                r = g.loc[m]
                row[m] = f"{100 * r.mean_diff:+.1f} [{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def plot_comparison(history: pd.DataFrame, rows: pd.DataFrame, out: Path, views: list[str]) -> list[Path]:
    """Accuracy, weakest view and energy left vs round (mean and band over seeds), tau heatmap.

    Paper-ready in the shared style: labelled axes with units, one colour, marker and dash per
    method, whole-number round ticks, one legend under the panels that says what line and band
    are. Diverged runs (``status`` column) are left out and counted in the legend title.
    """
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    plt = style.apply()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    left_out = 0
    if "status" in history:
        left_out = int(history.loc[diverged_mask(history), ["method", "seed"]]
                       .drop_duplicates().shape[0])
        history = usable(history)
    history = history.copy()
    acc_cols = [f"acc_{v}" for v in views if f"acc_{v}" in history]
    weakest_col = history[acc_cols].mean().idxmin() if acc_cols and not history.empty else None
    panels = [("consensus_accuracy", "consensus model, all views"),
              ("accuracy", "device models, own views")]
    if weakest_col:
        panels.append((weakest_col, f"weakest view ({weakest_col[4:]}) alone"))
    panels.append(("energy_left_j", "batteries"))
    methods = style.ordered(history["method"]) if "method" in history else []
    markers, dashes = style.line_styles(methods)
    kw: dict[str, Any] = {"hue": "method", "hue_order": methods, "palette": style.colours(methods),
                          "style": "method", "style_order": methods, "markers": markers,
                          "dashes": dashes, "markevery": max(1, history["round"].nunique() // 10)
                          if "round" in history else 1}
    seeds = history["seed"].nunique() if "seed" in history else 1
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 2.9), squeeze=False)
    for ax, (col, title) in zip(axes[0], panels):
        if col in history and not history.empty:
            sns.lineplot(data=history, x="round", y=col, errorbar="sd", ax=ax, **kw)
        ax.set_title(title)
        ax.set_xlabel(style.label("round"))
        ax.set_ylabel(style.label(col))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    caption = f"method (line: mean over {seeds} seed{'s' if seeds != 1 else ''}; band: ± 1 sd)"
    if left_out:
        caption += f"; {left_out} diverged run{'s' if left_out != 1 else ''} left out"
    style.legend_below(fig, axes[0], caption, ncol=min(len(methods), 4) or 1)
    paths.append(style.save(fig, out / "curves.png"))
    balanced = rows[rows["method"] == "dmml-kd-balance"]
    if not balanced.empty:
        table = balanced[balanced["tau"] > 0].pivot_table(index="device", columns="modality",
                                                          values="tau", aggfunc="mean")
        table = table.reindex(sorted(table.index, key=lambda d: int(d[3:])))
        fig, ax = plt.subplots(figsize=(2.2 + 0.9 * table.shape[1], 1.2 + 0.4 * table.shape[0]))
        vmin, vmax = style.colour_limits(table.to_numpy())  # from 0: small spreads look small
        sns.heatmap(table, annot=True, fmt=".1f", cmap="viridis", ax=ax, vmin=vmin, vmax=vmax,
                    cbar_kws={"label": r"mean $\tau$ per round"})
        ax.set_title("dmml-kd-balance: local iterations")
        fig.tight_layout()
        paths.append(style.save(fig, out / "tau_heatmap.png"))
    return paths


def write_comparison(out_dir: Path, base: TrainConfig, methods: list[str], seeds: list[int],
                     history: pd.DataFrame, rows: pd.DataFrame, finals: pd.DataFrame,
                     reference: str | None = "dmml-kd") -> str:
    """Write tables, figures and the config atomically; return the Markdown final table (and
    the paired deltas against ``reference``, when it is among the methods)."""

    paired = paired_differences(finals, reference) \
        if reference is not None and reference in methods and len(methods) > 1 else None
    with atomic_dir(out_dir) as tmp:
        spec = {"compare": {"methods": methods, "seeds": seeds}, "train": base.to_dict()}
        (tmp / "config.toml").write_text(tomli_w.dumps(spec))
        history.to_parquet(tmp / "history.parquet", index=False)
        rows.to_parquet(tmp / "rows.parquet", index=False)
        finals.to_csv(tmp / "final.csv", index=False)
        table = to_markdown(final_table(finals))
        gone = describe(finals, ["method"])
        if gone:
            table += ("\n\nDiverged runs (loss NaN/inf; left out of the means, the paired "
                      "differences and the curves):\n\n" + "\n".join(f"- {g}" for g in gone))
        (tmp / "final.md").write_text(table + "\n")
        if paired is not None:
            paired.to_csv(tmp / "paired.csv", index=False)
            deltas = to_markdown(paired_table(paired))
            table += (f"\n\nPaired differences against {reference} (points, mean over seeds "
                      f"[95% CI]):\n\n{deltas}")
        views = [c[4:] for c in finals.columns if c.startswith("acc_")]
        plot_comparison(history, rows, tmp / "figures", views)
    return table


def default_jobs() -> int:
    """Worker processes: the cores there are, at most 2 here."""
    return max(1, min(2, os.cpu_count() or 1))
