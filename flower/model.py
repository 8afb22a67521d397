"""dmmlkd's multimodal network as one Flower node holds it: one device, parameters as arrays.

The learner keeps every device's parameters stacked (device axis first); a Flower node is one
device, so its network is the same `Network` with K = 1. Parameters travel as one flat
``{name: ndarray}`` mapping (an `ArrayRecord`'s content): ``block.<view>.<key>`` per modality
block, ``shared.<key>`` for the fusion and common classifiers, ``generator.<key>`` for the KD
generator (methods with knowledge distillation). The names are the aggregation keys: FedAvg
averages each array over the nodes that replied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from numpy.typing import NDArray

from dmmlkd.learner.generator import Generator
from dmmlkd.learner.models import Network, predict


def one_device(net: Network, k: int = 0) -> Network:
    """Device k's network as a K = 1 network (fresh leaf tensors, same encoder specs)."""

    def row(t: torch.Tensor) -> torch.Tensor:
        return t.detach()[k:k + 1].clone().requires_grad_(True)

    return Network([{key: row(t) for key, t in b.items()} for b in net.blocks],
                   {key: row(t) for key, t in net.shared.items()}, net.n_classes, net.feature,
                   net.encoders)


def one_generator(generator: Generator, k: int = 0) -> Generator:
    """Device k's generator copy as a one-device generator (no Adam moments: a node is stateless)."""
    params = {key: t.detach()[k:k + 1].clone().requires_grad_(True)
              for key, t in generator.params.items()}
    return Generator(params, generator.n_classes, generator.noise_dim)


def to_arrays(net: Network, views: Sequence[str], generator: Generator | None = None,
              ) -> dict[str, NDArray[np.float32]]:
    """A one-device network (and generator) as named arrays, device axis dropped."""
    out: dict[str, NDArray[np.float32]] = {}
    for view, block in zip(views, net.blocks):
        for key, t in block.items():
            out[f"block.{view}.{key}"] = t.detach()[0].numpy().copy()
    for key, t in net.shared.items():
        out[f"shared.{key}"] = t.detach()[0].numpy().copy()
    if generator is not None:
        for key, t in generator.params.items():
            out[f"generator.{key}"] = t.detach()[0].numpy().copy()
    return out


def load_arrays(net: Network, views: Sequence[str], arrays: Mapping[str, NDArray[np.floating]],
                generator: Generator | None = None) -> None:
    """Overwrite a one-device network (and generator) with named arrays, in place.

    Every parameter must be present with its shape (a model from another run is refused).
    """
    targets: dict[str, torch.Tensor] = {}
    for view, block in zip(views, net.blocks):
        targets.update({f"block.{view}.{key}": t for key, t in block.items()})
    targets.update({f"shared.{key}": t for key, t in net.shared.items()})
    if generator is not None:
        targets.update({f"generator.{key}": t for key, t in generator.params.items()})
    missing = sorted(set(targets) - set(arrays))
    if missing:
        raise ValueError(f"arrays lack {len(missing)} parameters of this model (e.g. {missing[0]!r})")
    with torch.no_grad():
        for name, t in targets.items():
            value = torch.as_tensor(np.asarray(arrays[name], np.float32))
            if tuple(value.shape) != tuple(t.shape[1:]):
                raise ValueError(f"array {name!r} has shape {tuple(value.shape)}, the model "
                                 f"expects {tuple(t.shape[1:])}")
            t[0].copy_(value)


def accuracy(net: Network, views: Sequence[torch.Tensor], labels: NDArray[np.int64],
             use: NDArray[np.bool_] | None = None) -> float:
    """Test accuracy of a one-device network's fused prediction from the views in ``use``."""
    M = len(views)
    mask = torch.as_tensor(np.ones(M, bool) if use is None else np.asarray(use, bool))[None, :]
    logits = predict(net, [v if bool(mask[0, m]) else None for m, v in enumerate(views)], mask)
    return float((logits[0].argmax(-1).numpy() == np.asarray(labels)).mean())
