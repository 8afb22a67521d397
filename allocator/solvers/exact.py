"""Exact solution: the Pyomo model solved by HiGHS, using the structure of each scope.

* Device scope: devices are independent, so the MILP separates into one small MILP per device.
  One Pyomo model of a single device with mutable coefficients is loaded once into HiGHS through
  Pyomo's persistent interface; each device updates the coefficients and re-solves (a monolithic
  MILP of 200 devices still has a 1% gap after 20 s; the blocks solve in about a millisecond).
* Network scope: devices couple only through |M| modality floors. The Lagrangian heuristic
  gives a certified bound and an incumbent; the monolithic Pyomo model is loaded into HiGHS,
  warm-started with that incumbent, and solved within the time limit. The reported bound is the
  smaller of HiGHS's dual bound and the Lagrangian one, so the gap is honest and tight.

``optimal`` means proven within ``mip_gap``; a time limit returns the best solution with its gap.
"""

from __future__ import annotations

import math
import time

import highspy
import numpy as np
from pyomo.contrib.solver.solvers.highs import Highs

from dmmlkd.allocator.model import BuiltModel, build_model, energy_units, level_data
from dmmlkd.allocator.problem import Problem
from dmmlkd.allocator.result import Allocation, evaluate, relative_gap
from dmmlkd.userio.options import DEFAULTS

HIGHS_TOLERANCE = 1e-9


def _highs_of(solver: Highs) -> highspy.Highs:
    # Pyomo's persistent HiGHS interface keeps the loaded highspy model here; we drive the run
    # ourselves to pass a warm start and read the dual bound, which the interface does not.
    return solver._solver_model


def _column_index(solver: Highs, built: BuiltModel) -> list[int]:
    var_map = solver._pyomo_var_to_solver_var_map
    return [var_map[id(built.model.tau[k, m])] for k, m in built.pairs]


def _configure(h: highspy.Highs, time_limit: float | None, mip_gap: float) -> None:
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("mip_rel_gap", mip_gap)
    h.setOptionValue("mip_abs_gap", 1e-9)
    # Energy rows are O(1) (allocator.model.energy_units): a 1e-9 absolute tolerance is a
    # relative one of the project's order (the default 1e-6 let tables 1e-8 over budget
    # through). 1e-10 made HiGHS's presolve cut feasible points (a knife-edge instance came
    # back "Optimal" 0.6% below the optimum), so it is not used: HiGHS's points are checked
    # by the problem's arithmetic, and its bounds are only trusted on a widened model.
    h.setOptionValue("mip_feasibility_tolerance", HIGHS_TOLERANCE)
    h.setOptionValue("primal_feasibility_tolerance", HIGHS_TOLERANCE)
    if time_limit is not None:
        h.setOptionValue("time_limit", max(time_limit, 1e-3))


def _warm_start(h: highspy.Highs, solver: Highs, built: BuiltModel, problem: Problem,
                tau: np.ndarray, level: np.ndarray | None = None,
                unit: np.ndarray | None = None) -> None:
    """Give HiGHS a complete feasible point (tau, L, levels, floors, slacks) derived from tau.

    ``problem`` is the one the model was built for; ``level`` (per device) overrides the level
    its own arithmetic would choose (templates do not carry the real deadline), ``unit`` the
    model's energy unit per device (`allocator.model.energy_units`).
    """
    tau = np.asarray(tau, float)
    holds = problem.holds
    if unit is None:
        unit = energy_units(problem)
    progress = np.where(holds, problem.speed * tau, 0.0)
    mdl = built.model
    var_map = solver._pyomo_var_to_solver_var_map
    index, value = [], []
    for k, m in built.pairs:
        index.append(var_map[id(mdl.tau[k, m])])
        value.append(float(tau[k, m]))
    local = np.where(holds, tau, 0.0).max(axis=1)
    for k in range(problem.n_devices):
        index.append(var_map[id(mdl.L[k])])
        value.append(float(local[k]))
    if problem.has_levels:
        if level is None:
            level = problem.operating_point(tau).level
        top = (local * problem.forward_sum + (np.where(holds, tau, 0.0)
                                              * problem.backward_energy).sum(axis=1)) / unit
        for k in range(problem.n_devices):
            for lv in mdl.LV:
                chosen = int(lv) == int(level[k])
                index += [var_map[id(mdl.y[k, lv])], var_map[id(mdl.x[k, lv])]]
                value += [1.0 if chosen else 0.0, float(top[k]) if chosen else 0.0]
    one_delta = 1.0 + problem.delta
    if problem.scope == "device":
        floor = np.where(holds, progress, np.inf).min(axis=1)
        for k in range(problem.n_devices):
            index.append(var_map[id(mdl.z[k])])
            value.append(float(floor[k]))
        for k, m in built.pairs:
            index.append(var_map[id(mdl.s[k, m])])
            value.append(max(0.0, float(progress[k, m] - one_delta * floor[k])))
    else:
        net = progress.sum(axis=0) / np.maximum(problem.holders, 1)
        z = float(min(net[m] for m in mdl.Mh))
        index.append(var_map[id(mdl.z)])
        value.append(z)
        for m in mdl.Mh:
            index.append(var_map[id(mdl.s[m])])
            value.append(max(0.0, float(net[m] - one_delta * z)))
    h.setSolution(len(index), np.asarray(index, np.int32), np.asarray(value, float))


