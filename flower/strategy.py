"""`AllocatorStrategy`: any Flower strategy, with each node's work set by its energy and deadline.

Flower's strategies send every sampled node the same ConfigRecord. This one wraps a strategy
(FedAvg by default) and, each round, after the wrapped strategy has sampled its nodes:

1. asks connected nodes it has not met for their profile (`flower.profile.NodeProfile`, one
   ``query.dmmlkd_profile`` message each, once per node);
2. builds the learner's `RoundState` for the sampled nodes (battery left on the ledger, CPU
   levels, cycles per sample, upload energy and time, the deadline, the last reported
   per-modality speeds smoothed by `metrics.SpeedTracker`) and asks a `Policy`
   (`learner/policy.py`; default `bridge.dvfs.DvfsAllocatorPolicy`: the allocator's problem
   with CPU levels and deadline, heuristic, ``solver="exact"`` on request);
3. sends each node the wrapped strategy's message plus its own ConfigRecord ``dmmlkd``:
   ``tau.<view>`` per modality and ``cpu-hz``; a node given no iterations is not sent one;
4. when the replies come back, prices the passes each node reports it executed
   (`EnergyProfile.executed_cost`) beside what was planned (`round_cost`), debits the virtual
   battery, advances the virtual clock by the slowest node's time (`EnergyProfile.device_time_s`)
   and appends one ledger row per node; then the wrapped strategy aggregates, the replies in
   node order (so the aggregate does not depend on arrival order).

Flower's simulation gives every node the same share of the machine, so heterogeneity lives in
this energy and time model, not in wall-clock time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from logging import INFO, WARNING
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result, Strategy
from flwr.supercore import log
from numpy.typing import NDArray

from dmmlkd.flower.profile import PROFILE_ACTION, PROFILE_KEY, NodeProfile, stack
from dmmlkd.learner import clock
from dmmlkd.learner.energy import EnergyProfile
from dmmlkd.learner.policy import Policy, PolicyDecision, RoundState, as_decision
from dmmlkd.metrics.energy import ENERGY_RTOL, fits_budget
from dmmlkd.metrics.variation import SpeedTracker

PLAN_KEY = "dmmlkd"  # the per-node ConfigRecord in a train message
TAU_PREFIX = "tau."  # tau.<view>: local iterations of that modality
CPU_KEY = "cpu-hz"
# Metric keys a node reports after training (lists over the run's views).
FORWARD_KEY, BACKWARD_KEY, VARIATION_KEY = "forward-passes", "backward-passes", "variation"


def _natural(name: str) -> list[Any]:
    """Sort key that puts dev2 before dev10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@dataclass
class Plan:
    """What one node was asked to do this round, with its price and time."""

    node_id: int
    name: str
    tau: NDArray[np.int64]  # (M,)
    cpu_hz: float
    energy_j: float  # planned: compute at cpu_hz plus upload (EnergyProfile.round_cost)
    time_s: float  # compute at cpu_hz plus upload (EnergyProfile.device_time_s)
    late: bool


