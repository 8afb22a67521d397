"""Evaluation of a run at a cost flat in the number of devices.

The consensus model (one network) is evaluated every round; device models on a seeded sample
of ``eval_devices`` active devices (all when 0 or when fewer are active), every ``eval_every``
rounds and in the last round. Device models are evaluated a few devices at a time, so at most
``chunk`` devices' logits are held at once, never K x test-set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from dmmlkd.learner.comm import Comm, InProcess, row_sum
from dmmlkd.learner.models import Network, predict
from dmmlkd.metrics.accuracy import accuracy

if TYPE_CHECKING:
    from dmmlkd.learner.config import TrainConfig
    from dmmlkd.learner.loop import Setup

# Sums over devices as (block rows) -> (sum, count); a distributed run adds its ranks' sums.
RowSum = Callable[[Tensor, NDArray[np.bool_]], tuple[Tensor, int]]

# Floats of intermediate activations allowed per evaluation chunk (64 MB).
_CHUNK_FLOATS = 2**24


def eval_devices(config: TrainConfig, t: int, active: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Devices whose own models are evaluated in round t (ascending; empty: not this round).

    Every ``eval_every`` rounds and in the last round; a sample of ``eval_devices`` active
    devices drawn from (seed, round) alone, so it does not depend on the process layout.
    """
    last = t == config.rounds - 1
    if not (last or (t + 1) % config.eval_every == 0):
        return np.zeros(0, np.int64)
    candidates = np.flatnonzero(active)
    n = config.eval_devices
    if n == 0 or candidates.size <= n:
        return candidates
    rng = np.random.default_rng([config.seed, 0xE7A1, t])
    return np.sort(rng.choice(candidates, size=n, replace=False))


def _local_sum(t: Tensor, rows: NDArray[np.bool_]) -> tuple[Tensor, int]:
    return t.detach()[torch.as_tensor(rows)].to(torch.float64).sum(0, keepdim=True), int(rows.sum())


def consensus_network(s: Setup, active: NDArray[np.bool_], row_sum: RowSum = _local_sum) -> Network:
    """The modality-wise network average: each block over its (active) holders, shared over all."""
    return consensus_of(s.net, s.holds, active, row_sum)


def consensus_of(net: Network, holds: NDArray[np.bool_], active: NDArray[np.bool_],
                 row_sum: RowSum = _local_sum) -> Network:
    """Each block averaged over its active holders (all holders if none is active), shared
    blocks over the active devices; float64 sums over devices divided by the count.

    ``row_sum(t, rows)`` sums a tensor's rows ``rows`` (a (K,) mask over all devices); a
    distributed run passes one that adds its ranks' blocks.
    """
    def mean(t: Tensor, rows: NDArray[np.bool_]) -> Tensor:
        total, count = row_sum(t, rows)
        return (total / max(count, 1)).to(t.dtype)

    blocks = [{k: mean(t, holds[:, m] & active if (holds[:, m] & active).any() else holds[:, m])
               for k, t in b.items()} for m, b in enumerate(net.blocks)]
    anyone = active if active.any() else np.ones_like(active)
    shared = {k: mean(t, anyone) for k, t in net.shared.items()}
    return Network(blocks, shared, net.n_classes, net.feature, net.encoders)


def _subnet(net: Network, rows: Tensor) -> Network:
    return Network([{k: t.detach()[rows] for k, t in b.items()} for b in net.blocks],
                   {k: t.detach()[rows] for k, t in net.shared.items()}, net.n_classes, net.feature,
                   net.encoders)


def device_accuracy(net: Network, holds: NDArray[np.bool_], views: Sequence[Tensor | None],
                    labels: NDArray[np.int64], rows: NDArray[np.int64]) -> NDArray[np.float64]:
    """Accuracy of the models in ``rows`` of ``net`` (own views only), a chunk at a time."""
    n = max(1, int(labels.size))
    width = max([t.shape[-1] for b in net.blocks for t in b.values()] + [1])
    chunk = max(1, _CHUNK_FLOATS // (n * width))
    out = np.empty(rows.size)
    for i in range(0, rows.size, chunk):
        sel = torch.as_tensor(rows[i:i + chunk])
        logits = predict(_subnet(net, sel), list(views), torch.as_tensor(holds)[sel])
        out[i:i + chunk] = [accuracy(logits[j], labels) for j in range(sel.numel())]
    return out


def consensus_accuracy(consensus: Network, views: Sequence[Tensor | None],
                       labels: NDArray[np.int64]) -> tuple[float, dict[int, float]]:
    """Accuracy of the consensus model with all views, and with each view alone (by index)."""
    M = len(consensus.blocks)
    acc_all = accuracy(predict(consensus, list(views), torch.ones(1, M, dtype=torch.bool))[0], labels)
    alone = {}
    for m in range(M):
        only = torch.zeros(1, M, dtype=torch.bool)
        only[0, m] = True
        alone[m] = accuracy(predict(consensus, list(views), only)[0], labels)
    return acc_all, alone


def evaluate(s: Setup, active: NDArray[np.bool_], views: Sequence[Tensor | None],
             labels: NDArray[np.int64], devices: NDArray[np.int64] | None = None,
             comm: Comm | None = None) -> dict[str, Any]:
    """Accuracies on the given inputs (test or validation views and labels).

    ``device``: (K,) own-model accuracy of the ``devices`` evaluated (default: all active),
    nan elsewhere; ``accuracy``: their mean (nan if none); ``consensus`` and ``modality``: the
    consensus model with all views and with each alone; ``evaluated``: how many devices.
    With ``comm`` (learner/comm.py) ``s.net`` holds this process's block of devices only: it
    evaluates its own devices and the consensus adds every process's sums.
    """
    K = s.holds.shape[0]
    comm = comm or InProcess(K)
    lo, hi = comm.lo, comm.hi
    rows = np.flatnonzero(active) if devices is None else np.asarray(devices, np.int64)
    rows = rows[active[rows]]
    mine = rows[(rows >= lo) & (rows < hi)]
    block = np.full(hi - lo, np.nan)
    block[mine - lo] = device_accuracy(s.net, s.holds[lo:hi], views, labels, mine - lo)
    device = comm.gather(block)
    acc_all, alone = consensus_accuracy(
        consensus_of(s.net, s.holds, active, lambda t, r: row_sum(comm, t, r)), views, labels)
    return {"device": device,
            "accuracy": float(device[rows].mean()) if rows.size else float("nan"),
            "consensus": acc_all, "modality": {v: alone[m] for m, v in enumerate(s.data.views)},
            "evaluated": int(rows.size)}
