"""Initial partitions and initial variational factors of the block model.

Local optima are common in mean-field VI of block models, so the initial ``q(Z)`` matters:
regularised spectral clustering (:func:`spectral_init`) into ``k`` clusters, ``k`` from the
Bethe Hessian (:func:`bethe_hessian_clusters`) and its neighbours across restarts
(:func:`init_plan`); :func:`init_posterior` sets ``q`` from the labels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...data.containers import Network
from ...models.sbm import DPStochasticBlockModel
from .graph import Graph
from .posterior import SBMPosterior

__all__ = [
    "kmeans",
    "bethe_hessian_clusters",
    "spectral_init",
    "init_plan",
    "initial_labels",
    "init_posterior",
]


def kmeans(X: torch.Tensor, k: int, gen: torch.Generator, iters: int = 50) -> torch.Tensor:
    """Labels of k-means (k-means++ seeding, Lloyd iterations) of the rows of ``X``."""
    n = X.shape[0]
    k = min(k, n)
    centers = X[torch.randint(n, (1,), generator=gen)]
    for _ in range(1, k):  # k-means++ seeding: loop over the k centres, not the points
        d2 = torch.cdist(X, centers).min(1).values ** 2
        p = d2 / d2.sum() if d2.sum() > 0 else torch.full((n,), 1.0 / n)
        centers = torch.cat([centers, X[torch.multinomial(p, 1, generator=gen)]])
    labels = torch.cdist(X, centers).argmin(1)
    for _ in range(iters):
        onehot = F.one_hot(labels, k).to(X.dtype)
        counts = onehot.sum(0)
        new = (onehot.T @ X) / counts.clamp_min(1)[:, None]
        new[counts == 0] = centers[counts == 0]
        centers = new
        new_labels = torch.cdist(X, centers).argmin(1)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    return labels


def bethe_hessian_clusters(adjacency: torch.Tensor) -> int:
    """Number of communities estimated by the Bethe Hessian (Saade et al. 2014).

    The number of negative eigenvalues of ``H(r) = (r^2 - 1) I - r A + D`` with
    ``r = sqrt(sum d^2 / sum d - 1)`` (Le & Levina 2015); dense, ``O(N^3)``.

    Examples
    --------
    >>> from bayesmf.data import synthetic_network
    >>> net, _ = synthetic_network(90, block_sizes=[40, 30, 20], p_in=0.5, p_out=0.04)
    >>> bethe_hessian_clusters(net.adjacency)
    3
    """
    A = adjacency.double()
    d = A.sum(1)
    if float(d.sum()) == 0:
        return 1
    r = math.sqrt(max(float((d**2).sum() / d.sum()) - 1.0, 1e-6))
    H = (r * r - 1) * torch.eye(A.shape[0], dtype=A.dtype) - r * A + torch.diag(d)
    return max(1, int((torch.linalg.eigvalsh(H) < 0).sum()))


def spectral_init(
    network: Network, n_clusters: int | str, truncation: int, seed: int = 0
) -> tuple[torch.Tensor, int]:
    """Cluster labels from regularised spectral clustering, and the number of clusters.

    The regularised normalised adjacency ``D^-1/2 (A + tau/N) D^-1/2`` with ``tau`` the
    mean degree (Amini et al. 2013; unobserved pairs read as non-links) is eigen-decomposed;
    the rows of its leading ``k`` eigenvectors, normalised, are clustered by k-means.
    ``n_clusters="auto"`` takes ``k`` from :func:`bethe_hessian_clusters`, clipped to
    ``[1, truncation]``.

    Examples
    --------
    >>> from bayesmf.data import synthetic_network
    >>> net, truth = synthetic_network(60, block_sizes=[30, 20, 10], p_in=0.6, p_out=0.02)
    >>> labels, k = spectral_init(net, "auto", truncation=6)
    >>> k
    3
    """
    A = network.adjacency.double()
    n = A.shape[0]
    tau = max(float(A.sum()) / n, 1e-3)
    Ar = A + tau / n
    d = Ar.sum(1).rsqrt()
    L = d[:, None] * Ar * d[None, :]
    evals, evecs = torch.linalg.eigh(L)
    evals, evecs = evals.flip(0), evecs.flip(1)
    if n_clusters == "auto":
        k = min(max(bethe_hessian_clusters(A), 1), truncation, n)
    else:
        k = max(1, min(int(n_clusters), truncation, n))
    if k == 1:
        return torch.zeros(n, dtype=torch.long), 1
    X = evecs[:, :k]
    X = X / X.norm(dim=1, keepdim=True).clamp_min(1e-12)
    gen = torch.Generator().manual_seed(seed)
    labels = kmeans(X.float(), k, gen)
    # relabel by decreasing size so that big clusters take the long sticks
    counts = torch.bincount(labels, minlength=k)
    order = torch.argsort(counts, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(k)
    labels = rank[labels]
    return labels, int(torch.unique(labels).numel())


def init_posterior(
    model: DPStochasticBlockModel,
    post: SBMPosterior,
    labels: torch.Tensor | None,
    graph: Graph,
    gen: torch.Generator,
    smoothing: float = 0.1,
) -> None:
    """Set ``q`` from initial labels: ``eta`` their smoothed one-hot rows (random soft
    assignments without labels), ``q(V)`` the sticks that these counts imply, the Gaussian
    means random (``init_loc`` scale, from ``gen``) and the output bias ``logit(density)``.
    """
    T = model.truncation
    dev = post.eta.device
    with torch.no_grad():
        for s in post.specs:
            post.locs[s.name].copy_(s.init_loc * torch.randn(s.shape, generator=gen).to(dev))
        last = len(model.layer_sizes()) - 2
        density = max(graph.n_links / max(graph.n_pairs, 1), 1e-4)
        post.locs[f"b{last}"].fill_(math.log(density / (1 - density)))
        if labels is None:  # random soft assignments
            eta = torch._standard_gamma(torch.ones(model.n_nodes, T), generator=gen)
            eta = eta / eta.sum(1, keepdim=True)
        else:
            eta = (1 - smoothing) * F.one_hot(labels, T).float() + smoothing / T
        post.eta.copy_(eta.to(dev))
        if T > 1:
            counts = post.eta.sum(0)
            tail = torch.flip(torch.cumsum(torch.flip(counts, [0]), 0), [0])[1:]
            rho1 = 1.0 + counts[:-1]
            rho2 = float(model.alpha.detach()) + tail
            post.log_rho.copy_(torch.stack([rho1, rho2], 1).log())


def init_plan(
    init: str, n_restarts: int, truncation: int, seed: int, clusters: int | str | None = None
) -> list[tuple[str, Any]]:
    """The initialisation of each restart: ``("spectral", k)`` or ``("random", None)``.

    Spectral restarts take ``k`` = the Bethe-Hessian estimate ``"auto"``, then
    ``"auto+1"``, ``truncation``, ``"auto-1"`` and random numbers of clusters (seeded);
    ``clusters`` forces one ``k`` for every restart.

    Examples
    --------
    >>> init_plan("spectral", 3, 10, seed=0)
    [('spectral', 'auto'), ('spectral', 'auto+1'), ('spectral', 10)]
    """
    if init == "spectral" and clusters is not None:
        return [("spectral", clusters)] * n_restarts
    if init == "random":
        return [("random", None)] * n_restarts
    rng = np.random.default_rng(seed)
    plan: list[tuple[str, Any]] = [
        ("spectral", "auto"),
        ("spectral", "auto+1"),
        ("spectral", truncation),
        ("spectral", "auto-1"),
    ]
    while len(plan) < n_restarts:
        plan.append(("spectral", int(rng.integers(2, max(truncation, 2) + 1))))
    return plan[:n_restarts]


def initial_labels(
    net: Network, kind: str, k: Any, truncation: int, seed: int, k_auto: int | None = None
) -> tuple[torch.Tensor | None, int, int | None]:
    """Labels of one restart of :func:`init_plan`: ``(labels, clusters used, k_auto)``.

    ``k`` may be an int, ``"auto"`` or ``"auto+1"``/``"auto-1"`` (relative to the
    Bethe-Hessian estimate ``k_auto``, computed here when not given). Random restarts have
    no labels.
    """
    if kind != "spectral":
        return None, truncation, k_auto
    if isinstance(k, str) and k != "auto":  # "auto+1" / "auto-1"
        if k_auto is None:
            k_auto = bethe_hessian_clusters(net.adjacency)
        k = max(1, k_auto + int(k[4:]))
    labels, used = spectral_init(net, k, truncation, seed=seed)
    return labels, used, k_auto
