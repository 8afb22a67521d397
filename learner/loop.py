"""The round loop: policy -> local training -> speeds -> energy -> gossip -> generator -> log.

Reads like DESIGN.md's pseudo-code; the details are one call away. The allocation policy is
any callable from a `RoundState` to a `PolicyDecision` (or a (K, M) array of counts).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from learner.config import TrainConfig
from learner.data import MultiViewDataset, load_dataset
from learner.energy import EnergyProfile, make_profile
from learner.errors import ConfigError
from learner.generator import Generator, train_generator
from learner.gossip import metropolis_weights
from learner.local import LocalData, LossWeights, Optimizer, local_training, ogm_ge_modulation
from learner.methods import MethodSpec, get_method
from learner.models import Network, predict
from learner.partition import dirichlet_partition, modality_availability
from learner.topology import Topology, make_topology
from metrics.accuracy import accuracy
from metrics.balance import balance
from metrics.variation import SpeedTracker


@dataclass
class RoundState:
    """What a policy sees at the start of a round."""

    round: int
    rounds_total: int
    devices: list[str]
    modalities: list[str]
    holds: NDArray[np.bool_]
    speed: NDArray[np.float64]
    battery_j: NDArray[np.float64]
    forward_j: NDArray[np.float64]
    backward_j: NDArray[np.float64]
    comm_j: NDArray[np.float64]
    active: NDArray[np.bool_]
    adjacency: NDArray[np.bool_]
    tau_min: int
    tau_max: int
    local_iters: int
    last_tau: NDArray[np.int64]


@dataclass
class PolicyDecision:
    """A policy's answer: counts per device and modality, what to log, who it left out."""

    tau: NDArray[np.int64]
    info: dict[str, Any] = field(default_factory=dict)
    dropped: list[int] = field(default_factory=list)


Policy = Callable[[RoundState], Any]


def uniform_policy(state: RoundState) -> PolicyDecision:
    """Same tau (local_iters) on every held modality, lowered per device as its battery allows."""
    holds = state.holds & state.active[:, None]
    per_iter = np.where(holds, state.forward_j + state.backward_j, 0.0).sum(axis=1)
    # A relative tolerance: a battery sized for exactly k rounds must pay the k-th in full.
    affordable = np.floor((state.battery_j * (1 + 1e-9) - state.comm_j) / np.maximum(per_iter, 1e-300))
    t = np.minimum(state.local_iters, affordable)
    dropped = [int(k) for k in np.flatnonzero(state.active & (t < state.tau_min))]
    t = np.where(t >= state.tau_min, t, 0)
    return PolicyDecision(np.where(holds, t[:, None], 0).astype(np.int64), {"policy": "uniform"},
                          dropped)


@dataclass
class Setup:
    """Everything built once before the first round."""

    config: TrainConfig
    method: MethodSpec
    data: MultiViewDataset
    parts: list[NDArray[np.int64]]
    holds: NDArray[np.bool_]
    topology: Topology
    net: Network
    generator: Generator | None
    profile: EnergyProfile
    battery_j: NDArray[np.float64]


def build(config: TrainConfig) -> Setup:
    """Data, partitions, availability, topology, models and energy profile of a run."""
    config.validate()
    method = get_method(config.method)
    data = load_dataset(config.dataset, config.views, seed=config.seed, n_samples=config.n_samples,
                        dims=config.synthetic_dims, signal=config.synthetic_signal,
                        noise=config.synthetic_noise) if config.dataset == "synthetic" else \
        load_dataset(config.dataset, config.views, seed=config.seed)
    K = config.devices
    parts = dirichlet_partition(data.train_labels, K, config.alpha, config.min_samples, config.seed)
    mode = config.availability
    if mode == "auto":
        mode = "random" if config.missing_rate > 0 else "all"
    holds = modality_availability(K, data.views, mode, config.missing_rate, config.pattern,
                                  config.seed)
    topology = make_topology(config.topology, K, config.seed)
    net = Network.create(K, [data.dims[v] for v in data.views], data.n_classes, config.hidden,
                         config.embed, config.feature, config.seed)
    generator = Generator.create(K, data.n_classes, config.feature, seed=config.seed) \
        if method.kd else None
    profile = make_profile(holds, net.block_sizes(), net.shared_size(), topology,
                           config.batch_size, config.seed)
    if config.battery_j is not None:
        battery = np.full(K, float(config.battery_j))
    else:
        # Exactly what uniform local_iters costs over all rounds, so every method gets the
        # same energy and uniform spends all of it.
        uniform = profile.round_cost(np.where(holds, config.local_iters, 0), holds)
        battery = config.battery_scale * config.rounds * uniform
    return Setup(config, method, data, parts, holds, topology, net, generator, profile, battery)


