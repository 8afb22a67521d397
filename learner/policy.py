"""The policy contract: what an allocation policy sees each round, and what it answers.

The seam between the learner and whatever decides the iteration table (the allocator through
`dmmlkd.bridge`, or an allocator-free schedule in `dmmlkd.learner.schedules`). The loop, the
schedules and the bridge import it; it imports nothing of theirs, so no import circle forms.
Build a `RoundState` with keywords.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray


@dataclass(kw_only=True)
class RoundState:
    """What a policy sees at the start of a round."""

    round: int
    rounds_total: int
    devices: list[str]
    modalities: list[str]
    holds: NDArray[np.bool_]
    speed: NDArray[np.float64]
    battery_j: NDArray[np.float64]
    forward_j: NDArray[np.float64]
    backward_j: NDArray[np.float64]
    comm_j: NDArray[np.float64]
    active: NDArray[np.bool_]
    adjacency: Any  # (K, K) bool, scipy.sparse CSR (a dense one would be K x K)
    tau_min: int
    tau_max: int
    local_iters: int
    last_tau: NDArray[np.int64]
    # Time and frequency (learner/clock.py): planning cycles per sample folded like forward_j /
    # backward_j (which are at f_max), CPU levels (K, L) ascending, comm time (K,), deadline.
    cpu_hz: NDArray[np.float64] | None = None  # (K,) f_max
    cpu_levels_hz: NDArray[np.float64] | None = None
    cycles_forward: NDArray[np.float64] | None = None
    cycles_backward: NDArray[np.float64] | None = None
    batch_size: int = 1
    comm_time_s: NDArray[np.float64] | None = None
    deadline_s: float | None = None


@dataclass
class PolicyDecision:
    """A policy's answer: counts per device and modality, what to log, who it left out.

    ``info`` holds scalars only (one column each in the per-round log; a name the loop uses
    itself is logged as ``policy_<name>``); ``predicted_progress`` (K, M), when the policy
    computes one, replaces the loop's own speed x tau in the per-device rows.
    """

    tau: NDArray[np.int64]
    info: dict[str, Any] = field(default_factory=dict)
    dropped: list[int] = field(default_factory=list)
    predicted_progress: NDArray[np.float64] | None = None
    cpu_hz: NDArray[np.float64] | None = None  # (K,) one of each device's levels; None: f_max


class Policy(Protocol):
    """The learner/allocator seam: a round's state in, the iteration table out."""

    def __call__(self, state: RoundState) -> PolicyDecision | NDArray[np.integer[Any]]: ...

def as_decision(out: PolicyDecision | NDArray[np.integer[Any]]) -> PolicyDecision:
    """A policy's answer as a decision (a bare array is the tau table)."""
    if isinstance(out, PolicyDecision):
        return out
    return PolicyDecision(np.asarray(out, dtype=np.int64))