def _run(h: highspy.Highs) -> tuple[str, np.ndarray | None, float]:
    """Run HiGHS; return (model status name, column values or None, dual bound).

    The tight 1e-10 tolerances can make HiGHS give up ("Solve error") on a knife-edge row; it is
    then rerun with looser ones (its table is checked and repaired by the caller anyway).
    """
    for tolerance in (1e-8, 1e-7):
        h.run()
        if h.modelStatusToString(h.getModelStatus()) not in ("Solve error", "Unknown"):
            break
        h.setOptionValue("mip_feasibility_tolerance", tolerance)
        h.setOptionValue("primal_feasibility_tolerance", tolerance)
    else:
        h.run()
    info = h.getInfo()
    status = h.modelStatusToString(h.getModelStatus())
    values = None
    if info.primal_solution_status == 2:
        values = np.asarray(h.getSolution().col_value)
    bound = info.mip_dual_bound if info.mip_node_count >= 0 else math.nan
    return status, values, float(bound)


def _template(n_held: int, n_levels: int, like: Problem) -> Problem:
    """A one-device problem of the given shape; the model's coefficients are overwritten."""
    fields: dict[str, object] = dict(
        modalities=tuple(f"m{j}" for j in range(n_held)), devices=("template",),
        holds=np.ones((1, n_held), bool), speed=np.ones((1, n_held)),
        comm_energy=np.zeros(1), budget=np.full(1, 1e9), weight=np.ones(1), scope="device",
        tau_min=like.tau_min, tau_max=like.tau_max, delta=like.delta, mu=like.mu,
        epsilon=like.epsilon,
    )
    if n_levels and like.has_levels:
        fields.update(cpu_levels_hz=[np.arange(1.0, n_levels + 1)],
                      cycles_forward=np.ones((1, n_held)), cycles_backward=np.ones((1, n_held)),
                      capacitance=np.ones(1), batch_size=np.ones(1))
    else:
        fields.update(forward_energy=np.ones((1, n_held)), backward_energy=np.ones((1, n_held)))
    return Problem(**fields)  # type: ignore[arg-type]


