"""The ClientApp helper: a Flower node that trains dmmlkd's multimodal network on its partition.

`make_client_app(config)` returns a `flwr.clientapp.ClientApp` for a learner run configuration
(`TrainConfig`: data, views, partition, fleet, model and loss settings). Node
``partition-id`` k is device k of that run (`learner.loop.build`: the same partitions, view
availability and fleet as ``dmmlkd train``). It answers three messages:

* ``query.dmmlkd_profile``: its `NodeProfile` (views, energies, cycles, CPU levels, upload
  cost, battery, number of examples);
* ``train``: loads the global arrays, runs `learner.local.local_training` with the tau per
  modality in the message's ``dmmlkd`` ConfigRecord (absent, as under plain FedAvg: the
  config's ``local-iters`` or the run's ``local_iters`` on every held view), trains its
  generator copy for KD methods, and replies with its arrays and a MetricRecord:
  ``num-examples``, ``loss``, and per view ``forward-passes``, ``backward-passes`` and
  ``variation`` (the relative parameter variation per iteration, 0 where it did not train) —
  the server prices the passes it ran, not the ones it was asked for;
* ``evaluate``: the global model's fused accuracy on the test split from the views it holds.

A node keeps nothing between rounds (fresh optimiser momentum and generator moments each
round); its random streams are seeded from (seed, partition, round), so a run is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from dmmlkd.flower.model import accuracy, load_arrays, one_device, one_generator, to_arrays
from dmmlkd.flower.profile import (
    PROFILE_ACTION,
    PROFILE_KEY,
    NodeProfile,
    as_number,
    fleet_profiles,
)
from dmmlkd.flower.strategy import (
    BACKWARD_KEY,
    FORWARD_KEY,
    PLAN_KEY,
    TAU_PREFIX,
    VARIATION_KEY,
)
from dmmlkd.learner.config import TrainConfig
from dmmlkd.learner.generator import train_generator
from dmmlkd.learner.local import LocalData, Optimizer, local_training
from dmmlkd.learner.loop import Setup, Trainer, build, effective_dropout, torch_threads

LOCAL_ITERS_KEY = "local-iters"  # a plain strategy's uniform count (optional)


@dataclass
class Fleet:
    """A run's setup as every node of it sees it (built once per process)."""

    setup: Setup
    trainer: Trainer
    profiles: list[NodeProfile]

    @classmethod
    def create(cls, config: TrainConfig) -> Fleet:
        """Build the run (data, partitions, fleet, initial model) and every node's profile."""
        with torch_threads(config.threads):
            s = build(config)
            trainer = Trainer.create(s)
        profiles = fleet_profiles(s.profile, s.holds, list(s.data.views), s.battery_j,
                                  [p.size for p in s.parts])
        return cls(s, trainer, profiles)


def initial_arrays(fleet: Fleet) -> dict[str, np.ndarray]:
    """The run's common initial model (every device starts from it) as named arrays."""
    s = fleet.setup
    return to_arrays(one_device(s.net), list(s.data.views),
                     one_generator(s.generator) if s.generator is not None else None)


def array_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    """Named arrays as a Flower ArrayRecord (the names are FedAvg's aggregation keys)."""
    return ArrayRecord({name: Array(np.ascontiguousarray(a)) for name, a in arrays.items()})


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def node_tau(fleet: Fleet, k: int, content: RecordDict) -> np.ndarray:
    """The tau per view a train message asks device k for (held views only)."""
    s = fleet.setup
    views, holds = list(s.data.views), s.holds[k]
    plan = content.config_records.get(PLAN_KEY)
    if plan is None:  # a plain strategy: uniform local iterations
        configs = [c for name, c in content.config_records.items() if name != PLAN_KEY]
        uniform = next((c[LOCAL_ITERS_KEY] for c in configs if LOCAL_ITERS_KEY in c),
                       s.config.local_iters)
        return np.where(holds, int(as_number(uniform, LOCAL_ITERS_KEY)), 0).astype(np.int64)
    tau = np.array([int(as_number(plan.get(f"{TAU_PREFIX}{v}", 0), f"{TAU_PREFIX}{v}"))
                    for v in views], np.int64)
    if (tau < 0).any():
        raise ValueError(f"negative tau in the plan for device {k}: {tau.tolist()}")
    return np.where(holds, tau, 0)


