"""Fleets: who the devices are (CPU speed, link, battery) and when they are present.

``fleet`` (config field):

* ``uniform`` — today's test bed: f_max uniform in `metrics.energy.CPU_RANGE_HZ`, links from the
  topology's positions, every battery the automatic one, every device present every round.
* ``longtail`` — f_max, broadcast distance and battery drawn from the long-tailed distributions
  of `metrics.energy` (``LONGTAIL_*``; sources in docs/learner.md, "Fleets"), and per-round
  presence with churn (`metrics.availability.churn_availability`).
* ``trace:PATH`` — a CSV a user writes: ``device,cpu_hz,battery_j`` and optionally
  ``distance_m`` and/or ``bandwidth_hz`` and ``available`` (a string of 0/1, one per round,
  repeated). Row i is device i; extra rows are ignored, too few are refused.

A broken trace is refused with one line naming its line and column (``ConfigError``: exit 2).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from dmmlkd.learner.errors import ConfigError
from dmmlkd.metrics.availability import churn_availability
from dmmlkd.metrics.energy import (
    LONGTAIL_BATTERY_BETA,
    LONGTAIL_CPU_MEDIAN_HZ,
    LONGTAIL_CPU_RANGE_HZ,
    LONGTAIL_CPU_SIGMA,
    LONGTAIL_DISTANCE_MEDIAN_M,
    LONGTAIL_DISTANCE_RANGE_M,
    LONGTAIL_DISTANCE_SIGMA,
)

FLEETS = ("uniform", "longtail", "trace:PATH")
TRACE_REQUIRED = ("device", "cpu_hz", "battery_j")
TRACE_OPTIONAL = ("distance_m", "bandwidth_hz", "available")
PLACEMENTS = ("any", "low-battery")
CHURN_COME_BACK = 0.5  # an absent longtail device returns with this probability each round


@dataclass(frozen=True)
class Fleet:
    """The devices of a run. None fields: the uniform test bed's value (drawn as before)."""

    kind: str
    cpu_hz: NDArray[np.float64] | None = None  # (K,) f_max
    distance_m: NDArray[np.float64] | None = None  # (K,) broadcast distance (farthest neighbour)
    bandwidth_hz: NDArray[np.float64] | None = None  # (K,)
    battery_j: NDArray[np.float64] | None = None  # (K,) absolute (trace)
    battery_factor: NDArray[np.float64] | None = None  # (K,) x the automatic battery (longtail)
    present: NDArray[np.bool_] | None = None  # (rounds, K); None: always present

    def present_in(self, t: int, n_devices: int) -> NDArray[np.bool_]:
        """Which devices are present in round t (all without availability data)."""
        if self.present is None:
            return np.ones(n_devices, bool)
        return self.present[t].copy()


def check_fleet(spec: str) -> None:
    """A config check: ``uniform``, ``longtail`` or ``trace:PATH`` (the file is read at build)."""
    if spec in ("uniform", "longtail"):
        return
    if spec.startswith("trace:") and spec[len("trace:"):].strip():
        return
    raise ConfigError(f"fleet must be uniform, longtail or trace:PATH.csv (got {spec!r})")


def make_fleet(spec: str, n_devices: int, rounds: int, seed: int, churn: float = 0.1) -> Fleet:
    """The fleet a config names, for ``n_devices`` devices over ``rounds`` rounds."""
    check_fleet(spec)
    if spec == "uniform":
        return Fleet("uniform")
    if spec == "longtail":
        return longtail_fleet(n_devices, rounds, seed, churn)
    return read_trace(Path(spec[len("trace:"):].strip()), n_devices, rounds)


def longtail_fleet(n_devices: int, rounds: int, seed: int, churn: float = 0.1) -> Fleet:
    """Long-tailed speeds, distances and batteries, and churn (its own random stream)."""
    rng = np.random.default_rng([seed, 0xF1EE7])
    cpu = np.clip(LONGTAIL_CPU_MEDIAN_HZ * np.exp(LONGTAIL_CPU_SIGMA * rng.standard_normal(n_devices)),
                  *LONGTAIL_CPU_RANGE_HZ)
    dist = np.clip(LONGTAIL_DISTANCE_MEDIAN_M
                   * np.exp(LONGTAIL_DISTANCE_SIGMA * rng.standard_normal(n_devices)),
                   *LONGTAIL_DISTANCE_RANGE_M)
    a, b = LONGTAIL_BATTERY_BETA
    # Mean 1 (the automatic battery): battery_scale keeps its meaning on this fleet.
    factor = rng.beta(a, b, n_devices) * (a + b) / a
    present = churn_availability(n_devices, rounds, churn, CHURN_COME_BACK, rng) if churn > 0 \
        else None
    return Fleet("longtail", cpu_hz=cpu, distance_m=dist, battery_factor=factor, present=present)


