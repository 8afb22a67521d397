"""Device energy profiles for the learning loop, from `metrics.energy` (shared with the allocator).

Computation: cycles per sample of a modality's forward pass = 2 x (multiply-adds + bias
additions) of its block (`Network.block_cycles`; for an MLP block exactly 2 x its parameters,
for a CNN the multiply-adds of every convolution position), backward ~ 2 x forward;
per-iteration energy kappa f^2 D_b cycles.
Communication: each round a device broadcasts its held blocks and the shared blocks (32-bit
parameters) at the Shannon rate of its weakest link.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from learner.topology import Topology, weakest_link_gain
from metrics.energy import (
    DEFAULT_CAPACITANCE,
    communication_energy_j,
    computation_energy_j,
    iteration_energy_j,
)


@dataclass(frozen=True)
class EnergyProfile:
    """Per-iteration and per-round energies of every device (J)."""

    forward_j: NDArray[np.float64]  # (K, M)
    backward_j: NDArray[np.float64]  # (K, M)
    comm_j: NDArray[np.float64]  # (K,)
    cpu_hz: NDArray[np.float64]  # (K,)

    fusion_rule: str = "training"

    def planning_energies(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(forward, backward) per iteration as the allocator should see them.

        Under the ``training`` fusion rule a stopped encoder runs no forward pass, so a
        modality's forward cost is paid tau times, not L_k times: it folds into the
        per-iteration cost and the L_k term vanishes.
        """
        if self.fusion_rule == "training":
            return np.zeros_like(self.forward_j), self.forward_j + self.backward_j
        return self.forward_j, self.backward_j

    def round_cost(self, tau: NDArray[np.int64], holds: NDArray[np.bool_]) -> NDArray[np.float64]:
        """Computation plus communication energy of a round with counts tau (0 for no training)."""
        forward, backward = self.planning_energies()
        compute = computation_energy_j(tau, holds, forward, backward)
        return compute + np.where(np.asarray(tau).max(axis=1) > 0, self.comm_j, 0.0)

    def cheapest_round(self, holds: NDArray[np.bool_], tau_min: int) -> NDArray[np.float64]:
        """Energy of tau_min on every held modality plus communication."""
        return self.round_cost(np.where(holds, tau_min, 0), holds)


def make_profile(holds: NDArray[np.bool_], block_params: list[int], shared_params: int,
                 topology: Topology, batch_size: int, seed: int = 0,
                 cpu_range_hz: tuple[float, float] = (0.5e9, 2.0e9), tx_power_w: float = 0.1,
                 bandwidth_hz: float = 1e6, fusion_rule: str = "training",
                 block_cycles: list[float] | None = None) -> EnergyProfile:
    """Heterogeneous devices: CPU frequency drawn per device; links from the topology.

    ``block_cycles``: forward cycles per sample of each block (None: 2 x its parameters, the
    count for fully-connected blocks); communication always sends the parameters.
    """
    rng = np.random.default_rng(seed + 104_729)
    holds = np.asarray(holds, bool)
    cpu = np.asarray(rng.uniform(*cpu_range_hz, size=holds.shape[0]), dtype=np.float64)
    cycles = (2.0 * np.asarray(block_params, float) if block_cycles is None
              else np.asarray(block_cycles, float))
    forward = np.where(holds, iteration_energy_j(DEFAULT_CAPACITANCE, cpu[:, None], batch_size,
                                                 cycles[None, :]), 0.0)
    backward = 2.0 * forward
    bits = 32.0 * (np.where(holds, np.asarray(block_params, float), 0.0).sum(axis=1) + shared_params)
    gain = weakest_link_gain(topology)
    comm = communication_energy_j(tx_power_w, bits, gain, bandwidth_hz)
    return EnergyProfile(forward, backward, comm, cpu, fusion_rule)
