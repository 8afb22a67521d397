"""Simulated time of the learning loop: CPU levels (DVFS), round times and deadlines.

A device running C cycles at frequency f computes for C / f seconds and spends kappa f^2 C
joules; it then broadcasts its blocks for ``comm_s`` seconds. A round lasts as long as its
slowest training device. Cycles follow the energy model's pass rule (issue 9):
C = B (L sum_m cycles_forward + sum_m tau cycles_backward), L = max_m tau, so energies and
times are computed from the same counts (`metrics.energy.round_cycles`, shared with the
allocator, as is the deadline tolerance `metrics.energy.fits_deadline`).

Pure NumPy functions, vectorised over devices; the loop and the policies both call them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from dmmlkd.learner.errors import ConfigError
from dmmlkd.metrics.energy import fits_deadline
from dmmlkd.userio.options import parse_deadline as _parse_deadline

# CPU levels as fractions of a device's drawn maximum frequency f_max (the last one is f_max).
DEFAULT_CPU_LEVELS = (0.25, 0.5, 0.75, 1.0)


def cpu_levels_hz(f_max_hz: ArrayLike, fractions: Sequence[float] = DEFAULT_CPU_LEVELS,
                  ) -> NDArray[np.float64]:
    """Every device's CPU levels (K, L), ascending: ``fractions`` times its f_max."""
    fr = np.sort(np.asarray(list(fractions), float))
    return np.asarray(f_max_hz, float)[:, None] * fr[None, :]


def validate_levels(fractions: Sequence[float], name: str = "cpu_levels") -> None:
    """Levels are fractions of f_max in (0, 1], distinct, and include 1.0 (f_max itself)."""
    values = list(fractions)
    if not values:
        raise ConfigError(f"{name} must list at least one level")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or not 0.0 < v <= 1.0:
            raise ConfigError(f"{name} must be fractions of f_max in (0, 1] (got {v!r})")
    if len(set(values)) != len(values):
        raise ConfigError(f"{name} has duplicate levels ({values})")
    if max(values) != 1.0:
        raise ConfigError(f"{name} must include 1.0 (f_max, the default frequency) (got {values})")


def device_time_s(cycles: ArrayLike, cpu_hz: ArrayLike, comm_s: ArrayLike) -> NDArray[np.float64]:
    """Time of each device's round (K,): compute at its frequency plus communication; 0 for a
    device that does not train (no cycles)."""
    cycles = np.asarray(cycles, float)
    busy = cycles > 0
    compute = np.divide(cycles, np.asarray(cpu_hz, float), out=np.zeros_like(cycles), where=busy)
    return np.where(busy, compute + np.asarray(comm_s, float), 0.0)


def round_time_s(device_times: ArrayLike, active: ArrayLike) -> float:
    """The round's duration: its slowest active device (0 when nobody trains)."""
    times = np.where(np.asarray(active, bool), np.asarray(device_times, float), 0.0)
    return float(times.max()) if times.size else 0.0


def meets_deadline(times: ArrayLike, deadline_s: float | None) -> NDArray[np.bool_]:
    """Whether each time fits the deadline (always, without one). The shared tolerance: the
    automatic deadline is the uniform round's own float time, which must count as met."""
    times = np.asarray(times, float)
    if deadline_s is None:
        return np.ones(times.shape, bool)
    return fits_deadline(times, deadline_s)


def energy_scale(cpu_hz: ArrayLike, f_max_hz: ArrayLike) -> NDArray[np.float64]:
    """Factor (f / f_max)^2 turning energy at f_max into energy at f (kappa f^2 C)."""
    return (np.asarray(cpu_hz, float) / np.asarray(f_max_hz, float)) ** 2


def lowest_level_meeting(cycles: ArrayLike, levels_hz: ArrayLike, comm_s: ArrayLike,
                         deadline_s: float | None) -> NDArray[np.float64]:
    """Per device the lowest CPU level whose round time meets the deadline (K,).

    Without a deadline, the lowest level; where no level meets it, the highest (the device
    runs as fast as it can and the round is late, which the loop logs).
    """
    levels = np.sort(np.asarray(levels_hz, float), axis=1)
    cycles = np.asarray(cycles, float)
    times = device_time_s(np.broadcast_to(cycles[:, None], levels.shape), levels,
                          np.asarray(comm_s, float)[:, None])
    ok = meets_deadline(times, deadline_s)
    first = np.argmax(ok, axis=1)  # ascending levels: the first feasible is the lowest
    pick = np.where(ok.any(axis=1), first, levels.shape[1] - 1)
    return levels[np.arange(levels.shape[0]), pick]


def check_cpu_hz(cpu_hz: ArrayLike | None, levels_hz: ArrayLike, devices: Sequence[str] | None = None,
                 ) -> NDArray[np.float64]:
    """A policy's frequencies, checked to be levels of each device (None: f_max everywhere)."""
    levels = np.asarray(levels_hz, float)
    if cpu_hz is None:
        return levels.max(axis=1)
    f = np.asarray(cpu_hz, float)
    if f.shape != (levels.shape[0],):
        raise ConfigError(f"policy's cpu_hz has shape {f.shape}, expected ({levels.shape[0]},)")
    close = np.isclose(levels, f[:, None], rtol=1e-9, atol=0.0)
    bad = ~close.any(axis=1)
    if bad.any():
        k = int(np.argmax(bad))
        name = devices[k] if devices is not None else f"dev{k}"
        raise ConfigError(f"device {name!r}: policy's cpu_hz {f[k]:.6g} is not one of its CPU "
                          f"levels ({', '.join(f'{x:.6g}' for x in levels[k])})")
    # Snap to the exact level so energies and times use the profile's own numbers.
    return levels[np.arange(levels.shape[0]), np.argmax(close, axis=1)]


def resolve_deadline(deadline: Any, uniform_round_time_s: float) -> float | None:
    """The run's round deadline in seconds: ``"auto"`` = uniform tau at f_max's round time
    (of the slowest device), ``"auto:F"`` = F times that,
    ``"none"``/None = no deadline, a number = that many seconds."""
    value = parse_deadline(deadline)  # the one rule; it normalises the text forms
    if value is None or value == "none":
        return None
    if value == "auto":
        return float(uniform_round_time_s)
    if isinstance(value, str):  # "auto:F"
        return float(value[5:]) * float(uniform_round_time_s)
    return float(value)


def parse_deadline(deadline: Any) -> float | str | None:
    """Validate a deadline setting: "auto", "auto:F" (F x auto), "none"/None, or seconds > 0
    (a numeric string from the command line is accepted); the one rule of
    `dmmlkd.userio.options.parse_deadline`. ConfigError otherwise."""
    return _parse_deadline(deadline, ConfigError, auto=True)
