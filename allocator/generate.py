"""Random, seeded, realistic allocation instances (energies from the physical model)."""

from __future__ import annotations

import math

import numpy as np

from dmmlkd.allocator.errors import ProblemError
from dmmlkd.allocator.problem import Problem
from dmmlkd.metrics.availability import random_availability
from dmmlkd.metrics.energy import (
    BACKWARD_CYCLES_FACTOR,
    BANDWIDTH_HZ,
    CPU_RANGE_HZ,
    DEFAULT_BATCH_SIZE,
    DEFAULT_CAPACITANCE,
    PARAMETER_BITS,
    TX_POWER_W,
    communication_energy_j,
    communication_time_s,
    computation_energy_j,
    iteration_energy_j,
    path_gain,
    round_cycles,
)
from dmmlkd.userio.options import DEFAULTS, PROBLEM_FIELDS, check_option, parse_deadline

__all__ = ["MODALITY_NAMES", "check_generate_options", "generate_problem", "modality_names",
           "random_availability"]
# Above this many (device, modality) cells a generated problem is refused before drawing it
# (the arrays of a problem take ~100 bytes per cell; 100,000 x 8 is the benchmark's largest).
MAX_CELLS = 50_000_000
_BYTES_PER_CELL = 400  # drawing and validating a problem: ~40 float arrays of K x M at peak

# Beyond these a generated instance is unrealistic and its numbers leave float range (a speed
# spread of 400 decades drew speeds of 1e291): refused before drawing.
MAX_SPREAD_DECADES = 12.0
MAX_CPU_LEVELS = 1024

MODALITY_NAMES = ("audio", "image", "imu", "text", "depth", "radar", "lidar", "thermal")


def modality_names(n: int) -> list[str]:
    """Readable modality names for generated instances."""
    if n <= len(MODALITY_NAMES):
        return list(MODALITY_NAMES[:n])
    return [f"mod{j}" for j in range(n)]


def _sig(x: np.ndarray, digits: int = 6, up: bool = False) -> np.ndarray:
    """Round to significant digits (upwards with ``up``, so a budget never shrinks)."""
    x = np.asarray(x, float)
    scale = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(np.where(x == 0, 1.0, x)))))
    return (np.ceil(x * scale) if up else np.round(x * scale)) / scale