def _solve_device_scope(problem: Problem, time_limit: float | None, mip_gap: float) -> Allocation:
    from dmmlkd.allocator.repair import infeasible_devices
    from dmmlkd.allocator.solvers.breakpoint import device_best_tables, device_values

    t0 = time.perf_counter()
    # An optimal start (breakpoint enumeration) and the certificate: the enumeration's value
    # under widened caps bounds each device's optimum (breakpoint.py). HiGHS's dual bound is
    # not used: it belongs to a model relaxed by HiGHS's tolerances and presolve, and on
    # knife-edge budgets it came out below the optimum.
    warm, warm_value, device_bound = device_best_tables(problem)
    warm_level = problem.operating_point(warm).level
    deadline = None if time_limit is None else t0 + time_limit
    candidate = warm.copy()
    shapes: dict[int, tuple[BuiltModel, Highs, list[int]]] = {}
    build_s = 0.0
    proven, solved, highs_total = True, 0, 0.0
    eps = problem.epsilon / problem.energy_scale
    scale, cap = level_data(problem)
    unit = energy_units(problem)
    n_levels = problem.n_levels if problem.has_levels else 0
    for k in range(problem.n_devices):
        held = np.flatnonzero(problem.holds[k])
        remaining = None if deadline is None else deadline - time.perf_counter()
        if remaining is not None and remaining <= 0:
            # Out of time: the remaining devices keep their breakpoint tables.
            proven = False
            break
        key = held.size
        if key not in shapes:
            tb = time.perf_counter()
            template = _template(key, n_levels, problem)
            built = build_model(template, mutable=True)
            solver = Highs()
            solver.set_instance(built.model)
            _highs_of(solver).setOptionValue("output_flag", False)
            shapes[key] = (built, solver, _column_index(solver, built))
            build_s += time.perf_counter() - tb
        built, solver, cols = shapes[key]
        mdl = built.model
        for j, m in enumerate(held):
            mdl.v[0, j] = float(problem.speed[k, m])
            mdl.eb[0, j] = float(problem.backward_energy[k, m] / unit[k])
        mdl.F[0] = float(problem.forward_sum[k] / unit[k])
        mdl.cap[0] = float(cap[k, 0] / unit[k]) if not n_levels else 1e9
        mdl.w[0] = float(problem.weight[k])
        # The energy tie-break is normalised by the whole network's budget, not this device's.
        mdl.ep[0] = eps * float(unit[k])
        for lv in range(n_levels):
            mdl.lscale[0, lv] = float(scale[k, lv])
            mdl.lcap[0, lv] = float(cap[k, lv] / unit[k])
        solver.update_parameters()
        h = _highs_of(solver)
        _configure(h, remaining, mip_gap)
        _device_warm_start(h, solver, built, problem, k, held, warm[k, held],
                           int(warm_level[k]), float(unit[k]))
        status, values, _ = _run(h)
        if values is not None:
            candidate[k, held] = np.rint(values[cols]).astype(np.int64)
            highs_total += h.getInfo().objective_function_value
        proven &= status == "Optimal"
        solved += 1
    # HiGHS accepts points within its feasibility tolerance: keep its table for a device only
    # when the problem's own arithmetic accepts it and it is no worse than the (exact, checked)
    # breakpoint table (devices are independent here: one vectorised comparison).
    keep = device_values(problem, candidate) >= warm_value
    keep[infeasible_devices(problem, candidate)] = False
    tau = np.where(keep[:, None], candidate, warm)
    elapsed = time.perf_counter() - t0
    # The enumeration's certificate proves the gap whether or not HiGHS reached every device
    # (devices it did not reach keep their enumeration tables).
    alloc = Allocation(problem, tau, solver="exact",
                       status="optimal" if proven else "time_limit",
                       bound=float(device_bound.sum()),
                       solve_time_s=elapsed - build_s, build_time_s=build_s,
                       info={"decomposition": "per device", "devices_solved_by_highs": solved,
                             "highs_objective": highs_total,
                             "certificate": "breakpoint enumeration"})
    if alloc.gap <= mip_gap:
        alloc.status = "optimal"
    elif alloc.status == "optimal":
        alloc.status = "feasible"
    return alloc


def _device_warm_start(h: highspy.Highs, solver: Highs, built: BuiltModel, problem: Problem,
                       k: int, held: np.ndarray, tau: np.ndarray, level: int,
                       unit: float) -> None:
    """Warm start of the one-device template with device k's table (held modalities only)."""
    mdl = built.model
    var_map = solver._pyomo_var_to_solver_var_map
    tau = np.asarray(tau, float)
    progress = problem.speed[k, held] * tau
    floor = float(progress.min())
    local = float(tau.max())
    index = [var_map[id(mdl.tau[0, j])] for j in range(held.size)]
    value = tau.tolist()
    index += [var_map[id(mdl.L[0])], var_map[id(mdl.z[0])]]
    value += [local, floor]
    for j in range(held.size):
        index.append(var_map[id(mdl.s[0, j])])
        value.append(max(0.0, float(progress[j] - (1 + problem.delta) * floor)))
    if problem.has_levels:
        top = (local * problem.forward_sum[k] + float(tau @ problem.backward_energy[k, held])) / unit
        for lv in mdl.LV:
            chosen = int(lv) == level
            index += [var_map[id(mdl.y[0, lv])], var_map[id(mdl.x[0, lv])]]
            value += [1.0 if chosen else 0.0, top if chosen else 0.0]
    h.setSolution(len(index), np.asarray(index, np.int32), np.asarray(value, float))


# The network MILP's two variants (see _solve_network_scope): caps widened far beyond HiGHS's
# 1e-9 tolerance for a dual bound valid for the problem as stated, and narrowed (solved with a
# 1e-10 tolerance, presolve off) for points that fit without repair.
WIDEN = 1e-8
NARROW = -3e-10
HEURISTIC_CERTIFICATE = "lagrangian dual bound (the heuristic's own certificate)"


