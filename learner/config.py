"""Run configuration of the learner: one dataclass, TOML in and out, validated in one place.

Every field is declared with :func:`setting`: its default, a one-line doc and its constraints
(range, choices, an extra check) live in the field's metadata, and :meth:`TrainConfig.validate`
checks all fields generically: the type from the annotation (``bool`` is never an ``int``,
list elements included), finiteness of every float, then the field's rule. A new field gets the
type and finiteness checks for free; ``tests/test_safety.py`` fails until it also has a doc and a
rule. Only checks across fields are written out by hand (``_check_relations``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from dmmlkd.learner.clock import DEFAULT_CPU_LEVELS, parse_deadline, validate_levels
from dmmlkd.learner.errors import ConfigError
from dmmlkd.learner.fleet import PLACEMENTS, check_fleet
from dmmlkd.userio import read_toml
from dmmlkd.userio.options import BUDGET_RULES, DEFAULTS, SCOPES, SOLVERS, AllocatorOptions
from dmmlkd.userio.toml import check_tables

SEED_LIMIT = 2**32  # numpy and torch seeds: 0 <= seed < 2**32
__all__ = ["BUDGET_RULES", "SEED_LIMIT", "SOLVERS", "Rule", "TrainConfig", "check_value",
           "config_from_dict", "field_docs", "load_config", "setting"]


@dataclass(frozen=True)
class Rule:
    """Constraints of one field (applied to each element of a list field)."""

    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low < value rather than low <= value
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], None] | None = None  # extra check raising ConfigError (registries)
    nonempty: bool = False  # a list field must have at least one element

    def describe(self) -> str:
        """The rule as the end of a message: 'in [0, 1)', '>= 1', 'one of a, b'."""
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{_num(self.low)}, "
                    f"{_num(self.high)}{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_num(self.high)}"
        return "valid"

    def admits(self, value: Any) -> bool:
        """Whether one (type-checked) value satisfies the range and choices."""
        if self.choices is not None and value not in self.choices:
            return False
        if isinstance(value, str):
            return bool(value.strip())  # names are never empty
        if isinstance(value, (int, float)):
            if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
                return False
            if self.high is not None and not (value < self.high if self.high_open
                                              else value <= self.high):
                return False
        return True


def _num(x: float) -> str:
    """A bound as people write it: 1, 0.5, 1e9, 4294967296."""
    if float(x).is_integer():
        digits = str(int(x))
        return f"1e{len(digits) - 1}" if len(digits) > 6 and digits.strip("0") == "1" else digits
    return f"{x:g}"


def setting(default: Any, doc: str, **rule: Any) -> Any:
    """A TrainConfig field: default (a list default is copied per instance), doc and constraints."""
    metadata = {"rule": Rule(doc, **rule)}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _known_method(name: str) -> None:
    from dmmlkd.learner.methods import get_method  # the registry may grow at run time

    get_method(name)


def _known_encoders(table: dict[str, Any]) -> None:
    for view, kind in table.items():
        if not callable(kind) and kind not in ("auto", "mlp", "cnn1d", "cnn2d"):
            raise ConfigError(f"encoders.{view} must be auto, mlp, cnn1d or cnn2d (got {kind!r})")


def _known_topology(name: str) -> None:
    from dmmlkd.learner.topology import TOPOLOGIES

    if name not in TOPOLOGIES:
        raise ConfigError(f"topology must be one of {', '.join(TOPOLOGIES)} (got {name!r})")


SIGNALS = ("variation", "confidence")


@dataclass
class TrainConfig:
    """Everything that defines a learning run (saved beside its results to rerun it)."""

    dataset: str = setting("mfeat", "data set: mfeat, basicmotions (embedded), synthetic, or the "
                           "path of a .npz in the format of docs/data.md")
    val_fraction: float = setting(0.1, "share of each class's training samples held out as the "
                                  "validation split (0: none); settings are tuned on it, never on "
                                  "the test split", low=0, high=1, high_open=True)
    encoders: dict[str, Any] | None = setting(
        None, "encoder per view: auto (MLP for (N, d), 1-D CNN for (N, C, T), 2-D CNN for "
        "(N, C, H, W)), mlp, cnn1d, cnn2d; in Python also a factory (shape, embed) -> Module",
        check=_known_encoders)
    views: list[str] | None = setting(None, "views to use (None: all views of the data set)",
                                      nonempty=True)
    devices: int = setting(6, "devices in the network (>= 2: decentralized)", low=2, high=100_000)
    rounds: int = setting(20, "communication rounds", low=1, high=1_000_000)
    local_iters: int = setting(5, "local iterations of the uniform policy (tau)", low=1,
                               high=10_000)
    tau_min: int = setting(DEFAULTS.tau_min, "fewest local iterations of a held modality per "
                           "round", low=1, high=10_000)
    tau_max: int = setting(DEFAULTS.tau_max, "most local iterations of a modality per round",
                           low=1, high=10_000)
    alpha: float = setting(1000.0, "Dirichlet label skew (small = skewed, large = IID)", low=0,
                           low_open=True, high=1e9)
    min_samples: int = setting(10, "training samples every device must get", low=1, high=1_000_000)
    missing_rate: float = setting(0.0, "share of (device, view) pairs missing", low=0, high=1,
                                  high_open=True)
    availability: str = setting("auto", "who holds which view: auto (random if missing_rate > 0, "
                                "else all), all, random, pattern",
                                choices=("auto", "all", "random", "pattern"))
    pattern: list[list[str]] | None = setting(None, "view sets cycled over devices "
                                              "(availability = pattern)", nonempty=True)
    topology: str = setting("ring", "device graph: ring, torus, erdos-renyi, geometric, complete",
                            check=_known_topology)
    topology_p: float | None = setting(None, "erdos-renyi edge probability (None: 2 ln K / K)",
                                       low=0, low_open=True, high=1)
    topology_radius_m: float | None = setting(None, "geometric link radius in a 100 m square "
                                              "(None: auto)", low=0, low_open=True, high=1e6)
    method: str = setting("dmml-kd", "learning method: dpsgd, dmml-kd, dmml-kd-balance, ogm-ge, ...",
                          check=_known_method)
    battery_j: float | None = setting(None, "J per device (None: exactly enough for uniform "
                                      "local_iters every round; a longtail fleet draws a "
                                      "multiple of it, a trace gives its own)", low=0,
                                      low_open=True, high=1e12)
    battery_scale: float = setting(1.0, "multiplies the automatic (or fleet) battery", low=0, low_open=True,
                                   high=1e6)
    # fleets (learner/fleet.py)
    fleet: str = setting("uniform", "devices: uniform (f_max uniform 0.5-2 GHz, every battery "
                         "the automatic one, always present), longtail (long-tailed f_max, link "
                         "distance and battery, churn), or trace:PATH.csv (columns device,cpu_hz,"
                         "battery_j[,distance_m][,bandwidth_hz][,available])", check=check_fleet)
    fleet_churn: float = setting(0.1, "longtail: chance a present device leaves in a round "
                                 "(an absent one returns with 0.5; 0: always present)", low=0,
                                 high=1)
    fleet_placement: str = setting("any", "which devices hold the last view: any (availability "
                                   "decides) or low-battery (only the half with the smallest "
                                   "batteries: a weak sensor on wearables)", choices=PLACEMENTS)
    seed: int = setting(0, "seed of data, partition, topology, models and batches", low=0,
                        high=SEED_LIMIT, high_open=True)
    threads: int = setting(1, "torch intra-op threads (tiny matrices: 1 is fastest on CPU)",
                           low=1, high=1024)
    eval_every: int = setting(1, "evaluate device models every N rounds (and in the last round); "
                              "the consensus model every round", low=1, high=1_000_000)
    eval_devices: int = setting(64, "device models evaluated: a seeded sample of N active devices "
                                "(0: all)", low=0, high=10_000_000)
    lr: float = setting(0.1, "SGD learning rate", low=0, low_open=True, high=10)
    momentum: float = setting(0.9, "SGD momentum", low=0, high=1, high_open=True)
    batch_size: int = setting(32, "mini-batch size per device and iteration", low=1, high=65_536)
    hidden: int = setting(128, "encoder hidden width", low=1, high=16_384)
    embed: int = setting(64, "encoder output width", low=1, high=16_384)
    feature: int = setting(32, "common/specific feature width", low=1, high=16_384)
    w_difference: float = setting(0.05, "weight of the common/specific difference loss", low=0,
                                  high=1000)
    w_similarity: float = setting(0.1, "weight of the cross-modality similarity loss", low=0,
                                  high=1000)
    w_common: float = setting(0.5, "weight of the common-feature classifier loss", low=0, high=1000)
    w_kd: float = setting(0.5, "weight of the knowledge-distillation loss", low=0, high=1000)
    modality_dropout: float | None = setting(
        None, "drop held views from the fused prediction while training (None: 0.3 when some "
        "device misses a view, else 0)", low=0, high=1, high_open=True)
    dropout_rate: float = setting(0.5, "modality dropout of the methods built on it "
                                  "(modality-dropout, dmml-kd-balance-dropout) unless "
                                  "modality_dropout is set (0.5: tuned on validation, "
                                  "docs/results.md)", low=0, high=1, high_open=True)
    fusion_rule: str = setting("training", "'training': only encoders still training feed the "
                               "fusion; 'all': every held encoder (DESIGN.md)",
                               choices=("all", "training"))
    generator_steps: int = setting(5, "generator updates per round (KD methods)", low=0,
                                   high=100_000)
    generator_lr: float = setting(1e-3, "generator learning rate", low=0, low_open=True, high=10)
    speed_beta: float = setting(0.5, "smoothing of the measured training speed", low=0,
                                low_open=True, high=1)
    signal: str = setting("confidence", "balance signal the allocator sees as a modality's speed: "
                          "variation (the paper's relative parameter variation per iteration) or "
                          "confidence (the common classifier's true-class probability from that "
                          "modality alone, OGM-GE style; tuned on validation, docs/results.md)",
                          choices=SIGNALS)
    schedule_spread: int = setting(1, "random-schedule: tau = local_iters ± schedule_spread", low=0,
                                   high=10_000)
    ogm_alpha: float = setting(0.5, "OGM-GE modulation strength", low=0, high=1000)
    # simulated time (learner/clock.py)
    cpu_levels: list[float] = setting(list(DEFAULT_CPU_LEVELS), "CPU levels of every device as "
                                      "fractions of its drawn f_max (must include 1.0)", low=0,
                                      low_open=True, high=1, nonempty=True)
    deadline: float | str | None = setting("auto", "round deadline: auto (the round time of "
                                           "uniform local_iters at f_max), auto:F (F x auto; F < 1 "
                                           "makes slow devices stragglers), none, or seconds",
                                           check=parse_deadline)
    # allocator options (used by dmml-kd-balance; wired in bridge/): defaults and solver names
    # are the allocator's own (userio.options.AllocatorOptions), see allocator_options()
    solver: str = setting(DEFAULTS.solver, "the allocator's algorithm for dmml-kd-balance",
                          choices=SOLVERS)
    scope: str = setting(DEFAULTS.scope, "allocator scope: balance per device or over the network",
                         choices=SCOPES)
    delta: float = setting(DEFAULTS.delta, "allocator balance tolerance", low=0, high=1000)
    mu: float = setting(DEFAULTS.mu, "allocator price of progress beyond (1 + delta) x floor",
                        low=0, high=1e9)
    budget_rule: str = setting("even", "round budget: even (battery over remaining rounds) or all",
                               choices=BUDGET_RULES)
    fleet_returns: float = setting(1.0, "dmml-kd-fleet: a round of tau local iterations is "
                                   "worth tau^fleet_returns (diminishing returns between two "
                                   "gossip exchanges; 1: none, tuned on validation in "
                                   "docs/where-allocation-pays.md)", low=0, low_open=True, high=1)
    fleet_split: str = setting("uniform", "dmml-kd-fleet: the planned round over a device's "
                               "views: uniform (same tau) or balance (the paper's balance "
                               "objective, device scope)", choices=("uniform", "balance"))
    solver_time_limit: float = setting(DEFAULTS.time_limit, "seconds for the exact allocator per "
                                       "round", low=0, low_open=True, high=1e6)
    # synthetic data options
    n_samples: int = setting(1200, "synthetic samples (train + test)", low=20, high=10_000_000)
    synthetic_dims: list[int] = setting([32, 32], "synthetic view widths", low=1, high=100_000,
                                        nonempty=True)
    synthetic_signal: list[float] = setting([2.0, 0.5], "synthetic class separation per view",
                                            low=0, high=1e6, nonempty=True)
    synthetic_noise: float = setting(1.0, "synthetic noise level", low=0, low_open=True, high=1e6)

    def validate(self) -> TrainConfig:
        """Check every field (type, finiteness, rule) and the relations between fields.

        Raises ConfigError naming the field; float fields given as integers become floats.
        """
        hints = _hints()
        for f in fields(self):
            value = getattr(self, f.name)
            if not _fits(value, hints[f.name]):
                raise ConfigError(f"{f.name} must be {_type_name(hints[f.name])} (got {value!r})")
            value = _as_floats(value, hints[f.name])
            setattr(self, f.name, value)
            rule = f.metadata.get("rule")
            if rule is not None:
                _check_rule(f.name, value, rule)
        _check_relations(self)
        return self

    def allocator_options(self) -> AllocatorOptions:
        """The allocator's options this run asks for (the bridge's policies carry them)."""
        return AllocatorOptions(solver=self.solver, scope=self.scope, tau_min=self.tau_min,
                                tau_max=self.tau_max, delta=self.delta, mu=self.mu,
                                time_limit=self.solver_time_limit)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (None values dropped, as TOML has no null; an encoder factory is written
        as its qualified name, which documents the run but cannot be read back)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if self.encoders:
            out["encoders"] = {v: k if isinstance(k, str) else
                               f"python:{getattr(k, '__module__', '?')}.{getattr(k, '__qualname__', k)}"
                               for v, k in self.encoders.items()}
        return out


def field_docs() -> dict[str, Rule]:
    """Each field's rule (doc and constraints), for help texts and docs."""
    return {f.name: f.metadata["rule"] for f in fields(TrainConfig) if "rule" in f.metadata}


