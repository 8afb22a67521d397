"""Study figures from results alone (seaborn): one PNG per question a reader would ask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from studies.spec import StudySpec

LABELS = {
    "objective": "objective (higher is better)",
    "imbalance_network": "network imbalance max/min G_m",
    "imbalance_device_mean": "mean device imbalance max/min P",
    "energy_total_j": "energy used (J)",
    "total_time_s": "build + solve time (s)",
    "gap": "certified gap",
    "consensus_accuracy": "consensus accuracy",
    "accuracy": "device accuracy",
    "weakest_view_accuracy": "weakest view's unimodal accuracy",
    "energy_used_j": "energy used (J)",
}


def _setup():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    return plt, sns


def _numeric_keys(spec: StudySpec) -> list[str]:
    return [k for k, v in spec.grid.items()
            if k != "method" and all(isinstance(x, (int, float)) for x in v) and len(v) > 1]


def draw(spec: StudySpec, results: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Redraw every figure of a study into out_dir/figures; returns the files."""
    fig_dir = Path(out_dir) / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    ok = results[results.get("status", "ok") != "error"] if "status" in results else results
    if ok.empty:
        return []
    if spec.kind == "morris":
        return _morris(ok, spec, fig_dir)
    if spec.kind == "train":
        return _train(ok, spec, fig_dir)
    return _solve(ok, spec, fig_dir)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _solve(df: pd.DataFrame, spec: StudySpec, fig_dir: Path) -> list[Path]:
    plt, sns = _setup()
    paths = []
    hue = "method" if "method" in df else None
    # A second categorical sweep (e.g. scope) gets its own line style rather than a blurred band.
    style = next((k for k, v in spec.grid.items()
                  if k not in ("method", "devices") and len(v) > 1
                  and not all(isinstance(x, (int, float)) for x in v)), None)
    for key in _numeric_keys(spec):
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        for ax, col in zip(axes, ("objective", "imbalance_network")):
            sns.lineplot(data=df, x=key, y=col, hue=hue, style=style, marker="o", errorbar="sd",
                         ax=ax)
            ax.set_ylabel(LABELS[col])
            ax.set_xlabel(key.replace("_", " "))
            if key == "devices":
                ax.set_xscale("log")
        axes[0].set_title(f"objective vs {key} (band: sd over seeds)")
        axes[1].set_title(f"imbalance vs {key}")
        paths.append(_save(fig, fig_dir / f"objective_imbalance_vs_{key}.png"))
    if "devices" in spec.grid and len(spec.grid["devices"]) > 1:
        fig, ax = plt.subplots(figsize=(4.8, 3.6))
        sns.lineplot(data=df, x="devices", y="total_time_s", hue=hue, style=style, marker="o",
                     errorbar="sd", ax=ax)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title("solve time vs devices")
        ax.set_ylabel(LABELS["total_time_s"])
        paths.append(_save(fig, fig_dir / "time_vs_devices.png"))
        if "method" in df and {"exact", "heuristic"} <= set(df["method"]):
            keys = [k for k in spec.grid if k != "method"] + ["seed"]
            ex = df[df["method"] == "exact"].set_index(keys)["objective"]
            he = df[df["method"] == "heuristic"].set_index(keys)
            gap = ((ex.reindex(he.index) - he["objective"]) / ex.reindex(he.index).abs())
            frame = he.assign(gap_to_exact=gap.to_numpy()).reset_index()
            fig, ax = plt.subplots(figsize=(4.8, 3.6))
            frame = frame.melt(id_vars=[c for c in frame.columns if c not in ("gap", "gap_to_exact")],
                               value_vars=["gap_to_exact", "gap"], var_name="measure",
                               value_name="relative gap")
            frame["measure"] = frame["measure"].map({"gap_to_exact": "below exact's objective",
                                                     "gap": "certified (own bound)"})
            sns.lineplot(data=frame, x="devices", y="relative gap", hue="measure", style=style,
                         marker="o", errorbar="sd", ax=ax)
            ax.set_xscale("log")
            ax.yaxis.set_major_formatter(plt.matplotlib.ticker.PercentFormatter(1.0))
            ax.set_title("heuristic gap vs devices")
            ax.set_ylabel("relative gap")
            paths.append(_save(fig, fig_dir / "heuristic_gap_vs_devices.png"))
    return paths


def _train(df: pd.DataFrame, spec: StudySpec, fig_dir: Path) -> list[Path]:
    plt, sns = _setup()
    paths = []
    keys = _numeric_keys(spec)
    cols = ["consensus_accuracy", "weakest_view_accuracy", "energy_used_j"]
    hue = "method" if "method" in df else None
    if len(keys) == 2:
        long = df.melt(id_vars=[*keys, "seed", *([hue] if hue else [])], value_vars=cols,
                       var_name="measure", value_name="value")
        grid = sns.relplot(data=long, x=keys[0], y="value", hue=hue, col="measure",
                           row=keys[1], kind="line", marker="o", errorbar="sd",
                           facet_kws={"sharey": False}, height=2.6)
        grid.figure.suptitle(f"train study: by {keys[0]} and {keys[1]}", y=1.02)
        grid.savefig(fig_dir / "train_facets.png", dpi=80)
        plt.close(grid.figure)
        return [fig_dir / "train_facets.png"]
    for key in keys:
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
        for ax, col in zip(axes, cols):
            sns.lineplot(data=df, x=key, y=col, hue=hue, marker="o", errorbar="sd", ax=ax)
            ax.set_ylabel(LABELS[col])
            ax.set_title(f"{LABELS[col]} vs {key}")
            if key == "alpha":
                ax.set_xscale("log")
        paths.append(_save(fig, fig_dir / f"train_vs_{key}.png"))
    return paths


def _morris(df: pd.DataFrame, spec: StudySpec, fig_dir: Path) -> list[Path]:
    from studies.morris import analyse

    plt, sns = _setup()
    indices = analyse(df, spec.morris)
    indices.to_parquet(fig_dir.parent / "morris.parquet", index=False)
    outputs = list(indices["output"].unique())
    fig, axes = plt.subplots(1, len(outputs), figsize=(4.2 * len(outputs), 3.4))
    for ax, out in zip(np.atleast_1d(axes), outputs):
        part = indices[indices["output"] == out].sort_values("mu_star", ascending=False)
        ax.barh(part["parameter"], part["mu_star"], xerr=part["sigma"], color="C0", alpha=0.8)
        ax.invert_yaxis()
        ax.set_title(f"Morris screening: {LABELS.get(out, out)}")
        ax.set_xlabel("mu* (bar) and sigma (whisker), per unit range")
    return [_save(fig, fig_dir / "morris.png")]
