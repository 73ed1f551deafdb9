"""Block-structure plot of a network partition (e.g. a fitted stochastic block model).

Built on :class:`matplotlib.figure.Figure` directly (no ``pyplot``, no GUI backend), like
:mod:`bayesmf.diagnostics.plots`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_block_structure", "block_order"]

log = logging.getLogger(__name__)


def _labels(fit_or_assignments: Any) -> np.ndarray:
    if hasattr(fit_or_assignments, "assignments"):
        z = fit_or_assignments.assignments()
    else:
        z = fit_or_assignments
    if isinstance(z, torch.Tensor):
        z = z.detach().cpu().numpy()
    z = np.asarray(z)
    if z.ndim != 1:
        raise ValueError(f"assignments must be one-dimensional, got shape {z.shape}")
    return z


def block_order(assignments: Any, degrees: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Node order grouping the clusters (largest first; by degree within a cluster) and
    the positions of the block boundaries in that order.

    Examples
    --------
    >>> order, bounds = block_order([1, 0, 1, 2, 1])
    >>> order.tolist(), bounds.tolist()
    ([0, 2, 4, 1, 3], [3, 4])
    """
    z = _labels(assignments)
    _, inv, counts = np.unique(z, return_inverse=True, return_counts=True)
    size_rank = np.argsort(np.argsort(-counts, kind="stable"), kind="stable")[inv]
    deg = np.zeros(len(z)) if degrees is None else np.asarray(degrees, dtype=float)
    order = np.lexsort((-deg, size_rank))
    sizes = np.sort(counts)[::-1]
    return order, np.cumsum(sizes)[:-1]


def plot_block_structure(
    fit_or_assignments: Any,
    network: Any,
    path: str | Path | None = None,
    title: str | None = None,
    size: float = 6.0,
) -> Figure:
    """The adjacency matrix with nodes sorted by cluster and block boundaries drawn.

    Parameters
    ----------
    fit_or_assignments : SBMFit or array-like of int
        A fit (its hard :meth:`~bayesmf.inference.SBMFit.assignments` are used) or one
        cluster label per node.
    network : Network
        The network (held-out pairs, if any, are drawn in grey).
    path : path, optional
        Also save the figure there as a PNG.
    title : str, optional
        Figure title (default: the number of nodes, links and clusters).
    size : float
        Figure width and height in inches.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from bayesmf.data import synthetic_network
    >>> net, truth = synthetic_network(30, block_sizes=[20, 10], p_in=0.5, p_out=0.05)
    >>> fig = plot_block_structure(truth.z, net)
    >>> len(fig.axes[0].lines)  # one horizontal and one vertical boundary
    2
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    z = _labels(fit_or_assignments)
    n = network.n_nodes
    if z.shape[0] != n:
        raise ValueError(f"{z.shape[0]} assignments for a network of {n} nodes")
    order, bounds = block_order(z, network.degrees().numpy())
    A = network.adjacency.numpy().copy()
    if network.unobserved is not None and network.unobserved.shape[0]:
        u = network.unobserved.numpy()
        A[u[:, 0], u[:, 1]] = A[u[:, 1], u[:, 0]] = 0.5
    A = A[np.ix_(order, order)]
    fig = Figure(figsize=(size, size), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    cmap = ListedColormap(["white", "#bbbbbb", "black"])
    ax.imshow(A, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    for b in bounds:
        ax.axhline(b - 0.5, color="tab:red", lw=0.8)
        ax.axvline(b - 0.5, color="tab:red", lw=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    n_clusters = len(np.unique(z))
    ax.set_title(title or f"{n} nodes, {network.n_edges} links, {n_clusters} clusters")
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        log.info("saved %s", path)
    return fig