def config_table_markdown() -> str:
    """The fields as a Markdown table (name, type, default, allowed values, doc) for docs/."""
    annotations, defaults = {f.name: f.type for f in fields(TrainConfig)}, TrainConfig()
    rows = ["| field | type | default | allowed | what it is |", "|---|---|---|---|---|"]
    for name, rule in field_docs().items():
        allowed = rule.describe() if rule.describe() != "valid" else "see doc"
        if name in ("method", "topology"):
            allowed = "a registered name"
        kind = str(annotations[name]).replace("|", "\\|")  # a bare | would split the cell
        rows.append(f"| `{name}` | `{kind}` | `{getattr(defaults, name)!r}` | "
                    f"{allowed} | {rule.doc} |")
    return "\n".join(rows)


@cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a value has a field's type: int, float (an int too), str, bool, lists, optional."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):  # True is an int to Python, never to a config
        return False
    if hint is int:
        return isinstance(value, int)
    if hint is float:
        return isinstance(value, (int, float))
    if hint is str:
        return isinstance(value, str)
    return False


def _type_name(hint: Any, plural: bool = False) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h, plural) for h in typing.get_args(hint))
    if hint is type(None):
        return "absent"
    if origin is list:
        return f"{'lists' if plural else 'a list'} of {_type_name(typing.get_args(hint)[0], True)}"
    if origin is dict:
        return "tables" if plural else "a table"
    names = {int: ("an integer", "integers"), float: ("a number", "numbers"),
             str: ("a string", "strings"), bool: ("true or false", "true or false")}
    return names[hint][plural] if hint in names else str(hint)


