"""Device graphs (always connected) with positions for the wireless channel model.

A graph is kept as its edge list (no K x K matrix), so 10,000 devices cost O(K + E) memory;
``Topology.adjacency`` builds the dense matrix on demand for small graphs and tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from dmmlkd.learner.errors import ConfigError
from dmmlkd.metrics.energy import path_gain

TOPOLOGIES = ("ring", "torus", "erdos-renyi", "geometric", "complete")


def _clean_edges(n: int, edges: NDArray[np.int64]) -> NDArray[np.int64]:
    """Undirected edges as sorted unique (i, j) rows with i < j (self loops dropped)."""
    e = np.asarray(edges, np.int64).reshape(-1, 2)
    if e.size and (e.min() < 0 or e.max() >= n):
        raise ValueError(f"edge endpoints must be in [0, {n}) (got {e.min()}..{e.max()})")
    e = np.sort(e, axis=1)
    e = e[e[:, 0] != e[:, 1]]
    return np.unique(e, axis=0) if e.size else np.zeros((0, 2), np.int64)


@dataclass(frozen=True)
class Topology:
    """An undirected connected graph over devices placed in a square (metres), as edges."""

    name: str
    edges: NDArray[np.int64]  # (E, 2), i < j, sorted, unique
    positions_m: NDArray[np.float64]
    # Padded neighbour table (K, D): row k lists k's neighbours ascending, then -1s.
    neighbor_table: NDArray[np.int64] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = int(self.positions_m.shape[0])
        edges = _clean_edges(n, self.edges)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "neighbor_table", _neighbor_table(n, edges))

    @classmethod
    def from_adjacency(cls, name: str, adjacency: NDArray[np.bool_],
                       positions_m: NDArray[np.float64]) -> Topology:
        """A topology from a dense symmetric adjacency matrix (small graphs, tests)."""
        i, j = np.nonzero(np.triu(np.asarray(adjacency, bool) | np.asarray(adjacency, bool).T, 1))
        return cls(name, np.stack([i, j], axis=1), np.asarray(positions_m, float))

    @property
    def n_devices(self) -> int:
        """Number of devices."""
        return int(self.positions_m.shape[0])

    @property
    def degree(self) -> NDArray[np.int64]:
        """Neighbours per device (K,)."""
        return np.bincount(self.edges.ravel(), minlength=self.n_devices).astype(np.int64)

    @property
    def adjacency(self) -> NDArray[np.bool_]:
        """Dense symmetric adjacency (K, K), built on demand: O(K^2), for small graphs only."""
        n = self.n_devices
        adj = np.zeros((n, n), bool)
        adj[self.edges[:, 0], self.edges[:, 1]] = True
        adj[self.edges[:, 1], self.edges[:, 0]] = True
        return adj

    def sparse_adjacency(self) -> sp.csr_array:
        """Symmetric adjacency as a SciPy CSR bool matrix (O(K + E))."""
        n, e = self.n_devices, self.edges
        rows = np.concatenate([e[:, 0], e[:, 1]])
        cols = np.concatenate([e[:, 1], e[:, 0]])
        return sp.csr_array((np.ones(rows.size, bool), (rows, cols)), shape=(n, n))

    @property
    def distances_m(self) -> NDArray[np.float64]:
        """Pairwise Euclidean distances (K, K): O(K^2), for small graphs only."""
        diff = self.positions_m[:, None, :] - self.positions_m[None, :, :]
        return np.sqrt((diff**2).sum(axis=-1))

    def edge_lengths_m(self) -> NDArray[np.float64]:
        """Length of every edge (E,)."""
        d = self.positions_m[self.edges[:, 0]] - self.positions_m[self.edges[:, 1]]
        return np.sqrt((d**2).sum(axis=1))

    def neighbors(self, k: int) -> NDArray[np.int64]:
        """Indices of device k's neighbours (ascending)."""
        row = self.neighbor_table[k]
        return row[row >= 0]


def _neighbor_table(n: int, edges: NDArray[np.int64]) -> NDArray[np.int64]:
    """(K, max degree) neighbour indices per row, ascending, padded with -1."""
    src = np.concatenate([edges[:, 0], edges[:, 1]])
    dst = np.concatenate([edges[:, 1], edges[:, 0]])
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    deg = np.bincount(src, minlength=n)
    width = int(deg.max(initial=0))
    table = np.full((n, width), -1, np.int64)
    start = np.concatenate([[0], np.cumsum(deg)[:-1]])
    table[src, np.arange(src.size) - start[src]] = dst
    return table


