"""The allocation MILP as a Pyomo model (DESIGN.md's formulation, both scopes).

Variables: integer tau[k, m] for held pairs, local iterations L_k >= tau[k, m] (continuous: it
is pushed down to max_m tau by the energy tie-break, and integral there), floors z_k (device
scope) or z (network scope), overshoot slacks s >= 0. All terms are linear, so HiGHS solves it
as a MILP. Coefficients are mutable Params so one model can be re-solved for new data (the
device-scope decomposition re-uses one small model per device shape).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyomo.environ as pyo
from numpy.typing import NDArray

from dmmlkd.allocator.problem import Problem


@dataclass
class BuiltModel:
    """A Pyomo model with the index of its (device, modality) pairs."""

    model: pyo.ConcreteModel
    pairs: list[tuple[int, int]]  # (k, m) of every tau variable, in model order


def build_model(problem: Problem, mutable: bool = False, relax: float = 0.0) -> BuiltModel:
    """Build the MILP of a problem (all its devices, its scope).

    ``relax`` scales every energy and time cap by (1 + relax) (`Problem.level_caps`): positive
    for a relaxation whose dual bound is a bound of the problem as stated, negative for a
    restriction whose points fit despite the solver's feasibility tolerance.
    """
    holds = problem.holds
    K, M = holds.shape
    pairs = [(int(k), int(m)) for k, m in np.argwhere(holds)]
    mdl = pyo.ConcreteModel(name=f"dmmlkd-{problem.scope}")
    mdl.K = pyo.RangeSet(0, K - 1)
    mdl.P = pyo.Set(initialize=pairs, dimen=2, ordered=True)
    mdl.v = pyo.Param(mdl.P, initialize={(k, m): float(problem.speed[k, m]) for k, m in pairs},
                      mutable=mutable)
    # Energies in units of each device's largest cap, so every energy row is O(1) and HiGHS's
    # absolute feasibility tolerance is a relative one (see _configure in solvers/exact.py).
    unit = energy_units(problem)
    mdl.eb = pyo.Param(mdl.P, initialize={(k, m): float(problem.backward_energy[k, m] / unit[k])
                                          for k, m in pairs}, mutable=mutable)
    mdl.F = pyo.Param(mdl.K, initialize=dict(enumerate((problem.forward_sum / unit).tolist())),
                      mutable=mutable)
    mdl.cap = pyo.Param(mdl.K, initialize=dict(enumerate((level_data(problem, relax)[1][:, 0]
                                                          / unit).tolist())), mutable=mutable)
    mdl.w = pyo.Param(mdl.K, initialize=dict(enumerate(problem.weight.tolist())), mutable=mutable)
    # The tie-break price of one energy unit of device k.
    mdl.ep = pyo.Param(mdl.K, initialize=dict(enumerate(
        (problem.epsilon / problem.energy_scale * unit).tolist())), mutable=mutable)

    tmin, tmax = problem.tau_min, problem.tau_max
    mdl.tau = pyo.Var(mdl.P, domain=pyo.Integers, bounds=(tmin, tmax), initialize=tmin)
    mdl.L = pyo.Var(mdl.K, domain=pyo.NonNegativeReals, bounds=(tmin, tmax), initialize=tmin)

    by_device: dict[int, list[int]] = {}
    for k, m in pairs:
        by_device.setdefault(k, []).append(m)

    mdl.local_iters = pyo.Constraint(mdl.P, rule=lambda b, k, m: b.L[k] >= b.tau[k, m])
    mdl.compute = pyo.Expression(
        mdl.K,
        rule=lambda b, k: b.F[k] * b.L[k] + sum(b.eb[k, m] * b.tau[k, m] for m in by_device[k]),
    )
    if problem.has_levels:
        _add_levels(mdl, problem, mutable, relax)
        energy_term = sum(mdl.ep[k] * mdl.lscale[k, lv] * mdl.x[k, lv] for k in mdl.K
                          for lv in mdl.LV)
    else:
        mdl.energy = pyo.Constraint(mdl.K, rule=lambda b, k: b.compute[k] <= b.cap[k])
        energy_term = sum(mdl.ep[k] * mdl.compute[k] for k in mdl.K)
    mu, one_delta = problem.mu, 1.0 + problem.delta

    if problem.scope == "device":
        mdl.z = pyo.Var(mdl.K, domain=pyo.NonNegativeReals)
        mdl.s = pyo.Var(mdl.P, domain=pyo.NonNegativeReals)
        mdl.floor = pyo.Constraint(mdl.P, rule=lambda b, k, m: b.z[k] <= b.v[k, m] * b.tau[k, m])
        mdl.balance = pyo.Constraint(
            mdl.P, rule=lambda b, k, m: b.v[k, m] * b.tau[k, m] <= one_delta * b.z[k] + b.s[k, m]
        )
        mdl.obj = pyo.Objective(
            expr=sum(mdl.w[k] * mdl.z[k] for k in mdl.K)
            - mu * sum(mdl.s[p] for p in mdl.P)
            - energy_term,
            sense=pyo.maximize,
        )
    else:
        held_mods = [int(m) for m in np.flatnonzero(problem.holders > 0)]
        holders: dict[int, list[int]] = {m: [] for m in held_mods}
        for k, m in pairs:
            holders[m].append(k)
        inv_n = {m: 1.0 / len(holders[m]) for m in held_mods}
        mdl.Mh = pyo.Set(initialize=held_mods, ordered=True)
        mdl.z = pyo.Var(domain=pyo.NonNegativeReals)
        mdl.s = pyo.Var(mdl.Mh, domain=pyo.NonNegativeReals)
        mdl.G = pyo.Expression(
            mdl.Mh,
            rule=lambda b, m: inv_n[m] * sum(b.v[k, m] * b.tau[k, m] for k in holders[m]),
        )
        mdl.floor = pyo.Constraint(mdl.Mh, rule=lambda b, m: b.z <= b.G[m])
        mdl.balance = pyo.Constraint(
            mdl.Mh, rule=lambda b, m: b.G[m] <= one_delta * b.z + b.s[m]
        )
        mdl.obj = pyo.Objective(
            expr=mdl.z - mu * sum(mdl.s[m] for m in mdl.Mh) - energy_term, sense=pyo.maximize
        )
    return BuiltModel(model=mdl, pairs=pairs)


def energy_units(problem: Problem) -> NDArray[np.float64]:
    """Per device the energy unit of the model: its largest compute cap (1 when none > 0)."""
    cap = level_data(problem)[1].max(axis=1)
    return np.where(cap > 0, cap, 1.0)


def level_data(problem: Problem, relax: float = 0.0
               ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Energy multipliers and caps per (device, level) as model coefficients: a missing or
    impossible level gets cap 0 (the computation is never 0, so it cannot be chosen)."""
    caps = problem.level_caps(relax)
    scale = np.nan_to_num(caps.scale, nan=1.0)
    cap = np.where(np.isfinite(caps.cap), np.maximum(caps.cap, 0.0), 0.0)
    return scale, cap


