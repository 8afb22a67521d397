"""The shared energy model by hand (the allocator and the learner both use it)."""

from __future__ import annotations

import numpy as np
import pytest

from dmmlkd.metrics.energy import communication_energy_j, computation_energy_j, iteration_energy_j


def test_computation_energy_by_hand() -> None:
    tau = np.array([[3, 1]])
    holds = np.array([[True, True]])
    # L = 3 forward passes of both encoders (0.1 + 0.2) plus 3 x 1 + 1 x 2 backward.
    assert computation_energy_j(tau, holds, [[0.1, 0.2]], [[1.0, 2.0]])[0] == pytest.approx(
        3 * 0.3 + 3 * 1.0 + 1 * 2.0)


def test_iteration_and_communication_energy_by_hand() -> None:
    # kappa f^2 D c = 1e-28 * (2e9)^2 * 16 * 5e5
    assert iteration_energy_j(1e-28, 2e9, 16, 5e5) == pytest.approx(1e-28 * 4e18 * 16 * 5e5)
    # p S / (B log2(1 + p g / (N0 B))) with snr = 0.2 * 1e-9 / (1e-20 * 1e6) = 2e4
    expected = 0.2 * 8e6 / (1e6 * np.log2(1.0 + 2e4))
    assert communication_energy_j(0.2, 8e6, 1e-9, 1e6, 1e-20) == pytest.approx(expected)


def test_round_cycles_and_deadline_rule_by_hand() -> None:
    from dmmlkd.metrics.energy import fits_deadline, round_cycles

    # B = 10, tau = (3, 1): L = 3 forward passes of both (1e5 + 2e5) + 3 x 4e5 + 1 x 6e5
    # backward = 10 * (9e5 + 1.8e6) = 2.7e7 cycles.
    cycles = round_cycles(np.array([[3, 1]]), np.array([[True, True]]), 10,
                          [[1e5, 2e5]], [[4e5, 6e5]])
    assert cycles[0] == pytest.approx(2.7e7)
    # The shared 1e-9 relative tolerance: a hair over is in, 1e-8 over is out.
    assert fits_deadline([1.0 + 5e-10, 1.0], 1.0).tolist() == [True, True]
    assert not fits_deadline(1.0 + 1e-8, 1.0)


def test_generator_and_learner_share_the_fleet_constants() -> None:
    import inspect

    from dmmlkd.learner.energy import make_profile
    from dmmlkd.metrics.energy import BANDWIDTH_HZ, CPU_RANGE_HZ, TX_POWER_W

    defaults = inspect.signature(make_profile).parameters
    assert defaults["cpu_range_hz"].default == CPU_RANGE_HZ
    assert defaults["bandwidth_hz"].default == BANDWIDTH_HZ
    assert defaults["tx_power_w"].default == TX_POWER_W
    from dmmlkd.allocator import generate_problem

    problem = generate_problem(devices=200, modalities=2, cpu_levels=1, seed=0)
    # One level per device = its f_max, drawn from the shared CPU range.
    assert problem.cpu_levels_hz.min() >= CPU_RANGE_HZ[0]
    assert problem.cpu_levels_hz.max() <= CPU_RANGE_HZ[1]


def test_random_availability_is_one_function() -> None:
    from dmmlkd.allocator.generate import random_availability as from_generator
    from dmmlkd.learner.partition import modality_availability
    from dmmlkd.metrics.availability import random_availability

    assert from_generator is random_availability
    drawn = random_availability(9, 3, 0.5, np.random.default_rng(4))
    learner = modality_availability(9, ["a", "b", "c"], mode="random", missing_rate=0.5, seed=4)
    np.testing.assert_array_equal(drawn, learner)
    assert drawn.any(axis=1).all() and drawn.any(axis=0).all()