def train_node(fleet: Fleet, k: int, content: RecordDict, server_round: int,
               ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Device k's local round from a train message's content: (arrays, metrics)."""
    s, config = fleet.setup, fleet.setup.config
    views = list(s.data.views)
    arrays = next(iter(content.array_records.values()))
    net = one_device(s.net)
    generator = one_generator(s.generator) if s.generator is not None else None
    load_arrays(net, views, {name: a.numpy() for name, a in arrays.items()}, generator)
    tau = node_tau(fleet, k, content)
    holds = s.holds[k:k + 1]
    data = LocalData.create([s.data.train[v] for v in views], s.data.train_labels, [s.parts[k]])
    rng = np.random.default_rng([config.seed, k, server_round])
    gen = torch.Generator().manual_seed(_seed(config.seed, k, server_round))
    active = np.ones(1, bool)
    with torch_threads(config.threads):
        local = local_training(net, data, tau[None], holds, active,
                               Optimizer(lr=config.lr, momentum=config.momentum), rng, gen,
                               config.batch_size, fleet.trainer.weights, generator,
                               modality_dropout=effective_dropout(s),
                               fusion_rule=config.fusion_rule)
        if generator is not None and tau.max() > 0:
            train_generator(generator, net.shared["wk"], net.shared["bk"],
                            np.zeros((1, 0), np.int64), active, config.generator_steps,
                            config.batch_size, config.generator_lr, gen)
    assert local.forward_passes is not None and local.backward_passes is not None
    metrics: dict[str, Any] = {
        "num-examples": int(s.parts[k].size),
        "loss": float(local.loss) if np.isfinite(local.loss) else 0.0,
        FORWARD_KEY: [int(x) for x in local.forward_passes[0]],
        BACKWARD_KEY: [int(x) for x in local.backward_passes[0]],
        VARIATION_KEY: [float(x) if np.isfinite(x) else 0.0 for x in local.variation[0]],
    }
    return to_arrays(net, views, generator), metrics


def make_client_app(config: TrainConfig | Callable[[Context], TrainConfig]) -> ClientApp:
    """A ClientApp whose node ``partition-id`` k is device k of the run ``config`` describes.

    ``config`` may be a function of the node's Context (a Flower app project reads the run
    from ``context.run_config``: `dmmlkd.flower.app.config_from_run_config`).
    """
    if isinstance(config, TrainConfig):
        config.validate()
    cache: dict[str, Fleet] = {}

    def run_config(context: Context) -> TrainConfig:
        return config if isinstance(config, TrainConfig) else config(context)

    def fleet(context: Context) -> Fleet:
        c = run_config(context)
        key = repr(sorted(c.to_dict().items()))
        if key not in cache:  # built on the first message of a run, once per process
            cache.clear()
            cache[key] = Fleet.create(c)
        return cache[key]

    def partition(context: Context) -> int:
        devices = run_config(context).devices
        k = int(as_number(context.node_config.get("partition-id", -1), "partition-id"))
        if not 0 <= k < devices:
            raise ValueError(f"node {context.node_id}: partition-id {k} is not a device of this "
                             f"run (0..{devices - 1})")
        return k

    app = ClientApp()

    @app.query(PROFILE_ACTION)
    def profile(msg: Message, context: Context) -> Message:
        record = ConfigRecord(fleet(context).profiles[partition(context)].to_config())
        return Message(RecordDict({PROFILE_KEY: record}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        server_round = int(as_number(next((c["server-round"] for c in
                                           msg.content.config_records.values()
                                           if "server-round" in c), 0), "server-round"))
        arrays, metrics = train_node(fleet(context), partition(context), msg.content, server_round)
        return Message(RecordDict({"arrays": array_record(arrays),
                                   "metrics": MetricRecord(metrics)}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        f, k = fleet(context), partition(context)
        s = f.setup
        net = one_device(s.net)
        arrays = next(iter(msg.content.array_records.values()))
        generator = one_generator(s.generator) if s.generator is not None else None
        load_arrays(net, list(s.data.views), {n: a.numpy() for n, a in arrays.items()}, generator)
        with torch_threads(s.config.threads):
            acc = accuracy(net, f.trainer.test_views, s.data.test_labels, s.holds[k])
        return Message(RecordDict({"metrics": MetricRecord({
            "num-examples": int(s.data.test_labels.size), "accuracy": acc})}), reply_to=msg)

    return app
