"""What a study says: its sensitivity indices on disk, its figures, and a short report.md.

``finish_study(DIR)`` is what `dmmlkd study` does after the cells and what `dmmlkd plot` redoes:
indices (Morris: ``morris.parquet``/``morris.csv``; Sobol: ``indices.csv``, ``convergence.csv``,
``s2.csv``), the figures, and ``report.md`` (spec, the table of results or indices, figure links)
so a run can be pasted into a lab notebook.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from dmmlkd.studies.analysis import analyse
from dmmlkd.studies.diverged import describe, diverged_mask, usable
from dmmlkd.studies.spec import StudySpec
from dmmlkd.userio import atomic_write, atomic_write_text, to_markdown

GRID_OUTPUTS = {
    "solve": ("objective", "imbalance_network", "energy_total_j", "total_time_s"),
    "train": ("consensus_accuracy", "weakest_view_accuracy", "energy_used_j"),
}


def compact_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A spec as short TOML (inline arrays), for reading in a report; tables after their keys."""
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    out = [f"[{prefix}]"] + lines if prefix and lines else lines
    for key, value in tables:
        out += [""] if out else []
        out.append(compact_toml(value, f"{prefix}.{key}" if prefix else key))
    return "\n".join(out).strip()


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_tables(tables: dict[str, pd.DataFrame], out_dir: Path) -> list[Path]:
    """indices.csv / convergence.csv / s2.csv (Sobol) or morris.csv + morris.parquet."""
    paths = []
    for name, frame in tables.items():
        if name == "s2" and frame.empty:
            continue
        path = out_dir / f"{name}.csv"
        _write_csv(frame, path)
        paths.append(path)
        if name == "morris":  # kept for readers of earlier versions
            _write_parquet(frame, out_dir / "morris.parquet")
    return paths


def results_table(spec: StudySpec, results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd over seeds per grid cell of the main outputs (strings, for Markdown)."""
    ok = results[results["status"] != "error"] if "status" in results else results
    outputs = [c for c in GRID_OUTPUTS.get(spec.model, ()) if c in ok]
    keys = [k for k in spec.grid if k in ok]
    if ok.empty or not outputs:
        return pd.DataFrame()
    any_diverged = bool(diverged_mask(ok).any())
    groups = ok.groupby(keys, sort=False) if keys else [((), ok)]
    rows = []
    for key, part in groups:
        values = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, values))
        if any_diverged:  # diverged seeds are counted here and left out of the means
            bad = part[diverged_mask(part)]
            row["status"] = "ok" if bad.empty else \
                f"{len(bad)} diverged (seed {', '.join(str(s) for s in bad['seed'])})"
        part = usable(part)
        row["seeds"] = len(part)
        for c in outputs:
            mean, sd = part[c].mean(), part[c].std(ddof=0)
            row[c] = f"{mean:.4g} ± {sd:.2g}"
        rows.append(row)
    return pd.DataFrame(rows)


def _indices_table(spec: StudySpec, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    if spec.kind == "morris":
        frame = tables.get("morris", pd.DataFrame())
        cols = ["output", "parameter", "mu", "mu_star", "mu_star_conf", "sigma"]
    else:
        frame = tables.get("indices", pd.DataFrame())
        cols = ["output", "parameter", "S1", "S1_conf", "ST", "ST_conf"]
    return frame[cols] if not frame.empty else frame


def write_report(spec: StudySpec, results: pd.DataFrame, tables: dict[str, pd.DataFrame],
                 figures: list[Path], out_dir: Path) -> Path:
    """DIR/report.md: what was run, what came out, where the figures are."""

    failed = int((results["status"] == "error").sum()) if "status" in results else 0
    diverged = describe(results, list(spec.grid))
    lines = [f"# Study `{spec.name}` ({spec.kind})", "",
             f"{len(results)} cells ({failed} failed"
             f"{f', {len(diverged)} diverged' if diverged else ''}), seeds {spec.seeds}; "
             f"model: {spec.model}. "
             "Data: `results.parquet` (one row per cell), journal `cells.jsonl`.", "",
             "## Spec", "", "```toml", compact_toml(spec.raw), "```", ""]
    if spec.kind in ("morris", "sobol"):
        table = _indices_table(spec, tables)
        what = ("Morris indices: μ, μ* (± 95% bootstrap CI), σ per unit of each factor's range"
                if spec.kind == "morris" else
                "Sobol indices: first order S1 and total ST with 95% bootstrap CIs "
                f"(N = {spec.sobol.get('samples', 64)} base samples; `indices.csv`, "
                "convergence in `convergence.csv`)")
        lines += ["## Indices", "", what, ""]
    else:
        table = results_table(spec, results)
        lines += ["## Results", "", "Mean ± sd over seeds.", ""]
    lines += [to_markdown(table, ".3g") if not table.empty else "(no successful cell yet)", ""]
    if diverged:
        lines += ["## Diverged cells", "", "Training loss became NaN/inf: these cells are left "
                  "out of the means and the figures.", ""] + [f"- {d}" for d in diverged] + [""]
    if failed:
        errors = results.loc[results["status"] == "error", "error"].value_counts()
        lines += ["## Failed cells", ""] + [f"- {n} × {msg}" for msg, n in errors.items()] + [""]
    if figures:
        lines += ["## Figures", ""]
        for png in figures:
            rel = png.relative_to(out_dir).as_posix()
            stem = rel[: -len(".png")]
            lines += [f"![{png.stem}]({rel})", "",
                      f"[PDF]({stem}.pdf) · [SVG]({stem}.svg)", ""]
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def finish_study(out_dir: Path) -> tuple[list[Path], Path]:
    """Indices, figures and report.md of a study folder from its results; (figures, report)."""
    from dmmlkd.studies.plots import draw
    from dmmlkd.studies.runner import load_study

    out_dir = Path(out_dir)
    spec, results = load_study(out_dir)
    tables = analyse(spec, results)
    write_tables(tables, out_dir)
    figures = draw(spec, results, out_dir, tables)
    return figures, write_report(spec, results, tables, figures, out_dir)
