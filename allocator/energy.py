"""From physical device parameters to the per-iteration and per-round energies of a problem.

Thin wrappers over `metrics.energy` (shared with the learner's battery accounting) that read
the optional physical fields of a problem file's device entry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from dmmlkd.allocator.errors import ProblemError
from dmmlkd.metrics.energy import (
    BACKWARD_CYCLES_FACTOR,
    DEFAULT_BATCH_SIZE,
    DEFAULT_CAPACITANCE,
    DEFAULT_NOISE_PSD_W_PER_HZ,
    communication_energy_j,
    communication_time_s,
    iteration_energy_j,
)

# Physical fields a device entry may carry instead of derived energies.
COMPUTE_FIELDS = ("cpu_hz", "cycles_forward", "cycles_backward")
COMM_FIELDS = ("tx_power_w", "bandwidth_hz", "channel_gain", "model_bits")


def _get(entry: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in entry:
        raise ProblemError(f"{where}: missing field {key!r}")
    return entry[key]


def _num(entry: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    """A finite int/float field (the reader's one rule: no bools, no text)."""
    value = _get(entry, key, where) if default is None or key in entry else default
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ProblemError(f"{where}: {key} must be a finite number (got {value!r})")
    return float(value)


def _nums(entry: Mapping[str, Any], key: str, where: str, default: Any = None) -> Any:
    value = _get(entry, key, where) if default is None or key in entry else default
    if isinstance(value, np.ndarray):
        return value
    if not isinstance(value, list) or not all(
            type(x) in (int, float) and math.isfinite(x) for x in value):
        raise ProblemError(f"{where}: {key} must be a list of finite numbers")
    return np.asarray(value, float)


def iteration_energies(entry: Mapping[str, Any], n_held: int, where: str) -> tuple[Any, Any]:
    """Forward and backward J per iteration for a device entry with CPU parameters."""
    cap = _num(entry, "capacitance", where, DEFAULT_CAPACITANCE)
    batch = _num(entry, "batch_size", where, float(DEFAULT_BATCH_SIZE))
    cpu = _num(entry, "cpu_hz", where)
    fwd_cycles = _nums(entry, "cycles_forward", where)
    bwd_cycles = _nums(entry, "cycles_backward", where, BACKWARD_CYCLES_FACTOR * fwd_cycles)
    for name, arr in (("cycles_forward", fwd_cycles), ("cycles_backward", bwd_cycles)):
        if arr.shape != (n_held,):
            raise ProblemError(f"{where}: {name} needs {n_held} values (one per held modality)")
    if cpu <= 0 or cap <= 0 or batch <= 0:
        raise ProblemError(f"{where}: cpu_hz, capacitance and batch_size must be > 0")
    return (
        iteration_energy_j(cap, cpu, batch, fwd_cycles),
        iteration_energy_j(cap, cpu, batch, bwd_cycles),
    )


def _radio(entry: Mapping[str, Any], where: str) -> tuple[float, float, float, float, float]:
    power = _num(entry, "tx_power_w", where)
    bandwidth = _num(entry, "bandwidth_hz", where)
    gain = _num(entry, "channel_gain", where)
    bits = _num(entry, "model_bits", where)
    noise = _num(entry, "noise_psd_w_per_hz", where, DEFAULT_NOISE_PSD_W_PER_HZ)
    if min(power, bandwidth, gain, bits, noise) <= 0:
        raise ProblemError(f"{where}: radio parameters must be > 0")
    return power, bits, gain, bandwidth, noise


def round_comm_energy(entry: Mapping[str, Any], where: str) -> float:
    """Broadcast energy p S / r of a device entry with radio parameters."""
    return float(communication_energy_j(*_radio(entry, where)))


def round_comm_time(entry: Mapping[str, Any], where: str) -> float:
    """Broadcast time S / r of a device entry with radio parameters."""
    return float(communication_time_s(*_radio(entry, where)))
