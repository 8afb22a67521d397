"""The `Allocation` record every solver returns, and the one shared objective evaluation.

The objective of an iteration table is recomputed here from tau alone (the optimal floors and
slacks for a fixed tau are closed-form), so that every method is scored by the same function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from dmmlkd.allocator.problem import Problem
from dmmlkd.metrics.energy import ENERGY_RTOL, fits_budget, fits_deadline

if TYPE_CHECKING:  # pandas costs ~0.5 s to import: only `to_frame` needs it
    import pandas as pd

__all__ = ["ENERGY_RTOL", "Allocation", "Evaluation", "evaluate", "relative_gap", "violations"]


@dataclass(frozen=True)
class Evaluation:
    """The objective of a fixed tau and its parts (floors, slacks, energies, imbalance)."""

    objective: float
    progress: NDArray[np.float64]  # P[k, m] = v tau, 0 where not held
    floor: NDArray[np.float64]  # z_k (device scope) or z repeated (network scope)
    slack: float  # sum of s (progress beyond (1 + delta) x floor)
    compute_energy: NDArray[np.float64]  # E_cmp per device
    network_progress: NDArray[np.float64]  # G_m, nan for modalities nobody holds
    imbalance_device: NDArray[np.float64]  # max/min P per device
    imbalance_network: float  # max/min G_m over held modalities
    level: NDArray[np.int64]  # chosen CPU level per device (0 without levels)
    cpu_hz: NDArray[np.float64]  # its frequency (nan without levels)
    time_s: NDArray[np.float64]  # round time C / f + comm_time_s (nan without levels)


def evaluate(problem: Problem, tau: NDArray[np.integer] | NDArray[np.floating]) -> Evaluation:
    """Score an iteration table with the problem's objective (floors/slacks set optimally).

    With CPU levels the level is set optimally too: the lowest one meeting the deadline
    (`Problem.operating_point`), so the objective is still a function of tau alone.
    """
    tau = np.where(problem.holds, np.asarray(tau, dtype=float), 0.0)
    holds = problem.holds
    progress = problem.speed * tau
    point = problem.operating_point(tau)
    compute = point.compute_energy
    energy_term = problem.epsilon * compute.sum() / problem.energy_scale
    p_held_min = np.where(holds, progress, np.inf).min(axis=1)
    p_held_max = np.where(holds, progress, -np.inf).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        imb_dev = np.where(p_held_min > 0, p_held_max / p_held_min, np.inf)
    holders = problem.holders
    with np.errstate(invalid="ignore", divide="ignore"):
        net = np.where(holders > 0, progress.sum(axis=0) / np.maximum(holders, 1), np.nan)
    held_net = net[holders > 0]
    net_min, net_max = float(held_net.min()), float(held_net.max())
    imb_net = net_max / net_min if net_min > 0 else math.inf
    if problem.scope == "device":
        # For fixed tau the best floor is the smallest held progress (the objective increases
        # in z_k while z_k <= min P), and each slack is the overshoot beyond (1 + delta) z_k.
        floor = p_held_min
        over = np.where(holds, progress - (1 + problem.delta) * floor[:, None], 0.0)
        slack = float(np.maximum(over, 0.0).sum())
        objective = float((problem.weight * floor).sum()) - problem.mu * slack - energy_term
    else:
        floor = np.full(problem.n_devices, net_min)
        slack = float(np.maximum(held_net - (1 + problem.delta) * net_min, 0.0).sum())
        objective = net_min - problem.mu * slack - energy_term
    return Evaluation(
        objective=objective,
        progress=progress,
        floor=floor,
        slack=slack,
        compute_energy=compute,
        network_progress=net,
        imbalance_device=imb_dev,
        imbalance_network=imb_net,
        level=point.level,
        cpu_hz=point.cpu_hz,
        time_s=point.time_s,
    )


def violations(problem: Problem, tau: NDArray[np.integer]) -> list[str]:
    """Every constraint an iteration table breaks, as readable strings (empty when feasible)."""
    out: list[str] = []
    tau = np.asarray(tau)
    if tau.shape != problem.holds.shape:
        return [f"tau has shape {tau.shape}, expected {problem.holds.shape}"]
    if not np.all(np.equal(np.round(tau), tau)):
        out.append("tau is not integer")
    held, names = problem.holds, problem.devices
    if np.any(tau[~held] != 0):
        out.append("tau is non-zero for a modality a device does not hold")
    low = held & (tau < problem.tau_min)
    high = held & (tau > problem.tau_max)
    for mask, what in ((low, "below tau_min"), (high, "above tau_max")):
        for k, m in np.argwhere(mask)[:3]:
            out.append(f"device {names[k]!r}: tau[{problem.modalities[m]!r}] {what}")
    point = problem.operating_point(tau)
    total = point.compute_energy + problem.comm_energy
    over = ~fits_budget(total, problem.budget)
    for k in np.flatnonzero(over)[:3]:
        out.append(f"device {names[k]!r}: energy {total[k]:.6g} J exceeds budget {problem.budget[k]:.6g} J")
    if problem.deadline_s is not None:
        late = ~fits_deadline(point.time_s, problem.deadline_s)
        for k in np.flatnonzero(late)[:3]:
            out.append(f"device {names[k]!r}: round time {point.time_s[k]:.6g} s exceeds "
                       f"deadline {problem.deadline_s:.6g} s")
    return out


def relative_gap(objective: float, bound: float) -> float:
    """(bound - objective) / max(|objective|, 1e-12); nan when no bound is known."""
    if bound is None or not math.isfinite(bound):
        return math.nan
    return max(bound - objective, 0.0) / max(abs(objective), 1e-12)


@dataclass
class Allocation:
    """An iteration table with its score, energy, balance, status and timing.

    ``status`` is one of ``optimal`` (proven within the requested gap), ``feasible`` (a
    solution, gap as reported), ``time_limit`` (stopped by the limit; best solution and its
    honest gap). ``bound`` is an upper bound on the objective where the solver has one.
    """

    problem: Problem
    tau: NDArray[np.int64]
    solver: str  # the algorithm that produced tau (one of userio.options.SOLVERS)
    status: str
    bound: float = math.nan
    solve_time_s: float = 0.0
    build_time_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    evaluation: Evaluation = field(init=False)

    def __post_init__(self) -> None:
        self.tau = np.where(self.problem.holds, np.rint(self.tau), 0).astype(np.int64)
        self.evaluation = evaluate(self.problem, self.tau)

    @property
    def objective(self) -> float:
        """The objective recomputed from tau by the shared evaluation."""
        return self.evaluation.objective

    @property
    def gap(self) -> float:
        """Certified relative gap to ``bound`` (nan when the solver has no bound)."""
        return relative_gap(self.objective, self.bound)

    @property
    def energy(self) -> NDArray[np.float64]:
        """Total energy per device this round: computation plus communication (J)."""
        return self.evaluation.compute_energy + self.problem.comm_energy

    @property
    def cpu_hz(self) -> NDArray[np.float64]:
        """CPU frequency each device runs at (K,): the lowest level meeting the deadline; nan
        without levels."""
        return self.evaluation.cpu_hz

    @property
    def time_s(self) -> NDArray[np.float64]:
        """Round time per device (K,): compute C / f plus comm_time_s; nan without levels."""
        return self.evaluation.time_s

    @property
    def total_time_s(self) -> float:
        """Model build plus solve time."""
        return self.build_time_s + self.solve_time_s

    def summary(self) -> dict[str, Any]:
        """Flat dict of the scalar outputs (one row of a study table)."""
        ev = self.evaluation
        return {
            "solver": self.solver,
            "scope": self.problem.scope,
            "status": self.status,
            "objective": self.objective,
            "bound": self.bound,
            "gap": self.gap,
            "imbalance_device": float(np.max(ev.imbalance_device)),
            "imbalance_device_mean": float(np.mean(ev.imbalance_device)),
            "imbalance_network": ev.imbalance_network,
            "energy_total_j": float(self.energy.sum()),
            "compute_energy_j": float(ev.compute_energy.sum()),
            "budget_total_j": float(self.problem.budget.sum()),
            "solve_time_s": self.solve_time_s,
            "build_time_s": self.build_time_s,
            "n_devices": self.problem.n_devices,
            "n_modalities": self.problem.n_modalities,
            "round_time_s": float(np.max(ev.time_s)) if self.problem.has_levels else math.nan,
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON form printed by `dmmlkd solve --format json`."""
        p = self.problem

        def num(x: float) -> float | None:
            return None if not math.isfinite(x) else float(x)

        tau = {
            d: {m: int(self.tau[k, j]) for j, m in enumerate(p.modalities) if p.holds[k, j]}
            for k, d in enumerate(p.devices)
        }
        return {
            "status": self.status,
            "solver": self.solver,
            "scope": p.scope,
            "objective": self.objective,
            "bound": num(self.bound),
            "gap": num(self.gap),
            "tau": tau,
            "energy": {d: float(e) for d, e in zip(p.devices, self.energy)},
            "cpu_hz": {d: num(float(f)) for d, f in zip(p.devices, self.cpu_hz)},
            "time_s": {d: num(float(t)) for d, t in zip(p.devices, self.time_s)},
            "imbalance": {
                "device_max": num(float(np.max(self.evaluation.imbalance_device))),
                "network": num(self.evaluation.imbalance_network),
            },
            "solve_time_s": self.solve_time_s,
            "build_time_s": self.build_time_s,
            "certificate": self.info.get("certificate"),
            "time_limit_s": self.info.get("time_limit_s"),
        }

    def to_frame(self) -> pd.DataFrame:
        """Tidy frame: one row per device and held modality."""
        import pandas as pd

        p = self.problem
        k_idx, m_idx = np.nonzero(p.holds)
        ev = self.evaluation
        return pd.DataFrame(
            {
                "solver": self.solver,
                "device": np.asarray(p.devices, dtype=object)[k_idx],
                "modality": np.asarray(p.modalities, dtype=object)[m_idx],
                "tau": self.tau[k_idx, m_idx],
                "speed": p.speed[k_idx, m_idx],
                "progress": ev.progress[k_idx, m_idx],
                "device_energy_j": self.energy[k_idx],
                "cpu_hz": self.cpu_hz[k_idx],
                "time_s": self.time_s[k_idx],
                "budget_j": p.budget[k_idx],
            }
        )
