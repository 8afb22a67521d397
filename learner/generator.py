"""Conditional generator G(y, eps) of common features, one copy per device (batched).

FedGen's idea moved from the output space to the common-feature space and without a server:
each device trains its copy so that its own and its neighbours' common-feature classifiers
recognise the label it was conditioned on, then the copies are gossip-averaged like the model.
Local training aligns the devices' common features with the generator's samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Generator:
    """Parameters (K, ...) of every device's generator copy."""

    params: dict[str, Tensor]
    n_classes: int
    noise_dim: int
    adam: dict[str, Tensor] = field(default_factory=dict)  # per-device Adam moments, kept across rounds
    adam_steps: Tensor | None = None  # (K,) Adam step count of each device's copy
    # (first device, all devices) when these rows are one block of a distributed run: random
    # numbers are drawn for all devices and the block keeps its rows (same stream as one process)
    layout: tuple[int, int] | None = None

    @classmethod
    def create(cls, n_devices: int, n_classes: int, feature: int, noise_dim: int = 16,
               hidden: int = 64, seed: int = 0) -> Generator:
        """Fresh generator copies, identical on every device."""
        gen = torch.Generator().manual_seed(seed + 7919)
        fan = n_classes + noise_dim

        def rep(shape: tuple[int, ...], fan_in: int | None) -> Tensor:
            t = torch.zeros(shape) if fan_in is None else (
                (torch.rand(shape, generator=gen) * 2 - 1) / math.sqrt(fan_in))
            return t.unsqueeze(0).repeat(n_devices, *([1] * len(shape))).requires_grad_(True)

        params = {"w1": rep((fan, hidden), fan), "b1": rep((hidden,), None),
                  "w2": rep((hidden, feature), hidden), "b2": rep((feature,), None)}
        return cls(params, n_classes, noise_dim)

    def noise(self, batch: int, gen: torch.Generator) -> Tensor:
        """The noise eps (K, B, noise_dim) of one `sample` call (drawn for every device)."""
        K = self.params["w1"].shape[0]
        first, total = draw_rows(self.layout, K)
        return torch.randn((total, batch, self.noise_dim), generator=gen)[first:first + K]

    def sample(self, labels: Tensor, gen: torch.Generator, eps: Tensor | None = None) -> Tensor:
        """Common features G_k(y, eps) for labels (K, B) on every device (eps: drawn here
        unless given, as `noise` draws it)."""
        onehot = F.one_hot(labels, self.n_classes).to(torch.float32)
        if eps is None:
            eps = self.noise(labels.shape[1], gen)
        h = torch.relu(torch.bmm(torch.cat([onehot, eps], -1), self.params["w1"])
                       + self.params["b1"][:, None])
        return torch.bmm(h, self.params["w2"]) + self.params["b2"][:, None]


def draw_rows(layout: tuple[int, int] | None, rows: int) -> tuple[int, int]:
    """(first row, rows to draw): a block of a distributed run draws every device's numbers
    and keeps its own, so random streams do not depend on how devices are split over ranks.
    ``layout`` is (first device, all devices), None for a run in one process."""
    return (0, rows) if layout is None else layout


def train_generator(generator: Generator, classifier_w: Tensor, classifier_b: Tensor,
                    neighbor_table: np.ndarray, active: np.ndarray, steps: int, batch: int,
                    lr: float, gen: torch.Generator, own: np.ndarray | None = None) -> float:
    """Train every active device's generator against its own and its neighbours' classifiers.

    ``classifier_w`` (N, feature, C) and ``classifier_b`` (N, C) are common-feature classifiers
    (held fixed); ``neighbor_table`` (K, D) lists each generator's neighbours as rows of them
    (-1 pads) and ``own`` (K,) each generator's own row (default: row k; a distributed block
    passes its halo here). ``active`` (N,) is per classifier row. Cost O(K D B), no K x K.
    Returns the last mean loss of this block's active devices.
    """
    K = generator.params["w1"].shape[0]
    own_rows = np.arange(K) if own is None else np.asarray(own, np.int64)
    table = np.asarray(neighbor_table, np.int64)
    listen_idx = np.concatenate([own_rows[:, None], np.where(table >= 0, table, own_rows[:, None])], 1)
    mine = active[own_rows]
    listen = np.concatenate([np.ones((K, 1), bool), table >= 0], 1) & active[listen_idx] & mine[:, None]
    weights = torch.as_tensor(listen / np.maximum(listen.sum(axis=1, keepdims=True), 1),
                              dtype=torch.float32)  # (K, D+1)
    idx = torch.as_tensor(listen_idx)
    w = classifier_w.detach()[idx]  # (K, D+1, f, C)
    b = classifier_b.detach()[idx]  # (K, D+1, C)
    J, C = w.shape[1], w.shape[-1]
    w_cat = w.permute(0, 2, 1, 3).reshape(K, w.shape[2], J * C)  # (K, f, (D+1) C)
    mask = torch.as_tensor(mine, dtype=torch.float32)
    first, total = draw_rows(generator.layout, K)
    loss_value = float("nan")
    for _ in range(steps):
        labels = torch.randint(0, generator.n_classes, (total, batch), generator=gen)[first:first + K]
        feats = generator.sample(labels, gen)  # (K, B, f)
        # logits of each listened classifier j on generator k's samples: (K, D+1, B, C)
        logits = torch.bmm(feats, w_cat).reshape(K, batch, J, C).permute(0, 2, 1, 3) + b[:, :, None, :]
        ce = F.cross_entropy(logits.reshape(-1, C), labels[:, None, :].expand(K, J, batch).reshape(-1),
                             reduction="none").reshape(K, J, batch).mean(-1)
        per_device = (weights * ce).sum(dim=1)
        loss = (per_device * mask).sum()
        for p in generator.params.values():
            p.grad = None
        loss.backward()
        _adam_step(generator, mask, lr)
        loss_value = float((per_device.detach() * mask).sum() / mask.sum().clamp(min=1))
    for p in generator.params.values():
        p.grad = None
    return loss_value


def _adam_step(generator: Generator, mask: Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
               eps: float = 1e-8) -> None:
    """Adam on each device's copy where mask (K,) is 1 (inactive copies and moments stay put).

    Written out (rather than torch.optim.Adam) to keep per-device step counts and to avoid
    torch.optim's import-time cost in short runs.
    """
    K = mask.shape[0]
    if generator.adam_steps is None:
        generator.adam_steps = torch.zeros(K)
    generator.adam_steps += mask
    steps = generator.adam_steps.clamp(min=1.0)
    with torch.no_grad():
        for name, p in generator.params.items():
            shape = (-1, *([1] * (p.dim() - 1)))
            m = mask.view(shape)
            first = generator.adam.setdefault(f"{name}.m", torch.zeros_like(p))
            second = generator.adam.setdefault(f"{name}.v", torch.zeros_like(p))
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            first.copy_(torch.where(m > 0, betas[0] * first + (1 - betas[0]) * grad, first))
            second.copy_(torch.where(m > 0, betas[1] * second + (1 - betas[1]) * grad ** 2, second))
            m_hat = first / (1 - betas[0] ** steps).view(shape)
            v_hat = second / (1 - betas[1] ** steps).view(shape)
            p.sub_(lr * m * m_hat / (v_hat.sqrt() + eps))