class AllocatorStrategy(Strategy):
    """Wraps a Flower strategy; each round every sampled node gets its own tau per modality and
    CPU level from a policy, and a virtual clock and energy ledger price what it executed.

    ``policy``: any `dmmlkd.learner.policy.Policy` (None: `DvfsAllocatorPolicy()`, the allocator
    with CPU levels and the deadline, heuristic); `learner.schedules.uniform_dvfs_policy` is
    the uniform control. ``tau_min``/``tau_max``/``local_iters``: the policy's bounds and the
    uniform count. ``deadline_s``: the round deadline of the virtual clock (None: none).
    ``rounds_total``: rounds of the run (set by `start`; needed to spread batteries).
    """

    def __init__(self, inner: Strategy | None = None, policy: Policy | None = None, *,
                 tau_min: int = 1, tau_max: int = 20, local_iters: int = 5,
                 deadline_s: float | None = None, speed_beta: float = 0.5,
                 rounds_total: int | None = None, query_timeout_s: float = 600.0) -> None:
        if policy is None:
            from dmmlkd.bridge.dvfs import DvfsAllocatorPolicy

            policy = DvfsAllocatorPolicy()
        if not 1 <= tau_min <= local_iters <= tau_max:
            raise ValueError(f"need 1 <= tau_min <= local_iters <= tau_max (got {tau_min}, "
                             f"{local_iters}, {tau_max})")
        self.inner = inner if inner is not None else FedAvg()
        self.policy: Policy = policy
        self.tau_min, self.tau_max, self.local_iters = tau_min, tau_max, local_iters
        self.deadline_s = deadline_s
        self.speed_beta = speed_beta
        self.rounds_total = rounds_total
        self.query_timeout_s = query_timeout_s
        self.profiles: dict[int, NodeProfile] = {}
        self.battery_j: dict[int, float] = {}
        self.trackers: dict[int, SpeedTracker] = {}
        self.last_tau: dict[int, NDArray[np.int64]] = {}
        self.dropped: dict[int, dict[str, Any]] = {}  # node -> {round, node, reason}
        self.plans: dict[int, Plan] = {}  # this round's, until its replies are priced
        self.ledger_rows: list[dict[str, Any]] = []
        self.round_rows: list[dict[str, Any]] = []
        self.sim_time_s = 0.0
        self.last_state: RoundState | None = None  # what the policy saw last (tests, logs)
        self.last_decision: PolicyDecision | None = None
        self.last_nodes: list[int] = []  # node ids in the order of last_state's rows

    # ------------------------------------------------------------------ Flower's interface
    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
              ) -> Result:
        """Flower's round loop (`Strategy.start`), knowing the number of rounds."""
        self.rounds_total = num_rounds
        return super().start(grid, initial_arrays, num_rounds, timeout, train_config,
                             evaluate_config, evaluate_fn)

    def summary(self) -> None:
        """Log the wrapped strategy's summary and the policy."""
        self.inner.summary()
        log(INFO, "\t└──> dmmlkd: policy %s, tau in [%d, %d], deadline %s s",
            getattr(self.policy, "__name__", type(self.policy).__name__), self.tau_min,
            self.tau_max, self.deadline_s)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """The wrapped strategy's messages, each with its node's own tau and CPU level."""
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        if not messages:
            return []
        # Every connected node once (not only the sampled ones): the ledger's battery total
        # is the fleet's, whichever nodes a sampling strategy picks.
        self.query_profiles(sorted(set(grid.get_node_ids()) | {m.metadata.dst_node_id
                                                               for m in messages}), grid)
        plans = self.plan_round(server_round, [m.metadata.dst_node_id for m in messages])
        out = []
        for msg in messages:
            plan = plans.get(msg.metadata.dst_node_id)
            if plan is None:  # dropped, or given no iterations: it sits the round out
                continue
            content = RecordDict(dict(msg.content.items()))
            content[PLAN_KEY] = self.plan_record(plan)
            out.append(Message(content=content, dst_node_id=msg.metadata.dst_node_id,
                               message_type=msg.metadata.message_type,
                               group_id=msg.metadata.group_id, ttl=msg.metadata.ttl))
        return out

    def aggregate_train(self, server_round: int, replies: Iterable[Message],
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Price what each node executed on the ledger, then let the wrapped strategy aggregate."""
        ordered = sorted(replies, key=lambda m: self._order(m.metadata.src_node_id))
        self.account(server_round, ordered)
        return self.inner.aggregate_train(server_round, ordered)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """The wrapped strategy's evaluation (not priced: evaluation is not training)."""
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message],
                           ) -> MetricRecord | None:
        """The wrapped strategy's aggregation of evaluation metrics."""
        return self.inner.aggregate_evaluate(server_round, replies)

    # ------------------------------------------------------------------ profiles
    def query_profiles(self, node_ids: Sequence[int], grid: Grid) -> None:
        """Ask nodes not met yet for their profile (once per node); a node that does not
        answer with one is an error naming it."""
        unknown = [n for n in node_ids if n not in self.profiles]
        if not unknown:
            return
        queries = [Message(RecordDict(), dst_node_id=n,
                           message_type=f"{MessageType.QUERY}.{PROFILE_ACTION}") for n in unknown]
        for reply in grid.send_and_receive(queries, timeout=self.query_timeout_s):
            node = reply.metadata.src_node_id
            if reply.has_error() or PROFILE_KEY not in reply.content.config_records:
                reason = reply.error.reason if reply.has_error() else "no profile record"
                raise RuntimeError(f"node {node} did not send its profile ({reason}); its "
                                   f"ClientApp must answer query.{PROFILE_ACTION} "
                                   f"(dmmlkd.flower.client.make_client_app does)")
            self.add_profile(node, NodeProfile.from_config(
                dict(reply.content.config_records[PROFILE_KEY])))
        missing = [n for n in unknown if n not in self.profiles]
        if missing:
            raise RuntimeError(f"nodes {missing} sent no profile within {self.query_timeout_s} s")

    def add_profile(self, node_id: int, profile: NodeProfile) -> None:
        """Register a node (its battery starts full on the ledger)."""
        self.profiles[node_id] = profile
        self.battery_j[node_id] = float(profile.battery_j)
        self.trackers[node_id] = SpeedTracker(1, len(profile.views), beta=self.speed_beta)
        self.last_tau[node_id] = np.zeros(len(profile.views), np.int64)

    def _order(self, node_id: int) -> tuple[int, list[Any]]:
        profile = self.profiles.get(node_id)
        return (0, _natural(profile.name)) if profile is not None else (1, [node_id])

    # ------------------------------------------------------------------ planning
    def round_state(self, server_round: int, nodes: Sequence[int]) -> tuple[RoundState, EnergyProfile]:
        """The policy's view of these nodes this round (rows in the order of ``nodes``)."""
        if self.rounds_total is None:
            raise ValueError("rounds_total is unknown: pass it to AllocatorStrategy or use start()")
        profiles = [self.profiles[n] for n in nodes]
        energy = stack(profiles)
        holds = np.stack([p.holds for p in profiles])
        speed = np.concatenate([self.trackers[n].speed(self.profiles[n].holds[None])
                                for n in nodes])
        state = RoundState(
            round=server_round - 1, rounds_total=self.rounds_total,
            devices=[p.name for p in profiles], modalities=list(profiles[0].views), holds=holds,
            speed=speed, battery_j=np.array([self.battery_j[n] for n in nodes]),
            active=np.array([n not in self.dropped for n in nodes]),
            adjacency=sp.csr_matrix((len(nodes), len(nodes)), dtype=bool),  # a star: no peers
            tau_min=self.tau_min, tau_max=self.tau_max, local_iters=self.local_iters,
            last_tau=np.stack([self.last_tau[n] for n in nodes]), deadline_s=self.deadline_s,
            **energy.planning_fields())
        return state, energy

    def plan_round(self, server_round: int, node_ids: Sequence[int]) -> dict[int, Plan]:
        """Ask the policy for the sampled nodes' tau and CPU levels; price and time them.

        As in the learner's loop (and reported the same way): a node whose battery cannot pay
        its cheapest round, a node the policy drops, and a node given work its battery cannot
        pay leave for good.
        """
        nodes = sorted(set(node_ids), key=self._order)
        state, energy = self.round_state(server_round, nodes)
        holds = state.holds
        cheapest = energy.cheapest_round(holds, self.tau_min)
        for i in np.flatnonzero(state.active & ~fits_budget(cheapest, state.battery_j)):
            self._drop(server_round, nodes[i], f"battery {state.battery_j[i]:.4g} J cannot pay the "
                       f"cheapest round (tau_min {self.tau_min}: {cheapest[i]:.4g} J)")
        state.active = np.array([n not in self.dropped for n in nodes])
        decision = as_decision(self.policy(state))
        for d in decision.dropped:
            self._drop(server_round, nodes[d], "policy: cannot pay the cheapest round")
        active = np.array([n not in self.dropped for n in nodes])
        tau = np.where(holds & active[:, None], decision.tau, 0).astype(np.int64)
        cpu = clock.check_cpu_hz(decision.cpu_hz, energy.levels_hz(), state.devices)
        cost = energy.round_cost(tau, holds, cpu)
        over = active & (tau.max(axis=1) > 0) & ~fits_budget(cost, state.battery_j)
        for i in np.flatnonzero(over):
            self._drop(server_round, nodes[i], f"policy's tau costs {cost[i]:.4g} J, battery has "
                       f"{state.battery_j[i]:.4g} J")
            tau[i] = 0
        cost = np.where(tau.max(axis=1) > 0, cost, 0.0)
        times = energy.device_time_s(tau, holds, cpu)
        late = (tau.max(axis=1) > 0) & ~clock.meets_deadline(times, self.deadline_s)
        self.last_state, self.last_decision, self.last_nodes = state, decision, list(nodes)
        self.plans = {n: Plan(n, state.devices[i], tau[i].copy(), float(cpu[i]), float(cost[i]),
                              float(times[i]), bool(late[i]))
                      for i, n in enumerate(nodes) if tau[i].max() > 0}
        return dict(self.plans)

    def plan_record(self, plan: Plan) -> ConfigRecord:
        """A node's own configuration: tau per modality and CPU level."""
        views = self.profiles[plan.node_id].views
        record = ConfigRecord({f"{TAU_PREFIX}{v}": int(t) for v, t in zip(views, plan.tau)})
        record[CPU_KEY] = float(plan.cpu_hz)
        return record

    def _drop(self, server_round: int, node: int, reason: str) -> None:
        if node not in self.dropped:
            self.dropped[node] = {"round": server_round, "node": self.profiles[node].name,
                                  "reason": reason}
            log(WARNING, "dmmlkd: node %s leaves in round %d: %s", self.profiles[node].name,
                server_round, reason)

    # ------------------------------------------------------------------ the ledger
    def account(self, server_round: int, replies: Sequence[Message]) -> None:
        """Debit each planned node what it executed; advance the clock; append ledger rows.

        A node that replied with an error, or not at all, is charged its plan (it may have run
        it) and marked in the ``status`` column.
        """
        by_node = {m.metadata.src_node_id: m for m in replies}
        plans, self.plans = self.plans, {}
        times = []
        for node in sorted(plans, key=self._order):
            plan, profile = plans[node], self.profiles[node]
            reply = by_node.get(node)
            status, executed = "ok", plan.energy_j
            fwd = bwd = np.zeros(len(profile.views), np.int64)
            if reply is None:
                status = "no reply"
            elif reply.has_error():
                status = f"error: {reply.error.reason}"
            else:
                metrics = next(iter(reply.content.metric_records.values()))
                fwd = np.asarray(metrics[FORWARD_KEY], np.int64)
                bwd = np.asarray(metrics[BACKWARD_KEY], np.int64)
                executed = float(stack([profile]).executed_cost(
                    fwd[None], bwd[None], np.array([True]), np.array([plan.cpu_hz]))[0])
                v = np.asarray(metrics[VARIATION_KEY], float)
                self.trackers[node].update(np.where(bwd > 0, v, np.nan)[None])
                if not np.isclose(executed, plan.energy_j, rtol=ENERGY_RTOL * 10, atol=0.0):
                    status = "executed differs from plan"
                    log(WARNING, "dmmlkd: node %s executed %.6g J, planned %.6g J", plan.name,
                        executed, plan.energy_j)
            self.battery_j[node] -= executed
            self.last_tau[node] = plan.tau
            times.append(plan.time_s)
            self.ledger_rows.append({
                "round": server_round, "node": plan.name, "node_id": node,
                **{f"tau_{v}": int(t) for v, t in zip(profile.views, plan.tau)},
                **{f"forward_passes_{v}": int(f) for v, f in zip(profile.views, fwd)},
                **{f"backward_passes_{v}": int(b) for v, b in zip(profile.views, bwd)},
                "cpu_hz": plan.cpu_hz, "energy_j": plan.energy_j, "executed_energy_j": executed,
                "time_s": plan.time_s, "battery_j": self.battery_j[node], "late": plan.late,
                "status": status,
            })
        round_time = max(times, default=0.0)
        self.sim_time_s += round_time
        info = self.last_decision.info if self.last_decision is not None else {}
        row: dict[str, Any] = {
            "round": server_round, "nodes_trained": len(plans),
            "energy_j": float(sum(p.energy_j for p in plans.values())),
            "round_time_s": round_time, "sim_time_s": self.sim_time_s,
            "late_nodes": int(sum(p.late for p in plans.values())),
        }
        for key, value in info.items():  # the learner loop's rule: a taken name gets a prefix
            if np.isscalar(value):
                row[f"policy_{key}" if key in row else key] = value
        self.round_rows.append(row)

    def ledger(self) -> pd.DataFrame:
        """One row per round and node that trained (see `account`)."""
        return pd.DataFrame(self.ledger_rows)

    def rounds(self) -> pd.DataFrame:
        """One row per round: nodes, energy, round time, simulated clock, late nodes."""
        return pd.DataFrame(self.round_rows)

    def totals(self) -> dict[str, Any]:
        """Energy, time and drop-outs of the run so far."""
        ledger = self.ledger()
        planned = float(ledger["energy_j"].sum()) if len(ledger) else 0.0
        executed = float(ledger["executed_energy_j"].sum()) if len(ledger) else 0.0
        return {
            "energy_used_j": planned, "executed_energy_j": executed,
            "battery_total_j": float(sum(p.battery_j for p in self.profiles.values())),
            "battery_left_j": float(sum(self.battery_j.values())),
            "overspent_nodes": [self.profiles[n].name for n, b in self.battery_j.items()
                                if not fits_budget(0.0, b)],
            "sim_time_s": self.sim_time_s, "deadline_s": self.deadline_s,
            "deadline_misses": int(ledger["late"].sum()) if len(ledger) else 0,
            "dropped_nodes": sorted(self.dropped.values(), key=lambda d: (d["round"], d["node"])),
        }
