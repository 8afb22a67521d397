"""Learning methods by name: which losses, which balance mechanism, which policy.

A new method is one entry here, or one `register_method` call from outside the learner.
Methods with ``policy="external"`` need an allocation policy passed to the loop (the learner
never imports the allocator; `studies` supplies it).
"""

from __future__ import annotations

from dataclasses import dataclass

from dmmlkd.learner.errors import ConfigError

POLICIES = ("uniform", "random", "uniform-dvfs", "uniform-pacing", "external")


@dataclass(frozen=True)
class MethodSpec:
    """Switches of a learning method."""

    name: str
    decomposition: bool  # difference + similarity + common-classifier losses
    kd: bool  # conditional generator knowledge distillation
    modulation: str | None = None  # "ogm-ge": on-the-fly gradient modulation
    policy: str = "uniform"  # one of POLICIES: "random" is RandomSchedule, "external" a passed one
    dropout: bool = False  # modality dropout at config.dropout_rate (unless modality_dropout set)
    description: str = ""


_METHODS: dict[str, MethodSpec] = {
    "dpsgd": MethodSpec("dpsgd", decomposition=False, kd=False,
                        description="decentralized multi-modal SGD: fused cross-entropy only"),
    "dmml-kd": MethodSpec("dmml-kd", decomposition=True, kd=True,
                          description="common/specific decomposition + generator KD, uniform tau"),
    "dmml-kd-nogen": MethodSpec("dmml-kd-nogen", decomposition=True, kd=False,
                                description="ablation: decomposition without the generator"),
    "dmml-kd-nodecomp": MethodSpec("dmml-kd-nodecomp", decomposition=False, kd=True,
                                   description="ablation: generator KD without decomposition"),
    "ogm-ge": MethodSpec("ogm-ge", decomposition=True, kd=True, modulation="ogm-ge",
                         description="dmml-kd with OGM-GE gradient modulation, uniform tau"),
    "dmml-kd-balance": MethodSpec("dmml-kd-balance", decomposition=True, kd=True,
                                  policy="external",
                                  description="dmml-kd with the allocator setting tau every round"),
    # Controls for the allocator's claim (docs/results.md): no measurement, same energy.
    "random-schedule": MethodSpec("random-schedule", decomposition=True, kd=True, policy="random",
                                  description="control: dmml-kd, tau = local_iters ± d over each "
                                              "device's views at random, uniform's energy"),
    "modality-dropout": MethodSpec("modality-dropout", decomposition=True, kd=True, dropout=True,
                                   description="control: dmml-kd + modality dropout, uniform tau"),
    "dmml-kd-balance-dropout": MethodSpec("dmml-kd-balance-dropout", decomposition=True, kd=True,
                                          policy="external", dropout=True,
                                          description="the allocator on top of modality dropout"),
    "uniform-dvfs": MethodSpec("uniform-dvfs", decomposition=True, kd=True, policy="uniform-dvfs",
                               description="dmml-kd, each device at its lowest CPU level meeting "
                               "the round deadline"),
    "uniform-pacing": MethodSpec("uniform-pacing", decomposition=True, kd=True,
                                 policy="uniform-pacing", description="control: dmml-kd, each "
                                 "device's battery spread evenly over the remaining rounds, "
                                 "uniform tau, lowest CPU level meeting the deadline"),
    "dmml-kd-fleet": MethodSpec("dmml-kd-fleet", decomposition=True, kd=True, policy="external",
                                description="the allocator for fleets: each battery planned over "
                                "the remaining rounds (tau per round priced against the "
                                "broadcast, sitting rounds out), CPU levels and the deadline"),
    "dmml-kd-balance-dvfs": MethodSpec("dmml-kd-balance-dvfs", decomposition=True, kd=True,
                                       policy="external", description="the allocator setting tau "
                                       "and CPU level under the deadline, on uniform-dvfs's energy"),
}


def get_method(name: str) -> MethodSpec:
    """Look a method up by name (ConfigError listing the known ones)."""
    if name not in _METHODS:
        raise ConfigError(f"method must be one of {', '.join(sorted(_METHODS))} (got {name!r})")
    return _METHODS[name]


def register_method(spec: MethodSpec, replace: bool = False) -> MethodSpec:
    """Add a method to the registry (e.g. from studies/, with ``policy="external"`` and the
    policy passed to ``run``/``run_train``); re-registering a name needs ``replace=True``."""
    if not spec.name:
        raise ConfigError("method name must not be empty")
    if spec.name in _METHODS and not replace and _METHODS[spec.name] != spec:
        raise ConfigError(f"method {spec.name!r} is already registered")
    if spec.modulation not in (None, "ogm-ge"):
        raise ConfigError(f"method {spec.name!r}: modulation must be None or 'ogm-ge' "
                          f"(got {spec.modulation!r})")
    if spec.policy not in POLICIES:
        raise ConfigError(f"method {spec.name!r}: policy must be one of {', '.join(POLICIES)} "
                          f"(got {spec.policy!r})")
    _METHODS[spec.name] = spec
    return spec


def method_names() -> list[str]:
    """Registered method names."""
    return sorted(_METHODS)
