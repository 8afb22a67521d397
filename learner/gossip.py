"""Gossip averaging with Metropolis–Hastings weights, modality-wise among holders."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray


def metropolis_weights(adjacency: NDArray[np.bool_],
                       mask: NDArray[np.bool_] | None = None) -> NDArray[np.float64]:
    """Doubly stochastic mixing matrix W_ij = 1 / (1 + max(d_i, d_j)) on the graph.

    With ``mask`` (the devices holding a modality, or the active ones) the weights are those of
    the subgraph induced by the masked devices: degrees count masked neighbours only, so the
    weights renormalise among holders; unmasked devices keep identity rows and columns (they
    neither send nor receive). A disconnected holder subgraph averages within its components.
    """
    adj = np.asarray(adjacency, bool).copy()
    n = adj.shape[0]
    if mask is not None:
        mask = np.asarray(mask, bool)
        adj &= mask[:, None] & mask[None, :]
    deg = adj.sum(axis=1)
    w = np.where(adj, 1.0 / (1.0 + np.maximum(deg[:, None], deg[None, :])), 0.0)
    w[np.arange(n), np.arange(n)] = 1.0 - w.sum(axis=1)
    return w


def gossip_average(stacked: torch.Tensor, weights: NDArray[np.float64] | torch.Tensor) -> torch.Tensor:
    """One gossip step over the device axis: X_k <- sum_j W_kj X_j (any trailing shape)."""
    w = torch.as_tensor(weights, dtype=stacked.dtype, device=stacked.device)
    flat = stacked.reshape(stacked.shape[0], -1)
    return (w @ flat).reshape(stacked.shape)


def modality_gossip(stacked: torch.Tensor, adjacency: NDArray[np.bool_],
                    holders: NDArray[np.bool_]) -> torch.Tensor:
    """Gossip a modality's parameters among its holders only."""
    return gossip_average(stacked, metropolis_weights(adjacency, holders))
