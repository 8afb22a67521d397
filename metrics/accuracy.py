"""Accuracy and consensus measures."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


def _to_numpy(values: Any) -> NDArray:
    """A NumPy array from an array, a list or a torch tensor (any device, with or without grad)."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch here
        return values.detach().cpu().numpy()
    return np.asarray(values)


def accuracy(logits_or_pred: Any, labels: Any) -> float:
    """Fraction correct, from (N, C) scores or (N,) predicted labels (NumPy or torch); nan if N=0."""
    pred = _to_numpy(logits_or_pred)
    y = _to_numpy(labels).ravel()
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    pred = pred.ravel()
    if pred.shape != y.shape:
        raise ValueError(f"{pred.size} predictions for {y.size} labels")
    return float((pred == y).mean()) if y.size else float("nan")


def consensus_distance(stacked: Any, mask: Any = None) -> float:
    """Mean squared distance of the devices' copies to their average, among masked rows only.

    ``stacked`` is a (K, ...) array or tensor, or a list of K vectors/tensors; each copy is
    flattened. Returns (1/n) sum_k ||x_k - mean||^2 over the n selected devices (nan if n = 0).
    """
    if isinstance(stacked, (list, tuple)):
        rows = [_to_numpy(x).astype(np.float64).ravel() for x in stacked]
        x = np.stack(rows) if rows else np.zeros((0, 0))
    else:
        arr = _to_numpy(stacked).astype(np.float64)
        x = arr.reshape(arr.shape[0], -1)
    if mask is not None:
        x = x[np.asarray(mask, bool)]
    if len(x) == 0:
        return float("nan")
    return float(((x - x.mean(axis=0)) ** 2).sum(axis=1).mean())
