"""The same MILP as `allocator.model`, built directly as sparse matrices for highspy.

Used to measure what Pyomo's model building costs (see docs/benchmarks.md) and to cross-check
the Pyomo model. Columns: tau (held pairs, row-major), L (K), z (K or 1), s (pairs or held
modalities). Rows: L - tau >= 0; energy <= compute budget; floor; balance.
"""

from __future__ import annotations

import highspy
import numpy as np
import scipy.sparse as sp

from dmmlkd.allocator.problem import Problem


def build_highs(problem: Problem) -> tuple[highspy.Highs, int]:
    """A highspy model of the problem's MILP (maximisation); returns it and the tau count.
    The level-free model only."""
    if problem.has_levels:
        raise ValueError("the direct highspy build covers the level-free model only")
    holds = problem.holds
    K, M = holds.shape
    kk, mm = np.nonzero(holds)
    P = kk.size
    v = problem.speed[kk, mm]
    eb = problem.backward_energy[kk, mm]
    eps = problem.epsilon / problem.energy_scale
    one_delta = 1.0 + problem.delta
    tau_c = np.arange(P)
    L_c = P + np.arange(K)
    rows, cols, vals = [], [], []
    lower, upper = [], []
    r = 0

    def add(rr, cc, vv):
        rows.append(np.asarray(rr))
        cols.append(np.asarray(cc))
        vals.append(np.asarray(vv, float))

    # L_k - tau_km >= 0
    idx = np.arange(P)
    add(r + idx, L_c[kk], np.ones(P))
    add(r + idx, tau_c, -np.ones(P))
    lower.append(np.zeros(P))
    upper.append(np.full(P, np.inf))
    r += P
    # F_k L_k + sum eb tau <= cap_k
    add(r + np.arange(K), L_c, problem.forward_sum)
    add(r + kk, tau_c, eb)
    lower.append(np.full(K, -np.inf))
    # The compute cap with the project's energy tolerance (as the Pyomo model and `violations`).
    upper.append(problem.level_caps().cap[:, 0])
    r += K
    if problem.scope == "device":
        z_c = P + K + np.arange(K)
        s_c = P + 2 * K + np.arange(P)
        n_cols = P + 2 * K + P
        add(r + idx, z_c[kk], np.ones(P))
        add(r + idx, tau_c, -v)
        lower.append(np.full(P, -np.inf))
        upper.append(np.zeros(P))
        r += P
        add(r + idx, tau_c, v)
        add(r + idx, z_c[kk], np.full(P, -one_delta))
        add(r + idx, s_c, -np.ones(P))
        lower.append(np.full(P, -np.inf))
        upper.append(np.zeros(P))
        r += P
        cost = np.zeros(n_cols)
        cost[z_c] = problem.weight
        cost[s_c] = -problem.mu
    else:
        held = np.flatnonzero(problem.holders > 0)
        pos = {int(m): i for i, m in enumerate(held)}
        Mh = held.size
        z_c = P + K
        s_c = P + K + 1 + np.arange(Mh)
        n_cols = P + K + 1 + Mh
        inv_n = 1.0 / problem.holders[mm]
        row_m = np.array([pos[int(m)] for m in mm])
        add(r + np.arange(Mh), np.full(Mh, z_c), np.ones(Mh))
        add(r + row_m, tau_c, -v * inv_n)
        lower.append(np.full(Mh, -np.inf))
        upper.append(np.zeros(Mh))
        r += Mh
        add(r + row_m, tau_c, v * inv_n)
        add(r + np.arange(Mh), np.full(Mh, z_c), np.full(Mh, -one_delta))
        add(r + np.arange(Mh), s_c, -np.ones(Mh))
        lower.append(np.full(Mh, -np.inf))
        upper.append(np.zeros(Mh))
        r += Mh
        cost = np.zeros(n_cols)
        cost[z_c] = 1.0
        cost[s_c] = -problem.mu
    cost[tau_c] -= eps * eb
    cost[L_c] -= eps * problem.forward_sum
    A = sp.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r, n_cols)
    )
    col_lo = np.zeros(n_cols)
    col_hi = np.full(n_cols, np.inf)
    col_lo[tau_c], col_hi[tau_c] = problem.tau_min, problem.tau_max
    col_lo[L_c], col_hi[L_c] = problem.tau_min, problem.tau_max
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n_cols, r
    lp.col_cost_ = cost
    lp.col_lower_, lp.col_upper_ = col_lo, col_hi
    lp.row_lower_, lp.row_upper_ = np.concatenate(lower), np.concatenate(upper)
    lp.sense_ = highspy.ObjSense.kMaximize
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = A.indptr
    lp.a_matrix_.index_ = A.indices
    lp.a_matrix_.value_ = A.data
    integrality = np.full(n_cols, highspy.HighsVarType.kContinuous)
    integrality[tau_c] = highspy.HighsVarType.kInteger
    lp.integrality_ = list(integrality)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.passModel(lp)
    return h, P
