"""Allocator-backed policies build the right problem from the learner's round state."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from dmmlkd.allocator import AllocatorOptions, violations
from dmmlkd.bridge.policies import AllocatorPolicy, build_problem


def make_state(**changes):
    holds = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1], [1, 0, 1]], bool)
    state = SimpleNamespace(
        round=2, rounds_total=10, devices=["a", "b", "c", "d"], modalities=["x", "y", "z"],
        holds=holds, speed=np.where(holds, [[0.01, 0.05, 0.0]] * 4, 0.0) + holds * 0.02,
        battery_j=np.array([80.0, 40.0, 16.0, 0.05]),
        forward_j=np.full((4, 3), 0.01), backward_j=np.full((4, 3), 0.02),
        comm_j=np.full(4, 0.1), active=np.array([True, True, True, True]),
        tau_min=1, tau_max=20,
    )
    for key, value in changes.items():
        setattr(state, key, value)
    return state


def test_budget_is_battery_over_remaining_rounds_and_depleted_device_dropped() -> None:
    state = make_state()
    problem, members, dropped = build_problem(state)
    # Device d cannot pay tau_min (2 x 0.03 J) plus comm (0.1 J) from 0.05 J: dropped.
    assert dropped == [3]
    assert members.tolist() == [0, 1, 2]
    # 8 rounds remain (rounds 2..9): budget = battery / 8.
    np.testing.assert_allclose(problem.budget, [10.0, 5.0, 2.0])
    assert problem.devices == ("a", "b", "c")
    np.testing.assert_array_equal(problem.holds, state.holds[:3])


def test_inactive_devices_are_not_in_the_problem() -> None:
    state = make_state(active=np.array([True, False, True, True]))
    _, members, dropped = build_problem(state)
    assert members.tolist() == [0, 2] and dropped == [3]


def test_share_below_cheapest_round_gets_the_cheapest_round() -> None:
    # Battery 0.5 J over 8 rounds is 0.0625 J, below the 0.16 J cheapest round of device a.
    state = make_state(battery_j=np.array([0.5, 40.0, 16.0, 10.0]))
    problem, _, _ = build_problem(state)
    cheapest = 1 * (0.03 * 2) + 0.1
    assert problem.budget[0] == pytest.approx(cheapest, rel=1e-6)


@pytest.mark.parametrize("solver", ["exact", "heuristic", "proportional", "uniform"])
@pytest.mark.parametrize("scope", ["device", "network"])
def test_policy_returns_feasible_full_table(solver: str, scope: str) -> None:
    state = make_state()
    decision = AllocatorPolicy(options=AllocatorOptions(solver=solver, scope=scope))(state)
    assert decision.tau.shape == (4, 3)
    assert (decision.tau[3] == 0).all() and decision.dropped == [3]
    assert (decision.tau[~state.holds] == 0).all()
    problem, members, _ = build_problem(state, options=AllocatorOptions(scope=scope))
    assert violations(problem, decision.tau[members]) == []
    assert decision.info["status"] in {"optimal", "feasible", "time_limit"}


def test_balanced_policy_gives_fast_modality_fewer_iterations() -> None:
    state = make_state()
    tau = AllocatorPolicy()(state).tau
    # Device a: x at speed 0.03, y at 0.07 -> the slow x gets more iterations.
    assert tau[0, 0] > tau[0, 1]
