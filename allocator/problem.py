"""The allocation problem record: devices x modalities, energies, budgets and balance goal.

Everything is stored densely as (K, M) NumPy arrays aligned with ``modalities`` (zeros where a
device does not hold a modality), so every solver can be vectorised over devices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from allocator.errors import ProblemError

SCOPES = ("device", "network")


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
    """

    modalities: tuple[str, ...]
    devices: tuple[str, ...]
    holds: NDArray[np.bool_]
    speed: NDArray[np.float64]
    forward_energy: NDArray[np.float64]
    backward_energy: NDArray[np.float64]
    comm_energy: NDArray[np.float64]
    budget: NDArray[np.float64]
    weight: NDArray[np.float64] = field(default=None)  # type: ignore[assignment]
    scope: str = "device"
    tau_min: int = 1
    tau_max: int = 20
    delta: float = 0.1
    mu: float = 5.0
    epsilon: float = 1e-3

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
        if self.scope not in SCOPES:
            raise ProblemError(f"scope must be one of {', '.join(SCOPES)} (got {self.scope!r})")
        for name in ("tau_min", "tau_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not float(value).is_integer():
                raise ProblemError(f"{name} must be an integer (got {value!r})")
            set_(self, name, int(value))
        if self.tau_min < 1:
            raise ProblemError(f"tau_min must be >= 1 (got {self.tau_min})")
        if self.tau_min > self.tau_max:
            raise ProblemError(f"tau_min ({self.tau_min}) must be <= tau_max ({self.tau_max})")
        for name, lower in (("delta", 0.0), ("mu", 0.0), ("epsilon", 0.0)):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < lower:
                raise ProblemError(f"{name} must be a finite number >= {lower:g} (got {value!r})")
            set_(self, name, value)
        short = self.budget < self.min_energy - 1e-12 * np.maximum(1.0, self.budget)
        if short.any():
            k = int(np.argmax(short))
            raise ProblemError(
                f"device {devices[k]!r}: budget {self.budget[k]:g} J cannot pay comm_energy "
                f"plus tau_min={self.tau_min} on its modalities ({self.min_energy[k]:g} J)"
            )

    # -- derived quantities -------------------------------------------------------------
    @property
    def n_devices(self) -> int:
        """Number of devices K."""
        return len(self.devices)

    @property
    def n_modalities(self) -> int:
        """Number of modalities M."""
        return len(self.modalities)

    @property
    def holders(self) -> NDArray[np.int64]:
        """n_m: how many devices hold each modality (M,)."""
        return self.holds.sum(axis=0)

    @property
    def forward_sum(self) -> NDArray[np.float64]:
        """Sum over held modalities of the forward energy per iteration (K,)."""
        return self.forward_energy.sum(axis=1)

    @property
    def min_energy(self) -> NDArray[np.float64]:
        """Energy of the cheapest admissible round: tau_min everywhere plus comm (K,)."""
        return self.tau_min * (self.forward_sum + self.backward_energy.sum(axis=1)) + (
            self.comm_energy
        )

    @property
    def compute_budget(self) -> NDArray[np.float64]:
        """Budget left for computation after communication (K,)."""
        return self.budget - self.comm_energy

    @property
    def energy_scale(self) -> float:
        """The normaliser of the energy tie-break: the total budget (at least 1e-12)."""
        return max(float(self.budget.sum()), 1e-12)

    def with_(self, **changes: Any) -> Problem:
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)

    def subset(self, index: NDArray[np.int64] | list[int]) -> Problem:
        """The problem restricted to some devices (same modalities and options)."""
        idx = np.asarray(index, dtype=int)
        return replace(
            self,
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
        return (
            f"{self.scope} scope, {self.n_devices} devices, {self.n_modalities} modalities, "
            f"tau in [{self.tau_min}, {self.tau_max}], delta={self.delta:g}, mu={self.mu:g}, "
            f"epsilon={self.epsilon:g}"
        )
