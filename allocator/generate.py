"""Random, seeded, realistic allocation instances (energies from the physical model)."""

from __future__ import annotations

import numpy as np

from allocator.errors import ProblemError
from allocator.problem import Problem
from metrics.energy import (
    DEFAULT_CAPACITANCE,
    communication_energy_j,
    computation_energy_j,
    iteration_energy_j,
    path_gain,
)

MODALITY_NAMES = ("audio", "image", "imu", "text", "depth", "radar", "lidar", "thermal")


def modality_names(n: int) -> list[str]:
    """Readable modality names for generated instances."""
    if n <= len(MODALITY_NAMES):
        return list(MODALITY_NAMES[:n])
    return [f"mod{j}" for j in range(n)]


def random_availability(
    n_devices: int, n_modalities: int, missing_rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Holdings with each (device, modality) missing at a rate; every device keeps one, every
    modality keeps a holder."""
    holds = rng.random((n_devices, n_modalities)) >= missing_rate
    empty = ~holds.any(axis=1)
    holds[empty, rng.integers(0, n_modalities, size=int(empty.sum()))] = True
    for m in np.flatnonzero(~holds.any(axis=0)):
        holds[rng.integers(0, n_devices), m] = True
    return holds


def _sig(x: np.ndarray, digits: int = 6, up: bool = False) -> np.ndarray:
    """Round to significant digits (upwards with ``up``, so a budget never shrinks)."""
    x = np.asarray(x, float)
    scale = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(np.where(x == 0, 1.0, x)))))
    return (np.ceil(x * scale) if up else np.round(x * scale)) / scale


def generate_problem(
    devices: int = 10,
    modalities: int = 4,
    scope: str = "device",
    budget_scale: float = 1.0,
    missing_rate: float = 0.0,
    seed: int = 0,
    speed_spread: float = 1.0,
    energy_spread: float = 1.0,
    delta: float = 0.1,
    mu: float = 5.0,
    epsilon: float = 1e-3,
    tau_min: int = 1,
    tau_max: int = 20,
) -> Problem:
    """A seeded instance: heterogeneous CPUs and links, modality speeds spread over ~1 decade.

    The budget of each device is its communication energy plus ``budget_scale`` times the
    computation energy of running every held modality at the middle of the tau range (never less
    than the cheapest admissible round), so ``budget_scale = 1`` binds for most devices.
    """
    if devices < 1 or modalities < 1:
        raise ProblemError("devices and modalities must be >= 1")
    if not 0.0 <= missing_rate < 1.0:
        raise ProblemError(f"missing_rate must be in [0, 1) (got {missing_rate})")
    if budget_scale <= 0 or speed_spread < 0 or energy_spread < 0:
        raise ProblemError("budget_scale must be > 0 and spreads >= 0")
    rng = np.random.default_rng(seed)
    K, M = devices, modalities
    holds = random_availability(K, M, missing_rate, rng)
    # Training speed: a per-modality level (one decade apart at spread 1) times device noise.
    level = 10 ** rng.uniform(-2.0, -2.0 + speed_spread, size=M) if speed_spread else np.full(M, 1e-2)
    speed = level[None, :] * rng.lognormal(0.0, 0.25 * max(speed_spread, 0.0), size=(K, M))
    # Computation: CPU 0.5-2 GHz; forward cycles per sample per modality ~ encoder size.
    cpu_hz = rng.uniform(0.5e9, 2.0e9, size=K)
    cycles_fwd = 10 ** rng.uniform(5.0, 5.0 + energy_spread, size=M) if energy_spread else np.full(M, 1e5)
    cycles_fwd = cycles_fwd[None, :] * rng.lognormal(0.0, 0.1, size=(K, M))
    forward = iteration_energy_j(DEFAULT_CAPACITANCE, cpu_hz[:, None], 32, cycles_fwd)
    backward = 2.0 * forward
    # Communication: 32-bit parameters of the held encoders (~ cycles / 2 per parameter),
    # 0.1-0.2 W over 1 MHz to the weakest neighbour 20-80 m away.
    bits = 32.0 * (np.where(holds, cycles_fwd, 0.0).sum(axis=1) / 2.0 + 5e3)
    gain = path_gain(rng.uniform(20.0, 80.0, size=K))
    comm = communication_energy_j(rng.uniform(0.1, 0.2, size=K), bits, gain, 1e6)
    mid = np.where(holds, (tau_min + tau_max) / 2.0, 0.0)
    reference = computation_energy_j(mid, holds, forward, backward)
    floor_compute = tau_min * (np.where(holds, forward + backward, 0.0).sum(axis=1))
    compute_budget = np.maximum(
        budget_scale * reference * rng.uniform(0.6, 1.4, size=K), floor_compute * (1 + 1e-6)
    )
    # Six significant digits: plenty for energies, and files a third the size (fast to parse).
    forward, backward, comm = _sig(forward), _sig(backward), _sig(comm)
    floor_total = comm + tau_min * np.where(holds, forward + backward, 0.0).sum(axis=1)
    budget = np.maximum(_sig(comm + compute_budget, up=True), _sig(floor_total, up=True))
    return Problem(
        modalities=tuple(modality_names(M)),
        devices=tuple(f"dev{k}" for k in range(K)),
        holds=holds,
        speed=np.round(speed, 6),
        forward_energy=forward,
        backward_energy=backward,
        comm_energy=comm,
        budget=budget,
        scope=scope,
        tau_min=tau_min,
        tau_max=tau_max,
        delta=delta,
        mu=mu,
        epsilon=epsilon,
    )
