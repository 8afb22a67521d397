"""How the processes of a run talk: the round loop's communication backend, chosen at start.

`learner.loop.run` is the one round loop. A process trains a contiguous block of devices
(rows ``lo..hi-1`` of all ``n``) and reaches the others only through a `Comm`:

- ``exchange(t)``: its own rows of a stacked (block, ...) tensor followed by the rows of the
  graph neighbours other processes own (``index`` maps a device to its row there, ``ids`` lists
  the devices of those rows);
- ``gather(rows)``: every process's rows of an array, concatenated in device order;
- ``sum(t)``: a tensor summed over the processes (all-reduce);
- ``broadcast(obj)``: the root process's object on every process (the policy's decision).

`InProcess` owns every device and each operation is the identity; the torch.distributed
backend (gloo) is `dmmlkd.learner.distributed.GlooComm`. Everything else (training, gossip,
evaluation, the balance signal, the logs) is written once, in terms of these four operations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

T = TypeVar("T")


class Comm(Protocol):
    """A process's view of the run: its block of devices and the four collective operations."""

    lo: int  # first device of this process's block
    hi: int  # one past its last device
    n: int  # devices of the whole run
    root: bool  # the process that asks the policy, shows progress and writes the outputs
    index: NDArray[np.int64] | None  # (n,) device -> row of ``exchange``'s result (None: identity)
    ids: NDArray[np.int64]  # devices of the rows of ``exchange``'s result

    def exchange(self, t: Tensor) -> Tensor:
        """Own rows of ``t`` (block, ...) followed by the neighbours' rows from other processes."""
        ...

    def gather(self, block: NDArray[Any]) -> NDArray[Any]:
        """Every process's ``block`` of rows, concatenated in device order."""
        ...

    def sum(self, t: Tensor) -> Tensor:
        """``t`` summed over the processes."""
        ...

    def broadcast(self, obj: T) -> T:
        """The root's ``obj`` on every process."""
        ...


class InProcess:
    """One process owns every device: each collective operation is the identity."""

    def __init__(self, n_devices: int) -> None:
        self.lo, self.hi, self.n = 0, n_devices, n_devices
        self.root = True
        self.index: NDArray[np.int64] | None = None
        self.ids: NDArray[np.int64] = np.arange(n_devices, dtype=np.int64)

    def exchange(self, t: Tensor) -> Tensor:
        """``t`` itself (every neighbour's row is already here)."""
        return t.detach()

    def gather(self, block: NDArray[Any]) -> NDArray[Any]:
        """``block`` itself (it holds every device's row)."""
        return block

    def sum(self, t: Tensor) -> Tensor:
        """``t`` itself."""
        return t

    def broadcast(self, obj: T) -> T:
        """``obj`` itself."""
        return obj


# How a run picks its backend at start: the run's padded neighbour table -> this process's Comm.
Backend = Callable[[NDArray[np.int64]], Comm]


def in_process(neighbor_table: NDArray[np.int64]) -> Comm:
    """The backend of a run in one process."""
    return InProcess(int(neighbor_table.shape[0]))


def whole(comm: Comm) -> bool:
    """Whether this process owns every device."""
    return comm.lo == 0 and comm.hi == comm.n


def row_sum(comm: Comm, t: Tensor, rows: NDArray[np.bool_]) -> tuple[Tensor, int]:
    """Sum (float64) over the devices ``rows`` ((n,) mask) of a stacked tensor, and their count."""
    part = t.detach()[torch.as_tensor(rows[comm.lo:comm.hi])].to(torch.float64).sum(0, keepdim=True)
    return comm.sum(part), int(rows.sum())


def local_table(comm: Comm, table: NDArray[np.int64]) -> NDArray[np.int64]:
    """The block's rows of the padded neighbour table, neighbours as rows of ``exchange``'s
    result (-1 pads)."""
    own = table[comm.lo:comm.hi]
    if comm.index is None:
        return own
    return np.where(own >= 0, comm.index[np.maximum(own, 0)], -1)
