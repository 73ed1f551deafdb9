"""The training network as the block model's engine reads it: pairs, minibatches, chunks.

:class:`Graph` precomputes, once per fit, the sparse link and unobserved-pair structure of a
:class:`~bayesmf.data.Network`: the sums over a node's observed pairs that the closed-form
``q(Z)`` step needs, every observed pair for the exact ELBO, and unbiased minibatches of links
and sampled non-links.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...data.containers import Network, Pairs

__all__ = ["Graph", "Batches", "as_network", "as_pairs", "chunks", "MAX_ELEMENTS"]

#: elements per chunk of the dense computations (pairs x draws x T x T)
MAX_ELEMENTS = 4_000_000


def chunks(n: int, per_item: int) -> list[slice]:
    """Slices of ``range(n)`` holding at most :data:`MAX_ELEMENTS` elements each.

    Examples
    --------
    >>> chunks(5, 2_000_000)
    [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """
    size = max(1, MAX_ELEMENTS // max(per_item, 1))
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def as_network(data: Any) -> Network:
    """A :class:`Network` from a Network, a ``networkx.Graph`` or a 0/1 adjacency matrix.

    Raises
    ------
    ValueError
        For an asymmetric, self-looped or non-binary adjacency matrix (or graph).
    TypeError
        For anything else.

    Examples
    --------
    >>> as_network([[0, 1], [1, 0]]).n_edges
    1
    >>> as_network([[0, 1], [0, 0]])
    Traceback (most recent call last):
    ...
    ValueError: adjacency is not symmetric at pairs [[0, 1]]
    """
    if isinstance(data, Network):
        return data
    if hasattr(data, "is_directed") and hasattr(data, "nodes"):
        from ...data.networks import from_networkx

        return from_networkx(data)
    if isinstance(data, (torch.Tensor, np.ndarray, list, tuple)) or hasattr(data, "todense"):
        if isinstance(data, torch.Tensor):
            data = data.detach().cpu().numpy()
        return Network.from_adjacency(data)
    raise TypeError(
        f"expected a Network, a networkx graph or an adjacency matrix, got {type(data).__name__}"
    )


def as_pairs(pairs: Any, n_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Node indices ``(i, j)`` of :class:`Pairs` or of a tuple of index arrays (any order).

    Raises
    ------
    ValueError
        For unequal lengths, indices out of ``[0, n_nodes)`` or self-pairs ``i == j``.
    """
    if isinstance(pairs, Pairs):
        return pairs.i, pairs.j
    i, j = pairs
    i, j = torch.as_tensor(i).long().reshape(-1), torch.as_tensor(j).long().reshape(-1)
    if i.shape != j.shape:
        raise ValueError("i and j must have the same length")
    if ((i < 0) | (i >= n_nodes) | (j < 0) | (j >= n_nodes)).any():
        raise ValueError(f"node indices out of range [0, {n_nodes})")
    if (i == j).any():
        raise ValueError("self-pairs (i == j) have no link probability in this model")
    return i, j


@dataclass
class Graph:
    """Precomputed structure of a training network.

    Attributes
    ----------
    n : int
        Number of nodes.
    edges : LongTensor, shape (E, 2)
        The links ``i < j``.
    link_keys, blocked_keys : LongTensor
        Sorted keys ``i * n + j`` of the links, and of the links and unobserved pairs.
    A, Un : sparse tensor, shape (n, n)
        Symmetric adjacency and unobserved-pair indicator.
    n_pairs, n_links : int
        Observed pairs (links and non-links) and links.
    """

    n: int
    edges: torch.Tensor
    link_keys: torch.Tensor
    blocked_keys: torch.Tensor
    A: torch.Tensor
    Un: torch.Tensor
    n_pairs: int
    n_links: int

    @classmethod
    def build(cls, net: Network, device: torch.device) -> Graph:
        """The structure of ``net``, its tensors on ``device``."""
        n = net.n_nodes
        e = net.edges
        un = net.unobserved if net.unobserved is not None else torch.zeros((0, 2), dtype=torch.long)

        def sym_sparse(p: torch.Tensor) -> torch.Tensor:
            idx = torch.cat([p, p.flip(1)]).T
            vals = torch.ones(idx.shape[1])
            return (
                torch.sparse_coo_tensor(idx, vals, (n, n), check_invariants=False)
                .coalesce()
                .to(device)
            )

        link_keys = torch.sort(e[:, 0] * n + e[:, 1]).values
        blocked = torch.sort(torch.cat([link_keys, un[:, 0] * n + un[:, 1]])).values
        return cls(
            n, e.to(device), link_keys, blocked, sym_sparse(e), sym_sparse(un), net.n_pairs,
            net.n_edges,
        )

    def observed_rows(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense 0/1 rows ``A[nodes]`` and ``non-link observed[nodes]``, shape (|nodes|, n)."""
        dev = self.A.device
        Ad = torch.zeros(nodes.numel(), self.n, device=dev)
        Ud = torch.zeros(nodes.numel(), self.n, device=dev)
        pos = torch.full((self.n,), -1, dtype=torch.long, device=dev)
        pos[nodes] = torch.arange(nodes.numel(), device=dev)
        for M, D in ((self.A, Ad), (self.Un, Ud)):
            r, c = M.indices()
            keep = pos[r] >= 0
            D[pos[r[keep]], c[keep]] = 1.0
        obs = 1.0 - Ud
        obs[torch.arange(nodes.numel(), device=dev), nodes] = 0.0
        return Ad, obs - Ad

    def sample_nonlinks(self, m: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``m`` pairs drawn uniformly (with replacement) among the observed non-links."""
        n = self.n
        out_i, out_j, got = [], [], 0
        for _ in range(100):  # rejection sampling; each round accepts most draws
            k = int(1.2 * (m - got)) + 16
            a = torch.randint(n, (k,), generator=gen)
            b = torch.randint(n - 1, (k,), generator=gen)
            b = b + (b >= a).long()
            i, j = torch.minimum(a, b), torch.maximum(a, b)
            keys = i * n + j
            if self.blocked_keys.numel():
                pos = torch.searchsorted(self.blocked_keys, keys).clamp_max(
                    self.blocked_keys.numel() - 1
                )
                ok = self.blocked_keys[pos] != keys
            else:
                ok = torch.ones_like(keys, dtype=torch.bool)
            out_i.append(i[ok])
            out_j.append(j[ok])
            got += int(ok.sum())
            if got >= m:
                break
        else:  # pragma: no cover - only for networks that are (almost) complete
            raise RuntimeError("could not sample non-links: the network has (almost) none")
        return torch.cat(out_i)[:m], torch.cat(out_j)[:m]

    def minibatch(
        self, n_links: int, n_nonlinks: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n_links`` links and ``n_nonlinks`` non-links drawn uniformly (with replacement)
        and their weights ``E / n_links`` and ``(P - E) / n_nonlinks``, so that
        ``sum w f(pair)`` is an unbiased estimate of the sum of ``f`` over all observed
        pairs. Returns ``(i, j, x, w)``."""
        dev = self.edges.device
        e = self.edges[torch.randint(self.n_links, (n_links,), generator=gen).to(dev)]
        ni, nj = self.sample_nonlinks(n_nonlinks, gen)
        i = torch.cat([e[:, 0], ni.to(dev)])
        j = torch.cat([e[:, 1], nj.to(dev)])
        x = torch.cat([torch.ones(n_links, device=dev), torch.zeros(n_nonlinks, device=dev)])
        w = torch.cat(
            [
                torch.full((n_links,), self.n_links / n_links, device=dev),
                torch.full((n_nonlinks,), (self.n_pairs - self.n_links) / n_nonlinks, device=dev),
            ]
        )
        return i, j, x, w

    def all_pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every observed pair ``i < j`` with its 0/1 value (``O(n^2)`` memory), on CPU."""
        n = self.n
        i, j = torch.triu_indices(n, n, offset=1)
        keys = i * n + j
        blocked = torch.isin(keys, self.blocked_keys)
        links = torch.isin(keys, self.link_keys)
        keep = ~blocked | links
        return i[keep], j[keep], links[keep].float()


class Batches:
    """Where each step's pairs come from: every observed pair (``batch_size=None``, one step
    per epoch) or unbiased minibatches of links and sampled non-links.

    Parameters
    ----------
    graph : Graph
        The training network.
    batch_size : int or None
        Pairs per minibatch (``None`` or at least the number of observed pairs: all of them).
    neg_ratio : float
        Non-links per link in a minibatch.

    Attributes
    ----------
    full : bool
        Every step sees every observed pair.
    steps : int
        Steps per epoch, ``ceil(n_pairs / batch_size)``.
    """

    def __init__(self, graph: Graph, batch_size: int | None, neg_ratio: float) -> None:
        self.graph = graph
        self.full = batch_size is None or batch_size >= graph.n_pairs
        dev = graph.edges.device
        if self.full:
            i, j, x = (t.to(dev) for t in graph.all_pairs())
            self._all = (i, j, x, torch.ones_like(x), torch.arange(graph.n, device=dev))
            self.steps = 1
        else:
            assert batch_size is not None
            self.n_links = max(1, min(graph.n_links, int(round(batch_size / (1 + neg_ratio)))))
            self.n_nonlinks = max(1, batch_size - self.n_links)
            self.steps = math.ceil(graph.n_pairs / batch_size)

    def draw(
        self, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(i, j, x, w, nodes)``: pairs, values, weights and the nodes they touch."""
        if self.full:
            return self._all
        i, j, x, w = self.graph.minibatch(self.n_links, self.n_nonlinks, gen)
        return i, j, x, w, torch.unique(torch.cat([i, j]))
