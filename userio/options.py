"""The allocator's options as one typed record: names, defaults and limits written once.

The allocator solves with them (``Problem`` takes scope, tau range, delta, mu, epsilon;
``solve`` takes the solver, time limit and MIP gap), the learner's ``TrainConfig`` carries
them for the bridge (``dmml-kd-balance``), the bridge's policies hold one
:class:`AllocatorOptions`, and the command line and study specs read their defaults here. It
sits in the bottom layer because the learner may not import the allocator, yet both need the
same defaults and the same solver names (``SOLVERS``; the allocator's registry
``dmmlkd.allocator.solvers.METHODS`` is built from this tuple, so the two cannot drift).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields, replace
from typing import Any

from dmmlkd.userio.errors import UserError

# The allocator's algorithms (one file each under allocator/solvers/).
SOLVERS = ("exact", "heuristic", "proportional", "uniform")
# Balance per device, or one balance over the whole network.
SCOPES = ("device", "network")
# How the bridge turns a battery into a round budget (dmmlkd.bridge.policies.round_budget).
BUDGET_RULES = ("even", "all")


@dataclass(frozen=True)
class AllocatorOptions:
    """How the allocator is asked to solve: the one place of every default below."""

    solver: str = "heuristic"  # one of SOLVERS
    scope: str = "device"  # one of SCOPES
    tau_min: int = 1  # fewest local iterations of a held modality per round
    tau_max: int = 20  # most local iterations of a modality per round
    delta: float = 0.1  # balance tolerance: progress may reach (1 + delta) x the floor for free
    mu: float = 5.0  # price of progress beyond (1 + delta) x the floor
    epsilon: float = 1e-3  # weight of the energy tie-break
    # Seconds the exact solver may spend on one problem (None: no limit): the one default of
    # the policies (a solve every round), study cells, TrainConfig.solver_time_limit, `bench`
    # and `demo`. A standalone `dmmlkd solve` defaults to SOLVE_TIME_LIMIT_S; `solve()` in
    # Python takes no limit unless given.
    time_limit: float | None = 10.0
    mip_gap: float = 1e-4  # relative gap at which the exact solver stops and may say "optimal"

    def __post_init__(self) -> None:
        for f in fields(self):
            check_option(f.name, getattr(self, f.name), UserError)
        if self.tau_min > self.tau_max:
            raise UserError(f"tau_min ({self.tau_min}) must be <= tau_max ({self.tau_max})")

    def with_(self, **changes: Any) -> AllocatorOptions:
        """A copy with some options replaced (checked again)."""
        return replace(self, **changes)

    def problem_options(self) -> dict[str, Any]:
        """The options an allocation ``Problem`` takes (scope, tau range, delta, mu, epsilon)."""
        return {name: getattr(self, name) for name in PROBLEM_FIELDS}

    def solve_options(self) -> dict[str, Any]:
        """The keyword options of ``dmmlkd.allocator.solve`` besides the solver."""
        return {"time_limit": self.time_limit, "mip_gap": self.mip_gap}


PROBLEM_FIELDS = ("scope", "tau_min", "tau_max", "delta", "mu", "epsilon")
# Exact's default limit in a standalone `dmmlkd solve` (one problem, a person waiting): long
# enough for 1,000 devices x 4 modalities with 4 CPU levels to reach a 0.1% gap here.
SOLVE_TIME_LIMIT_S = 60.0


def check_option(name: str, value: Any, error: type[Exception] = UserError) -> Any:
    """Check one allocator option by its rule; raise the caller's error type naming it.

    The one rule of each option: the record above, ``Problem`` and ``solve`` all call it.
    """
    if name in ("solver", "scope"):
        choices = SOLVERS if name == "solver" else SCOPES
        if value not in choices:
            raise error(f"{name} must be one of {', '.join(choices)} (got {value!r})")
    elif name in ("tau_min", "tau_max"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not float(value).is_integer():
            raise error(f"{name} must be an integer (got {value!r})")
        if value < 1:
            raise error(f"{name} must be >= 1 (got {value!r})")
    elif name in ("delta", "mu", "epsilon"):
        number = _number(name, value, error)
        if not math.isfinite(number) or number < 0:
            raise error(f"{name} must be a finite number >= 0 (got {number!r})")
    elif name == "time_limit":
        if value is not None:
            number = _number(name, value, error)
            if not 0 < number < math.inf:  # nan and inf too: no limit is None (flag: omit it)
                raise error(f"time_limit must be a finite number > 0 (got {value})")
    elif name == "mip_gap":
        number = _number(name, value, error)
        if not 0 <= number < 1:
            raise error(f"mip_gap must be in [0, 1) (got {value})")
    else:
        raise error(f"unknown allocator option {name!r}")
    return value


def _number(name: str, value: Any, error: type[Exception]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:  # NumPy scalars
            return float(value)
        except (TypeError, ValueError):
            raise error(f"{name} must be a number (got {value!r})") from None
    return float(value)


DEFAULTS = AllocatorOptions()  # every default above, as one record


def parse_deadline(value: Any, error: type[Exception] = UserError, name: str = "deadline",
                   auto: bool = False, relative: bool = False) -> float | str | None:
    """The one rule of a round deadline, wherever it is given (config, flag, problem file).

    ``None`` or ``"none"``: no deadline (returned as given); a number or numeric text: seconds,
    finite and > 0 (returned as a float); ``"auto"`` where ``auto`` is allowed (the learner:
    the round time of uniform tau at f_max), and ``"auto:F"`` (F > 0 times that; returned as
    ``"auto:F"``); ``"Xx"`` where ``relative`` is allowed (the
    generator: X > 0 times the slowest device's mid-tau time at f_max; returned as ``"Xx"``).
    Anything else raises the caller's error naming ``name``.
    """
    forms = ["auto", "auto:F"] if auto else []
    forms += ["none", "seconds > 0"] + (["a multiple such as 0.8x"] if relative else [])
    wrong = error(f"{name} must be {', '.join(forms[:-1])} or {forms[-1]} (got {value!r})")
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "none" or (auto and text == "auto"):
            return text
        if auto and text.startswith("auto:"):  # a share of the automatic deadline (< 1: tighter)
            share = _finite(text[5:])
            if share is None or share <= 0:
                raise wrong
            return f"auto:{share:g}"
        if relative and text.endswith("x"):
            scale = _finite(text[:-1])
            if scale is None or scale <= 0:
                raise wrong
            return f"{scale:g}x"
        seconds = _finite(text)
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):  # NumPy numbers too
        raise wrong
    else:
        seconds = float(value) if math.isfinite(value) else None
    if seconds is None or seconds <= 0:
        raise wrong
    return seconds


def _finite(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
