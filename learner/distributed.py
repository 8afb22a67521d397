"""The torch.distributed (gloo) backend of the round loop: one run as N processes, same numbers.

`learner.loop.run` is the one round loop; this module only says how a process reaches the
devices it does not own (`GlooComm`, the `learner.comm.Comm` protocol). Each rank owns a
contiguous block of devices (`block_bounds`) and trains them batched, as one process trains all
of them. Gossip reads neighbours on other ranks through one ``batch_isend_irecv`` per tensor
(`exchange`, sends and receives paired in one batch, planned once by `make_halo`) with the same
Metropolis weights, each device's sum taken in the same order as in one process. Per-device
measurements are gathered, consensus sums all-reduced, and the policy's decision (asked on
rank 0) broadcast; random numbers are drawn for every device and each rank keeps its rows
(learner/local.py), so nothing depends on the process layout.

Launch: ``dmmlkd train ... --nproc N`` (``dmmlkd.bridge.distributed_entry``, which wires the
allocator policies and the output writers), or across machines with torchrun
(docs/learner.md, "Scale").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from numpy.typing import NDArray
from torch import Tensor

T = TypeVar("T")


def block_bounds(n_devices: int, world: int) -> NDArray[np.int64]:
    """Offsets (world + 1,) of the contiguous device blocks (sizes differ by at most one)."""
    sizes = np.array([len(b) for b in np.array_split(np.arange(n_devices), world)])
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


@dataclass(frozen=True)
class Halo:
    """A rank's exchange plan: its rows each peer reads, and the neighbours it reads."""

    lo: int
    hi: int
    send: dict[int, NDArray[np.int64]]  # peer -> own local rows the peer needs
    recv: dict[int, NDArray[np.int64]]  # peer -> device ids received from it (ascending)
    index: NDArray[np.int64]  # (K,) device -> row of cat(own block, received rows); -1 elsewhere

    @property
    def ids(self) -> NDArray[np.int64]:
        """Device ids of the rows of cat(own block, received rows)."""
        parts = [np.arange(self.lo, self.hi)] + [self.recv[q] for q in sorted(self.recv)]
        return np.concatenate(parts).astype(np.int64)


def make_halo(table: NDArray[np.int64], bounds: NDArray[np.int64], rank: int) -> Halo:
    """The exchange plan of ``rank`` on the graph's padded neighbour table (static per run)."""
    K, world = table.shape[0], bounds.size - 1
    owner = np.searchsorted(bounds, np.arange(K), side="right") - 1
    lo, hi = int(bounds[rank]), int(bounds[rank + 1])

    def outside(block: NDArray[np.int64], a: int, b: int) -> NDArray[np.int64]:
        ids = np.unique(block[block >= 0])
        return ids[(ids < a) | (ids >= b)]

    need = outside(table[lo:hi], lo, hi)
    recv = {int(q): need[owner[need] == q] for q in np.unique(owner[need])}
    send = {}
    for q in range(world):
        if q != rank:
            theirs = np.unique(table[bounds[q]:bounds[q + 1]])
            mine = theirs[(theirs >= lo) & (theirs < hi)]
            if mine.size:
                send[q] = mine - lo
    index = np.full(K, -1, np.int64)
    halo = Halo(lo, hi, send, recv, index)
    index[halo.ids] = np.arange(halo.ids.size)
    return halo


def exchange(t: Tensor, halo: Halo) -> Tensor:
    """cat(own rows, neighbours' rows from other ranks): one batch of paired sends/receives."""
    own = t.detach()
    ops, bufs = [], {}
    for q, rows in sorted(halo.send.items()):
        ops.append(dist.P2POp(dist.isend, own[torch.as_tensor(rows)].contiguous(), q))
    for q, ids in sorted(halo.recv.items()):
        bufs[q] = torch.empty((ids.size, *own.shape[1:]), dtype=own.dtype)
        ops.append(dist.P2POp(dist.irecv, bufs[q], q))
    if ops:
        for req in dist.batch_isend_irecv(ops):
            req.wait()
    return torch.cat([own] + [bufs[q] for q in sorted(bufs)])


class GlooComm:
    """`learner.comm.Comm` over an initialised torch.distributed process group: this rank's
    block of devices, its halo exchange plan on the run's graph, and the collectives."""

    def __init__(self, neighbor_table: NDArray[np.int64]) -> None:
        rank, world = dist.get_rank(), dist.get_world_size()
        self.n = int(neighbor_table.shape[0])
        bounds = block_bounds(self.n, world)
        self.lo, self.hi = int(bounds[rank]), int(bounds[rank + 1])
        self.root = rank == 0
        self.halo = make_halo(neighbor_table, bounds, rank)
        self.index: NDArray[np.int64] | None = self.halo.index
        self.ids = self.halo.ids

    def exchange(self, t: Tensor) -> Tensor:
        """Own rows, then the neighbours' rows from other ranks (`exchange`)."""
        return exchange(t, self.halo)

    def gather(self, block: NDArray[Any]) -> NDArray[Any]:
        """Every rank's block of rows, concatenated in rank order (= device order)."""
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, block)
        return np.concatenate(parts)

    def sum(self, t: Tensor) -> Tensor:
        """All-reduce sum over the ranks."""
        out = t.clone()
        dist.all_reduce(out)
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's object on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