def _add_levels(mdl: pyo.ConcreteModel, problem: Problem, mutable: bool, relax: float) -> None:
    """CPU level choice: binaries y[k, l] (one per device) and the computation split x[k, l].

    The computation (top-level energy) is all assigned to the chosen level, x[k, l] <=
    cap[k, l] y[k, l] (cap: the most that level allows in energy and time), and its energy is
    priced at scale[k, l] = (f_l / f_top)^2 -- the disjunction over levels, exactly.
    """
    scale, cap = level_data(problem, relax)
    cap = cap / energy_units(problem)[:, None]
    K, NL = scale.shape
    mdl.LV = pyo.RangeSet(0, NL - 1)
    mdl.lscale = pyo.Param(mdl.K, mdl.LV, mutable=mutable, initialize={
        (k, lv): float(scale[k, lv]) for k in range(K) for lv in range(NL)})
    mdl.lcap = pyo.Param(mdl.K, mdl.LV, mutable=mutable, initialize={
        (k, lv): float(cap[k, lv]) for k in range(K) for lv in range(NL)})
    mdl.y = pyo.Var(mdl.K, mdl.LV, domain=pyo.Binary)
    mdl.x = pyo.Var(mdl.K, mdl.LV, domain=pyo.NonNegativeReals)
    mdl.one_level = pyo.Constraint(mdl.K, rule=lambda b, k: sum(b.y[k, lv] for lv in b.LV) == 1)
    mdl.split = pyo.Constraint(
        mdl.K, rule=lambda b, k: sum(b.x[k, lv] for lv in b.LV) == b.compute[k])
    mdl.level_cap = pyo.Constraint(
        mdl.K, mdl.LV, rule=lambda b, k, lv: b.x[k, lv] <= b.lcap[k, lv] * b.y[k, lv])


def read_tau(built: BuiltModel, shape: tuple[int, int]) -> NDArray[np.int64]:
    """The tau table of a solved model, rounded to integers."""
    tau = np.zeros(shape, dtype=np.int64)
    for k, m in built.pairs:
        value = built.model.tau[k, m].value
        tau[k, m] = int(round(value)) if value is not None else 0
    return tau
