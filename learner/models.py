"""All devices' DMML-KD models as batched tensors (device axis first).

Per modality m a block: encoder MLP (d_m -> hidden -> embed) with a common head c_m and a
specific head s_m (width `feature`). Shared blocks: the fusion classifier on
[mean of held c_m, s_1 .. s_M (zeros where missing)] and a common-feature classifier on c
used for knowledge distillation. Keeping the device axis first makes local training one
batched computation for all devices and gossip a matrix product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def _init(shape: tuple[int, ...], fan_in: int, gen: torch.Generator) -> Tensor:
    bound = 1.0 / math.sqrt(fan_in)
    return ((torch.rand(shape, generator=gen) * 2 - 1) * bound).requires_grad_(True)


@dataclass
class Network:
    """Parameters of every device: ``blocks[m]`` per modality, ``shared``; all (K, ...)."""

    blocks: list[dict[str, Tensor]]
    shared: dict[str, Tensor]
    n_classes: int
    feature: int

    @classmethod
    def create(cls, n_devices: int, dims: list[int], n_classes: int, hidden: int = 128,
               embed: int = 64, feature: int = 32, seed: int = 0) -> Network:
        """Fresh parameters, identical on every device (a common initialisation, as usual in
        decentralized learning)."""
        gen = torch.Generator().manual_seed(seed)
        K = n_devices

        def rep(t: Tensor) -> Tensor:
            return t.detach().unsqueeze(0).repeat(K, *([1] * t.dim())).requires_grad_(True)

        blocks = []
        for d in dims:
            blocks.append({
                "w1": rep(_init((d, hidden), d, gen)), "b1": rep(torch.zeros(hidden)),
                "w2": rep(_init((hidden, embed), hidden, gen)), "b2": rep(torch.zeros(embed)),
                "wc": rep(_init((embed, feature), embed, gen)), "bc": rep(torch.zeros(feature)),
                "ws": rep(_init((embed, feature), embed, gen)), "bs": rep(torch.zeros(feature)),
            })
        fused = feature * (1 + len(dims))
        shared = {
            "wf": rep(_init((fused, n_classes), fused, gen)), "bf": rep(torch.zeros(n_classes)),
            "wk": rep(_init((feature, n_classes), feature, gen)), "bk": rep(torch.zeros(n_classes)),
        }
        return cls(blocks, shared, n_classes, feature)

    def parameters(self) -> list[Tensor]:
        """Every parameter tensor."""
        return [t for b in self.blocks for t in b.values()] + list(self.shared.values())

    def block_sizes(self) -> list[int]:
        """Parameters per device in each modality block."""
        return [sum(t[0].numel() for t in b.values()) for b in self.blocks]

    def shared_size(self) -> int:
        """Parameters per device in the shared blocks."""
        return sum(t[0].numel() for t in self.shared.values())


def encode(block: dict[str, Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """Common and specific features of one modality; x is (K, B, d) or (N, d) for all devices."""
    if x.dim() == 2:
        h = torch.relu(torch.einsum("nd,kdh->knh", x, block["w1"]) + block["b1"][:, None])
    else:
        h = torch.relu(torch.bmm(x, block["w1"]) + block["b1"][:, None])
    e = torch.relu(torch.bmm(h, block["w2"]) + block["b2"][:, None])
    c = torch.bmm(e, block["wc"]) + block["bc"][:, None]
    s = torch.bmm(e, block["ws"]) + block["bs"][:, None]
    return c, s


def fuse(net: Network, commons: list[Tensor | None], specifics: list[Tensor | None],
         mask: Tensor) -> tuple[Tensor, Tensor]:
    """Fused logits and mean common feature; ``mask`` (K, M) says which modalities are present."""
    ref = next(c for c in commons if c is not None)
    zeros = torch.zeros_like(ref)
    weights = mask.to(ref.dtype)
    count = weights.sum(dim=1).clamp(min=1.0)[:, None, None]
    c_mean = sum(
        (c if c is not None else zeros) * weights[:, m, None, None] for m, c in enumerate(commons)
    ) / count
    parts = [c_mean] + [
        (s if s is not None else zeros) * weights[:, m, None, None] for m, s in enumerate(specifics)
    ]
    logits = torch.bmm(torch.cat(parts, dim=-1), net.shared["wf"]) + net.shared["bf"][:, None]
    return logits, c_mean


def common_logits(net: Network, c: Tensor) -> Tensor:
    """The common-feature classifier applied to features c (K, B, feature)."""
    return torch.bmm(c, net.shared["wk"]) + net.shared["bk"][:, None]


def predict(net: Network, views: list[Tensor | None], mask: Tensor) -> Tensor:
    """Logits (K, N, C) of every device's model on shared inputs ``views`` (N, d_m) each."""
    with torch.no_grad():
        commons, specifics = [], []
        for m, x in enumerate(views):
            if x is None or not bool(mask[:, m].any()):
                commons.append(None)
                specifics.append(None)
                continue
            c, s = encode(net.blocks[m], x)
            commons.append(c)
            specifics.append(s)
        logits, _ = fuse(net, commons, specifics, mask)
        return logits
