"""What a learning run will need in memory, estimated before anything is allocated.

The estimate follows what ``learner.loop`` builds: every device's stacked parameters with their
gradients, momentum and gossip copies (each view's encoder counted as an MLP on the flattened
sample), the mini-batch activations, the data tensors, the evaluation chunks and the per-round
logs (one Python dict per round x device x modality), plus the interpreter with torch loaded,
per process. It is deliberately generous: refusing a run that would just fit is better
than the kernel's OOM killer ending it (and the machine's other work) half-way.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dmmlkd.learner.config import TrainConfig
from dmmlkd.learner.errors import ConfigError
from dmmlkd.userio import available_memory_bytes

PARAM_COPIES = 6  # parameters, gradients, momentum, gossip result, variation snapshot, slack
FLOAT_BYTES = 4  # float32 tensors
ACTIVATION_COPIES = 8  # autograd keeps every layer's input and output for the backward pass
DATA_BYTES_PER_VALUE = 16  # float64 raw data + float32 train/test copies
LOG_ROW_BYTES = 1_000  # a per-round x device x modality row: a dict of ~15 entries, then pandas
PROCESS_BYTES = 400 * 2**20  # Python + numpy + torch + pandas loaded, per process
EVALUATION_BYTES = 2 * 2**24 * FLOAT_BYTES  # learner.evaluate holds 2**24 floats per chunk
# Fields whose size drives the estimate, in the order they are blamed when a run is too big.
SIZE_FIELDS = ("devices", "hidden", "embed", "feature", "batch_size", "rounds", "n_samples",
               "synthetic_dims")



def _data_shape(config: TrainConfig) -> tuple[list[int], int, int]:
    """(view widths, samples, classes) of the run's data, without generating synthetic data."""
    if config.dataset == "synthetic":
        dims = list(config.synthetic_dims)
        if config.views is not None:  # synthetic views are named m0, m1, ...
            dims = [d for i, d in enumerate(dims) if f"m{i}" in config.views] or dims
        return dims, config.n_samples, 10
    from dmmlkd.learner.data import load_dataset  # real data sets are on disk already: read their shape

    data = load_dataset(config.dataset, config.views, seed=config.seed)
    n = int(data.train_labels.size + next(iter(data.test.values())).shape[0])
    return [data.dims[v] for v in data.views], n, data.n_classes  # flattened: an MLP's size


def run_bytes(config: TrainConfig, shape: tuple[list[int], int, int] | None = None) -> int:
    """Bytes one run of ``config`` needs at its peak (process overhead excluded)."""
    dims, n_samples, n_classes = shape if shape is not None else _data_shape(config)
    h, e, f, K, M = config.hidden, config.embed, config.feature, config.devices, len(dims)
    per_block = [d * h + h + h * e + e + 2 * (e * f + f) for d in dims]
    shared = f * (1 + M) * n_classes + n_classes + f * n_classes + n_classes
    generator = (n_classes + 16) * 64 + 64 + 64 * f + f
    params = K * (sum(per_block) + shared + generator)
    model = params * FLOAT_BYTES * PARAM_COPIES
    activations = K * config.batch_size * M * (h + e + 2 * f) * FLOAT_BYTES * ACTIVATION_COPIES
    data = n_samples * sum(dims) * DATA_BYTES_PER_VALUE
    logs = config.rounds * K * M * LOG_ROW_BYTES
    return int(model + activations + data + logs + EVALUATION_BYTES)


def check_memory(config: TrainConfig, runs: int = 1, processes: int = 1) -> int:
    """Refuse (ConfigError naming the field that makes it big) ``runs`` runs of ``config`` on
    ``processes`` worker processes that would not fit in the memory available now.

    Returns the estimate in bytes. The parent keeps every run's logs; each worker holds one run.
    """
    shape = _data_shape(config)
    one = run_bytes(config, shape)
    workers = max(1, min(processes, runs))
    logs = config.rounds * config.devices * len(shape[0]) * LOG_ROW_BYTES
    need = workers * (one + PROCESS_BYTES) + (runs * logs if runs > 1 else 0)
    have = available_memory_bytes()
    if have is None or need <= have:
        return need
    blamed = max(SIZE_FIELDS, key=lambda name: one - _with_default(config, name, shape))
    value = getattr(config, blamed)
    runs_note = f" ({runs} runs on {workers} processes)" if runs > 1 else ""
    raise ConfigError(f"{blamed}={value}: the run needs about {_gib(need)} of memory{runs_note}, "
                      f"the machine has {_gib(have)} available; lower {blamed}")


def _with_default(config: TrainConfig, name: str, shape: tuple[list[int], int, int]) -> int:
    """The estimate with one field back at its default (which field makes the run big)."""
    value: Any = getattr(TrainConfig(), name)
    smaller = dataclasses.replace(config)
    setattr(smaller, name, value)
    dims, n, classes = shape
    if name == "synthetic_dims" and config.dataset == "synthetic":
        dims = list(value)[:len(dims)] + dims[len(value):]
    if name == "n_samples" and config.dataset == "synthetic":
        n = int(value)
    return run_bytes(smaller, (dims, n, classes))


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
