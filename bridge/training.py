"""One learning run with its outputs on disk: resolved config, tidy tables, summary.

The allocator-backed policy for ``dmml-kd-balance`` is wired here (the learner never imports
the allocator).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from dmmlkd.learner.config import TrainConfig
from dmmlkd.learner.loop import RunResult, run
from dmmlkd.learner.methods import get_method
from dmmlkd.userio import atomic_dir


def policy_for(config: TrainConfig) -> Any:
    """The allocation policy a method needs (None: the learner's uniform policy)."""
    if get_method(config.method).policy != "external":
        return None
    if config.method == "dmml-kd-balance-dvfs":  # tau and CPU level (issue 9): bridge/dvfs.py
        from dmmlkd.bridge.dvfs import DvfsAllocatorPolicy

        return DvfsAllocatorPolicy(options=config.allocator_options(),
                                   budget_rule=config.budget_rule)
    if config.method == "dmml-kd-fleet":  # horizon-aware allocator for fleets: bridge/fleet.py
        from dmmlkd.bridge.fleet import FleetAllocatorPolicy

        return FleetAllocatorPolicy(returns=config.fleet_returns, split=config.fleet_split,
                                    options=config.allocator_options())
    from dmmlkd.bridge.policies import AllocatorPolicy

    return AllocatorPolicy(options=config.allocator_options(), budget_rule=config.budget_rule)


def clean_summary(value: Any) -> Any:
    """A summary as JSON can hold it: NumPy scalars as Python numbers, nan and inf as None."""
    if isinstance(value, dict):
        return {k: clean_summary(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_summary(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_outputs(result: RunResult, config: TrainConfig, out_dir: Path) -> None:
    """Write config.toml, rounds.parquet, history.csv and summary.json atomically (all or none)."""
    with atomic_dir(out_dir) as tmp:
        (tmp / "config.toml").write_text(tomli_w.dumps({"train": config.to_dict()}))
        result.rows.to_parquet(tmp / "rounds.parquet", index=False)
        result.rounds.to_csv(tmp / "history.csv", index=False)
        (tmp / "summary.json").write_text(json.dumps(clean_summary(result.summary), indent=1))


def run_train(config: TrainConfig, out_dir: Path | str | None = None, progress: bool = True,
              policy: Any = None) -> dict[str, Any]:
    """Run one configuration; write its outputs when out_dir is given; return the summary."""
    config.validate()
    result = run(config, policy if policy is not None else policy_for(config), progress=progress)
    if out_dir is not None:
        write_outputs(result, config, Path(out_dir))
    return clean_summary(result.summary)


def run_train_full(config: TrainConfig, progress: bool = False) -> RunResult:
    """Run one configuration and return the full result (tables included)."""
    config.validate()
    return run(config, policy_for(config), progress=progress)
