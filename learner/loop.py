"""The round loop: policy -> local training -> speeds -> energy -> gossip -> generator -> log.

Reads like DESIGN.md's pseudo-code; the details are one call away. The allocation policy is
any `Policy`: a callable from a `RoundState` to a `PolicyDecision` (or a (K, M) array of counts).
Energy is charged from the policy's tau (`EnergyProfile.round_cost`) and, independently,
derived from the passes local training executed (`EnergyProfile.executed_cost`); both are logged
(`energy_used_j`, `executed_energy_j`) and must agree.

This is the only round loop: a run in one process and a run over N processes (`--nproc`,
torchrun) differ only in the communication backend `run` is given (learner/comm.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from dmmlkd.learner import clock
from dmmlkd.learner.comm import Backend, Comm, InProcess, in_process, local_table, whole
from dmmlkd.learner.config import TrainConfig
from dmmlkd.learner.data import MultiViewDataset, load_dataset
from dmmlkd.learner.energy import EnergyProfile, make_profile
from dmmlkd.learner.errors import ConfigError
from dmmlkd.learner.evaluate import eval_devices, evaluate
from dmmlkd.learner.fleet import Fleet, fleet_battery_rank, make_fleet, place_views
from dmmlkd.learner.generator import Generator, train_generator
from dmmlkd.learner.gossip import gossip_rows, mixing
from dmmlkd.learner.local import (
    LocalData,
    LocalResult,
    LossWeights,
    Modulation,
    Optimizer,
    local_training,
    mean_loss,
    ogm_ge_modulation,
)
from dmmlkd.learner.methods import MethodSpec, get_method
from dmmlkd.learner.models import Network
from dmmlkd.learner.partition import dirichlet_partition, modality_availability
from dmmlkd.learner.policy import Policy, PolicyDecision, RoundState, as_decision
from dmmlkd.learner.schedules import (
    RandomSchedule,
    uniform_dvfs_policy,
    uniform_pacing_policy,
    uniform_policy,
)
from dmmlkd.learner.topology import Topology, make_topology
from dmmlkd.metrics.balance import balance
from dmmlkd.metrics.energy import fits_budget
from dmmlkd.metrics.variation import SpeedTracker
from dmmlkd.userio import progress


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
    deadline_s: float | None = None  # the round deadline (learner/clock.py), None: no deadline
    fleet: Fleet = field(default_factory=lambda: Fleet("uniform"))  # learner/fleet.py


def build(config: TrainConfig) -> Setup:
    """Data, partitions, availability, topology, models and energy profile of a run."""
    config.validate()
    method = get_method(config.method)
    synthetic: dict[str, Any] = {"n_samples": config.n_samples, "dims": config.synthetic_dims,
                 "signal": config.synthetic_signal, "noise": config.synthetic_noise}
    data = load_dataset(config.dataset, config.views, seed=config.seed,
                        val_fraction=config.val_fraction,
                        **(synthetic if config.dataset == "synthetic" else {}))
    K = config.devices
    parts = dirichlet_partition(data.train_labels, K, config.alpha, config.min_samples, config.seed)
    mode = config.availability
    if mode == "auto":
        mode = "random" if config.missing_rate > 0 else "all"
    holds = modality_availability(K, data.views, mode, config.missing_rate, config.pattern,
                                  config.seed)
    fleet = make_fleet(config.fleet, K, config.rounds, config.seed, config.fleet_churn)
    holds = place_views(holds, fleet_battery_rank(fleet, K), config.fleet_placement)
    topology = make_topology(config.topology, K, config.seed, p=config.topology_p,
                             radius_m=config.topology_radius_m)
    encoders = config.encoders or {}
    for v in encoders:
        if v not in data.views:
            raise ConfigError(f"encoders names view {v!r}, which this run does not use "
                              f"(views: {', '.join(data.views)})")
    net = Network.create(K, [data.shapes[v] for v in data.views], data.n_classes, config.hidden,
                         config.embed, config.feature, config.seed,
                         encoders=[encoders.get(v, "auto") for v in data.views], views=data.views)
    generator = Generator.create(K, data.n_classes, config.feature, seed=config.seed) \
        if method.kd else None
    profile = make_profile(holds, net.block_sizes(), net.shared_size(), topology,
                           config.batch_size, config.seed, fusion_rule=config.fusion_rule,
                           block_cycles=net.block_cycles(), cpu_levels=config.cpu_levels,
                           cpu_hz=fleet.cpu_hz, distance_m=fleet.distance_m,
                           bandwidths_hz=fleet.bandwidth_hz)
    if config.battery_j is not None:
        battery = np.full(K, float(config.battery_j))
    elif fleet.battery_j is not None:
        battery = config.battery_scale * fleet.battery_j
    else:
        # Exactly what uniform local_iters costs over all rounds, so every method gets the
        # same energy and uniform spends all of it (a longtail fleet: a drawn multiple of it).
        uniform = profile.round_cost(np.where(holds, config.local_iters, 0), holds)
        battery = config.battery_scale * config.rounds * uniform
        if fleet.battery_factor is not None:
            battery = battery * fleet.battery_factor
    uniform_time = clock.round_time_s(
        profile.device_time_s(np.where(holds, config.local_iters, 0), holds), holds.any(axis=1))
    return Setup(config, method, data, parts, holds, topology, net, generator, profile, battery,
                 clock.resolve_deadline(config.deadline, uniform_time), fleet)


@dataclass
class RunResult:
    """Tidy logs of a run and its summary."""

    rows: pd.DataFrame  # one row per round x device x modality
    rounds: pd.DataFrame  # one row per round
    summary: dict[str, Any]
    setup: Setup


def run(config: TrainConfig, policy: Policy | None = None, progress: bool = True,
        backend: Backend = in_process) -> RunResult:
    """Train for config.rounds rounds, asking ``policy`` for the iteration table every round.

    The one round loop, for every method and every way of running it: ``backend``
    (learner/comm.py) gives this process its `Comm`, how it reaches the devices it does not
    own (`in_process`: it owns all of them; `learner.distributed.GlooComm`: a block of them).
    Under several processes every one returns the same tables; the policy runs on the root.
    """
    t_start = time.perf_counter()
    with torch_threads(config.threads):  # tiny matrices: one thread is fastest (and reproducible)
        s = build(config)
        comm = backend(s.topology.neighbor_table)
        if s.method.policy == "external" and policy is None:
            raise ConfigError(f"method {config.method!r} needs an allocation policy")
        if policy is None and s.method.policy == "random":
            policy = RandomSchedule(config.schedule_spread, config.seed)
        policy = policy or {"uniform-dvfs": uniform_dvfs_policy,
                            "uniform-pacing": uniform_pacing_policy}.get(s.method.policy,
                                                                         uniform_policy)
        trainer = Trainer.create(s, comm)
        battery, active = s.battery_j.copy(), np.ones(s.holds.shape[0], bool)
        last_tau = np.zeros(s.holds.shape, np.int64)
        log = RunLog(s)
        bar = _progress(config.rounds, progress and comm.root)
        for t in range(config.rounds):
            log.drop(t, active, _cannot_pay_cheapest_round(s, battery, active))  # reported, not silent
            # active: not run out (for good); on: active and present this round (fleet churn).
            on = active & s.fleet.present_in(t, active.size)
            speed = trainer.tracker.speed(s.holds)
            answer = comm.broadcast(_ask(policy, s, t, speed, battery, on, last_tau)
                                    if comm.root else None)      # tau = policy(state)
            if answer is None:
                raise RuntimeError("the root process sent no policy decision")
            decision, log.policy_s_round = answer
            log.policy_s += log.policy_s_round
            log.drop(t, active, {k: "policy: cannot pay the cheapest round" for k in decision.dropped})
            on &= active
            tau = np.where(s.holds & on[:, None], decision.tau, 0).astype(np.int64)
            cpu = clock.check_cpu_hz(decision.cpu_hz, s.profile.levels_hz())  # None: f_max
            log.drop(t, active, _overspending(s, tau, battery, on, cpu), depleted=False)
            on &= active
            tau[~on] = 0
            cost = np.where(on, s.profile.round_cost(tau, s.holds, cpu), 0.0)
            t0 = time.perf_counter()
            local = trainer.local_training(tau, on)                 # deltas, per-modality tau
            trainer.tracker.update(trainer.signal(local))           # v -> speeds for next round
            battery = battery - cost                                # energy: compute + comm
            # A device that trains this round also broadcasts (and pays for) its model; an
            # active device given no iterations sits the round out entirely.
            talking = on & (tau.max(axis=1) > 0)
            trainer.gossip(talking)                                 # modality-wise consensus
            trainer.update_generator(talking)                       # KD: train + gossip G
            log.train_s_round = time.perf_counter() - t0
            log.train_s += log.train_s_round
            executed = s.profile.executed_cost(local.forward_passes, local.backward_passes, talking,
                                                cpu)
            # Once every device has run out, the models stay as they last trained: report the
            # last evaluated ones (the devices active until then), never nan.
            shown = log.evaluated_devices(active)
            log.record(t, decision, tau, speed, local, cost, executed, battery, on,
                       trainer.evaluate(shown, trainer.test_views, s.data.test_labels,
                                        eval_devices(config, t, shown)))
            log.record_clock(cpu, s.profile.device_time_s(tau, s.holds, cpu), on)
            log.record_fleet(t, active, on)
            last_tau = tau
            bar(t, log.last["accuracy"], log.last["energy_used_j"])
            if tau.any() and not np.isfinite(local.loss):  # diverged: stop here, say so
                log.diverged(t, local.loss)
                break
        bar(None, 0.0, 0.0)
        if s.data.val_labels.size:  # what settings are tuned on (never the test split)
            shown = log.evaluated_devices(active)
            log.validation = trainer.evaluate(shown, trainer.val_views, s.data.val_labels,
                                              eval_devices(config, config.rounds - 1, shown))
        return log.result(time.perf_counter() - t_start)


def _ask(policy: Policy, s: Setup, t: int, speed: NDArray[np.float64],
         battery: NDArray[np.float64], active: NDArray[np.bool_],
         last_tau: NDArray[np.int64]) -> tuple[PolicyDecision, float]:
    """The policy's decision for round t (tau = policy(state)) and the seconds it took."""
    state = round_state(s, t, speed, battery, active, last_tau)
    t0 = time.perf_counter()
    decision = as_decision(policy(state))
    return decision, time.perf_counter() - t0


