"""One look for every figure (studies and compare): typeset symbols, units, vector output.

``apply()`` sets the matplotlib/seaborn style; ``save(fig, path)`` writes PNG, PDF and SVG side by
side; ``label(column)`` is the axis label of a result column with its unit; ``line_styles(names)``
gives each method its own marker and dash so lines that coincide (exact under heuristic) stay
visible, ``colours(names)`` its own hue; ``legend_below(fig, axes)`` draws one legend for a
figure, outside the data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

FORMATS = ("png", "pdf", "svg")
PNG_DPI = 150

# Result columns and factors -> axis labels with symbols (mathtext) and units.
LABELS: dict[str, str] = {
    "objective": "objective (higher is better)",
    "imbalance_network": r"network imbalance $G_{\max} / G_{\min}$",
    "imbalance_device_mean": r"mean device imbalance $P_{\max} / P_{\min}$",
    "energy_total_j": "energy used (J)",
    "total_time_s": "build + solve time (s)",
    "solve_time_s": "solve time (s)",
    "gap": "certified gap",
    "consensus_accuracy": "consensus accuracy",
    "accuracy": "device accuracy",
    "weakest_view_accuracy": "weakest view's unimodal accuracy",
    "energy_used_j": "energy used (J)",
    "energy_left_j": "energy left in all batteries (J)",
    "budget_scale": r"budget scale (× compute energy at mid-$\tau$)",
    "delta": r"imbalance weight $\delta$",
    "mu": r"overshoot penalty $\mu$",
    "epsilon": r"energy tie-break $\epsilon$",
    "speed_spread": "modality speed spread (decades)",
    "energy_spread": "cycles-per-sample spread (decades)",
    "missing_rate": "missing-view rate",
    "devices": "devices",
    "alpha": r"label skew $\alpha$ (Dirichlet)",
    "tau": r"local iterations $\tau$",
    "round": "round",
    "mu_star": r"$\mu^*$",
    "sigma": r"$\sigma$",
    "y": "$y$",
    "x1": "$x_1$", "x2": "$x_2$", "x3": "$x_3$",
}

# Factors -> short tick labels (bars of indices), where the long label would crowd the axis.
SHORT: dict[str, str] = {
    "budget_scale": "budget", "speed_spread": "speed spread", "energy_spread": "cycles spread",
    "missing_rate": "missing views", "delta": r"$\delta$", "mu": r"$\mu$",
    "epsilon": r"$\epsilon$", "x1": "$x_1$", "x2": "$x_2$", "x3": "$x_3$",
}

# Per method: marker and dash pattern, chosen so that coinciding lines stay distinguishable.
_MARKERS = ("o", "X", "s", "^", "D", "v", "P", "*")
_DASHES: tuple[Any, ...] = ("", (4, 2), (1, 1.5), (6, 2, 1, 2), (3, 1, 1, 1, 1, 1), (8, 3))
METHOD_ORDER = ("exact", "heuristic", "proportional", "uniform", "dpsgd", "dmml-kd", "ogm-ge",
                "dmml-kd-balance")


def apply() -> Any:
    """Set the shared style (Agg backend, embedded fonts, colour-blind palette); returns pyplot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper", palette="colorblind")
    plt.rcParams.update({
        "pdf.fonttype": 42,          # TrueType in PDFs: editable text, accepted by publishers
        "ps.fonttype": 42,
        "svg.fonttype": "none",      # text stays text in SVG
        "figure.dpi": 100,
        "savefig.bbox": "tight",
        "legend.frameon": False,
        "axes.titlesize": 9,
        "axes.labelsize": 9,
        "lines.markersize": 5,
    })
    return plt


def label(column: str) -> str:
    """Axis label (symbol and unit) of a column; its name with spaces when unknown."""
    if column not in LABELS and column.startswith("acc_"):  # one column per view of the data
        return f"unimodal accuracy of view {column[4:]}"
    return LABELS.get(column, column.replace("_", " "))


def short(column: str) -> str:
    """A factor's short name for tick labels and legends (its full label when none)."""
    return SHORT.get(column, label(column))


def ordered(names: Iterable[Any]) -> list[Any]:
    """Methods in the canonical order (known ones first), others after in their given order."""
    names = list(dict.fromkeys(names))
    known = [m for m in METHOD_ORDER if m in names]
    return known + [n for n in names if n not in known]


# Colour-blind palette indices in an order where neighbours differ in hue (blue, orange, green,
# pink, grey, sky blue, vermillion, brown): three methods never come out in three oranges.
_COLOUR_ORDER = (0, 1, 2, 4, 7, 9, 3, 5, 8, 6)


def colours(names: Sequence[Any]) -> dict[Any, Any]:
    """One distinct colour per name (the colour-blind palette, hues spread apart)."""
    import seaborn as sns

    palette = sns.color_palette("colorblind", 10)
    return {n: palette[_COLOUR_ORDER[i % len(_COLOUR_ORDER)]] for i, n in enumerate(names)}


def line_styles(names: Sequence[Any]) -> tuple[dict[Any, str], dict[Any, Any]]:
    """(markers, dashes) dicts for seaborn's `style=`: one distinct marker and dash per name."""
    markers = {n: _MARKERS[i % len(_MARKERS)] for i, n in enumerate(names)}
    dashes = {n: _DASHES[i % len(_DASHES)] for i, n in enumerate(names)}
    return markers, dashes


def hollow_markers(artists: Iterable[Any]) -> None:
    """Open markers edged in their line's colour: a circle under a cross stays visible."""
    from matplotlib.lines import Line2D

    for line in artists:
        if isinstance(line, Line2D) and line.get_marker() not in (None, "", "None"):
            line.set_markeredgecolor(line.get_color())
            line.set_markerfacecolor("none")
            line.set_markeredgewidth(1.1)
            line.set_markersize(6.5 if line.get_marker() == "o" else 5.0)


def legend_below(fig: Any, axes: Iterable[Any], title: str | None = None, ncol: int = 6) -> None:
    """Move the axes' legend entries into one figure legend under the plots (never over data)."""
    handles, labels = [], []
    axes = list(axes)
    for ax in axes:
        hollow_markers(ax.get_lines())
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    hollow_markers(handles)
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(len(labels), ncol), title=title, frameon=False)


def save(fig: Any, path: Path | str) -> Path:
    """Write the figure as PNG, PDF and SVG (same stem) and close it; returns the PNG path."""
    import matplotlib.pyplot as plt

    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    for fmt in FORMATS:
        target = path.with_suffix(f".{fmt}")
        kwargs = {"dpi": PNG_DPI} if fmt == "png" else {}
        fig.savefig(target, format=fmt, bbox_inches="tight", **kwargs)
    plt.close(fig)
    return path


def colour_limits(values: Any, anchor_zero: bool = True) -> tuple[float, float]:
    """(vmin, vmax) for a colour scale: from 0 for non-negative data, so small ranges look small."""
    import numpy as np

    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    if anchor_zero and lo >= 0:
        lo = 0.0
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi
