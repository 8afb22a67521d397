"""Conditional generator G(y, eps) of common features, one copy per device (batched).

FedGen's idea moved from the output space to the common-feature space and without a server:
each device trains its copy so that its own and its neighbours' common-feature classifiers
recognise the label it was conditioned on, then the copies are gossip-averaged like the model.
Local training aligns the devices' common features with the generator's samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    params = list(generator.params.values())
    opt = torch.optim.Adam(params, lr=lr)
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
        opt.zero_grad()
        loss.backward()
        for p in params:  # inactive devices keep their copy untouched
            p.grad *= mask.view(-1, *([1] * (p.dim() - 1)))
        opt.step()
        loss_value = float((per_device.detach() * mask).sum() / mask.sum().clamp(min=1))
    return loss_value