def _as_floats(value: Any, hint: Any) -> Any:
    """Integers given for float fields become floats (so saved configs read back the same)."""
    if isinstance(value, list):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = typing.get_args(args[0])[0] if args and typing.get_origin(args[0]) is list else None
        return [_as_floats(v, inner) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and float in _leaves(hint) \
            and int not in _leaves(hint):
        return float(value)
    return value


def _leaves(hint: Any) -> set[Any]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return set(typing.get_args(hint))
    return {hint}


def _scalars(value: Any) -> list[Any]:
    """A value's scalar elements (lists of lists flattened)."""
    if isinstance(value, list):
        return [s for v in value for s in _scalars(v)]
    return [value]


def check_value(name: str, value: Any, rule: Rule) -> Any:
    """Check one value outside TrainConfig (a command's own option) by the same rules; return it."""
    _check_rule(name, value, rule)
    return value


def _check_rule(name: str, value: Any, rule: Rule) -> None:
    if value is None:
        return
    if isinstance(value, list):
        if rule.nonempty and (not value or any(isinstance(v, list) and not v for v in value)):
            raise ConfigError(f"{name} must not be empty (got {value!r})")
    for item in _scalars(value):
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"{name} must be a finite number (got {item!r})")
        if not rule.admits(item):
            where = f" (got {value!r})" if item is value else f" (element {item!r} in {value!r})"
            if isinstance(item, str) and rule.choices is None:
                raise ConfigError(f"{name} must not be empty{where}")
            raise ConfigError(f"{name} must be {rule.describe()}{where}")
        if rule.check is not None:
            rule.check(item)