def read_trace(path: Path, n_devices: int, rounds: int) -> Fleet:
    """A trace CSV as a fleet; ConfigError naming the line and column of the first bad value."""
    name = f"fleet trace {path}"
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{name}: cannot read it ({exc})") from None
    if header is None:
        raise ConfigError(f"{name}: empty file (need a header {','.join(TRACE_REQUIRED)})")
    columns = [c.strip() for c in header]
    for c in TRACE_REQUIRED:
        if c not in columns:
            raise ConfigError(f"{name}: line 1: missing column {c!r} "
                              f"(need {','.join(TRACE_REQUIRED)})")
    for c in columns:
        if c not in TRACE_REQUIRED + TRACE_OPTIONAL:
            raise ConfigError(f"{name}: line 1: unknown column {c!r} (known: "
                              f"{', '.join(TRACE_REQUIRED + TRACE_OPTIONAL)})")
        if columns.count(c) > 1:
            raise ConfigError(f"{name}: line 1: column {c!r} appears twice")
    if len(rows) < n_devices:
        raise ConfigError(f"{name} has {len(rows)} device rows, fewer than devices = {n_devices}")
    rows = rows[:n_devices]
    col = {c: i for i, c in enumerate(columns)}
    values: dict[str, list[float]] = {c: [] for c in ("cpu_hz", "battery_j", "distance_m",
                                                      "bandwidth_hz") if c in col}
    available: list[str] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        if len(row) != len(columns):
            raise ConfigError(f"{name}: line {line}: {len(row)} fields, the header has "
                              f"{len(columns)}")
        device = row[col["device"]].strip()
        if not device:
            raise ConfigError(f"{name}: line {line}, column device: empty device name")
        if device in seen:
            raise ConfigError(f"{name}: line {line}, column device: {device!r} repeats line "
                              f"{seen[device]}")
        seen[device] = line
        for c in values:
            values[c].append(_positive(row[col[c]], name, line, c))
        if "available" in col:
            flags = row[col["available"]].strip()
            if not flags or set(flags) - {"0", "1"}:
                raise ConfigError(f"{name}: line {line}, column available: {flags!r} is not a "
                                  f"string of 0/1 (one per round)")
            available.append(flags)
    present = None
    if available:
        t = np.arange(rounds)
        present = np.array([[f[i % len(f)] == "1" for i in t] for f in available], bool).T
    arr = {c: np.asarray(v, float) for c, v in values.items()}
    return Fleet("trace", cpu_hz=arr["cpu_hz"], distance_m=arr.get("distance_m"),
                 bandwidth_hz=arr.get("bandwidth_hz"), battery_j=arr["battery_j"], present=present)


def _positive(text: str, name: str, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}: line {line}, column {column}: {text.strip()!r} is not a "
                          f"positive number")
    return value


def fleet_battery_rank(fleet: Fleet, n_devices: int) -> NDArray[np.float64]:
    """What orders devices by battery before the energy profile exists (placement)."""
    if fleet.battery_j is not None:
        return fleet.battery_j
    if fleet.battery_factor is not None:
        return fleet.battery_factor
    return np.ones(n_devices)


def place_views(holds: NDArray[np.bool_], battery_rank: NDArray[np.float64],
                placement: str) -> NDArray[np.bool_]:
    """Who holds which view under ``placement``: ``any`` keeps ``holds``; ``low-battery`` puts
    the last view (a weak sensor) only on the half of the devices with the smallest batteries
    (wearables; they hold every view), the others lose it (and keep the first view)."""
    if placement == "any":
        return holds
    if placement != "low-battery":
        raise ConfigError(f"fleet_placement must be one of {', '.join(PLACEMENTS)} "
                          f"(got {placement!r})")
    K, M = holds.shape
    if M < 2:
        raise ConfigError("fleet_placement low-battery needs at least two views")
    low = np.zeros(K, bool)
    low[np.argsort(battery_rank, kind="stable")[: (K + 1) // 2]] = True
    out = holds.copy()
    out[low] = True
    out[~low, -1] = False
    out[~low & ~out.any(axis=1), 0] = True
    return out
