"""The shared energy model by hand (the allocator and the learner both use it)."""

from __future__ import annotations

import numpy as np
import pytest

from metrics.energy import communication_energy_j, computation_energy_j, iteration_energy_j


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
