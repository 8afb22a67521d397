"""The allocation problem record: devices x modalities, energies, budgets and balance goal.

Everything is stored densely as (K, M) NumPy arrays aligned with ``modalities`` (zeros where a
device does not hold a modality), so every solver can be vectorised over devices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dmmlkd.allocator.errors import ProblemError
from dmmlkd.metrics.energy import (
    BACKWARD_CYCLES_FACTOR,
    DEFAULT_BATCH_SIZE,
    DEFAULT_CAPACITANCE,
    ENERGY_ATOL_J,
    budget_limit_j,
    cheapest_round_j,
    deadline_limit_s,
    fits_budget,
    fits_deadline,
    round_cycles,
)
from dmmlkd.userio.options import DEFAULTS, PROBLEM_FIELDS, SCOPES, check_option, parse_deadline

__all__ = ["SCOPES", "LevelCaps", "OperatingPoint", "Problem"]
# Relative widening of the energy and time caps behind every certificate (bound): far above the
# float rounding of a cost (~1e-16) and far below the stated 1e-9 tolerance, so a bound computed
# under the widened caps is a bound of the problem as stated (docs/formulation.md, "Exactness").
CERTIFICATE_RELAX = 1e-12


@dataclass(frozen=True)
class OperatingPoint:
    """Where each device runs a given tau table: its level, frequency, cycles, time, energy."""

    level: NDArray[np.int64]  # index into the device's cpu_levels_hz (0 without levels)
    cpu_hz: NDArray[np.float64]  # chosen frequency (nan without levels)
    cycles: NDArray[np.float64]  # C = B (L sum c_f + sum tau c_b) (nan without levels)
    time_s: NDArray[np.float64]  # C / f + comm_time_s (nan without levels)
    compute_energy: NDArray[np.float64]  # kappa f^2 C, or L F + sum eb tau without levels


@dataclass(frozen=True)
class LevelCaps:
    """Per device and level: the energy multiplier and the compute cap, for the solvers.

    At level l a table costs ``scale[k, l]`` times its energy at the problem's
    ``forward_energy``/``backward_energy`` (which are the energies at the top level), and is
    feasible in energy and time iff that top-level energy is <= ``cap[k, l]`` (tolerances
    included; -inf where the device has no such level).
    """

    scale: NDArray[np.float64]  # (K, NL)
    cap: NDArray[np.float64]  # (K, NL)


def _array(value: Any, name: str, shape: tuple[int, ...]) -> NDArray[np.float64]:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ProblemError(f"{name} must be numeric") from None
    if arr.shape != shape:
        raise ProblemError(f"{name} has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        raise ProblemError(f"{name} must be finite")
    return arr


@dataclass(frozen=True, eq=False)
class Problem:
    """One round's allocation problem, validated on construction.

    ``holds[k, m]`` says device k holds modality m; ``speed``, ``forward_energy`` and
    ``backward_energy`` are (K, M) and only read where held. ``comm_energy``, ``budget`` and
    ``weight`` are (K,). Energies in J per iteration (forward/backward) and J per round.

    The time/frequency model (docs/formulation.md) is on when ``cpu_levels_hz`` is given:
    per device one or more CPU frequencies (a (K, NL) array padded with nan, or K lists),
    ``cycles_forward``/``cycles_backward`` (K, M) cycles per sample, ``batch_size`` and
    ``capacitance`` (K,) and ``comm_time_s`` (K,). Then ``forward_energy``/``backward_energy``
    are derived (the energies at each device's top level) and need not be given; a table at
    level f costs kappa f^2 C + comm_energy and takes C / f + comm_time_s, with
    C = B (L sum c_f + sum tau c_b). ``deadline_s`` (optional; ``deadline`` in files and flags)
    bounds that time.
    """

    modalities: tuple[str, ...]
    devices: tuple[str, ...]
    holds: NDArray[np.bool_]
    speed: NDArray[np.float64]
    forward_energy: NDArray[np.float64] = None  # type: ignore[assignment]
    backward_energy: NDArray[np.float64] = None  # type: ignore[assignment]
    comm_energy: NDArray[np.float64] = None  # type: ignore[assignment]
    budget: NDArray[np.float64] = None  # type: ignore[assignment]
    weight: NDArray[np.float64] = None  # type: ignore[assignment]
    scope: str = DEFAULTS.scope  # the options' defaults: userio.options.AllocatorOptions
    tau_min: int = DEFAULTS.tau_min
    tau_max: int = DEFAULTS.tau_max
    delta: float = DEFAULTS.delta
    mu: float = DEFAULTS.mu
    epsilon: float = DEFAULTS.epsilon
    deadline_s: float | None = None
    cpu_levels_hz: NDArray[np.float64] | None = None
    cycles_forward: NDArray[np.float64] | None = None
    cycles_backward: NDArray[np.float64] | None = None
    batch_size: NDArray[np.float64] | None = None
    capacitance: NDArray[np.float64] | None = None
    comm_time_s: NDArray[np.float64] | None = None
    # Normaliser of the energy tie-break when it must not be this problem's own total budget
    # (the fixed-level reductions of `at_levels` keep the original problem's).
    energy_norm_j: float | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        modalities = tuple(str(m) for m in self.modalities)
        devices = tuple(str(d) for d in self.devices)
        if not modalities:
            raise ProblemError("modalities must list at least one modality")
        if len(set(modalities)) != len(modalities):
            raise ProblemError("modalities has duplicate names")
        if not devices:
            raise ProblemError("devices must list at least one device")
        if len(set(devices)) != len(devices):
            dup = next(d for d in devices if devices.count(d) > 1)
            raise ProblemError(f"devices: duplicate device name {dup!r}")
        n_dev, n_mod = len(devices), len(modalities)
        set_(self, "modalities", modalities)
        set_(self, "devices", devices)
        holds = np.asarray(self.holds, dtype=bool)
        if holds.shape != (n_dev, n_mod):
            raise ProblemError(f"holds has shape {holds.shape}, expected {(n_dev, n_mod)}")
        set_(self, "holds", holds)
        for name in ("comm_energy", "budget"):
            if getattr(self, name) is None:
                raise ProblemError(f"{name} is required (one value per device)")
        self._init_levels(holds, devices, modalities)
        # A zero forward energy is allowed: a learner that skips the forward pass of stopped
        # encoders pays forward costs per tau, folded into backward_energy (docs/formulation.md).
        for name, rule in (("speed", "> 0"), ("forward_energy", ">= 0"), ("backward_energy", "> 0")):
            arr = np.where(holds, _array(getattr(self, name), name, (n_dev, n_mod)), 0.0)
            bad = holds & ((arr < 0) if rule == ">= 0" else (arr <= 0))
            if bad.any():
                k, m = np.argwhere(bad)[0]
                raise ProblemError(
                    f"device {devices[k]!r}: {name} for {modalities[m]!r} must be {rule} "
                    f"(got {arr[k, m]:g})"
                )
            set_(self, name, arr)
        weight = np.ones(n_dev) if self.weight is None else self.weight
        for name, value in (
            ("comm_energy", self.comm_energy),
            ("budget", self.budget),
            ("weight", weight),
        ):
            arr = _array(value, name, (n_dev,))
            positive_required = name == "weight"
            bad = arr <= 0 if positive_required else arr < 0
            if bad.any():
                k = int(np.argmax(bad))
                rule = "> 0" if positive_required else ">= 0"
                raise ProblemError(f"device {devices[k]!r}: {name} must be {rule} (got {arr[k]:g})")
            set_(self, name, arr)
        empty = ~holds.any(axis=1)
        if empty.any():
            raise ProblemError(f"device {devices[int(np.argmax(empty))]!r} holds no modality")
        for name in PROBLEM_FIELDS:  # the options' one rule (userio.options)
            check_option(name, getattr(self, name), ProblemError)
        for name in ("tau_min", "tau_max"):
            set_(self, name, int(getattr(self, name)))
        for name in ("delta", "mu", "epsilon"):
            set_(self, name, float(getattr(self, name)))
        if self.tau_min > self.tau_max:
            raise ProblemError(f"tau_min ({self.tau_min}) must be <= tau_max ({self.tau_max})")
        self._check_finite_objective()
        if self.energy_norm_j is not None:
            norm = float(self.energy_norm_j)
            if not math.isfinite(norm) or norm <= 0:
                raise ProblemError(f"energy_norm_j must be a finite number > 0 (got {norm!r})")
            set_(self, "energy_norm_j", norm)
        cheapest = self.operating_point(np.where(holds, self.tau_min, 0))
        if self.deadline_s is not None:
            late = ~fits_deadline(cheapest.time_s, self.deadline_s)
            if late.any():
                k = int(np.argmax(late))
                raise ProblemError(
                    f"device {devices[k]!r}: deadline {self.deadline_s:g} s cannot fit "
                    f"tau_min={self.tau_min} even at its top level ({cheapest.time_s[k]:g} s)"
                )
        short = ~fits_budget(cheapest.compute_energy + self.comm_energy, self.budget)
        if short.any():
            k = int(np.argmax(short))
            raise ProblemError(
                f"device {devices[k]!r}: budget {self.budget[k]:g} J cannot pay comm_energy "
                f"plus tau_min={self.tau_min} on its modalities ({self.min_energy[k]:g} J)"
            )

    def _check_finite_objective(self) -> None:
        """Refuse values that make the objective overflow (speed = 1e308 gave -inf, "optimal")."""
        K, M = self.holds.shape
        # The largest magnitude any term can reach: progress (with its overshoot penalty)
        # summed over devices and modalities, and the energy tie-break.
        worst_progress = float(self.speed.max()) * self.tau_max * (1 + self.delta) * K * M
        checks = (
            ("speed", worst_progress * max(self.mu, 1.0)),
            ("weight", float(self.weight.max()) * worst_progress),
            ("forward_energy", float(self.forward_energy.sum()) * self.tau_max),
            ("backward_energy", float(self.backward_energy.sum()) * self.tau_max),
            ("budget", float(self.budget.sum())),
            ("comm_energy", float(self.comm_energy.sum())),
        )
        for name, value in checks:
            if not math.isfinite(value):
                raise ProblemError(f"{name} is too large: the objective would not be a finite "
                                   f"number (tau_max={self.tau_max}, {K} devices)")

    def _init_levels(self, holds: NDArray[np.bool_], devices: tuple[str, ...],
                     modalities: tuple[str, ...]) -> None:
        """Validate the time/frequency fields; derive the top-level energies from them."""
        set_ = object.__setattr__
        n_dev, n_mod = holds.shape
        # The one deadline rule (userio.options.parse_deadline): seconds > 0, or none.
        deadline = parse_deadline(self.deadline_s, ProblemError)
        set_(self, "deadline_s", None if deadline == "none" else deadline)
        extra = ("cycles_forward", "cycles_backward", "batch_size", "capacitance", "comm_time_s")
        if self.cpu_levels_hz is None:
            given = [n for n in extra if getattr(self, n) is not None]
            if given:
                raise ProblemError(f"{given[0]} needs cpu_levels_hz (the time/frequency model)")
            if self.deadline_s is not None:
                raise ProblemError("deadline needs cpu_levels_hz and cycles_forward per device")
            for name in ("forward_energy", "backward_energy"):
                if getattr(self, name) is None:
                    raise ProblemError(f"{name} is required (or cpu_levels_hz with cycles)")
            return
        levels = _levels(self.cpu_levels_hz, n_dev, devices)
        set_(self, "cpu_levels_hz", levels)
        if self.cycles_forward is None:
            raise ProblemError("cycles_forward is required with cpu_levels_hz")
        cf = _array(self.cycles_forward, "cycles_forward", (n_dev, n_mod))
        cb = (BACKWARD_CYCLES_FACTOR * cf if self.cycles_backward is None
              else _array(self.cycles_backward, "cycles_backward", (n_dev, n_mod)))
        for name, arr, positive in (("cycles_forward", cf, False), ("cycles_backward", cb, True)):
            bad = holds & ((arr <= 0) if positive else (arr < 0))
            if bad.any():
                k, m = np.argwhere(bad)[0]
                rule = "> 0" if positive else ">= 0"
                raise ProblemError(f"device {devices[k]!r}: {name} for {modalities[m]!r} must be "
                                   f"{rule} (got {arr[k, m]:g})")
            set_(self, name, np.where(holds, arr, 0.0))
        for name, default, positive in (("batch_size", DEFAULT_BATCH_SIZE, True),
                                        ("capacitance", DEFAULT_CAPACITANCE, True),
                                        ("comm_time_s", 0.0, False)):
            value = getattr(self, name)
            raw = np.full(n_dev, float(default)) if value is None else value
            if np.ndim(raw) == 0:
                raw = np.full(n_dev, raw)
            arr = _array(raw, name, (n_dev,))
            bad = (arr <= 0) if positive else (arr < 0)
            if bad.any():
                k = int(np.argmax(bad))
                rule = "> 0" if positive else ">= 0"
                raise ProblemError(f"device {devices[k]!r}: {name} must be {rule} (got {arr[k]:g})")
            set_(self, name, arr)
        top = np.nanmax(levels, axis=1)
        assert self.capacitance is not None and self.batch_size is not None
        # J per sample-cycle at the top level, per device.
        per_cycle = (self.capacitance * top**2 * self.batch_size)[:, None]
        derived = {
            "forward_energy": np.where(holds, per_cycle * cf, 0.0),
            "backward_energy": np.where(holds, per_cycle * cb, 0.0),
        }
        for name, arr in derived.items():
            if not np.all(np.isfinite(arr)):
                raise ProblemError(f"{name} derived from cpu_levels_hz and cycles is not finite")
            given = getattr(self, name)
            if given is not None:
                # Re-validation of a derived record (replace/subset) passes them back: accept
                # the same numbers, refuse a different table (two sources of one quantity).
                g = np.where(holds, np.asarray(given, float), 0.0)
                if g.shape != arr.shape or not np.allclose(g, arr, rtol=1e-12, atol=0.0):
                    raise ProblemError(f"give either {name} or cpu_levels_hz with cycles, not both")
            set_(self, name, arr)

    # -- derived quantities -------------------------------------------------------------
    @property
    def n_devices(self) -> int:
        """Number of devices K."""
        return len(self.devices)

    @property
    def n_modalities(self) -> int:
        """Number of modalities M."""
        return len(self.modalities)

    @cached_property
    def holders(self) -> NDArray[np.int64]:
        """n_m: how many devices hold each modality (M,)."""
        return self.holds.sum(axis=0)

    @cached_property
    def forward_sum(self) -> NDArray[np.float64]:
        """Sum over held modalities of the forward energy per iteration (K,)."""
        return self.forward_energy.sum(axis=1)

    @property
    def has_levels(self) -> bool:
        """Whether the time/frequency model is on (devices carry cpu_levels_hz)."""
        return self.cpu_levels_hz is not None

    @property
    def n_levels(self) -> int:
        """Columns of the level table (1 without levels)."""
        return 1 if self.cpu_levels_hz is None else int(self.cpu_levels_hz.shape[1])

    @property
    def min_energy(self) -> NDArray[np.float64]:
        """Energy of the cheapest admissible round: tau_min everywhere plus comm (K,), at the
        lowest level that meets the deadline (the shared `cheapest_round_j` rule)."""
        point = self.operating_point(np.where(self.holds, self.tau_min, 0))
        scale = self._scale_at(point.level)
        return cheapest_round_j(self.holds, self.forward_energy * scale[:, None],
                                self.backward_energy * scale[:, None], self.comm_energy,
                                self.tau_min)

    def _scale_at(self, level: NDArray[np.int64]) -> NDArray[np.float64]:
        """(f / f_top)^2 of each device at the given level indices (ones without levels)."""
        if self.cpu_levels_hz is None:
            return np.ones(self.n_devices)
        f = self.cpu_levels_hz[np.arange(self.n_devices), level]
        return (f / np.nanmax(self.cpu_levels_hz, axis=1)) ** 2

    def operating_point(self, tau: NDArray[np.integer] | NDArray[np.floating]) -> OperatingPoint:
        """Level, frequency, cycles, time and computation energy of a tau table.

        For a fixed table the objective only changes with the level through the energy term,
        which grows with f, and time falls with f: the best level is the lowest one that meets
        the deadline (all levels meet "no deadline": the lowest). When none does, the top level
        is reported (and `violations` names the device).
        """
        holds = self.holds
        tau = np.where(holds, np.asarray(tau, dtype=float), 0.0)
        K = self.n_devices
        if self.cpu_levels_hz is None:
            from dmmlkd.metrics.energy import computation_energy_j

            nan = np.full(K, np.nan)
            compute = computation_energy_j(tau, holds, self.forward_energy, self.backward_energy)
            return OperatingPoint(np.zeros(K, np.int64), nan, nan.copy(), nan.copy(), compute)
        assert self.batch_size is not None and self.capacitance is not None
        assert self.comm_time_s is not None and self.cycles_forward is not None
        assert self.cycles_backward is not None
        levels = self.cpu_levels_hz
        cycles = round_cycles(tau, holds, self.batch_size, self.cycles_forward,
                              self.cycles_backward)
        with np.errstate(invalid="ignore"):
            times = cycles[:, None] / levels + self.comm_time_s[:, None]
        present = np.isfinite(levels)
        ok = present if self.deadline_s is None else present & fits_deadline(times, self.deadline_s)
        top = present.sum(axis=1) - 1  # levels are sorted, nan padding last
        level = np.where(ok.any(axis=1), ok.argmax(axis=1), top).astype(np.int64)
        rows = np.arange(K)
        f = levels[rows, level]
        return OperatingPoint(level, f, cycles, times[rows, level],
                              self.capacitance * f**2 * cycles)

    def level_caps(self, relax: float = 0.0) -> LevelCaps:
        """Energy multipliers and compute caps per device and level (see `LevelCaps`).

        Without levels: one column, multiplier 1, cap = budget left after communication.
        ``relax`` scales every cap by (1 + relax): a small positive value gives caps that no
        table feasible by the problem's own arithmetic can exceed through float rounding (for
        bounds, `CERTIFICATE_RELAX`); a negative one, caps every table under which is feasible.
        """
        caps = self._level_caps()
        if relax:
            finite = np.isfinite(caps.cap)
            cap = caps.cap.copy()
            cap[finite] += relax * np.abs(cap[finite])
            caps = LevelCaps(caps.scale, cap)
        return caps

    def _level_caps(self) -> LevelCaps:
        energy_room = budget_limit_j(self.budget) - self.comm_energy
        if self.cpu_levels_hz is None:
            return LevelCaps(np.ones((self.n_devices, 1)), energy_room[:, None])
        assert self.capacitance is not None and self.comm_time_s is not None
        levels = self.cpu_levels_hz
        top = np.nanmax(levels, axis=1, keepdims=True)
        scale = (levels / top) ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            cap = energy_room[:, None] / scale
            if self.deadline_s is not None:
                # C <= f (deadline - t_comm); at the top level C cycles cost kappa f_top^2 C.
                room_s = deadline_limit_s(self.deadline_s) - self.comm_time_s[:, None]
                cap = np.minimum(cap, self.capacitance[:, None] * top**2 * levels * room_s)
        cap = np.where(np.isfinite(levels), cap, -np.inf)
        return LevelCaps(np.where(np.isfinite(levels), scale, np.nan), cap)

    def roomiest_levels(self) -> NDArray[np.int64]:
        """Per device the level allowing the most computation (the lowest such level)."""
        cap = self.level_caps().cap
        best = cap.max(axis=1, keepdims=True)
        # Equal caps within rounding: the lower (cheaper) level.
        return np.argmax(cap >= best * (1 - 1e-12), axis=1).astype(np.int64)

    def at_levels(self, level: NDArray[np.int64]) -> Problem:
        """The fixed-frequency problem of running each device at the given level.

        Energies are scaled to that level and the budget becomes the smaller of the energy
        budget and the energy of the most cycles the deadline allows, so the old (level-free)
        solvers apply. The energy tie-break keeps this problem's normaliser. Without levels:
        this problem.
        """
        if self.cpu_levels_hz is None:
            return self
        rows = np.arange(self.n_devices)
        caps = self.level_caps()
        scale, cap = caps.scale[rows, level], caps.cap[rows, level]
        # Undo the tolerance of the cap: the reduced problem applies its own.
        budget = np.minimum(self.budget, self.comm_energy + scale * (cap - ENERGY_ATOL_J)
                            / (1 + 1e-9))
        budget = np.maximum(budget, self.comm_energy)
        return Problem(
            modalities=self.modalities, devices=self.devices, holds=self.holds, speed=self.speed,
            forward_energy=self.forward_energy * scale[:, None],
            backward_energy=self.backward_energy * scale[:, None],
            comm_energy=self.comm_energy, budget=budget, weight=self.weight, scope=self.scope,
            tau_min=self.tau_min, tau_max=self.tau_max, delta=self.delta, mu=self.mu,
            epsilon=self.epsilon, energy_norm_j=self.energy_scale,
        )

    @property
    def compute_budget(self) -> NDArray[np.float64]:
        """Budget left for computation after communication (K,)."""
        return self.budget - self.comm_energy

    @property
    def energy_scale(self) -> float:
        """The normaliser of the energy tie-break: the total budget (at least 1e-12)."""
        if self.energy_norm_j is not None:
            return self.energy_norm_j
        return max(float(self.budget.sum()), 1e-12)

    def with_(self, **changes: Any) -> Problem:
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)

    def subset(self, index: NDArray[np.int64] | list[int]) -> Problem:
        """The problem restricted to some devices (same modalities and options)."""
        idx = np.asarray(index, dtype=int)
        per_device: dict[str, Any] = {}
        for name in ("cpu_levels_hz", "cycles_forward", "cycles_backward", "batch_size",
                     "capacitance", "comm_time_s"):
            value = getattr(self, name)
            if value is not None:
                per_device[name] = value[idx]
        return replace(
            self,
            **per_device,
            devices=tuple(self.devices[i] for i in idx),
            holds=self.holds[idx],
            speed=self.speed[idx],
            forward_energy=self.forward_energy[idx],
            backward_energy=self.backward_energy[idx],
            comm_energy=self.comm_energy[idx],
            budget=self.budget[idx],
            weight=self.weight[idx],
        )

    def summary(self) -> str:
        """One line describing the instance."""
        text = (
            f"{self.scope} scope, {self.n_devices} devices, {self.n_modalities} modalities, "
            f"tau in [{self.tau_min}, {self.tau_max}], delta={self.delta:g}, mu={self.mu:g}, "
            f"epsilon={self.epsilon:g}"
        )
        if self.cpu_levels_hz is not None:
            text += f", up to {self.n_levels} CPU levels"
        if self.deadline_s is not None:
            text += f", deadline {self.deadline_s:g} s"
        return text


def _levels(value: Any, n_dev: int, devices: tuple[str, ...]) -> NDArray[np.float64]:
    """cpu_levels_hz as a (K, NL) array sorted ascending per device, nan padding last."""
    if isinstance(value, np.ndarray) and value.ndim == 2 and value.dtype.kind == "f" \
            and value.shape[0] == n_dev:
        fast = _levels_array(value)
        if fast is not None:
            return fast
    if isinstance(value, np.ndarray) and value.ndim == 2:
        rows = list(value)
    else:
        try:
            rows = list(value)
        except TypeError:
            raise ProblemError("cpu_levels_hz must list the levels of each device") from None
    if len(rows) != n_dev:
        raise ProblemError(f"cpu_levels_hz has {len(rows)} entries, expected {n_dev} (one per device)")
    parsed = []
    for k, row in enumerate(rows):
        if isinstance(row, (bool, np.bool_)):
            raise ProblemError(f"device {devices[k]!r}: cpu_levels_hz must be numeric")
        try:
            arr = np.atleast_1d(np.asarray(row, dtype=float)).ravel()
        except (TypeError, ValueError):
            raise ProblemError(f"device {devices[k]!r}: cpu_levels_hz must be numeric") from None
        arr = arr[~np.isnan(arr)]
        if arr.size == 0:
            raise ProblemError(f"device {devices[k]!r}: cpu_levels_hz needs at least one level")
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ProblemError(f"device {devices[k]!r}: cpu_levels_hz must be finite and > 0")
        parsed.append(np.unique(arr))
    width = max(a.size for a in parsed)
    out = np.full((n_dev, width), np.nan)
    for k, arr in enumerate(parsed):
        out[k, : arr.size] = arr
    return out


def _levels_array(value: NDArray[np.float64]) -> NDArray[np.float64] | None:
    """The vectorised `_levels` of a clean (K, NL) float array (every row at least one level,
    all finite and > 0 apart from nan padding); None when anything is off, so that the
    row-by-row path names the device."""
    present = ~np.isnan(value)
    if not present.any(axis=1).all():
        return None
    levels = value[present]
    if not (np.isfinite(levels).all() and (levels > 0).all()):
        return None
    out = np.sort(value, axis=1)  # nan last
    # Duplicates within a row: keep one (as np.unique does), then sort the nan padding last.
    dup = np.zeros(out.shape, bool)
    dup[:, 1:] = out[:, 1:] == out[:, :-1]
    if dup.any():
        out = np.sort(np.where(dup, np.nan, out), axis=1)
    width = int((~np.isnan(out)).sum(axis=1).max())
    return np.ascontiguousarray(out[:, :width])