def generate_problem(
    devices: int = 10,
    modalities: int = 4,
    scope: str = DEFAULTS.scope,
    budget_scale: float = 1.0,
    missing_rate: float = 0.0,
    seed: int = 0,
    speed_spread: float = 1.0,
    energy_spread: float = 1.0,
    delta: float = DEFAULTS.delta,
    mu: float = DEFAULTS.mu,
    epsilon: float = DEFAULTS.epsilon,
    tau_min: int = DEFAULTS.tau_min,
    tau_max: int = DEFAULTS.tau_max,
    cpu_levels: int = 0,
    deadline: float | str | None = None,
) -> Problem:
    """A seeded instance: heterogeneous CPUs and links, modality speeds spread over ~1 decade.

    The budget of each device is its communication energy plus ``budget_scale`` times the
    computation energy of running every held modality at the middle of the tau range (never less
    than the cheapest admissible round), so ``budget_scale = 1`` binds for most devices.

    ``cpu_levels = n > 0`` gives every device the levels (1/n, 2/n, ..., 1) x its f_max (the
    time/frequency model; energies then follow from cycles). ``deadline`` (needs levels): seconds,
    or ``"Xx"``, X times the slowest device's time for the middle tau at f_max (never below
    what tau_min needs at f_max); None or ``"none"``: no deadline.
    """
    check_generate_options(devices=devices, modalities=modalities, scope=scope,
                           budget_scale=budget_scale, missing_rate=missing_rate, seed=seed,
                           speed_spread=speed_spread, energy_spread=energy_spread, delta=delta,
                           mu=mu, epsilon=epsilon, tau_min=tau_min, tau_max=tau_max,
                           cpu_levels=cpu_levels, deadline=deadline)
    from dmmlkd.userio import available_memory_bytes

    have = available_memory_bytes()
    if have is not None and devices * (modalities + cpu_levels) * _BYTES_PER_CELL > have:
        raise ProblemError(f"devices x (modalities + cpu_levels) = "
                           f"{devices * (modalities + cpu_levels):,} cells need about "
                           f"{devices * (modalities + cpu_levels) * _BYTES_PER_CELL / 2**30:.1f}"
                           " GiB, more than "
                           f"the {have / 2**30:.1f} GiB available: lower devices")
    rng = np.random.default_rng(seed)
    K, M = devices, modalities
    holds = random_availability(K, M, missing_rate, rng)
    # Training speed: a per-modality level (one decade apart at spread 1) times device noise.
    level = 10 ** rng.uniform(-2.0, -2.0 + speed_spread, size=M) if speed_spread else np.full(M, 1e-2)
    speed = level[None, :] * rng.lognormal(0.0, 0.25 * max(speed_spread, 0.0), size=(K, M))
    # Computation: CPU 0.5-2 GHz; forward cycles per sample per modality ~ encoder size.
    cpu_hz = rng.uniform(*CPU_RANGE_HZ, size=K)
    cycles_fwd = 10 ** rng.uniform(5.0, 5.0 + energy_spread, size=M) if energy_spread else np.full(M, 1e5)
    cycles_fwd = cycles_fwd[None, :] * rng.lognormal(0.0, 0.1, size=(K, M))
    forward = iteration_energy_j(DEFAULT_CAPACITANCE, cpu_hz[:, None], DEFAULT_BATCH_SIZE,
                                 cycles_fwd)
    backward = BACKWARD_CYCLES_FACTOR * forward
    # Communication: 32-bit parameters of the held encoders (~ cycles / 2 per parameter),
    # 0.1-0.2 W over 1 MHz to the weakest neighbour 20-80 m away.
    bits = PARAMETER_BITS * (np.where(holds, cycles_fwd, 0.0).sum(axis=1) / 2.0 + 5e3)
    gain = path_gain(rng.uniform(20.0, 80.0, size=K))
    power = rng.uniform(TX_POWER_W, 2 * TX_POWER_W, size=K)
    comm = communication_energy_j(power, bits, gain, BANDWIDTH_HZ)
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
    if cpu_levels:
        return _with_levels(holds, np.round(speed, 6), cycles_fwd, cpu_hz, comm, budget,
                            communication_time_s(power, bits, gain, BANDWIDTH_HZ), cpu_levels,
                            parse_deadline(deadline, ProblemError, relative=True), scope=scope,
                            tau_min=tau_min, tau_max=tau_max, delta=delta, mu=mu,
                            epsilon=epsilon)
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


