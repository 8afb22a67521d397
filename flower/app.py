"""A whole Flower run of dmmlkd's learner: ServerApp, ClientApp, simulation engine, results.

`run_flower(config, policy)` runs ``config.rounds`` rounds of federated learning over
``config.devices`` nodes (the same data, partitions and fleet as ``dmmlkd train`` with this
config) with `AllocatorStrategy` around FedAvg, the policy deciding each node's work. The
engine is Flower's simulation (``backend="ray"``, `flwr.simulation.run_simulation`) or the
in-process `InlineGrid` (``backend="inline"``). The global model is evaluated on the test split
after every round (fused, and per view with the other views masked).
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from flwr.app import ArrayRecord, Context, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from dmmlkd.bridge.training import clean_summary
from dmmlkd.flower.client import Fleet, array_record, initial_arrays, make_client_app
from dmmlkd.flower.inline import InlineGrid
from dmmlkd.flower.model import accuracy, load_arrays, one_device, one_generator
from dmmlkd.flower.strategy import AllocatorStrategy
from dmmlkd.learner.config import TrainConfig
from dmmlkd.learner.loop import torch_threads
from dmmlkd.learner.policy import Policy
from dmmlkd.learner.schedules import uniform_dvfs_policy

BACKENDS = ("ray", "inline")


@dataclass
class FlowerResult:
    """A Flower run's ledger, per-round table, summary and final global model."""

    ledger: pd.DataFrame  # one row per round and node that trained (AllocatorStrategy.account)
    rounds: pd.DataFrame  # one row per round: test accuracies, energy, round time, clock
    summary: dict[str, Any]
    arrays: dict[str, np.ndarray]


def allocator_policy(config: TrainConfig) -> Policy:
    """The allocator with CPU levels and deadline, set from the run's allocator options."""
    from dmmlkd.bridge.dvfs import DvfsAllocatorPolicy

    return DvfsAllocatorPolicy(options=config.allocator_options(), budget_rule=config.budget_rule)


CONTROL_POLICY: Policy = uniform_dvfs_policy  # uniform tau, lowest CPU level meeting the deadline


def evaluate_global(fleet: Fleet, arrays: ArrayRecord) -> dict[str, float]:
    """Test accuracy of the global model: fused from all views, and from each view alone."""
    s = fleet.setup
    views = list(s.data.views)
    net = one_device(s.net)
    generator = one_generator(s.generator) if s.generator is not None else None
    load_arrays(net, views, {n: a.numpy() for n, a in arrays.items()}, generator)
    test, labels = fleet.trainer.test_views, s.data.test_labels
    with torch_threads(s.config.threads):
        out = {"accuracy": accuracy(net, test, labels)}
        for m, v in enumerate(views):
            out[f"acc_{v}"] = accuracy(net, test, labels, np.arange(len(views)) == m)
    return out


def make_strategy(config: TrainConfig, fleet: Fleet, policy: Policy,
                  fraction_train: float = 1.0) -> AllocatorStrategy:
    """AllocatorStrategy around FedAvg (no client-side evaluation: the server evaluates)."""
    K = config.devices
    inner = FedAvg(fraction_train=fraction_train, fraction_evaluate=0.0,
                   min_train_nodes=max(1, min(2, K)), min_available_nodes=K)
    return AllocatorStrategy(inner, policy, tau_min=config.tau_min, tau_max=config.tau_max,
                             local_iters=config.local_iters, deadline_s=fleet.setup.deadline_s,
                             speed_beta=config.speed_beta)


def serve(grid: Grid, config: TrainConfig, policy: Policy, fraction_train: float = 1.0,
          fleet: Fleet | None = None, backend: str = "") -> FlowerResult:
    """The ServerApp's work: AllocatorStrategy around FedAvg for ``config.rounds`` rounds on
    ``grid``, the global model evaluated on the test split after every round."""
    t0 = time.perf_counter()
    fleet = fleet if fleet is not None else Fleet.create(config)
    history: list[dict[str, Any]] = []

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        metrics = evaluate_global(fleet, arrays)
        history.append({"round": server_round, **metrics})
        return MetricRecord(metrics)  # type: ignore[arg-type]

    strategy = make_strategy(config, fleet, policy, fraction_train)
    result = strategy.start(grid, array_record(initial_arrays(fleet)), num_rounds=config.rounds,
                            evaluate_fn=evaluate_fn)
    final = {name: a.numpy() for name, a in result.arrays.items()}
    rounds = pd.DataFrame(history).merge(strategy.rounds(), on="round", how="left")
    last = history[-1]
    views = list(fleet.setup.data.views)
    summary = {
        "policy": getattr(policy, "__name__", type(policy).__name__), "backend": backend,
        "clients": config.devices, "rounds": config.rounds, "views": views,
        "dataset": config.dataset, "seed": config.seed, "fraction_train": fraction_train,
        "accuracy": last["accuracy"],
        "modality_accuracy": {v: last[f"acc_{v}"] for v in views},
        **strategy.totals(), "wall_time_s": time.perf_counter() - t0,
    }
    return FlowerResult(strategy.ledger(), rounds, summary, final)


