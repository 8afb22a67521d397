"""Run configuration of the learner: one dataclass, TOML in and out, validated."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from learner.errors import ConfigError
from learner.methods import get_method

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


SIGNALS = ("variation", "confidence")


@dataclass
class TrainConfig:
    """Everything that defines a learning run (saved beside its results to rerun it)."""

    dataset: str = "mfeat"
    # Share of each class's training samples held out as the validation split (0: none);
    # settings are tuned on it, never on the test split.
    val_fraction: float = 0.1
    views: list[str] | None = None  # None: all views of the data set
    devices: int = 6
    rounds: int = 20
    local_iters: int = 5  # tau of the uniform policy
    tau_min: int = 1
    tau_max: int = 20
    alpha: float = 1000.0  # Dirichlet label skew (large = IID)
    min_samples: int = 10
    missing_rate: float = 0.0
    availability: str = "auto"  # auto (random if missing_rate > 0, else all), all, random, pattern
    pattern: list[list[str]] | None = None  # view sets cycled over devices (availability=pattern)
    topology: str = "ring"
    topology_p: float | None = None  # erdos-renyi edge probability (None: 2 ln K / K)
    topology_radius_m: float | None = None  # geometric link radius in a 100 m square (None: auto)
    method: str = "dmml-kd"
    battery_j: float | None = None  # None: exactly enough for uniform local_iters every round
    battery_scale: float = 1.0  # multiplies the automatic battery
    seed: int = 0
    threads: int = 1  # torch intra-op threads (the matrices are tiny: 1 is fastest on CPU)
    lr: float = 0.1
    momentum: float = 0.9
    batch_size: int = 32
    hidden: int = 128
    embed: int = 64
    feature: int = 32
    w_difference: float = 0.05
    w_similarity: float = 0.1
    w_common: float = 0.5
    w_kd: float = 0.5
    # Drop held views from the fused prediction while training; None: 0.3 when some device
    # misses a view (the fusion must work from any subset), else 0.
    modality_dropout: float | None = None
    dropout_rate: float = 0.3  # of the methods built on modality dropout (modality-dropout, ...)
    fusion_rule: str = "training"  # "training": only encoders still training feed the fusion
    generator_steps: int = 5
    generator_lr: float = 1e-3
    speed_beta: float = 0.5
    # Balance signal the allocator sees as a modality's speed: "variation" (the paper's relative
    # parameter variation per iteration) or "confidence" (the common classifier's true-class
    # probability from that modality alone, OGM-GE style: a modality's own learning).
    signal: str = "variation"
    schedule_spread: int = 1  # random-schedule: tau = local_iters ± schedule_spread
    ogm_alpha: float = 0.5
    # allocator options (used by dmml-kd-balance; wired in studies/)
    solver: str = "heuristic"
    scope: str = "device"
    delta: float = 0.1
    mu: float = 5.0
    budget_rule: str = "even"
    solver_time_limit: float = 10.0
    # synthetic data options
    n_samples: int = 1200
    synthetic_dims: list[int] = field(default_factory=lambda: [32, 32])
    synthetic_signal: list[float] = field(default_factory=lambda: [2.0, 0.5])
    synthetic_noise: float = 1.0

    def validate(self) -> TrainConfig:
        """Check values a user can get wrong; raise ConfigError naming the field."""
        positive_int = ("devices", "rounds", "batch_size", "hidden", "embed", "feature", "tau_max",
                        "threads")
        for name in positive_int:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer (got {value!r})")
        if self.devices < 2:
            raise ConfigError(f"devices must be >= 2 for decentralized learning (got {self.devices})")
        if not 1 <= self.tau_min <= self.tau_max:
            raise ConfigError(f"need 1 <= tau_min <= tau_max (got {self.tau_min}, {self.tau_max})")
        if not self.tau_min <= self.local_iters <= self.tau_max:
            raise ConfigError(f"local_iters must be in [tau_min, tau_max] (got {self.local_iters})")
        if isinstance(self.val_fraction, bool) or not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1) (got {self.val_fraction!r})")
        if not self.alpha > 0:
            raise ConfigError(f"alpha must be > 0 (got {self.alpha})")
        if not 0.0 <= self.missing_rate < 1.0:
            raise ConfigError(f"missing_rate must be in [0, 1) (got {self.missing_rate})")
        if self.battery_j is not None and not self.battery_j > 0:
            raise ConfigError(f"battery_j must be > 0 (got {self.battery_j})")
        if self.topology_p is not None and not 0.0 < self.topology_p <= 1.0:
            raise ConfigError(f"topology_p must be in (0, 1] (got {self.topology_p})")
        if self.topology_radius_m is not None and not self.topology_radius_m > 0:
            raise ConfigError(f"topology_radius_m must be > 0 (got {self.topology_radius_m})")
        if not 0.0 < self.speed_beta <= 1.0:
            raise ConfigError(f"speed_beta must be in (0, 1] (got {self.speed_beta})")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0 (got {self.lr})")
        if self.modality_dropout is not None and not 0.0 <= self.modality_dropout < 1.0:
            raise ConfigError(f"modality_dropout must be in [0, 1) (got {self.modality_dropout})")
        if isinstance(self.dropout_rate, bool) or not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigError(f"dropout_rate must be in [0, 1) (got {self.dropout_rate!r})")
        if self.fusion_rule not in ("all", "training"):
            raise ConfigError(f"fusion_rule must be all or training (got {self.fusion_rule!r})")
        if get_method(self.method).policy == "random" and not (
                isinstance(self.schedule_spread, int) and self.schedule_spread >= 0
                and self.tau_min <= self.local_iters - self.schedule_spread
                and self.local_iters + self.schedule_spread <= self.tau_max):
            raise ConfigError(f"schedule_spread must keep local_iters ± schedule_spread in "
                              f"[tau_min, tau_max] (got {self.schedule_spread!r})")
        if get_method(self.method).policy == "random" and self.fusion_rule != "training":
            # Under "all" every held encoder runs forward L_k = local_iters + d times, so no
            # ± d schedule can cost what uniform costs.
            raise ConfigError(f"fusion_rule must be 'training' for {self.method} "
                              f"(got {self.fusion_rule!r})")
        if self.signal not in SIGNALS:
            raise ConfigError(f"signal must be one of {', '.join(SIGNALS)} (got {self.signal!r})")
        if self.availability not in ("auto", "all", "random", "pattern"):
            raise ConfigError(f"availability must be auto, all, random or pattern "
                              f"(got {self.availability!r})")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (None values dropped, as TOML has no null)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def config_from_dict(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build a config from a dict (a [train] table or top level), rejecting unknown keys."""
    if "train" in data and isinstance(data["train"], dict):
        data = data["train"]
    known = {f.name: str(f.type) for f in fields(TrainConfig)}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown option {key!r}")
        if not _type_ok(value, known[key]):
            raise ConfigError(f"{source}: {key} must be {known[key]} (got {value!r})")
    try:
        return TrainConfig(**data).validate()
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _type_ok(value: Any, annotation: str) -> bool:
    """Whether a TOML/flag value fits a field's annotation (int, float, str, list, or None)."""
    kinds = [part.strip() for part in annotation.split("|")]
    if value is None:
        return "None" in kinds
    for kind in kinds:
        if kind == "bool" and isinstance(value, bool):
            return True
        if isinstance(value, bool):
            continue
        if (kind == "int" and isinstance(value, int)) or (kind == "str" and isinstance(value, str)):
            return True
        if kind == "float" and isinstance(value, (int, float)):
            return True
        if kind.startswith("list") and isinstance(value, list):
            return True
    return False


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a TOML config (or defaults) and apply overrides (flags), validated."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: no such file")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: not valid TOML ({exc})") from None
        if "train" in data and isinstance(data["train"], dict):
            data = data["train"]
    data = {**data, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    return config_from_dict(data, str(path) if path else "config")
