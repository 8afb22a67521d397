"""Accuracy and consensus measures."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def accuracy(logits_or_pred: object, labels: object) -> float:
    """Fraction correct, from (N, C) scores or (N,) predicted labels (NumPy or torch)."""
    pred = np.asarray(getattr(logits_or_pred, "detach", lambda: logits_or_pred)())
    y = np.asarray(getattr(labels, "detach", lambda: labels)())
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    return float((pred == y).mean()) if y.size else float("nan")


def consensus_distance(stacked: NDArray, mask: NDArray | None = None) -> float:
    """Mean squared distance of the devices' copies (K, P) to their average (masked rows only)."""
    x = np.asarray(stacked, float).reshape(len(stacked), -1)
    if mask is not None:
        x = x[np.asarray(mask, bool)]
    if len(x) == 0:
        return float("nan")
    return float(((x - x.mean(axis=0)) ** 2).sum(axis=1).mean())