def check_generate_options(devices: int = 10, modalities: int = 4, scope: str = DEFAULTS.scope,
                           budget_scale: float = 1.0, missing_rate: float = 0.0, seed: int = 0,
                           speed_spread: float = 1.0, energy_spread: float = 1.0,
                           delta: float = DEFAULTS.delta, mu: float = DEFAULTS.mu,
                           epsilon: float = DEFAULTS.epsilon, tau_min: int = DEFAULTS.tau_min,
                           tau_max: int = DEFAULTS.tau_max, cpu_levels: int = 0,
                           deadline: float | str | None = None) -> None:
    """Check generate_problem's options without drawing anything (ProblemError naming one).

    A study checks every cell with it before the first cell runs.
    """
    from dmmlkd.allocator.resources import MAX_COUNT_RANGE

    _check_int("devices", devices, 1)
    _check_int("modalities", modalities, 1)
    _check_int("cpu_levels", cpu_levels, 0, MAX_CPU_LEVELS)
    _check_int("seed", seed, 0, 2**32 - 1)
    for name, spread in (("speed_spread", speed_spread), ("energy_spread", energy_spread)):
        if isinstance(spread, (int, float)) and spread > MAX_SPREAD_DECADES:
            raise ProblemError(f"{name} must be at most {MAX_SPREAD_DECADES:g} decades (got "
                               f"{spread:g})")
    if devices * (modalities + cpu_levels) > MAX_CELLS:
        raise ProblemError(f"devices x (modalities + cpu_levels) = "
                           f"{devices * (modalities + cpu_levels):,} values is more than this "
                           f"generator allows ({MAX_CELLS:,}): lower devices or cpu_levels")
    for name, value, low in (("budget_scale", budget_scale, None), ("speed_spread", speed_spread, 0.0),
                             ("energy_spread", energy_spread, 0.0)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or (value <= 0 if low is None else value < low):
            rule = "> 0" if low is None else f">= {low:g}"
            raise ProblemError(f"{name} must be a finite number {rule} (got {value!r})")
    if isinstance(missing_rate, bool) or not isinstance(missing_rate, (int, float)) \
            or not 0.0 <= missing_rate < 1.0:
        raise ProblemError(f"missing_rate must be in [0, 1) (got {missing_rate!r})")
    if parse_deadline(deadline, ProblemError, relative=True) not in (None, "none") \
            and not cpu_levels:
        raise ProblemError("deadline needs cpu_levels >= 1 (the time/frequency model)")
    options = {"scope": scope, "tau_min": tau_min, "tau_max": tau_max, "delta": delta, "mu": mu,
               "epsilon": epsilon}
    for name in PROBLEM_FIELDS:
        check_option(name, options[name], ProblemError)
    if tau_min > tau_max:
        raise ProblemError(f"tau_min ({tau_min}) must be <= tau_max ({tau_max})")
    _check_int("tau_max", tau_max, tau_min, tau_min + MAX_COUNT_RANGE - 1)  # what solve accepts


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ProblemError(f"{name} must be an integer (got {value!r})")
    if value < low or (high is not None and value > high):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ProblemError(f"{name} must be {rng} (got {value})")


def _with_levels(holds: np.ndarray, speed: np.ndarray, cycles_fwd: np.ndarray,
                 cpu_hz: np.ndarray, comm: np.ndarray, budget: np.ndarray, comm_s: np.ndarray,
                 n_levels: int, deadline: float | str | None, **options: object) -> Problem:
    """The same fleet in the time/frequency model: levels k/n x f_max, an optional deadline
    (seconds, or "Xx": X times the slowest mid-tau round at f_max)."""
    K, M = holds.shape
    tau_min, tau_max = int(options["tau_min"]), int(options["tau_max"])  # type: ignore[call-overload]
    levels = cpu_hz[:, None] * np.arange(1, n_levels + 1) / n_levels
    cycles_fwd = _sig(np.where(holds, cycles_fwd, 0.0))
    cycles_bwd = BACKWARD_CYCLES_FACTOR * cycles_fwd
    comm_s = _sig(comm_s, up=True)
    deadline_s = deadline if isinstance(deadline, float) else None
    if isinstance(deadline, str) and deadline.endswith("x"):
        deadline_scale = float(deadline[:-1])
        mid = np.where(holds, (tau_min + tau_max) // 2, 0)
        t_mid = round_cycles(mid, holds, DEFAULT_BATCH_SIZE, cycles_fwd, cycles_bwd) / cpu_hz
        t_min = round_cycles(np.where(holds, tau_min, 0), holds, DEFAULT_BATCH_SIZE, cycles_fwd,
                             cycles_bwd) / cpu_hz
        deadline_s = float(max(deadline_scale * float((t_mid + comm_s).max()),
                               float((t_min + comm_s).max()) * (1 + 1e-6)))
        deadline_s = float(_sig(np.array([deadline_s]), up=True)[0])
    return Problem(
        modalities=tuple(modality_names(M)), devices=tuple(f"dev{k}" for k in range(K)),
        holds=holds, speed=speed, comm_energy=comm, budget=budget,
        cpu_levels_hz=_sig(levels), cycles_forward=cycles_fwd, cycles_backward=cycles_bwd,
        batch_size=np.full(K, float(DEFAULT_BATCH_SIZE)), comm_time_s=comm_s, deadline_s=deadline_s,
        **options,  # type: ignore[arg-type]
    )
