"""What a Flower node tells the strategy about itself: its views, hardware, link and battery.

A node answers the strategy's profile query (``query.dmmlkd_profile``) with a `NodeProfile` as a
`ConfigRecord`. The numbers are the learner's energy profile (`dmmlkd.learner.energy`) for that
device: per-iteration energies at its top CPU level, cycles per sample of each modality block's
forward and backward pass (from the model), its CPU levels, what one upload costs in energy and
time at its link rate, and its battery. The strategy stacks the profiles of a round's nodes into
one `EnergyProfile`, so planning, the clock and the ledger use the learner's and the allocator's
own formulas (`dmmlkd.metrics.energy`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from dmmlkd.learner.energy import EnergyProfile

if TYPE_CHECKING:
    from flwr.app import ConfigRecordValues

PROFILE_ACTION = "dmmlkd_profile"  # the query's action: message type "query.dmmlkd_profile"
PROFILE_KEY = "profile"  # the ConfigRecord in the node's reply


def as_number(value: object, what: str) -> float:
    """A record value that must be a number (a bool is not one); ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number (got {value!r})")
    return float(value)


@dataclass(frozen=True)
class NodeProfile:
    """One node's views, hardware, link and battery (arrays over the run's views)."""

    name: str
    views: tuple[str, ...]
    holds: NDArray[np.bool_]  # (M,)
    forward_j: NDArray[np.float64]  # (M,) J per forward pass of one batch at f_max
    backward_j: NDArray[np.float64]  # (M,) J per backward/update pass at f_max
    cycles_forward: NDArray[np.float64]  # (M,) cycles per sample, forward pass
    cycles_backward: NDArray[np.float64]  # (M,) cycles per sample, backward pass
    cpu_levels_hz: NDArray[np.float64]  # (L,) ascending; the last is f_max
    comm_j: float  # J to upload the node's model once
    comm_s: float  # s to upload it
    battery_j: float  # J at the start of the run
    batch_size: int
    num_examples: int
    fusion_rule: str = "training"

    def to_config(self) -> dict[str, ConfigRecordValues]:
        """The profile as ConfigRecord values (str, numbers and lists of them)."""
        return {
            "name": self.name, "views": list(self.views), "holds": [bool(h) for h in self.holds],
            "forward-j": [float(x) for x in self.forward_j],
            "backward-j": [float(x) for x in self.backward_j],
            "cycles-forward": [float(x) for x in self.cycles_forward],
            "cycles-backward": [float(x) for x in self.cycles_backward],
            "cpu-levels-hz": [float(x) for x in self.cpu_levels_hz],
            "comm-j": float(self.comm_j), "comm-s": float(self.comm_s),
            "battery-j": float(self.battery_j), "batch-size": int(self.batch_size),
            "num-examples": int(self.num_examples), "fusion-rule": self.fusion_rule,
        }

    @classmethod
    def from_config(cls, record: Mapping[str, object]) -> NodeProfile:
        """A profile from a node's reply; ValueError naming the missing or bad field."""
        def get(key: str) -> object:
            if key not in record:
                raise ValueError(f"node profile lacks {key!r}")
            return record[key]

        def arr(key: str, dtype: type) -> NDArray[Any]:
            value = get(key)
            if not isinstance(value, list):
                raise ValueError(f"node profile field {key!r} must be a list (got {value!r})")
            return np.asarray(value, dtype)

        views = tuple(str(v) for v in arr("views", str))
        out = cls(str(get("name")), views, arr("holds", bool), arr("forward-j", float),
                  arr("backward-j", float), arr("cycles-forward", float),
                  arr("cycles-backward", float), np.sort(arr("cpu-levels-hz", float)),
                  as_number(get("comm-j"), "comm-j"), as_number(get("comm-s"), "comm-s"),
                  as_number(get("battery-j"), "battery-j"),
                  int(as_number(get("batch-size"), "batch-size")),
                  int(as_number(get("num-examples"), "num-examples")), str(get("fusion-rule")))
        for key in ("holds", "forward_j", "backward_j", "cycles_forward", "cycles_backward"):
            if getattr(out, key).shape != (len(views),):
                raise ValueError(f"node {out.name!r}: profile field {key} has "
                                 f"{getattr(out, key).size} entries for {len(views)} views")
        return out


def fleet_profiles(profile: EnergyProfile, holds: NDArray[np.bool_], views: Sequence[str],
                   battery_j: NDArray[np.float64], num_examples: Sequence[int],
                   names: Sequence[str] | None = None) -> list[NodeProfile]:
    """Every device of a learner fleet as a node profile (row k of each table)."""
    if profile.cycles_forward is None or profile.cycles_backward is None or profile.comm_s is None:
        raise ValueError("the energy profile has no cycle counts or link times (use make_profile)")
    levels = profile.levels_hz()
    return [NodeProfile(
        names[k] if names is not None else f"dev{k}", tuple(views), np.asarray(holds[k], bool),
        profile.forward_j[k].copy(), profile.backward_j[k].copy(),
        profile.cycles_forward[k].copy(), profile.cycles_backward[k].copy(), levels[k].copy(),
        float(profile.comm_j[k]), float(profile.comm_s[k]), float(battery_j[k]),
        profile.batch_size, int(num_examples[k]), profile.fusion_rule)
        for k in range(holds.shape[0])]


def stack(profiles: Sequence[NodeProfile]) -> EnergyProfile:
    """The learner's energy profile of these nodes (one row each, in order).

    The nodes must share views, batch size, fusion rule and the number of CPU levels (one
    table per round); a node that differs is named in the ValueError.
    """
    first = profiles[0]
    for p in profiles[1:]:
        for key in ("views", "batch_size", "fusion_rule"):
            if getattr(p, key) != getattr(first, key):
                raise ValueError(f"node {p.name!r}: {key} {getattr(p, key)!r} differs from node "
                                 f"{first.name!r}'s {getattr(first, key)!r}")
        if p.cpu_levels_hz.size != first.cpu_levels_hz.size:
            raise ValueError(f"node {p.name!r} has {p.cpu_levels_hz.size} CPU levels, node "
                             f"{first.name!r} {first.cpu_levels_hz.size} (one level count per run)")
    levels = np.stack([p.cpu_levels_hz for p in profiles])
    return EnergyProfile(
        forward_j=np.stack([p.forward_j for p in profiles]),
        backward_j=np.stack([p.backward_j for p in profiles]),
        comm_j=np.array([p.comm_j for p in profiles]), cpu_hz=levels.max(axis=1),
        fusion_rule=first.fusion_rule,
        cycles_forward=np.stack([p.cycles_forward for p in profiles]),
        cycles_backward=np.stack([p.cycles_backward for p in profiles]),
        batch_size=first.batch_size, comm_s=np.array([p.comm_s for p in profiles]),
        cpu_levels_hz=levels)
