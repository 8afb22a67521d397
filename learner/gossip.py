"""Gossip averaging with Metropolis–Hastings weights, modality-wise among holders."""

from __future__ import annotations

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


def gossip_average(stacked: torch.Tensor, weights: NDArray[np.float64] | torch.Tensor) -> torch.Tensor:
    """One gossip step over the device axis: X_k <- sum_j W_kj X_j (any trailing shape)."""
    w = torch.as_tensor(weights, dtype=stacked.dtype, device=stacked.device)
    if w.shape != (stacked.shape[0], stacked.shape[0]):
        raise ValueError(f"weights {tuple(w.shape)} do not match {stacked.shape[0]} devices")
    flat = stacked.reshape(stacked.shape[0], -1)
    return (w @ flat).reshape(stacked.shape)


def modality_gossip(stacked: torch.Tensor, adjacency: NDArray[np.bool_],
                    holds_m: NDArray[np.bool_]) -> torch.Tensor:
    """One gossip step of a modality's stacked parameters (K, ...) among its holders only."""
    return gossip_average(stacked, metropolis_weights(adjacency, holds_m))
