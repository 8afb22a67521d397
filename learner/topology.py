"""Device graphs (always connected) with positions for the wireless channel model."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from learner.errors import ConfigError
from metrics.energy import path_gain

TOPOLOGIES = ("ring", "torus", "erdos-renyi", "geometric", "complete")


@dataclass(frozen=True)
class Topology:
    """An undirected connected graph over devices placed in a square (metres)."""

    name: str
    adjacency: NDArray[np.bool_]
    positions_m: NDArray[np.float64]

    @property
    def n_devices(self) -> int:
        """Number of devices."""
        return int(self.adjacency.shape[0])

    @property
    def distances_m(self) -> NDArray[np.float64]:
        """Pairwise Euclidean distances (K, K)."""
        diff = self.positions_m[:, None, :] - self.positions_m[None, :, :]
        return np.sqrt((diff**2).sum(axis=-1))

    def neighbors(self, k: int) -> NDArray[np.int64]:
        """Indices of device k's neighbours."""
        return np.flatnonzero(self.adjacency[k])


def is_connected(adjacency: NDArray[np.bool_]) -> bool:
    """Breadth-first search from device 0 reaches every device."""
    adj = np.asarray(adjacency, bool)
    n = adj.shape[0]
    if n == 0:
        return False
    seen = np.zeros(n, bool)
    seen[0] = True
    frontier = seen.copy()
    while frontier.any():
        frontier = adj[frontier].any(axis=0) & ~seen
        seen |= frontier
    return bool(seen.all())


def _torus_shape(n: int) -> tuple[int, int]:
    for r in range(int(math.isqrt(n)), 2, -1):
        if n % r == 0 and n // r >= 3:
            return r, n // r
    valid = [m for m in range(9, 65) if any(m % r == 0 and m // r >= 3 for r in range(3, 9))]
    raise ConfigError(f"torus needs devices = r x c with r, c >= 3 (got {n}; e.g. "
                      f"{', '.join(map(str, valid[:8]))}, ...)")


def make_topology(name: str, n_devices: int, seed: int = 0, *, side_m: float = 100.0,
                  radius_m: float | None = None, p: float | None = None,
                  max_tries: int = 200) -> Topology:
    """A connected device graph by name; devices are placed uniformly in a side_m square.

    ``ring``; ``torus`` (r x c grid with wrap-around, the most square factorisation with
    r, c >= 3); ``erdos-renyi`` (edge probability ``p``, default 2 ln n / n); ``geometric``
    (devices linked within ``radius_m``, default side_m * sqrt(2.5 ln(n+1) / (pi n)), which is
    usually connected); ``complete``. Random graphs are drawn again (up to ``max_tries``) until
    connected, else ConfigError. Non-geometric graphs still get positions, for the channel.
    """
    n = int(n_devices)
    if n < 2:
        raise ConfigError(f"devices must be >= 2 for a topology (got {n})")
    if name not in TOPOLOGIES:
        raise ConfigError(f"topology must be one of {', '.join(TOPOLOGIES)} (got {name!r})")
    if not side_m > 0:
        raise ConfigError(f"side_m must be > 0 (got {side_m})")
    if p is not None and not 0.0 < p <= 1.0:
        raise ConfigError(f"p must be in (0, 1] (got {p})")
    if radius_m is not None and not radius_m > 0:
        raise ConfigError(f"radius_m must be > 0 (got {radius_m})")
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0.0, side_m, size=(n, 2))
    adj = np.zeros((n, n), bool)
    idx = np.arange(n)
    if name == "ring":
        adj[idx, (idx + 1) % n] = True
    elif name == "complete":
        adj[:] = True
    elif name == "torus":
        r, c = _torus_shape(n)
        row, col = idx // c, idx % c
        adj[idx, row * c + (col + 1) % c] = True
        adj[idx, ((row + 1) % r) * c + col] = True
    else:
        for _ in range(max_tries):
            if name == "erdos-renyi":
                prob = p if p is not None else min(1.0, 2.0 * math.log(n) / n)
                upper = np.triu(rng.random((n, n)) < prob, 1)
                adj = upper | upper.T
            else:
                pos = rng.uniform(0.0, side_m, size=(n, 2))
                radius = radius_m if radius_m is not None else side_m * math.sqrt(
                    2.5 * math.log(n + 1) / (math.pi * n))
                d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
                adj = d <= radius
            np.fill_diagonal(adj, False)
            if is_connected(adj):
                break
        else:
            raise ConfigError(f"topology {name!r} stayed disconnected after {max_tries} draws; "
                              "raise p or radius_m")
    adj = adj | adj.T
    np.fill_diagonal(adj, False)
    return Topology(name, adj, pos)


def weakest_link_gain(topology: Topology, exponent: float = 3.0,
                      ref_gain: float = 1e-3) -> NDArray[np.float64]:
    """Per device, min over neighbours of path_gain(distance): its broadcast must reach all.

    path_gain falls with distance, so this is the gain to the farthest neighbour.
    """
    dist = np.where(topology.adjacency, topology.distances_m, 0.0)
    return path_gain(dist.max(axis=1), exponent=exponent, ref_gain=ref_gain)
