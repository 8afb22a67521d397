"""Device energy profiles for the learning loop, from `metrics.energy` (shared with the allocator).

Computation: cycles per sample of a modality's forward pass = 2 x (multiply-adds + bias
additions) of its block (`Network.block_cycles`; for an MLP block exactly 2 x its parameters,
for a CNN the multiply-adds of every convolution position), backward ~ 2 x forward;
per-iteration energy kappa f^2 D_b cycles.
Communication: each round a device broadcasts its held blocks and the shared blocks (32-bit
parameters) at the Shannon rate of its weakest link.
Time and frequency (`learner.clock`): the energies are at the device's drawn f_max; a round at a
lower CPU level f costs (f / f_max)^2 of its computation energy and takes cycles / f seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dmmlkd.learner import clock
from dmmlkd.learner.topology import Topology, weakest_link_gain
from dmmlkd.metrics.energy import (
    BACKWARD_CYCLES_FACTOR,
    BANDWIDTH_HZ,
    CPU_RANGE_HZ,
    DEFAULT_CAPACITANCE,
    PARAMETER_BITS,
    TX_POWER_W,
    cheapest_round_j,
    communication_energy_j,
    communication_time_s,
    computation_energy_j,
    iteration_energy_j,
    path_gain,
    round_cycles,
)


@dataclass(frozen=True)
class EnergyProfile:
    """Per-iteration and per-round energies of every device (J)."""

    forward_j: NDArray[np.float64]  # (K, M)
    backward_j: NDArray[np.float64]  # (K, M)
    comm_j: NDArray[np.float64]  # (K,)
    cpu_hz: NDArray[np.float64]  # (K,)

    fusion_rule: str = "training"
    # Time model (learner.clock); None: no clock data (a hand-made profile), f_max only.
    cycles_forward: NDArray[np.float64] | None = None  # (K, M) cycles per sample, forward pass
    cycles_backward: NDArray[np.float64] | None = None  # (K, M) cycles per sample, backward pass
    batch_size: int = 1  # samples per iteration (cycles of an iteration = batch x per sample)
    comm_s: NDArray[np.float64] | None = None  # (K,) broadcast time per round
    cpu_levels_hz: NDArray[np.float64] | None = None  # (K, L) ascending, the last is cpu_hz

    def levels_hz(self) -> NDArray[np.float64]:
        """Every device's CPU levels (K, L), ascending (f_max alone without level data)."""
        return self.cpu_hz[:, None] if self.cpu_levels_hz is None else self.cpu_levels_hz

    def planning_cycles(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(forward, backward) cycles per sample folded like `planning_energies` (training rule:
        a stopped encoder runs no forward pass, so forward cycles are paid tau times)."""
        if self.cycles_forward is None or self.cycles_backward is None:
            raise ValueError("this energy profile has no cycle counts (made without make_profile)")
        if self.fusion_rule == "training":
            return np.zeros_like(self.cycles_forward), self.cycles_forward + self.cycles_backward
        return self.cycles_forward, self.cycles_backward

    def device_time_s(self, tau: NDArray[np.int64], holds: NDArray[np.bool_],
                      cpu_hz: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
        """Each device's round time (K,) at frequencies cpu_hz (None: f_max); 0 if not training."""
        comm = np.zeros_like(self.cpu_hz) if self.comm_s is None else self.comm_s
        cycles = round_cycles(tau, holds, self.batch_size, *self.planning_cycles())
        return clock.device_time_s(cycles, self.cpu_hz if cpu_hz is None else cpu_hz, comm)

    def planning_energies(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(forward, backward) per iteration as the allocator should see them.

        Under the ``training`` fusion rule a stopped encoder runs no forward pass, so a
        modality's forward cost is paid tau times, not L_k times: it folds into the
        per-iteration cost and the L_k term vanishes.
        """
        if self.fusion_rule == "training":
            return np.zeros_like(self.forward_j), self.forward_j + self.backward_j
        return self.forward_j, self.backward_j

    def planning_fields(self) -> dict[str, Any]:
        """The energy, frequency and time fields of a `RoundState` as the allocator should see
        them (copies: a policy cannot change the profile); cycles are None without cycle data."""
        forward_j, backward_j = self.planning_energies()
        cycles = self.planning_cycles() if self.cycles_forward is not None else (None, None)
        return {"forward_j": forward_j, "backward_j": backward_j, "comm_j": self.comm_j.copy(),
                "cpu_hz": self.cpu_hz.copy(), "cpu_levels_hz": self.levels_hz().copy(),
                "cycles_forward": cycles[0], "cycles_backward": cycles[1],
                "batch_size": self.batch_size,
                "comm_time_s": np.zeros_like(self.cpu_hz) if self.comm_s is None
                else self.comm_s.copy()}

    def round_cost(self, tau: NDArray[np.int64], holds: NDArray[np.bool_],
                   cpu_hz: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
        """Computation plus communication energy of a round with counts tau (0 for no training),
        computing at frequencies cpu_hz (K,) (None: f_max): kappa f^2 C = (f/f_max)^2 E(f_max)."""
        forward, backward = self.planning_energies()
        compute = computation_energy_j(tau, holds, forward, backward)
        if cpu_hz is not None:
            compute = compute * clock.energy_scale(cpu_hz, self.cpu_hz)
        return compute + np.where(np.asarray(tau).max(axis=1) > 0, self.comm_j, 0.0)

    def cheapest_round(self, holds: NDArray[np.bool_], tau_min: int) -> NDArray[np.float64]:
        """Energy of tau_min on every held modality plus communication (metrics.energy's rule)."""
        forward, backward = self.planning_energies()
        return cheapest_round_j(holds, forward, backward, self.comm_j, tau_min)

    def executed_cost(self, forward_passes: NDArray[np.int64] | None,
                      backward_passes: NDArray[np.int64] | None,
                      broadcasts: NDArray[np.bool_],
                      cpu_hz: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
        """Energy of the passes local training actually executed (K,): forward passes x ef +
        backward passes x eb (at frequencies cpu_hz, None: f_max) + communication for each
        device that broadcast.

        Computed from counts, independently of `round_cost` (which prices the policy's tau):
        the two must agree, or the simulation charges for work it did not do (or vice versa).
        """
        fwd = np.zeros_like(self.forward_j) if forward_passes is None else forward_passes
        bwd = np.zeros_like(self.backward_j) if backward_passes is None else backward_passes
        compute = (np.asarray(fwd, float) * self.forward_j).sum(axis=1) \
            + (np.asarray(bwd, float) * self.backward_j).sum(axis=1)
        if cpu_hz is not None:
            compute = compute * clock.energy_scale(cpu_hz, self.cpu_hz)
        return compute + np.where(broadcasts, self.comm_j, 0.0)


def make_profile(holds: NDArray[np.bool_], block_params: list[int], shared_params: int,
                 topology: Topology, batch_size: int, seed: int = 0,
                 cpu_range_hz: tuple[float, float] = CPU_RANGE_HZ, tx_power_w: float = TX_POWER_W,
                 bandwidth_hz: float = BANDWIDTH_HZ, fusion_rule: str = "training",
                 block_cycles: list[float] | None = None,
                 cpu_levels: Sequence[float] = clock.DEFAULT_CPU_LEVELS,
                 cpu_hz: NDArray[np.float64] | None = None,
                 distance_m: NDArray[np.float64] | None = None,
                 bandwidths_hz: NDArray[np.float64] | None = None) -> EnergyProfile:
    """Heterogeneous devices: CPU frequency drawn per device (its f_max; ``cpu_levels`` are
    fractions of it); links from the topology.

    ``block_cycles``: forward cycles per sample of each block (None: 2 x its parameters, the
    count for fully-connected blocks); communication always sends the parameters.
    A fleet (learner/fleet.py) may fix ``cpu_hz`` (f_max), the broadcast ``distance_m`` (instead
    of the topology's farthest neighbour) and per-device ``bandwidths_hz``.
    """
    rng = np.random.default_rng(seed + 104_729)
    holds = np.asarray(holds, bool)
    cpu = np.asarray(rng.uniform(*cpu_range_hz, size=holds.shape[0]), dtype=np.float64) \
        if cpu_hz is None else np.asarray(cpu_hz, np.float64)
    band: NDArray[np.float64] | float = bandwidth_hz if bandwidths_hz is None \
        else np.asarray(bandwidths_hz, np.float64)
    cycles = (2.0 * np.asarray(block_params, float) if block_cycles is None
              else np.asarray(block_cycles, float))
    forward = np.where(holds, iteration_energy_j(DEFAULT_CAPACITANCE, cpu[:, None], batch_size,
                                                 cycles[None, :]), 0.0)
    backward = BACKWARD_CYCLES_FACTOR * forward
    bits = PARAMETER_BITS * (np.where(holds, np.asarray(block_params, float), 0.0).sum(axis=1)
                             + shared_params)
    gain = weakest_link_gain(topology) if distance_m is None else path_gain(distance_m)
    comm = communication_energy_j(tx_power_w, bits, gain, band)
    cycles_fwd = np.where(holds, cycles[None, :], 0.0)
    return EnergyProfile(forward, backward, comm, cpu, fusion_rule, cycles_forward=cycles_fwd,
                         cycles_backward=BACKWARD_CYCLES_FACTOR * cycles_fwd, batch_size=batch_size,
                         comm_s=communication_time_s(tx_power_w, bits, gain, band),
                         cpu_levels_hz=clock.cpu_levels_hz(cpu, cpu_levels))
