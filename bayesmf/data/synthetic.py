"""Synthetic data with a known truth: low-rank ratings and planted-block networks.

:func:`synthetic_ratings` draws a partially observed low-rank matrix (optionally
with row/column biases and a discrete rating scale) and returns the generating
parameters as a :class:`LowRankTruth`. :func:`synthetic_network` draws a
stochastic block model network with planted (or Dirichlet-process distributed)
blocks and returns the planted structure as a :class:`BlockTruth`.

Every draw uses a local :class:`torch.Generator` seeded with ``seed``; the global
random state is never touched, so the same arguments always give the same data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .containers import Network, Ratings

__all__ = ["LowRankTruth", "BlockTruth", "synthetic_ratings", "synthetic_network"]

logger = logging.getLogger(__name__)

# Above this many cells the observed positions are drawn by rejection instead of
# a full permutation of all cells (which would need 8 bytes per cell).
_PERMUTE_LIMIT = 5_000_000


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


# --------------------------------------------------------------------- ratings


@dataclass(frozen=True, eq=False)
class LowRankTruth:
    """The parameters that generated a :func:`synthetic_ratings` matrix.

    The noiseless value of entry ``(i, j)`` is
    ``mean + row_bias[i] + col_bias[j] + U[i] @ V[j]``; observed values add
    ``N(0, noise**2)`` noise (and are rounded/clipped when a scale was asked for).

    Attributes
    ----------
    U : torch.Tensor, shape (n_rows, rank)
        Row factors.
    V : torch.Tensor, shape (n_cols, rank)
        Column factors.
    row_bias : torch.Tensor, shape (n_rows,)
        Row offsets (zeros when drawn without biases).
    col_bias : torch.Tensor, shape (n_cols,)
        Column offsets (zeros when drawn without biases).
    mean : float
        Global offset.
    noise : float
        Standard deviation of the Gaussian observation noise.
    """

    U: torch.Tensor
    V: torch.Tensor
    row_bias: torch.Tensor
    col_bias: torch.Tensor
    mean: float
    noise: float

    @property
    def rank(self) -> int:
        return int(self.U.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.U.shape[0]), int(self.V.shape[0])

    def expected(self, rows: Any, cols: Any) -> torch.Tensor:
        """Noiseless values at the given row/column indices (broadcast together).

        Parameters
        ----------
        rows, cols : array-like of int
            Indices into the rows and columns; any broadcastable shapes.

        Returns
        -------
        torch.Tensor
            ``mean + row_bias[rows] + col_bias[cols] + <U[rows], V[cols]>``.

        Examples
        --------
        >>> R, truth = synthetic_ratings(20, 10, rank=2, density=0.5, noise=0.0)
        >>> torch.allclose(truth.expected(R.rows, R.cols), R.values)
        True
        """
        r = torch.as_tensor(rows, dtype=torch.long)
        c = torch.as_tensor(cols, dtype=torch.long)
        r, c = torch.broadcast_tensors(r, c)
        return (
            self.mean
            + self.row_bias[r]
            + self.col_bias[c]
            + (self.U[r] * self.V[c]).sum(-1)
        )

    def dense(self) -> torch.Tensor:
        """The full noiseless ``(n_rows, n_cols)`` matrix."""
        return self.mean + self.row_bias[:, None] + self.col_bias[None, :] + self.U @ self.V.T


def _sample_keys(
    total: int, n: int, gen: torch.Generator, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """``n`` distinct keys drawn uniformly from ``[0, total)`` minus ``exclude``.

    Small universes are permuted; large sparse ones are sampled by drawing keys
    with replacement in vectorized rounds and keeping the distinct ones (a
    uniformly random subset of the distinct keys is still uniform).
    """
    n_excl = 0 if exclude is None else int(exclude.numel())
    if n == 0:
        return torch.empty(0, dtype=torch.long)
    if n > total - n_excl:
        raise ValueError(f"cannot draw {n} distinct positions out of {total - n_excl}")
    if total <= _PERMUTE_LIMIT or n > (total - n_excl) // 4:
        perm = torch.randperm(total, generator=gen)
        if exclude is not None and n_excl:
            perm = perm[~torch.isin(perm, exclude)]
        return perm[:n]
    keys = torch.empty(0, dtype=torch.long)
    while keys.numel() < n:  # rounds, each vectorized; a handful at densities < 1/4
        need = n - keys.numel()
        draw = torch.randint(0, total, (int(need * 1.2) + 16,), generator=gen)
        keys = torch.unique(torch.cat([keys, draw]))
        if exclude is not None and n_excl:
            keys = keys[~torch.isin(keys, exclude)]
    return keys[torch.randperm(keys.numel(), generator=gen)[:n]]


def synthetic_ratings(
    n_rows: int = 300,
    n_cols: int = 200,
    rank: int = 5,
    density: float = 0.1,
    noise: float = 0.5,
    biases: bool = False,
    seed: int = 0,
    scale: tuple[float, float] | None = None,
    *,
    mean: float | None = None,
    cover: bool = False,
) -> tuple[Ratings, LowRankTruth]:
    """Draw a partially observed low-rank matrix with a known truth.

    The factors have i.i.d. entries ``U[i, k], V[j, k] ~ N(0, 1/sqrt(rank))``
    (variance ``1/sqrt(rank)``), so each product ``U[i, k] V[j, k]`` has variance
    ``1/rank`` and the signal ``U[i] @ V[j]`` has unit variance whatever the
    rank. With ``biases=True`` row and column offsets ``~ N(0, 0.5**2)`` are
    added. Observed values are ``mean + biases + U[i] @ V[j] + N(0, noise**2)``.

    Parameters
    ----------
    n_rows, n_cols : int
        Matrix shape.
    rank : int
        Number of latent dimensions.
    density : float
        Fraction of the cells observed, in ``(0, 1]``; ``round(density * n_rows
        * n_cols)`` positions are chosen uniformly at random without replacement.
    noise : float
        Standard deviation of the Gaussian noise (``>= 0``).
    biases : bool
        Whether to draw row and column offsets.
    seed : int
        Seed of the local random generator.
    scale : (float, float), optional
        A discrete rating scale such as ``(1, 5)``: values are rounded to the
        nearest integer and clipped to ``[low, high]``, and the returned
        :class:`Ratings` carries this scale. The truth stays continuous, so
        ``values - truth.expected(...)`` then also contains rounding error.
    mean : float, optional
        Global offset; default ``0``, or the middle of ``scale`` when given.
    cover : bool
        Guarantee at least one rating in every row and column: ``max(n_rows,
        n_cols)`` positions covering all rows and columns are placed first, the
        rest uniformly among the remaining cells.

    Returns
    -------
    ratings : Ratings
        The observed entries, sorted by (row, column), named ``"synthetic"``.
    truth : LowRankTruth
        The generating parameters.

    Raises
    ------
    ValueError
        On non-positive sizes or rank, density outside ``(0, 1]``, negative
        noise, a density giving no observed entry, or too few entries to cover
        every row and column.

    Examples
    --------
    >>> R, truth = synthetic_ratings(50, 40, rank=3, density=0.2, seed=1)
    >>> R.shape, len(R)
    ((50, 40), 400)
    >>> R5, _ = synthetic_ratings(50, 40, density=0.2, scale=(1, 5))
    >>> sorted(set(R5.values.tolist())) <= [1.0, 2.0, 3.0, 4.0, 5.0]
    True
    """
    n_rows, n_cols, rank = int(n_rows), int(n_cols), int(rank)
    if n_rows < 1 or n_cols < 1:
        raise ValueError(f"n_rows and n_cols must be positive, got ({n_rows}, {n_cols})")
    if rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if noise < 0:
        raise ValueError(f"noise must be non-negative, got {noise}")
    total = n_rows * n_cols
    n_obs = int(round(density * total))
    if n_obs < 1:
        raise ValueError(
            f"density={density} of a {n_rows}x{n_cols} matrix gives no observed entry"
        )
    if scale is not None:
        lo, hi = (float(s) for s in scale)
        if not lo < hi:
            raise ValueError(f"scale must be (low, high) with low < high, got {scale}")
        scale = (lo, hi)
    if mean is None:
        mean = 0.0 if scale is None else 0.5 * (scale[0] + scale[1])

    gen = _generator(seed)
    factor_std = rank ** -0.25
    U = torch.randn(n_rows, rank, generator=gen) * factor_std
    V = torch.randn(n_cols, rank, generator=gen) * factor_std
    if biases:
        row_bias = 0.5 * torch.randn(n_rows, generator=gen)
        col_bias = 0.5 * torch.randn(n_cols, generator=gen)
    else:
        row_bias, col_bias = torch.zeros(n_rows), torch.zeros(n_cols)
    truth = LowRankTruth(U, V, row_bias, col_bias, float(mean), float(noise))

    if cover:
        n_cover = max(n_rows, n_cols)
        if n_obs < n_cover:
            raise ValueError(
                f"density={density} gives {n_obs} entries, fewer than the {n_cover} "
                "needed to cover every row and column (cover=True)"
            )
        k = torch.arange(n_cover)
        pr = torch.randperm(n_rows, generator=gen)
        pc = torch.randperm(n_cols, generator=gen)
        forced = pr[k % n_rows] * n_cols + pc[k % n_cols]  # distinct: k < max(n_rows, n_cols)
        rest = _sample_keys(total, n_obs - n_cover, gen, exclude=forced)
        keys = torch.cat([forced, rest])
    else:
        keys = _sample_keys(total, n_obs, gen)
    keys = torch.sort(keys).values
    rows, cols = keys // n_cols, keys % n_cols
    values = truth.expected(rows, cols) + noise * torch.randn(n_obs, generator=gen)
    if scale is not None:
        values = torch.round(values).clamp(scale[0], scale[1])
    logger.debug("synthetic ratings %dx%d, rank %d, %d entries", n_rows, n_cols, rank, n_obs)
    ratings = Ratings(rows, cols, values, shape=(n_rows, n_cols), scale=scale, name="synthetic")
    return ratings, truth


# --------------------------------------------------------------------- networks


@dataclass(frozen=True, eq=False)
class BlockTruth:
    """The planted structure of a :func:`synthetic_network`.

    Attributes
    ----------
    z : torch.Tensor of long, shape (n_nodes,)
        Block of each node, in ``[0, n_blocks)``.
    probs : torch.Tensor, shape (n_blocks, n_blocks)
        Symmetric link probabilities between blocks.
    n_blocks : int
        Number of (non-empty) blocks.
    """

    z: torch.Tensor
    probs: torch.Tensor
    n_blocks: int

    @property
    def block_sizes(self) -> torch.Tensor:
        """Number of nodes in each block."""
        return torch.bincount(self.z, minlength=self.n_blocks)

    def link_probability(self) -> torch.Tensor:
        """Dense ``(n_nodes, n_nodes)`` link probabilities (zero diagonal)."""
        P = self.probs[self.z][:, self.z].clone()
        P.fill_diagonal_(0.0)
        return P


def _stick_breaking_labels(n_nodes: int, alpha: float, gen: torch.Generator) -> torch.Tensor:
    """Block labels of ``n_nodes`` nodes drawn from a (truncated) stick-breaking DP(alpha).

    Equivalent in distribution to a Chinese restaurant process up to the
    truncation at ``n_nodes`` sticks (the leftover mass goes to the last stick).
    Labels are compacted to ``0..C-1`` in order of decreasing block size.
    """
    u = torch.rand(n_nodes, generator=gen, dtype=torch.float64)
    beta = 1.0 - u ** (1.0 / alpha)  # Beta(1, alpha) by inverse CDF
    remaining = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.float64), 1 - beta[:-1]]), 0)
    weights = beta * remaining
    weights[-1] = remaining[-1]  # close the stick
    z = torch.multinomial(weights.clamp_min(0), n_nodes, replacement=True, generator=gen)
    labels, inverse, counts = torch.unique(z, return_inverse=True, return_counts=True)
    order = torch.argsort(counts, descending=True, stable=True)
    rank_of = torch.empty_like(order)
    rank_of[order] = torch.arange(order.numel())
    return rank_of[inverse]


def synthetic_network(
    n_nodes: int = 120,
    block_sizes: Sequence[int] | None = None,
    n_blocks: int = 4,
    p_in: float = 0.5,
    p_out: float = 0.02,
    alpha: float | None = None,
    seed: int = 0,
    *,
    block_probs: Any = None,
) -> tuple[Network, BlockTruth]:
    """Draw a symmetric stochastic block model network with planted blocks.

    Parameters
    ----------
    n_nodes : int
        Number of nodes.
    block_sizes : sequence of int, optional
        Sizes of the planted blocks (may be unequal); must sum to ``n_nodes``.
        Default: ``n_blocks`` blocks of (nearly) equal size.
    n_blocks : int
        Number of equal blocks when neither ``block_sizes`` nor ``alpha`` is given.
    p_in, p_out : float
        Link probability within a block and between blocks.
    alpha : float, optional
        When given, block sizes are random: labels are drawn from a
        stick-breaking Dirichlet process ``DP(alpha)`` (the CRP's block sizes),
        truncated at ``n_nodes`` sticks; blocks are numbered by decreasing size.
    seed : int
        Seed of the local random generator.
    block_probs : array-like, shape (C, C), optional
        Full symmetric matrix of link probabilities between blocks, replacing
        ``p_in``/``p_out``; ``C`` must match the number of blocks (not allowed
        with ``alpha``, whose number of blocks is random).

    Returns
    -------
    network : Network
        Symmetric, without self-links, nodes shuffled so blocks are not contiguous.
    truth : BlockTruth
        Node assignments ``z``, block probabilities and number of blocks.

    Raises
    ------
    ValueError
        On inconsistent sizes, probabilities outside ``[0, 1]``, an asymmetric
        ``block_probs``, or ``alpha <= 0``.

    Examples
    --------
    >>> net, truth = synthetic_network(60, block_sizes=[30, 20, 10], p_in=0.6, p_out=0.05)
    >>> net.n_nodes, truth.n_blocks, truth.block_sizes.tolist()
    (60, 3, [30, 20, 10])
    >>> bool((net.adjacency == net.adjacency.T).all())
    True
    """
    n_nodes = int(n_nodes)
    if n_nodes < 2:
        raise ValueError(f"a network needs at least 2 nodes, got n_nodes={n_nodes}")
    gen = _generator(seed)
    if alpha is not None:
        if block_sizes is not None:
            raise ValueError("give either block_sizes or alpha, not both")
        if block_probs is not None:
            raise ValueError("block_probs cannot be combined with alpha (random number of blocks)")
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        labels = _stick_breaking_labels(n_nodes, float(alpha), gen)
        n_c = int(labels.max()) + 1
    else:
        if block_sizes is None:
            n_blocks = int(n_blocks)
            if not 1 <= n_blocks <= n_nodes:
                raise ValueError(f"n_blocks must be in [1, n_nodes={n_nodes}], got {n_blocks}")
            sizes = torch.tensor([len(c) for c in torch.arange(n_nodes).tensor_split(n_blocks)])
        else:
            sizes = torch.as_tensor(np.asarray(block_sizes, dtype=np.int64))
            if sizes.ndim != 1 or sizes.numel() == 0 or bool((sizes < 1).any()):
                raise ValueError(f"block_sizes must be positive integers, got {list(block_sizes)}")
            if int(sizes.sum()) != n_nodes:
                raise ValueError(
                    f"block_sizes sum to {int(sizes.sum())} but n_nodes={n_nodes}; "
                    f"pass n_nodes={int(sizes.sum())}"
                )
        n_c = int(sizes.numel())
        labels = torch.repeat_interleave(torch.arange(n_c), sizes)
    z = labels[torch.randperm(n_nodes, generator=gen)]

    if block_probs is not None:
        probs = torch.as_tensor(np.asarray(block_probs, dtype=np.float32))
        if probs.shape != (n_c, n_c):
            raise ValueError(
                f"block_probs must have shape ({n_c}, {n_c}), got {tuple(probs.shape)}"
            )
        if not torch.allclose(probs, probs.T):
            raise ValueError("block_probs must be symmetric")
    else:
        for name, p in (("p_in", p_in), ("p_out", p_out)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        probs = torch.full((n_c, n_c), float(p_out))
        probs.fill_diagonal_(float(p_in))
    if bool(((probs < 0) | (probs > 1)).any()) or not bool(torch.isfinite(probs).all()):
        raise ValueError("block_probs must hold probabilities in [0, 1]")

    i, j = torch.triu_indices(n_nodes, n_nodes, offset=1)
    linked = torch.rand(i.numel(), generator=gen) < probs[z[i], z[j]]
    edges = torch.stack([i[linked], j[linked]], dim=1)
    logger.debug("synthetic network: %d nodes, %d blocks, %d edges", n_nodes, n_c, edges.shape[0])
    network = Network(n_nodes, edges, name="synthetic network")
    return network, BlockTruth(z=z, probs=probs, n_blocks=n_c)