def effective_dropout(s: Setup) -> float:
    """Modality dropout of a run: as configured; else dropout_rate for a method built on
    dropout; else 0.3 when some device misses a view and 0 when every device holds every view."""
    if s.config.modality_dropout is not None:
        return float(s.config.modality_dropout)
    if s.method.dropout:
        return float(s.config.dropout_rate)
    return 0.0 if s.holds.all() else 0.3


@dataclass
class Trainer:
    """The training machinery of a process: its block of the network and generator, the data
    as tensors, optimiser, random streams, speeds, and the backend reaching the other blocks."""

    setup: Setup  # the run (s.net and s.generator: this process's block of devices)
    comm: Comm
    data: LocalData
    test_views: list[torch.Tensor]
    val_views: list[torch.Tensor]
    weights: LossWeights
    modulation: Modulation | None
    opt: Optimizer
    tracker: SpeedTracker  # every device's speeds (the same on every process)
    rng: np.random.Generator  # mini-batch sampling, modality dropout
    gen: torch.Generator  # generator noise, OGM-GE noise

    @classmethod
    def create(cls, s: Setup, comm: Comm | None = None) -> Trainer:
        """Seeded from the config: the same seed gives the same run. Under a backend that owns
        a block of the devices, ``s.net`` and ``s.generator`` are cut to that block."""
        config, views = s.config, list(s.data.views)
        method = s.method
        comm = comm or InProcess(s.holds.shape[0])
        if not whole(comm):  # the full network is not kept: only this block's rows live on
            s.net, s.generator = _block_of(s, comm.lo, comm.hi)
        weights = LossWeights(
            difference=config.w_difference if method.decomposition else 0.0,
            similarity=config.w_similarity if method.decomposition else 0.0,
            common=config.w_common if method.decomposition else 0.0,
            kd=config.w_kd if method.kd else 0.0)
        modulation = ogm_ge_modulation(config.ogm_alpha) if method.modulation == "ogm-ge" else None
        return cls(s, comm,
                   LocalData.create([s.data.train[v] for v in views], s.data.train_labels,
                                    s.parts[comm.lo:comm.hi]),
                   [torch.as_tensor(s.data.test[v]) for v in views],
                   [torch.as_tensor(s.data.val[v]) for v in views], weights, modulation,
                   Optimizer(lr=config.lr, momentum=config.momentum),
                   SpeedTracker(s.holds.shape[0], s.holds.shape[1], beta=config.speed_beta),
                   np.random.default_rng(config.seed), torch.Generator().manual_seed(config.seed))

    def signal(self, local: LocalResult) -> NDArray[np.float64]:
        """The balance signal of a round (config.signal): what the speed tracker smooths."""
        if self.setup.config.signal == "confidence" and local.confidence is not None:
            return local.confidence
        return local.variation

    def local_training(self, tau: NDArray[np.int64], active: NDArray[np.bool_]) -> LocalResult:
        """Every active device's L_k local iterations with per-modality counts tau; what they
        measured, gathered over the processes (per device: every device's rows)."""
        s, comm = self.setup, self.comm
        local = local_training(s.net, self.data, tau, s.holds, active, self.opt, self.rng, self.gen,
                               s.config.batch_size, self.weights, s.generator, self.modulation,
                               ge_noise=self.modulation is not None,
                               modality_dropout=effective_dropout(s),
                               fusion_rule=s.config.fusion_rule,
                               rows=None if whole(comm) else (comm.lo, comm.hi))
        device_loss = comm.gather(_required(local.device_loss))
        return LocalResult(
            [], [], comm.gather(local.variation),
            mean_loss(device_loss, np.where(s.holds & active[:, None], tau, 0).max(axis=1)),
            forward_passes=_gather_optional(comm, local.forward_passes),
            backward_passes=_gather_optional(comm, local.backward_passes),
            confidence=_gather_optional(comm, local.confidence), device_loss=device_loss)

    def gossip(self, active: NDArray[np.bool_]) -> None:
        """Each modality block among its active holders; shared blocks among all active devices."""
        s = self.setup
        for m, block in enumerate(s.net.blocks):
            self._gossip(list(block.values()), s.holds[:, m] & active)
        self._gossip(list(s.net.shared.values()), active)

    def update_generator(self, active: NDArray[np.bool_]) -> None:
        """Train each active device's generator against its and its neighbours' common
        classifiers, then gossip-average the copies among active devices."""
        s, comm = self.setup, self.comm
        if s.generator is None or not active.any():
            return
        table = s.topology.neighbor_table
        train_generator(s.generator, comm.exchange(s.net.shared["wk"]),
                        comm.exchange(s.net.shared["bk"]), local_table(comm, table),
                        active[comm.ids], s.config.generator_steps, s.config.batch_size,
                        s.config.generator_lr, self.gen, own=np.arange(comm.hi - comm.lo))
        self._gossip(list(s.generator.params.values()), active)

    def evaluate(self, active: NDArray[np.bool_], views: list[torch.Tensor],
                 labels: NDArray[np.int64], devices: NDArray[np.int64]) -> dict[str, Any]:
        """learner.evaluate.evaluate over this run's processes."""
        return evaluate(self.setup, active, views, labels, devices=devices, comm=self.comm)

    def _gossip(self, tensors: list[torch.Tensor], mask: NDArray[np.bool_]) -> None:
        """One gossip step among the devices ``mask`` on each stacked tensor, in place: each
        device's sum in the same order whichever process computes it."""
        comm = self.comm
        mix = mixing(self.setup.topology.neighbor_table, mask)
        with torch.no_grad():
            for p in tensors:
                p.copy_(gossip_rows(p.detach(), mix, slice(comm.lo, comm.hi), comm.exchange(p),
                                    comm.index))