def _network_highs(problem: Problem, relax: float, tau: np.ndarray, time_limit: float | None,
                   mip_gap: float, tolerance: float = HIGHS_TOLERANCE
                   ) -> tuple[str, np.ndarray | None, float, float, float]:
    """Solve the network MILP with caps scaled by (1 + relax), warm-started with ``tau``.
    Returns HiGHS's status, its integer table (or None), its dual bound, its own objective
    value and the build time."""
    tb = time.perf_counter()
    built = build_model(problem, relax=relax)
    solver = Highs()
    solver.set_instance(built.model)
    h = _highs_of(solver)
    h.setOptionValue("output_flag", False)
    cols = _column_index(solver, built)
    build_s = time.perf_counter() - tb
    _configure(h, time_limit, mip_gap)
    if tolerance != HIGHS_TOLERANCE:
        h.setOptionValue("presolve", "off")
        h.setOptionValue("mip_feasibility_tolerance", tolerance)
        h.setOptionValue("primal_feasibility_tolerance", tolerance)
    _warm_start(h, solver, built, problem, tau)
    status, values, bound = _run(h)
    table, objective = None, math.nan
    if values is not None:
        table = np.zeros(problem.holds.shape, np.int64)
        for (k, m), c in zip(built.pairs, cols):
            table[k, m] = int(round(values[c]))
        objective = h.getInfo().objective_function_value
    return status, table, bound, objective, build_s


def _solve_network_scope(problem: Problem, time_limit: float | None, mip_gap: float) -> Allocation:
    """Lagrangian heuristic, then HiGHS on the monolithic MILP warm-started from it.

    Certificates: the Lagrangian dual bound (rigorous by construction) and HiGHS's dual bound
    of the model with caps widened by `WIDEN` (a relaxation of the problem as stated, by a
    margin far beyond HiGHS's tolerance; HiGHS's bound of the model as stated came out below
    the optimum on knife-edge budgets). HiGHS's point is checked by the problem's own
    arithmetic; if it does not fit, the narrowed model is solved for one that does, and the
    repaired point is a candidate too. The bound never comes from a table.
    """
    from dmmlkd.allocator.repair import infeasible_devices, repair
    from dmmlkd.allocator.solvers.lagrangian import solve_lagrangian

    t0 = time.perf_counter()
    start = solve_lagrangian(problem)
    heuristic_s = time.perf_counter() - t0
    lag_bound = start.bound
    if relative_gap(start.objective, lag_bound) <= mip_gap:
        start.solver, start.status = "exact", "optimal"
        start.info["certificate"] = HEURISTIC_CERTIFICATE
        return start

    def remaining() -> float | None:
        # HiGHS gets 90% of the limit less what is spent: the rest pays for building,
        # checking and scoring, so the answer comes within the limit.
        if time_limit is None:
            return None
        return max(0.9 * time_limit - (time.perf_counter() - t0), 0.5)

    ts = time.perf_counter()
    status, table, highs_bound, highs_objective, build_s = _network_highs(
        problem, WIDEN, start.tau, remaining(), mip_gap)
    candidates = [start.tau]
    narrowed = False
    if table is not None:
        if infeasible_devices(problem, table).size == 0:
            candidates.append(table)
        else:
            fixed = repair(problem, table)
            candidates.append(fixed)
            best = max(candidates, key=lambda t: evaluate(problem, t).objective)
            _, narrow, _, _, extra_s = _network_highs(problem, NARROW, best, remaining(), mip_gap,
                                                   tolerance=1e-10)
            build_s += extra_s
            narrowed = True
            if narrow is not None and infeasible_devices(problem, narrow).size == 0:
                candidates.append(narrow)
    highs_s = time.perf_counter() - ts - build_s
    tau = max(candidates, key=lambda t: evaluate(problem, t).objective)
    # Rounding in HiGHS's bound (its LP duals carry a 1e-7 dual tolerance on O(1) costs).
    safe_highs = highs_bound + 1e-10 * abs(highs_bound) if math.isfinite(highs_bound) else math.inf
    bound = min(lag_bound, safe_highs)
    alloc = Allocation(
        problem, tau, solver="exact", status="feasible", bound=bound,
        solve_time_s=heuristic_s + highs_s, build_time_s=build_s,
        info={"highs_status": status, "highs_bound": highs_bound,
              "highs_objective": highs_objective, "lagrangian_bound": lag_bound,
              "heuristic_objective": start.objective, "highs_time_s": highs_s,
              "narrowed_resolve": narrowed,
              "certificate": HEURISTIC_CERTIFICATE if bound == lag_bound
              else f"HiGHS dual bound (caps widened by {WIDEN:g})"},
    )
    # "optimal" only when proven within the gap by the table's own score (HiGHS's "Optimal"
    # is about its own, tolerance-relaxed, incumbent).
    if alloc.gap <= mip_gap:
        alloc.status = "optimal"
    elif status == "Time limit reached":
        alloc.status = "time_limit"
    return alloc


def solve_exact(
    problem: Problem, time_limit: float | None = None, mip_gap: float = DEFAULTS.mip_gap, **_: object
) -> Allocation:
    """Solve the MILP with HiGHS through Pyomo, decomposed by scope (see the module docstring)."""
    if problem.scope == "device":
        return _solve_device_scope(problem, time_limit, mip_gap)
    return _solve_network_scope(problem, time_limit, mip_gap)