def _check_relations(c: TrainConfig) -> None:
    """Rules between fields."""
    from dmmlkd.learner.methods import get_method  # the registry may grow at run time

    if get_method(c.method).policy == "random":
        if not (c.tau_min <= c.local_iters - c.schedule_spread
                and c.local_iters + c.schedule_spread <= c.tau_max):
            raise ConfigError(f"schedule_spread must keep local_iters ± schedule_spread in "
                              f"[tau_min, tau_max] (got {c.schedule_spread!r})")
        if c.fusion_rule != "training":
            # Under "all" every held encoder runs forward L_k = local_iters + d times, so no
            # ± d schedule can cost what uniform costs.
            raise ConfigError(f"fusion_rule must be 'training' for {c.method} "
                              f"(got {c.fusion_rule!r})")
    if c.battery_j is not None and c.fleet != "uniform":
        raise ConfigError(f"battery_j cannot be combined with fleet {c.fleet!r} (the fleet sets "
                          f"each battery; scale them with battery_scale)")
    if c.fleet_placement != "any" and c.fleet == "uniform":
        raise ConfigError(f"fleet_placement {c.fleet_placement!r} needs unequal batteries "
                          f"(fleet longtail or trace:PATH)")
    if not c.tau_min <= c.tau_max:
        raise ConfigError(f"need tau_min <= tau_max (got {c.tau_min}, {c.tau_max})")
    if not c.tau_min <= c.local_iters <= c.tau_max:
        raise ConfigError(f"local_iters must be in [tau_min, tau_max] (got {c.local_iters})")
    validate_levels(c.cpu_levels)
    c.deadline = parse_deadline(c.deadline)  # "auto", "none", None or seconds (a float)
    if c.views is not None and len(set(c.views)) != len(c.views):
        raise ConfigError(f"views must not repeat a view (got {c.views!r})")
    if c.availability == "pattern" and c.pattern is None:
        raise ConfigError("pattern must be given when availability = pattern")
    if c.dataset == "synthetic" and len(c.synthetic_signal) != len(c.synthetic_dims):
        raise ConfigError(f"synthetic_signal needs one value per synthetic_dims entry "
                          f"(got {len(c.synthetic_signal)} for {len(c.synthetic_dims)})")


def config_from_dict(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build a config from a dict (a [train] table or top level), rejecting unknown keys."""
    if "train" in data and isinstance(data["train"], dict):
        data = data["train"]
    known = {f.name for f in fields(TrainConfig)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{source}: unknown option {key!r}")
    return TrainConfig(**data).validate()


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a TOML config (or defaults) and apply overrides (flags), validated."""
    data: dict[str, Any] = read_toml(path, ConfigError) if path is not None else {}
    check_tables(data, "train", ("compare",), str(path), ConfigError)  # the file compare reads too
    if "train" in data and isinstance(data["train"], dict):
        data = data["train"]
    data = {**data, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    return config_from_dict(data, str(path) if path else "config")