def _required(value: NDArray[Any] | None) -> NDArray[Any]:
    if value is None:
        raise ValueError("local training returned no per-device losses")
    return value


def _gather_optional(comm: Comm, block: NDArray[Any] | None) -> NDArray[Any] | None:
    """comm.gather, or None when local training did not measure it (the same everywhere)."""
    return None if block is None else comm.gather(block)


def _block_of(s: Setup, lo: int, hi: int) -> tuple[Network, Generator | None]:
    """Rows lo..hi-1 of the run's network and generator (a process's block of devices)."""
    def cut(t: torch.Tensor) -> torch.Tensor:
        return t.detach()[lo:hi].clone().requires_grad_(True)

    net = Network([{k: cut(t) for k, t in b.items()} for b in s.net.blocks],
                  {k: cut(t) for k, t in s.net.shared.items()}, s.net.n_classes, s.net.feature,
                  s.net.encoders)
    gen = None
    if s.generator is not None:
        gen = Generator({k: cut(t) for k, t in s.generator.params.items()}, s.generator.n_classes,
                        s.generator.noise_dim, layout=(lo, s.holds.shape[0]))
    return net, gen


def round_state(s: Setup, t: int, speed: NDArray[np.float64], battery: NDArray[np.float64],
                active: NDArray[np.bool_], last_tau: NDArray[np.int64]) -> RoundState:
    """What the policy sees at the start of round t (copies: a policy cannot change the run)."""
    c = s.config
    return RoundState(
        round=t, rounds_total=c.rounds, devices=[f"dev{k}" for k in range(s.holds.shape[0])],
        modalities=list(s.data.views), holds=s.holds.copy(), speed=speed.copy(),
        battery_j=battery.copy(), active=active.copy(), adjacency=s.topology.sparse_adjacency(),
        tau_min=c.tau_min, tau_max=c.tau_max, local_iters=c.local_iters, last_tau=last_tau.copy(),
        deadline_s=s.deadline_s, **s.profile.planning_fields())


