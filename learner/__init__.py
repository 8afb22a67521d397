"""The DMML-KD learner: data, partitions, topologies, models, local training, gossip, the loop.

Depends on `metrics` and `userio` only; allocation policies are passed in by `bridge`.
"""

from dmmlkd.learner.errors import ConfigError

__all__ = ["ConfigError"]
