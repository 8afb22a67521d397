"""Gossip averaging with Metropolis–Hastings weights, modality-wise among holders.

Two forms of the same weights: ``metropolis_weights`` (a dense K x K matrix, the reference for
small graphs and tests) and ``mixing`` (per-device rows over the padded neighbour table, O(K D)),
which the learner uses so that a gossip step costs O(E x parameters) and never builds K x K.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray


def metropolis_weights(adjacency: NDArray[np.bool_],
                       mask: NDArray[np.bool_] | None = None) -> NDArray[np.float64]:
    """Doubly stochastic mixing matrix W_ij = 1 / (1 + max(d_i, d_j)) on the graph.

    W_ii = 1 - sum_j W_ij, so W is symmetric and doubly stochastic and a gossip step keeps the
    average. With ``mask`` (the devices holding a modality, or the active ones) the weights are
    those of the subgraph induced by the masked devices: degrees count masked neighbours only,
    so the weights are renormalised among holders (a holder's weight on non-holders is 0, its
    own weight takes up the rest); unmasked devices keep identity rows and columns (they neither
    send nor receive). The holders' average is kept exactly. The holder subgraph can be
    disconnected even when the full graph is connected: then each of its components keeps (and
    repeated gossip converges to) its own average, and the components do not reach consensus.
    Self loops in ``adjacency`` are ignored.
    """
    adj = np.asarray(adjacency, bool).copy()
    n = adj.shape[0]
    if adj.shape != (n, n):
        raise ValueError(f"adjacency must be square (got shape {adj.shape})")
    np.fill_diagonal(adj, False)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != (n,):
            raise ValueError(f"mask must have shape ({n},) (got {mask.shape})")
        adj &= mask[:, None] & mask[None, :]
    deg = adj.sum(axis=1)
    w = np.where(adj, 1.0 / (1.0 + np.maximum(deg[:, None], deg[None, :])), 0.0)
    w[np.arange(n), np.arange(n)] = 1.0 - w.sum(axis=1)
    return w


@dataclass(frozen=True)
class Mixing:
    """Metropolis weights in neighbour-table form: row k of W is ``self_w[k]`` on k and
    ``weight[k, j]`` on ``neighbors[k, j]`` (padding: index k, weight 0)."""

    neighbors: NDArray[np.int64]  # (K, D)
    weight: NDArray[np.float64]  # (K, D)
    self_w: NDArray[np.float64]  # (K,)

    def dense(self) -> NDArray[np.float64]:
        """The K x K matrix (tests and small graphs)."""
        K = self.self_w.size
        w = np.zeros((K, K))
        rows = np.repeat(np.arange(K), self.neighbors.shape[1])
        np.add.at(w, (rows, self.neighbors.ravel()), self.weight.ravel())
        w[np.arange(K), np.arange(K)] += self.self_w
        return w


def mixing(neighbor_table: NDArray[np.int64], mask: NDArray[np.bool_] | None = None) -> Mixing:
    """``metropolis_weights`` of the (masked) graph from its padded neighbour table (-1 pads).

    Same rule, O(K D): degrees count masked neighbours; unmasked devices get identity rows.
    """
    table = np.asarray(neighbor_table, np.int64)
    K = table.shape[0]
    m = np.ones(K, bool) if mask is None else np.asarray(mask, bool)
    if m.shape != (K,):
        raise ValueError(f"mask must have shape ({K},) (got {m.shape})")
    valid = table >= 0
    safe = np.where(valid, table, np.arange(K)[:, None])
    link = valid & m[:, None] & m[safe]
    deg = link.sum(axis=1)
    weight = np.where(link, 1.0 / (1.0 + np.maximum(deg[:, None], deg[safe])), 0.0)
    return Mixing(safe, weight, 1.0 - weight.sum(axis=1))


def gossip_rows(stacked: torch.Tensor, mix: Mixing, rows: NDArray[np.int64] | slice,
                source: torch.Tensor | None = None, index: NDArray[np.int64] | None = None) -> torch.Tensor:
    """Gossip result for devices ``rows``: self_w x_k + sum_j w_kj x_{n_kj}, column by column.

    ``stacked`` holds the devices' own rows (``stacked[i]`` is device ``rows[i]``); neighbours
    are read from ``source[index[n]]`` (default: ``stacked`` indexed by device). The fixed
    column order makes the result of a device independent of which other rows are computed,
    so a distributed run that computes its own block gives the same bits.
    """
    nbr, wts, self_w = mix.neighbors[rows], mix.weight[rows], mix.self_w[rows]
    src = stacked if source is None else source
    flat_src = src.reshape(src.shape[0], -1)
    own = stacked.reshape(stacked.shape[0], -1)
    out = own * torch.as_tensor(self_w, dtype=own.dtype)[:, None]
    for j in range(nbr.shape[1]):
        w = wts[:, j]
        at = nbr[:, j] if index is None else index[nbr[:, j]]
        out = out + flat_src[torch.as_tensor(at)] * torch.as_tensor(w, dtype=own.dtype)[:, None]
    return out.reshape(stacked.shape)


def gossip_average(stacked: torch.Tensor,
                   weights: Mixing | NDArray[np.float64] | torch.Tensor) -> torch.Tensor:
    """One gossip step over the device axis: X_k <- sum_j W_kj X_j (any trailing shape).

    ``weights`` is a ``Mixing`` (sparse, O(E)) or a dense K x K matrix.
    """
    K = stacked.shape[0]
    if isinstance(weights, Mixing):
        if weights.self_w.size != K:
            raise ValueError(f"weights for {weights.self_w.size} devices do not match {K} devices")
        return gossip_rows(stacked, weights, slice(None))
    w = torch.as_tensor(weights, dtype=stacked.dtype, device=stacked.device)
    if w.shape != (K, K):
        raise ValueError(f"weights {tuple(w.shape)} do not match {K} devices")
    flat = stacked.reshape(K, -1)
    return (w @ flat).reshape(stacked.shape)


def modality_gossip(stacked: torch.Tensor, adjacency: NDArray[np.bool_],
                    holds_m: NDArray[np.bool_]) -> torch.Tensor:
    """One gossip step of a modality's stacked parameters (K, ...) among its holders only."""
    return gossip_average(stacked, metropolis_weights(adjacency, holds_m))
