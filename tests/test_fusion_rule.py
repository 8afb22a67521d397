"""The 'training' fusion rule: stopped encoders leave the fusion and cost no forward passes."""

from __future__ import annotations

import numpy as np
import pytest

from dmmlkd.allocator import Problem, solve, violations
from dmmlkd.learner.config import TrainConfig
from dmmlkd.learner.energy import EnergyProfile
from dmmlkd.learner.loop import build


def test_round_cost_per_rule_by_hand() -> None:
    holds = np.array([[True, True]])
    tau = np.array([[4, 1]])
    fwd, bwd, comm = np.array([[0.1, 0.2]]), np.array([[1.0, 2.0]]), np.array([0.5])
    all_rule = EnergyProfile(fwd, bwd, comm, np.ones(1), fusion_rule="all")
    training = EnergyProfile(fwd, bwd, comm, np.ones(1), fusion_rule="training")
    # all: L = 4 forward passes of both encoders, backward per tau, plus comm.
    assert all_rule.round_cost(tau, holds)[0] == pytest.approx(4 * 0.3 + 4 * 1.0 + 1 * 2.0 + 0.5)
    # training: each encoder runs forward only while it trains.
    assert training.round_cost(tau, holds)[0] == pytest.approx(4 * 1.1 + 1 * 2.2 + 0.5)
    # With equal counts both rules cost the same.
    same = np.array([[3, 3]])
    assert all_rule.round_cost(same, holds)[0] == pytest.approx(training.round_cost(same, holds)[0])


def test_allocator_accepts_zero_forward_energy_and_solves_exactly() -> None:
    problem = Problem(
        modalities=("a", "b"), devices=("d",), holds=np.ones((1, 2), bool),
        speed=np.array([[0.02, 0.01]]), forward_energy=np.zeros((1, 2)),
        backward_energy=np.array([[1.0, 1.0]]), comm_energy=np.zeros(1), budget=np.array([9.0]),
        tau_max=10,
    )
    alloc = solve(problem, "exact", mip_gap=1e-9)
    assert violations(problem, alloc.tau) == []
    # Balance v * tau within 10% using 9 J at 1 J per iteration: (3, 6) gives 0.06 = 0.06.
    assert alloc.tau.tolist() == [[3, 6]]
    assert solve(problem, "heuristic").objective == pytest.approx(alloc.objective)


def test_negative_forward_energy_still_rejected() -> None:
    from dmmlkd.allocator import ProblemError

    with pytest.raises(ProblemError, match="forward_energy for 'a' must be >= 0"):
        Problem(modalities=("a",), devices=("d",), holds=np.ones((1, 1), bool),
                speed=np.ones((1, 1)), forward_energy=-np.ones((1, 1)),
                backward_energy=np.ones((1, 1)), comm_energy=np.zeros(1), budget=np.ones(1))


def test_policy_sees_planning_energies_of_the_rule() -> None:
    setup = build(TrainConfig(dataset="synthetic", devices=3, rounds=1, n_samples=300))
    forward, backward = setup.profile.planning_energies()
    assert (forward == 0).all()
    np.testing.assert_allclose(backward, setup.profile.forward_j + setup.profile.backward_j)