def _cannot_pay_cheapest_round(s: Setup, battery: NDArray[np.float64],
                               active: NDArray[np.bool_]) -> dict[int, str]:
    """Active devices whose battery cannot pay tau_min on their modalities plus communication."""
    cheapest = s.profile.cheapest_round(s.holds, s.config.tau_min)
    broke = active & ~fits_budget(cheapest, battery)
    return {int(k): f"battery {battery[k]:.4g} J cannot pay the cheapest round "
                    f"(tau_min {s.config.tau_min}: {cheapest[k]:.4g} J)" for k in np.flatnonzero(broke)}


def _overspending(s: Setup, tau: NDArray[np.int64], battery: NDArray[np.float64],
                  active: NDArray[np.bool_], cpu_hz: NDArray[np.float64] | None = None,
                  ) -> dict[int, str]:
    """Active devices given a tau their battery cannot pay (a policy's mistake, reported)."""
    cost = s.profile.round_cost(tau, s.holds, cpu_hz)
    broke = active & (tau.max(axis=1) > 0) & ~fits_budget(cost, battery)
    return {int(k): f"policy's tau costs {cost[k]:.4g} J, battery has {battery[k]:.4g} J"
            for k in np.flatnonzero(broke)}


class RunLog:
    """Tidy logs: one row per round x device x modality, one per round, and drop-outs."""

    def __init__(self, s: Setup) -> None:
        self.setup = s
        self.rows: list[dict[str, Any]] = []
        self.round_rows: list[dict[str, Any]] = []
        self.drops: list[dict[str, Any]] = []
        self.policy_s = 0.0  # cumulative
        self.train_s = 0.0
        self.policy_s_round = 0.0  # this round's
        self.train_s_round = 0.0
        self.executed_j = np.zeros(s.holds.shape[0])  # cumulative, from executed passes
        self.validation: dict[str, Any] | None = None  # final evaluation on the validation split
        self.sim_time_s = 0.0  # simulated clock (learner/clock.py)
        self.last_active = np.ones(s.holds.shape[0], bool)  # see evaluated_devices
        self.all_out_round: int | None = None  # first round with every device run out
        self.deadline_misses = 0
        self.divergence: dict[str, Any] | None = None  # set when the loss became nan or inf

    def diverged(self, t: int, loss: float) -> None:
        """Mark the run as diverged in round t (the loop stops after this round)."""
        self.divergence = {
            "diverged_round": t,
            "reason": f"method {self.setup.config.method!r} diverged in round {t}: the training "
                      f"loss became {loss} (training stopped there)"}

    @property
    def last(self) -> dict[str, Any]:
        """The latest per-round row."""
        return self.round_rows[-1]

    def drop(self, t: int, active: NDArray[np.bool_], reasons: dict[int, str],
             depleted: bool = True) -> None:
        """Deactivate devices for good, logging round and reason (``depleted``: the battery
        cannot pay the cheapest round, rather than a policy overspending)."""
        for k, reason in sorted(reasons.items()):
            if active[k]:
                active[k] = False
                self.drops.append({"round": t, "device": f"dev{k}", "reason": reason,
                                   "depleted": depleted})

    def evaluated_devices(self, active: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """The devices whose models are evaluated: the active ones; once none is left, those
        active when the last one ran out (their models have not changed since)."""
        if active.any():
            self.last_active = active.copy()
            return active
        if self.all_out_round is None:
            self.all_out_round = len(self.round_rows)
        return self.last_active

    def record_fleet(self, t: int, active: NDArray[np.bool_], on: NDArray[np.bool_]) -> None:
        """Round t's fleet columns: devices present (and active) and devices run out so far."""
        self.last.update(present_devices=int(on.sum()),
                         depleted_devices=sum(1 for d in self.drops if d["depleted"]))

    def record(self, t: int, decision: PolicyDecision, tau: NDArray[np.int64],
               speed: NDArray[np.float64], local: LocalResult, cost: NDArray[np.float64],
               executed: NDArray[np.float64], battery: NDArray[np.float64],
               active: NDArray[np.bool_], evals: dict[str, Any]) -> None:
        """Append round t's rows."""
        s = self.setup
        views = list(s.data.views)
        b = balance(speed, s.holds)
        self.executed_j += executed
        predicted = speed * tau if decision.predicted_progress is None else \
            np.asarray(decision.predicted_progress, float)
        if predicted.shape != tau.shape:
            raise ValueError(f"policy's predicted_progress has shape {predicted.shape}, "
                             f"expected {tau.shape}")
        fwd, bwd = local.forward_passes, local.backward_passes
        for k, m in zip(*np.nonzero(s.holds)):
            v = local.variation[k, m]
            self.rows.append({
                "round": t, "device": f"dev{k}", "modality": views[m], "tau": int(tau[k, m]),
                "v": v, "confidence": local.confidence[k, m] if local.confidence is not None
                else np.nan, "speed": speed[k, m], "b": b[k, m],
                "predicted_progress": predicted[k, m],
                "realised_progress": v * tau[k, m] if tau[k, m] > 0 else 0.0,
                "forward_passes": int(fwd[k, m]) if fwd is not None else 0,
                "backward_passes": int(bwd[k, m]) if bwd is not None else 0,
                "energy_j": cost[k], "executed_energy_j": executed[k],
                "battery_j": battery[k], "active": bool(active[k]),
                "device_accuracy": evals["device"][k],
            })
        row = {
            "round": t, "accuracy": evals["accuracy"], "consensus_accuracy": evals["consensus"],
            **{f"acc_{v}": evals["modality"][v] for v in views},
            "loss": local.loss, "active_devices": int(active.sum()),
            "evaluated_devices": evals["evaluated"],
            "energy_used_j": float((s.battery_j - battery).sum()), "energy_left_j": float(battery.sum()),
            "executed_energy_j": float(self.executed_j.sum()),
            "policy_time_s": self.policy_s_round, "train_time_s": self.train_s_round,
        }
        for key, value in decision.info.items():
            if not np.isscalar(value):
                raise ValueError(f"policy info {key!r} is not a scalar (per-device tables belong "
                                 f"in PolicyDecision fields)")
            row[f"policy_{key}" if key in row else key] = value
        self.round_rows.append(row)

    def record_clock(self, cpu_hz: NDArray[np.float64], device_time_s: NDArray[np.float64],
                     active: NDArray[np.bool_]) -> None:
        """Add the round's simulated time to the rows just recorded: per device its frequency
        and time, per round its duration (slowest active device) and the cumulative clock."""
        s = self.setup
        round_time = clock.round_time_s(device_time_s, active)
        self.sim_time_s += round_time
        late = active & (device_time_s > 0) & ~clock.meets_deadline(device_time_s, s.deadline_s)
        self.deadline_misses += int(late.sum())
        ks, _ = np.nonzero(s.holds)
        for row, k in zip(self.rows[len(self.rows) - len(ks):], ks):
            row.update(cpu_hz=float(cpu_hz[k]), time_s=float(device_time_s[k]))
        self.last.update(round_time_s=round_time, sim_time_s=self.sim_time_s,
                         late_devices=int(late.sum()))

    def result(self, wall_time_s: float) -> RunResult:
        """The tables and the summary."""
        s, final = self.setup, self.last
        views = list(s.data.views)
        summary = {
            "method": s.config.method, "rounds": s.config.rounds, "dataset": s.config.dataset,
            "views": views, "devices": s.config.devices, "seed": s.config.seed,
            "accuracy": final["accuracy"], "consensus_accuracy": final["consensus_accuracy"],
            "modality_accuracy": {v: final[f"acc_{v}"] for v in views},
            "energy_used_j": final["energy_used_j"], "executed_energy_j": final["executed_energy_j"],
            "battery_total_j": float(s.battery_j.sum()),
            "dropped_devices": self.drops, "wall_time_s": wall_time_s,
            "depleted_devices": [{"device": d["device"], "round": d["round"]}
                                 for d in self.drops if d["depleted"]],
            "all_depleted_round": self.all_out_round,
            "accuracy_note": None if self.all_out_round is None else
            f"every device had run out by round {self.all_out_round}: accuracies are those of "
            f"the models as they last trained (evaluated in round {self.all_out_round - 1})",
            "fleet": s.config.fleet,
            "policy_time_s": self.policy_s, "train_time_s": self.train_s,
            "validation": None if self.validation is None else {
                "accuracy": self.validation["accuracy"],
                "consensus_accuracy": self.validation["consensus"],
                "modality_accuracy": dict(self.validation["modality"])},
            "eval_every": s.config.eval_every, "eval_devices": s.config.eval_devices,
            "evaluated_devices": final["evaluated_devices"],
            "sim_time_s": self.sim_time_s, "deadline_s": s.deadline_s,
            "deadline_misses": self.deadline_misses,
            "status": "ok" if self.divergence is None else "diverged",
            **(self.divergence or {}),
        }
        return RunResult(pd.DataFrame(self.rows), pd.DataFrame(self.round_rows), summary, s)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with n intra-op threads, then restore the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)



def _progress(total: int, enabled: bool) -> Callable[[int | None, float, float], None]:
    bar = progress(total, "rounds", "round", enabled)

    def update(t: int | None, acc: float, energy: float) -> None:
        if t is None:
            bar.close()
            return
        bar.set_postfix(acc=f"{acc:.3f}", energy_j=f"{energy:.3g}", refresh=False)
        bar.update(1)

    return update
