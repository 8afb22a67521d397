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

    def sample(self, labels: Tensor, gen: torch.Generator) -> Tensor:
        """Common features G_k(y, eps) for labels (K, B) on every device."""
        K, B = labels.shape
        onehot = F.one_hot(labels, self.n_classes).to(torch.float32)
        eps = torch.randn((K, B, self.noise_dim), generator=gen)
        h = torch.relu(torch.bmm(torch.cat([onehot, eps], -1), self.params["w1"])
                       + self.params["b1"][:, None])
        return torch.bmm(h, self.params["w2"]) + self.params["b2"][:, None]


def train_generator(generator: Generator, classifier_w: Tensor, classifier_b: Tensor,
                    adjacency: np.ndarray, active: np.ndarray, steps: int, batch: int, lr: float,
                    gen: torch.Generator) -> float:
    """Train every active device's generator against its own and its neighbours' classifiers.

    ``classifier_w`` (K, feature, C) and ``classifier_b`` (K, C) are the devices' common-feature
    classifiers (held fixed). Returns the last mean loss.
    """
    K = classifier_w.shape[0]
    listen = torch.as_tensor((adjacency | np.eye(K, dtype=bool)) & active[None, :] & active[:, None],
                             dtype=torch.float32)
    weights = listen / listen.sum(dim=1, keepdim=True).clamp(min=1.0)
    w, b = classifier_w.detach(), classifier_b.detach()
    mask = torch.as_tensor(active, dtype=torch.float32)
    loss_value = float("nan")
    for _ in range(steps):
        labels = torch.randint(0, generator.n_classes, (K, batch), generator=gen)
        feats = generator.sample(labels, gen)  # (K, B, f)
        # logits of classifier j on generator k's samples: (K_gen, K_cls, B, C)
        logits = torch.einsum("kbf,jfc->kjbc", feats, w) + b[None, :, None, :]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                             labels[:, None, :].expand(K, K, batch).reshape(-1),
                             reduction="none").reshape(K, K, batch).mean(-1)
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
            first.copy_(torch.where(m > 0, betas[0] * first + (1 - betas[0]) * p.grad, first))
            second.copy_(torch.where(m > 0, betas[1] * second + (1 - betas[1]) * p.grad ** 2, second))
            m_hat = first / (1 - betas[0] ** steps).view(shape)
            v_hat = second / (1 - betas[1] ** steps).view(shape)
            p.sub_(lr * m * m_hat / (v_hat.sqrt() + eps))
