"""Time one local iteration (forward + backward + masked step) for K devices, per encoder.

    python -m dmmlkd.benchmarks.encoder_speed            # K = 8, 100, 1000; MLP / 1-D CNN on (3, 100)

Every device trains its own copy (stacked parameters, vmap over devices); batch 32 each.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dmmlkd.learner.local import LocalData, Optimizer, local_training
from dmmlkd.learner.models import Network


def time_iteration(K: int, encoder: str, shape: tuple[int, ...], repeats: int = 3) -> float:
    """Median seconds of one local iteration of K devices (tau = 1 on one view)."""
    rng = np.random.default_rng(0)
    n = 40 * K
    x = rng.normal(size=(n, *shape)).astype(np.float32)
    labels = rng.integers(0, 4, n)
    parts = np.array_split(np.arange(n), K)
    data = LocalData.create([x], labels, parts)
    net = Network.create(K, [shape], 4, encoders=[encoder])
    holds, tau = np.ones((K, 1), bool), np.ones((K, 1), np.int64)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        local_training(net, data, tau, holds, np.ones(K, bool), Optimizer(), rng,
                       torch.Generator().manual_seed(r))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    """Print a table: devices x encoder -> seconds per iteration."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", default="8,100,1000")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print("devices | mlp (3x100 flattened) s/iter | cnn1d (3x100) s/iter")
    for K in (int(k) for k in args.devices.split(",")):
        mlp = time_iteration(K, "mlp", (3, 100))
        cnn = time_iteration(K, "cnn1d", (3, 100))
        print(f"{K} | {mlp:.4f} | {cnn:.4f}")


if __name__ == "__main__":
    main()
