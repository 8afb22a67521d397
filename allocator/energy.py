"""From physical device parameters to the per-iteration and per-round energies of a problem.

Thin wrappers over `metrics.energy` (shared with the learner's battery accounting) that read
the optional physical fields of a problem file's device entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from allocator.errors import ProblemError
from metrics.energy import (
    DEFAULT_CAPACITANCE,
    DEFAULT_NOISE_PSD_W_PER_HZ,
    communication_energy_j,
    iteration_energy_j,
)

# Physical fields a device entry may carry instead of derived energies.
COMPUTE_FIELDS = ("cpu_hz", "cycles_forward", "cycles_backward")
COMM_FIELDS = ("tx_power_w", "bandwidth_hz", "channel_gain", "model_bits")


def _get(entry: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in entry:
        raise ProblemError(f"{where}: missing field {key!r}")
    return entry[key]


def iteration_energies(entry: Mapping[str, Any], n_held: int, where: str) -> tuple[Any, Any]:
    """Forward and backward J per iteration for a device entry with CPU parameters."""
    cap = float(entry.get("capacitance", DEFAULT_CAPACITANCE))
    batch = float(entry.get("batch_size", 32))
    cpu = float(_get(entry, "cpu_hz", where))
    fwd_cycles = np.asarray(_get(entry, "cycles_forward", where), float)
    bwd_cycles = np.asarray(entry.get("cycles_backward", 2.0 * fwd_cycles), float)
    for name, arr in (("cycles_forward", fwd_cycles), ("cycles_backward", bwd_cycles)):
        if arr.shape != (n_held,):
            raise ProblemError(f"{where}: {name} needs {n_held} values (one per held modality)")
    if cpu <= 0 or cap <= 0 or batch <= 0:
        raise ProblemError(f"{where}: cpu_hz, capacitance and batch_size must be > 0")
    return (
        iteration_energy_j(cap, cpu, batch, fwd_cycles),
        iteration_energy_j(cap, cpu, batch, bwd_cycles),
    )


def round_comm_energy(entry: Mapping[str, Any], where: str) -> float:
    """Broadcast energy p S / r of a device entry with radio parameters."""
    power = float(_get(entry, "tx_power_w", where))
    bandwidth = float(_get(entry, "bandwidth_hz", where))
    gain = float(_get(entry, "channel_gain", where))
    bits = float(_get(entry, "model_bits", where))
    noise = float(entry.get("noise_psd_w_per_hz", DEFAULT_NOISE_PSD_W_PER_HZ))
    if min(power, bandwidth, gain, bits, noise) <= 0:
        raise ProblemError(f"{where}: radio parameters must be > 0")
    return float(communication_energy_j(power, bits, gain, bandwidth, noise))