def run_flower(config: TrainConfig, policy: Policy | None = None, backend: str = "ray",
               fraction_train: float = 1.0, workers: int | None = None,
               quiet: bool = False) -> FlowerResult:
    """Run the federated experiment in one engine; policy None: the allocator
    (`allocator_policy`). ``wall_time_s`` in the summary includes the engine's start."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)} (got {backend!r})")
    config.validate()
    t0 = time.perf_counter()
    policy = policy if policy is not None else allocator_policy(config)
    fleet = Fleet.create(config)
    client_app = make_client_app(config)
    holder: dict[str, FlowerResult] = {}

    def main(grid: Grid, context: Context) -> None:
        holder["result"] = serve(grid, config, policy, fraction_train, fleet, backend)

    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    if quiet:
        flwr_logger.setLevel(logging.WARNING)
    # Flower's FedAvg samples nodes with Python's global `random`: seed it for this run (and
    # put it back), so that an inline run with --fraction < 1 samples the same nodes each time.
    random_state = random.getstate()
    random.seed(config.seed)
    try:
        if backend == "inline":
            main(InlineGrid(client_app, config.devices),
                 Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={}))
        else:
            _simulate(main, client_app, config.devices, workers)
    finally:
        flwr_logger.setLevel(level)
        random.setstate(random_state)
    if "result" not in holder:
        raise RuntimeError("the Flower simulation ended without a result (see its log above)")
    result = holder["result"]
    result.summary["wall_time_s"] = time.perf_counter() - t0
    return result


# Run-config keys of a Flower app project (pyproject [tool.flwr.app.config]) that are not
# TrainConfig fields, and the Flower names of two that are.
APP_KEYS = ("policy", "fraction-train", "out")
RUN_CONFIG_NAMES = {"num-server-rounds": "rounds", "clients": "devices"}


def config_from_run_config(run_config: dict[str, Any]) -> TrainConfig:
    """The learner run a Flower app's run config describes: ``num-server-rounds``, ``clients``
    and any TrainConfig field with ``-`` for ``_`` (``views`` as a comma-separated string);
    the app's own keys (`APP_KEYS`) are skipped. ConfigError naming an unknown key."""
    from dmmlkd.learner.config import config_from_dict

    data: dict[str, Any] = {}
    for key, value in run_config.items():
        if key in APP_KEYS:
            continue
        name = RUN_CONFIG_NAMES.get(key, key.replace("-", "_"))
        if name == "views" and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        data[name] = value
    return config_from_dict(data, "run config")


def _simulate(main: Any, client_app: Any, num_nodes: int, workers: int | None) -> None:
    """Flower's simulation engine (Ray) with ``workers`` one-CPU actors (None: the cores)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports from workers
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from flwr.simulation import run_simulation

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n = max(1, min(workers or cores, num_nodes))
    server_app = ServerApp()
    server_app.main()(main)
    torch_threads_before = torch.get_num_threads()
    try:
        run_simulation(server_app, client_app, num_supernodes=num_nodes,
                       backend_config={"client_resources": {"num_cpus": 1},
                                       "init_args": {"num_cpus": n, "log_to_driver": False}})
    finally:
        torch.set_num_threads(torch_threads_before)


def compare_runs(config: TrainConfig, backend: str = "ray", fraction_train: float = 1.0,
                 workers: int | None = None, control: bool = True, quiet: bool = False,
                 ) -> dict[str, FlowerResult]:
    """The allocator's run and (``control``) the uniform control on the same fleet and energy."""
    runs = {"allocator": run_flower(config, allocator_policy(config), backend, fraction_train,
                                    workers, quiet)}
    if control:
        runs["uniform"] = run_flower(config, CONTROL_POLICY, backend, fraction_train, workers, quiet)
    return runs


def outputs_summary(runs: dict[str, FlowerResult]) -> dict[str, Any]:
    """summary.json: each run's summary, and the allocator minus the control where both ran."""
    out: dict[str, Any] = {name: r.summary for name, r in runs.items()}
    if "allocator" in runs and "uniform" in runs:
        a, u = runs["allocator"].summary, runs["uniform"].summary
        out["allocator_minus_uniform"] = {
            key: a[key] - u[key] for key in ("accuracy", "energy_used_j", "sim_time_s")}
    return clean_summary(out)


def write_outputs(runs: dict[str, FlowerResult], config: TrainConfig, options: dict[str, Any],
                  out_dir: str | os.PathLike[str]) -> None:
    """config.toml, summary.json, ledger.csv and history.csv (a ``run`` column in the tables),
    written all at once into a new, empty or dmmlkd-written folder (`userio.atomic_dir`)."""
    import json

    import tomli_w

    from dmmlkd.userio import atomic_dir

    ledger = pd.concat([r.ledger.assign(run=name) for name, r in runs.items()], ignore_index=True)
    history = pd.concat([r.rounds.assign(run=name) for name, r in runs.items()], ignore_index=True)
    first = ["run"]
    with atomic_dir(out_dir) as tmp:
        (tmp / "config.toml").write_text(tomli_w.dumps(
            {"train": config.to_dict(),
             "flower": {k: v for k, v in clean_summary(options).items() if v is not None}}))
        (tmp / "summary.json").write_text(json.dumps(outputs_summary(runs), indent=1) + "\n")
        ledger[first + [c for c in ledger.columns if c != "run"]].to_csv(tmp / "ledger.csv",
                                                                          index=False)
        history[first + [c for c in history.columns if c != "run"]].to_csv(tmp / "history.csv",
                                                                            index=False)