def edges_connected(n: int, edges: NDArray[np.int64]) -> bool:
    """Whether the undirected graph on n nodes with these edges is connected (O(K + E))."""
    if n == 0:
        return False
    e = np.asarray(edges, np.int64).reshape(-1, 2)
    graph = sp.csr_array((np.ones(e.shape[0], bool), (e[:, 0], e[:, 1])), shape=(n, n))
    return bool(connected_components(graph, directed=False, return_labels=False) == 1)


def is_connected(adjacency: NDArray[np.bool_]) -> bool:
    """Breadth-first search from device 0 reaches every device (dense adjacency)."""
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


def _erdos_renyi_edges(n: int, prob: float, rng: np.random.Generator) -> NDArray[np.int64]:
    """Edges i < j kept with probability prob, drawn row block by row block.

    The draws are the same numbers as one ``rng.random((n, n))`` (Generator.random fills in C
    order), so the graph does not depend on the block size, and memory stays O(block x n).
    """
    block = max(1, 2_000_000 // n)
    parts = []
    for r0 in range(0, n, block):
        rows = rng.random((min(block, n - r0), n)) < prob
        i, j = np.nonzero(rows)
        i = i + r0
        keep = j > i
        parts.append(np.stack([i[keep], j[keep]], axis=1))
    return np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)


def make_topology(name: str, n_devices: int, seed: int = 0, *, side_m: float = 100.0,
                  radius_m: float | None = None, p: float | None = None,
                  max_tries: int = 200) -> Topology:
    """A connected device graph by name; devices are placed uniformly in a side_m square.

    ``ring``; ``torus`` (r x c grid with wrap-around, the most square factorisation with
    r, c >= 3); ``erdos-renyi`` (edge probability ``p``, default 2 ln n / n); ``geometric``
    (devices linked within ``radius_m``, default side_m * sqrt(2.5 ln(n+1) / (pi n)), which is
    usually connected); ``complete``. Random graphs are drawn again (up to ``max_tries``) until
    connected, else ConfigError. Non-geometric graphs still get positions, for the channel.
    Built as edge lists: no K x K matrix except for ``complete`` (which has K^2 / 2 edges).
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
    idx = np.arange(n)
    if name == "ring":
        edges = np.stack([idx, (idx + 1) % n], axis=1)
    elif name == "complete":
        i, j = np.triu_indices(n, 1)
        edges = np.stack([i, j], axis=1)
    elif name == "torus":
        r, c = _torus_shape(n)
        row, col = idx // c, idx % c
        edges = np.concatenate([np.stack([idx, row * c + (col + 1) % c], axis=1),
                                np.stack([idx, ((row + 1) % r) * c + col], axis=1)])
    else:
        for _ in range(max_tries):
            if name == "erdos-renyi":
                prob = p if p is not None else min(1.0, 2.0 * math.log(n) / n)
                edges = _erdos_renyi_edges(n, prob, rng)
            else:
                pos = rng.uniform(0.0, side_m, size=(n, 2))
                radius = radius_m if radius_m is not None else side_m * math.sqrt(
                    2.5 * math.log(n + 1) / (math.pi * n))
                edges = cKDTree(pos).query_pairs(radius, output_type="ndarray").astype(np.int64)
            if edges_connected(n, _clean_edges(n, edges)):
                break
        else:
            raise ConfigError(f"topology {name!r} stayed disconnected after {max_tries} draws; "
                              "raise p or radius_m")
    return Topology(name, edges, pos)


def weakest_link_gain(topology: Topology, exponent: float = 3.0,
                      ref_gain: float = 1e-3) -> NDArray[np.float64]:
    """Per device, min over neighbours of path_gain(distance): its broadcast must reach all.

    path_gain falls with distance, so this is the gain to the farthest neighbour.
    """
    farthest = np.zeros(topology.n_devices)
    length = topology.edge_lengths_m()
    np.maximum.at(farthest, topology.edges[:, 0], length)
    np.maximum.at(farthest, topology.edges[:, 1], length)
    return path_gain(farthest, exponent=exponent, ref_gain=ref_gain)
