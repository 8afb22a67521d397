"""Study figures from results alone, in the shared style (studies.style): PNG + PDF + SVG each.

One figure per question a reader would ask: an output against a swept factor (one marker and
dash per method or solver, so coinciding lines stay visible), Morris μ*/σ, Sobol S1/ST with confidence
intervals and their convergence as the sample grows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dmmlkd.studies import style
from dmmlkd.studies.analysis import analyse
from dmmlkd.studies.diverged import usable
from dmmlkd.studies.spec import StudySpec


def _numeric_keys(spec: StudySpec) -> list[str]:
    return [k for k, v in spec.grid.items()
            if k not in ("method", "solver") and all(isinstance(x, (int, float)) for x in v) and len(v) > 1]


def draw(spec: StudySpec, results: pd.DataFrame, out_dir: Path,
         tables: dict[str, pd.DataFrame] | None = None) -> list[Path]:
    """Redraw every figure of a study into out_dir/figures; returns the PNG files.

    tables: the sensitivity analysis (studies.analysis.analyse) when already computed.
    Figures an earlier spec drew here and this one does not are removed (only files dmmlkd
    wrote and nobody changed since: the folder's manifest).
    """
    from dmmlkd.userio.outputs import keep_only

    fig_dir = Path(out_dir) / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    pngs = _draw(spec, results, fig_dir, tables)
    keep_only(fig_dir, [f for png in pngs for f in fig_dir.glob(f"{png.stem}.*")
                        if f.suffix.lstrip(".") in style.FORMATS])
    return pngs


def _draw(spec: StudySpec, results: pd.DataFrame, fig_dir: Path,
          tables: dict[str, pd.DataFrame] | None) -> list[Path]:
    ok = usable(results)  # failed and diverged cells have no numbers to draw
    if ok.empty:
        return []
    if spec.kind in ("morris", "sobol"):
        if tables is None:
            tables = analyse(spec, results)
        if spec.kind == "morris":
            return _morris(tables.get("morris", pd.DataFrame()), fig_dir)
        return _sobol(tables.get("indices", pd.DataFrame()),
                      tables.get("convergence", pd.DataFrame()), fig_dir)
    if spec.kind == "train":
        return _train(ok, spec, fig_dir)
    return _solve(ok, spec, fig_dir)


def _style_kwargs(df: pd.DataFrame, key: str) -> dict[str, Any]:
    """hue and style on the same column: every method (solver) has its colour, marker and dash."""
    if key not in df:
        return {"marker": "o"}
    names = style.ordered(df[key])
    markers, dashes = style.line_styles(names)
    return {"hue": key, "hue_order": names, "style": key, "style_order": names,
            "markers": markers, "dashes": dashes}


def _solve(df: pd.DataFrame, spec: StudySpec, fig_dir: Path) -> list[Path]:
    plt = style.apply()
    import seaborn as sns

    paths = []
    # A second categorical sweep (e.g. scope) gets its own panel row rather than a blurred band.
    facet = next((k for k, v in spec.grid.items()
                  if k not in ("solver", "devices") and len(v) > 1
                  and not all(isinstance(x, (int, float)) for x in v)), None)
    facet_values = list(dict.fromkeys(df[facet])) if facet else [None]
    kw = _style_kwargs(df, "solver")
    for key in _numeric_keys(spec):
        fig, axes = plt.subplots(len(facet_values), 2, figsize=(7.2, 2.8 * len(facet_values)),
                                 squeeze=False)
        for row, value in enumerate(facet_values):
            part = df if facet is None else df[df[facet] == value]
            for ax, col in zip(axes[row], ("objective", "imbalance_network")):
                sns.lineplot(data=part, x=key, y=col, errorbar="sd", ax=ax, **kw)
                ax.set_ylabel(style.label(col))
                ax.set_xlabel(style.label(key))
                if facet:
                    ax.set_title(f"{facet} = {value}")
                if key == "devices":
                    ax.set_xscale("log")
        fig.suptitle(f"{spec.name}: mean over {len(spec.seeds)} seeds (band: ± 1 sd)", fontsize=9)
        fig.tight_layout()
        style.legend_below(fig, axes.ravel(), "solver")
        paths.append(style.save(fig, fig_dir / f"objective_imbalance_vs_{key}.png"))
    if "devices" in spec.grid and len(spec.grid["devices"]) > 1:
        fig, axes = plt.subplots(1, len(facet_values), figsize=(3.6 * len(facet_values), 3.0),
                                 squeeze=False)
        for ax, value in zip(axes[0], facet_values):
            part = df if facet is None else df[df[facet] == value]
            sns.lineplot(data=part, x="devices", y="total_time_s", errorbar="sd", ax=ax, **kw)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_ylabel(style.label("total_time_s"))
            ax.set_title(f"{facet} = {value}" if facet else "solve time")
        fig.tight_layout()
        style.legend_below(fig, axes.ravel(), "solver")
        paths.append(style.save(fig, fig_dir / "time_vs_devices.png"))
        if "solver" in df and {"exact", "heuristic"} <= set(df["solver"]):
            paths.append(_heuristic_gap(df, spec, facet, fig_dir))
    return paths


def _heuristic_gap(df: pd.DataFrame, spec: StudySpec, facet: str | None, fig_dir: Path) -> Path:
    plt = style.apply()
    import seaborn as sns

    keys = [k for k in spec.grid if k != "solver"] + ["seed"]
    ex = df[df["solver"] == "exact"].set_index(keys)["objective"]
    he = df[df["solver"] == "heuristic"].set_index(keys)
    gap = (ex.reindex(he.index) - he["objective"]) / ex.reindex(he.index).abs()
    frame = he.assign(gap_to_exact=gap.to_numpy()).reset_index()
    frame = frame.melt(id_vars=[c for c in frame.columns if c not in ("gap", "gap_to_exact")],
                       value_vars=["gap_to_exact", "gap"], var_name="measure",
                       value_name="relative gap")
    frame["measure"] = frame["measure"].map({"gap_to_exact": "below exact's objective",
                                             "gap": "certified (own bound)"})
    fig, ax = plt.subplots(figsize=(4.4, 3.2))
    kw = _style_kwargs(frame, "measure")
    if facet:
        kw = {**kw, "style": facet, "style_order": list(dict.fromkeys(frame[facet])),
              "markers": True, "dashes": True}
    sns.lineplot(data=frame, x="devices", y="relative gap", errorbar="sd", ax=ax, **kw)
    ax.set_xscale("log")
    ax.yaxis.set_major_formatter(plt.matplotlib.ticker.PercentFormatter(1.0))
    ax.set_title("heuristic: gap vs devices")
    ax.set_xlabel(style.label("devices"))
    fig.tight_layout()
    style.legend_below(fig, [ax])
    return style.save(fig, fig_dir / "heuristic_gap_vs_devices.png")


def _train(df: pd.DataFrame, spec: StudySpec, fig_dir: Path) -> list[Path]:
    plt = style.apply()
    import seaborn as sns

    paths = []
    keys = _numeric_keys(spec)
    cols = ["consensus_accuracy", "weakest_view_accuracy", "energy_used_j"]
    if not keys:  # only names swept (e.g. method): one marker per name, mean ± sd over seeds
        return _train_by_name(df, spec, cols, fig_dir)
    kw = _style_kwargs(df, "method")
    rows = keys[1:2] if len(keys) == 2 else [None]
    for key in keys[:1] if len(keys) == 2 else keys:
        row_values = list(dict.fromkeys(df[rows[0]])) if rows[0] else [None]
        fig, axes = plt.subplots(len(row_values), 3, figsize=(10, 2.8 * len(row_values)),
                                 squeeze=False)
        for r, value in enumerate(row_values):
            part = df if value is None else df[df[rows[0]] == value]
            for ax, col in zip(axes[r], cols):
                sns.lineplot(data=part, x=key, y=col, errorbar="sd", ax=ax, **kw)
                ax.set_ylabel(style.label(col))
                ax.set_xlabel(style.label(key))
                if value is not None:
                    ax.set_title(f"{style.label(str(rows[0]))} = {value}")
                if key == "alpha":
                    ax.set_xscale("log")
        fig.tight_layout()
        style.legend_below(fig, axes.ravel(), "method")
        name = "train_facets.png" if rows[0] else f"train_vs_{key}.png"
        paths.append(style.save(fig, fig_dir / name))
    return paths


def _train_by_name(df: pd.DataFrame, spec: StudySpec, cols: list[str],
                   fig_dir: Path) -> list[Path]:
    """A train study sweeping only categorical options: each output per value of the first."""
    key = next((k for k, v in spec.grid.items() if len(v) > 1 and k in df), None)
    if key is None:
        return []
    plt = style.apply()
    names = style.ordered(df[key])
    markers, _ = style.line_styles(names)
    colours = style.colours(names)
    fig, axes = plt.subplots(1, len(cols), figsize=(3.4 * len(cols), 3.0), squeeze=False)
    for ax, col in zip(axes[0], cols):
        if col not in df:
            continue
        grouped = df.groupby(key, sort=False)[col]
        stats = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=0),
                              "count": grouped.count()}).reindex(names)
        for i, name in enumerate(names):
            ax.errorbar([i], [stats.loc[name, "mean"]],
                        yerr=[0.0 if stats.loc[name, "count"] < 2 else stats.loc[name, "std"]],
                        fmt=markers[name], color=colours[name], capsize=4, markersize=7,
                        label=str(name))
        ax.set_xticks(range(len(names)), [str(n) for n in names], rotation=30, ha="right")
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_xlabel(style.label(key))
        ax.set_ylabel(style.label(col))
    fig.tight_layout()
    seeds = df["seed"].nunique() if "seed" in df else 1
    style.legend_below(fig, axes[0], f"{style.label(key)} (marker: mean over {seeds} seeds; "
                       "bar: ± 1 sd)", ncol=4)
    return [style.save(fig, fig_dir / f"train_by_{key}.png")]


def _panels(n: int, width: float = 3.6, height: float = 3.0) -> tuple[Any, np.ndarray]:
    plt = style.apply()
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, axes[0]


def _morris(indices: pd.DataFrame, fig_dir: Path) -> list[Path]:
    if indices.empty:
        return []
    outputs = list(dict.fromkeys(indices["output"]))
    fig, axes = _panels(len(outputs), 3.8, 0.6 + 0.45 * indices["parameter"].nunique())
    for ax, out in zip(axes, outputs):
        part = indices[indices["output"] == out].sort_values("mu_star", ascending=True)
        ypos = np.arange(len(part))
        ax.barh(ypos, part["mu_star"], xerr=part["mu_star_conf"], color="C0", alpha=0.85,
                height=0.6, capsize=3, label=r"$\mu^*$ (95% bootstrap CI)")
        ax.plot(part["sigma"], ypos, "D", color="C3", markersize=5, label=r"$\sigma$")
        ax.set_yticks(ypos, [style.short(p) for p in part["parameter"]])
        ax.set_xlim(left=0)
        ax.set_title(style.label(out))
        ax.set_xlabel(r"$\mu^*$, $\sigma$ (output units per full range)")
    fig.tight_layout()
    style.legend_below(fig, axes)
    return [style.save(fig, fig_dir / "morris.png")]


def _sobol(indices: pd.DataFrame, trend: pd.DataFrame, fig_dir: Path) -> list[Path]:
    if indices.empty:
        return []
    paths = []
    outputs = list(dict.fromkeys(indices["output"]))
    fig, axes = _panels(len(outputs), 3.6, 3.0)
    for ax, out in zip(axes, outputs):
        part = indices[indices["output"] == out]
        x = np.arange(len(part))
        ax.bar(x - 0.18, part["S1"], 0.36, yerr=part["S1_conf"], capsize=3, color="C0",
               label="first order $S_1$")
        ax.bar(x + 0.18, part["ST"], 0.36, yerr=part["ST_conf"], capsize=3, color="C1",
               hatch="//", edgecolor="white", label="total $S_T$")
        ax.set_xticks(x, [style.short(p) for p in part["parameter"]])
        ax.set_ylim(min(0.0, float((part[["S1", "ST"]].to_numpy()
                                    - part[["S1_conf", "ST_conf"]].to_numpy()).min()) - 0.02),
                    max(1.0, float((part["ST"] + part["ST_conf"]).max()) + 0.02))
        ax.axhline(0, color="0.3", linewidth=0.6)
        ax.set_ylabel("Sobol index (share of variance)")
        ax.set_title(style.label(out))
    fig.tight_layout()
    style.legend_below(fig, axes, "bars: index; whiskers: 95% bootstrap CI")
    paths.append(style.save(fig, fig_dir / "sobol_indices.png"))
    if not trend.empty and trend["N"].nunique() > 1:
        params = list(dict.fromkeys(trend["parameter"]))
        markers, _ = style.line_styles(params)
        fig, axes = _panels(len(outputs), 3.6, 3.0)
        for ax, out in zip(axes, outputs):
            part = trend[trend["output"] == out]
            for i, p in enumerate(params):
                line = part[part["parameter"] == p].sort_values("N")
                for col, dash, alpha in (("S1", "-", 1.0), ("ST", "--", 0.8)):
                    ax.plot(line["N"], line[col], dash, marker=markers[p], color=f"C{i}",
                            alpha=alpha, label=f"{col[0]}$_{{{col[1]}}}$ {style.short(p)}")
                    ax.fill_between(line["N"], line[col] - line[f"{col}_conf"],
                                    line[col] + line[f"{col}_conf"], color=f"C{i}", alpha=0.12)
            ax.set_xscale("log", base=2)
            low, high = ax.get_ylim()  # early CIs can be huge: keep the indices' range readable
            ax.set_ylim(max(low, -0.5), min(high, 1.5))
            ax.set_xlabel("base samples N")
            ax.set_ylabel("Sobol index")
            ax.set_title(style.label(out))
        fig.tight_layout()
        style.legend_below(fig, axes, "solid: $S_1$, dashed: $S_T$; band: 95% CI (clipped to "
                           "[-0.5, 1.5])", ncol=2 * len(params) if len(params) <= 3 else 4)
        paths.append(style.save(fig, fig_dir / "sobol_convergence.png"))
    return paths