@dataclass
class RunResult:
    """Tidy logs of a run and its summary."""

    rows: pd.DataFrame  # one row per round x device x modality
    rounds: pd.DataFrame  # one row per round
    summary: dict[str, Any]
    setup: Setup


def run(config: TrainConfig, policy: Policy | None = None, progress: bool = True) -> RunResult:
    """Train for config.rounds rounds with the given allocation policy."""
    t_start = time.perf_counter()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    s = build(config)
    if s.method.policy == "external" and policy is None:
        raise ConfigError(f"method {config.method!r} needs an allocation policy")
    policy = policy or uniform_policy
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    K, M = s.holds.shape
    views, names = list(s.data.views), [f"dev{k}" for k in range(K)]
    local_data = LocalData.create([s.data.train[v] for v in views], s.data.train_labels, s.parts)
    test_views = [torch.as_tensor(s.data.test[v]) for v in views]
    weights = LossWeights(*(w if s.method.decomposition else 0.0 for w in
                            (config.w_difference, config.w_similarity, config.w_common)),
                          kd=config.w_kd if s.method.kd else 0.0)
    modulation = ogm_ge_modulation(config.ogm_alpha) if s.method.modulation == "ogm-ge" else None
    opt = Optimizer(lr=config.lr, momentum=config.momentum)
    tracker = SpeedTracker(K, M, beta=config.speed_beta)
    battery = s.battery_j.copy()
    active = np.ones(K, bool)
    last_tau = np.zeros((K, M), np.int64)
    rows, round_rows, drops = [], [], []
    policy_s = train_s = 0.0
    bar = _progress(config.rounds, progress)
    for t in range(config.rounds):
        speed_before = tracker.speed(s.holds)
        state = RoundState(t, config.rounds, names, views, s.holds, speed_before, battery.copy(),
                           s.profile.forward_j, s.profile.backward_j, s.profile.comm_j,
                           active.copy(), s.topology.adjacency, config.tau_min, config.tau_max,
                           config.local_iters, last_tau.copy())
        t0 = time.perf_counter()
        decision = _as_decision(policy(state))                      # tau = policy(state)
        policy_s += time.perf_counter() - t0
        tau = np.where(s.holds & active[:, None], decision.tau, 0).astype(np.int64)
        cost = s.profile.round_cost(tau, s.holds)
        broke = active & (tau.max(axis=1) > 0) & (cost > battery * (1 + 1e-9))
        for k in set(decision.dropped) | set(np.flatnonzero(broke).tolist()):
            if active[k]:
                active[k] = False
                reason = "policy: cannot pay the cheapest round" if k in decision.dropped \
                    else f"round cost {cost[k]:.4g} J exceeds battery {battery[k]:.4g} J"
                drops.append({"round": t, "device": names[k], "reason": reason})
        tau[~active] = 0
        cost = s.profile.round_cost(tau, s.holds)
        t0 = time.perf_counter()
        local = local_training(s.net, local_data, tau, s.holds, active, opt, rng, gen,  # deltas
                               config.batch_size, weights, s.generator, modulation,
                               ge_noise=modulation is not None,
                               modality_dropout=config.modality_dropout)
        tracker.update(local.variation)                            # v -> state for next round
        battery = battery - np.where(active, cost, 0.0)            # energy: compute + comm
        _gossip(s, active)                                         # modality-wise consensus
        if s.generator is not None and active.any():               # KD generator
            train_generator(s.generator, s.net.shared["wk"], s.net.shared["bk"],
                            s.topology.adjacency, active, config.generator_steps,
                            config.batch_size, config.generator_lr, gen)
            _gossip_tensors(list(s.generator.params.values()),
                            metropolis_weights(s.topology.adjacency, active))
        train_s += time.perf_counter() - t0
        evals = evaluate(s, active, test_views)                     # log
        last_tau = tau
        b = balance(speed_before, s.holds)
        for k in range(K):
            for m in range(M):
                if not s.holds[k, m]:
                    continue
                rows.append({
                    "round": t, "device": names[k], "modality": views[m], "tau": int(tau[k, m]),
                    "v": local.variation[k, m], "speed": speed_before[k, m], "b": b[k, m],
                    "predicted_progress": speed_before[k, m] * tau[k, m],
                    "realised_progress": (local.variation[k, m] * tau[k, m]
                                          if tau[k, m] > 0 else 0.0),
                    "energy_j": cost[k] if active[k] else 0.0, "battery_j": battery[k],
                    "active": bool(active[k]), "device_accuracy": evals["device"][k],
                })
        info = {k: v for k, v in decision.info.items() if np.isscalar(v)}
        round_rows.append({
            "round": t, "accuracy": evals["accuracy"], "consensus_accuracy": evals["consensus"],
            **{f"acc_{v}": evals["modality"][v] for v in views},
            "loss": local.loss, "active_devices": int(active.sum()),
            "energy_used_j": float((s.battery_j - battery).sum()),
            "energy_left_j": float(battery.sum()),
            "policy_time_s": policy_s, "train_time_s": train_s, **info,
        })
        bar(t, evals["accuracy"], float((s.battery_j - battery).sum()))
    bar(None, 0.0, 0.0)
    final = round_rows[-1]
    summary = {
        "method": config.method, "rounds": config.rounds, "dataset": config.dataset,
        "views": views, "devices": K, "seed": config.seed,
        "accuracy": final["accuracy"], "consensus_accuracy": final["consensus_accuracy"],
        "modality_accuracy": {v: final[f"acc_{v}"] for v in views},
        "energy_used_j": final["energy_used_j"], "battery_total_j": float(s.battery_j.sum()),
        "dropped_devices": drops, "wall_time_s": time.perf_counter() - t_start,
        "policy_time_s": policy_s, "train_time_s": train_s,
    }
    return RunResult(pd.DataFrame(rows), pd.DataFrame(round_rows), summary, s)


def _as_decision(out: Any) -> PolicyDecision:
    if isinstance(out, PolicyDecision):
        return out
    if hasattr(out, "tau"):
        return PolicyDecision(np.asarray(out.tau), dict(getattr(out, "info", {})),
                              list(getattr(out, "dropped", [])))
    return PolicyDecision(np.asarray(out, dtype=np.int64))


def _gossip_tensors(tensors: list[torch.Tensor], weights: NDArray[np.float64]) -> None:
    w = torch.as_tensor(weights, dtype=torch.float32)
    with torch.no_grad():
        for p in tensors:
            p.copy_((w @ p.reshape(p.shape[0], -1)).reshape(p.shape))


def _gossip(s: Setup, active: NDArray[np.bool_]) -> None:
    """Each modality block among its active holders; shared blocks among all active devices."""
    adj = s.topology.adjacency
    for m, block in enumerate(s.net.blocks):
        _gossip_tensors(list(block.values()), metropolis_weights(adj, s.holds[:, m] & active))
    _gossip_tensors(list(s.net.shared.values()), metropolis_weights(adj, active))


def consensus_network(s: Setup, active: NDArray[np.bool_]) -> Network:
    """The modality-wise network average: each block over its (active) holders, shared over all."""
    def mean(t: torch.Tensor, rows: NDArray[np.bool_]) -> torch.Tensor:
        rows = rows if rows.any() else np.ones_like(rows)
        return t.detach()[torch.as_tensor(rows)].mean(0, keepdim=True)

    blocks = [{k: mean(t, s.holds[:, m] & active if (s.holds[:, m] & active).any()
                       else s.holds[:, m]) for k, t in b.items()}
              for m, b in enumerate(s.net.blocks)]
    shared = {k: mean(t, active) for k, t in s.net.shared.items()}
    return Network(blocks, shared, s.net.n_classes, s.net.feature)


def evaluate(s: Setup, active: NDArray[np.bool_], test_views: list[torch.Tensor]) -> dict[str, Any]:
    """Device accuracy (own model, own views), consensus accuracy, unimodal accuracies."""
    y = s.data.test_labels
    logits = predict(s.net, test_views, torch.as_tensor(s.holds))
    device = np.array([accuracy(logits[k], y) for k in range(s.holds.shape[0])])
    consensus = consensus_network(s, active)
    M = s.holds.shape[1]
    acc_all = accuracy(predict(consensus, test_views, torch.ones(1, M, dtype=torch.bool))[0], y)
    modality = {}
    for m, v in enumerate(s.data.views):
        only = torch.zeros(1, M, dtype=torch.bool)
        only[0, m] = True
        modality[v] = accuracy(predict(consensus, test_views, only)[0], y)
    return {"device": np.where(active, device, np.nan),
            "accuracy": float(device[active].mean()) if active.any() else float("nan"),
            "consensus": acc_all, "modality": modality}


def _progress(total: int, enabled: bool) -> Callable[[int | None, float, float], None]:
    if not enabled:
        return lambda *_: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc="rounds", unit="round", leave=False)

    def update(t: int | None, acc: float, energy: float) -> None:
        if t is None:
            bar.close()
            return
        bar.set_postfix(acc=f"{acc:.3f}", energy_j=f"{energy:.3g}")
        bar.update(1)

    return update
