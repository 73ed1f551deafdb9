"""Posterior predictive checks for network models and calibration of link probabilities.

* :func:`network_statistics`: degrees, local and average clustering coefficient and
  transitivity of a 0/1 adjacency matrix (numpy, no networkx needed).
* :func:`network_ppc`: replicated networks drawn from posterior draws of the link
  probabilities of a set of pairs, and their statistics beside the observed network's,
  with posterior predictive p-values; :func:`plot_network_ppc` draws the degree
  distribution and the clustering coefficient.
* :func:`reliability`: a reliability diagram's numbers (mean predicted probability and
  observed link frequency per bin, expected calibration error) for held-out pairs;
  :func:`plot_reliability` draws it.

The replicated networks contain only the pairs that were simulated (typically the observed
pairs of a training network, :meth:`bayesmf.data.Network.observed_pairs`), and the observed
statistics are computed on the links among those same pairs, so that held-out pairs are
absent from both sides of the comparison. Matplotlib is imported only inside the plotting
functions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .plots import new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "NetworkPPC",
    "Reliability",
    "network_ppc",
    "network_statistics",
    "plot_network_ppc",
    "plot_reliability",
    "reliability",
]


log = logging.getLogger(__name__)


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def network_statistics(adjacency: Any) -> dict[str, Any]:
    """Degree and clustering statistics of a symmetric 0/1 adjacency matrix.

    Parameters
    ----------
    adjacency : array-like, shape (n, n) or (S, n, n)
        Symmetric 0/1 matrix (or a stack of them) with a zero diagonal.

    Returns
    -------
    dict
        ``degrees`` (``(n,)`` or ``(S, n)`` ints), ``n_edges``, ``clustering`` (the local
        clustering coefficient of each node: the fraction of pairs of its neighbours that
        are linked, 0 for nodes of degree < 2, as in ``networkx.clustering``),
        ``average_clustering`` (their mean over all nodes, as in
        ``networkx.average_clustering``) and ``transitivity`` (``3 x triangles / connected
        triples``; 0 without triples).

    Examples
    --------
    >>> s = network_statistics([[0, 1, 1, 0], [1, 0, 1, 0], [1, 1, 0, 1], [0, 0, 1, 0]])
    >>> s["degrees"].tolist(), s["n_edges"]
    ([2, 2, 3, 1], 4)
    >>> s["clustering"].round(3).tolist(), round(s["average_clustering"], 3)
    ([1.0, 1.0, 0.333, 0.0], 0.583)
    >>> round(s["transitivity"], 3)  # 3 x 1 triangle / 5 connected triples
    0.6
    """
    A = _np(adjacency).astype(np.float64)
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"adjacency must be square, got shape {A.shape}")
    deg = A.sum(-1)
    tri = ((A @ A) * A).sum(-1) / 2.0  # triangles at each node: (A^3)_ii / 2
    pairs = deg * (deg - 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        clustering = np.where(pairs > 0, tri / np.where(pairs > 0, pairs, 1.0), 0.0)
        total_pairs = pairs.sum(-1)
        transitivity = np.where(
            total_pairs > 0, tri.sum(-1) / np.where(total_pairs > 0, total_pairs, 1.0), 0.0
        )
    return {
        "degrees": deg.astype(np.int64),
        "n_edges": (deg.sum(-1) / 2).astype(np.int64) if deg.ndim > 1 else int(deg.sum() / 2),
        "clustering": clustering,
        "average_clustering": clustering.mean(-1) if deg.ndim > 1 else float(clustering.mean()),
        "transitivity": transitivity if deg.ndim > 1 else float(transitivity),
    }


@dataclass(frozen=True)
class NetworkPPC:
    """Statistics of the observed network and of replicated networks.

    Attributes
    ----------
    observed : dict
        :func:`network_statistics` of the observed links among the simulated pairs.
    replicated : dict
        The same statistics of the ``S`` replicated networks (leading dimension ``S``).
    p_values : dict
        Posterior predictive p-values ``P(T(rep) >= T(obs))`` of ``n_edges``,
        ``average_clustering``, ``transitivity`` and ``max_degree``.
    """

    observed: dict[str, Any]
    replicated: dict[str, Any]
    p_values: dict[str, float]

    def degree_histograms(self) -> tuple[np.ndarray, np.ndarray]:
        """Node counts by degree: observed ``(D,)`` and replicated ``(S, D)``, ``D`` covering
        the largest degree seen."""
        obs, rep = self.observed["degrees"], self.replicated["degrees"]
        top = int(max(obs.max(), rep.max())) + 1
        h_obs = np.bincount(obs, minlength=top)
        h_rep = np.stack([np.bincount(r, minlength=top) for r in rep])
        return h_obs, h_rep

    def summary(self) -> dict[str, Any]:
        """Observed value, replicated mean and 90% interval and p-value of each statistic."""
        out = {}
        for key in self.p_values:
            rep = self._stat(self.replicated, key)
            out[key] = {
                "observed": float(self._stat(self.observed, key)),
                "replicated_mean": float(rep.mean()),
                "replicated_q05": float(np.quantile(rep, 0.05)),
                "replicated_q95": float(np.quantile(rep, 0.95)),
                "p_value": self.p_values[key],
            }
        return out

    @staticmethod
    def _stat(stats: dict[str, Any], key: str) -> np.ndarray:
        if key == "max_degree":
            return np.asarray(stats["degrees"]).max(-1)
        return np.asarray(stats[key])


def network_ppc(
    prob_draws: Any,
    rows: Any,
    cols: Any,
    labels: Any,
    n_nodes: int,
    seed: int = 0,
) -> NetworkPPC:
    """Posterior predictive check of a network model's degrees and clustering.

    One replicated network is drawn per posterior draw: each pair ``(rows[p], cols[p])`` is
    linked with probability ``prob_draws[s, p]``. Statistics of the replicated networks are
    compared with those of the observed links ``labels`` among the same pairs.

    Parameters
    ----------
    prob_draws : array-like, shape (S, P)
        Link probabilities of the ``P`` pairs under ``S`` posterior draws (e.g.
        ``model.expected(z, pairs.rows, pairs.cols)`` for draws ``z``).
    rows, cols : array-like of int, shape (P,)
        The pairs (each unordered pair once, ``rows != cols``).
    labels : array-like of {0, 1}, shape (P,)
        Observed links among the pairs.
    n_nodes : int
        Number of nodes.
    seed : int
        Seed of the Bernoulli draws.

    Returns
    -------
    NetworkPPC

    Examples
    --------
    >>> import numpy as np
    >>> i, j = np.triu_indices(20, 1)
    >>> p = np.full((50, i.size), 0.2)
    >>> y = np.random.default_rng(0).random(i.size) < 0.2
    >>> ppc = network_ppc(p, i, j, y, 20)
    >>> 0.05 < ppc.p_values["n_edges"] < 0.95
    True
    """
    P = _np(prob_draws).astype(np.float64)
    r, c = _np(rows).astype(np.int64), _np(cols).astype(np.int64)
    y = _np(labels).astype(np.float64)
    if P.ndim != 2 or P.shape[1] != r.size or r.size != c.size or y.size != r.size:
        raise ValueError(
            f"prob_draws must be (S, P) for P = {r.size} pairs; got {P.shape}, "
            f"{c.size} cols, {y.size} labels"
        )
    if np.any((P < 0) | (P > 1)) or not np.all(np.isfinite(P)):
        raise ValueError("prob_draws must be probabilities in [0, 1]")
    if np.any(r == c):
        raise ValueError("pairs must not be self-loops")
    rng = np.random.default_rng(seed)
    draws = (rng.random(P.shape) < P).astype(np.float64)
    S = P.shape[0]
    A_rep = np.zeros((S, n_nodes, n_nodes))
    A_rep[:, r, c] = draws
    A_rep[:, c, r] = draws
    A_obs = np.zeros((n_nodes, n_nodes))
    A_obs[r, c] = y
    A_obs[c, r] = y
    obs, rep = network_statistics(A_obs), network_statistics(A_rep)
    p_values = {}
    for key in ("n_edges", "average_clustering", "transitivity", "max_degree"):
        t_obs, t_rep = NetworkPPC._stat(obs, key), NetworkPPC._stat(rep, key)
        p_values[key] = float(np.mean(t_rep >= t_obs))
    return NetworkPPC(obs, rep, p_values)


def plot_network_ppc(
    ppc: NetworkPPC, title: str | None = None, path: str | Path | None = None
) -> Figure:
    """Degree distribution and clustering coefficient: observed against replicated.

    Left: number of nodes of each degree, observed (points) and the replicated networks'
    median and 90% band. Right: histogram of the replicated average clustering coefficient
    with the observed value as a vertical line (and its posterior predictive p-value).

    Parameters
    ----------
    ppc : NetworkPPC
        From :func:`network_ppc`.
    title : str, optional
        Figure title.
    path : path, optional
        Where to save the figure (PNG).
    """
    fig = new_figure(2, 9.0)
    ax_deg, ax_cc = fig.axes
    h_obs, h_rep = ppc.degree_histograms()
    d = np.arange(h_obs.size)
    lo, med, hi = np.quantile(h_rep, [0.05, 0.5, 0.95], axis=0)
    ax_deg.fill_between(d, lo, hi, alpha=0.3, color="C0", label="replicated 90%", step="mid")
    ax_deg.step(d, med, where="mid", color="C0", label="replicated median")
    ax_deg.plot(d, h_obs, "o", color="k", ms=4, label="observed")
    ax_deg.set_xlabel("degree")
    ax_deg.set_ylabel("number of nodes")
    ax_deg.set_yscale("symlog", linthresh=1)
    ax_deg.legend(frameon=False)
    rep_cc = np.asarray(ppc.replicated["average_clustering"])
    obs_cc = float(ppc.observed["average_clustering"])
    ax_cc.hist(rep_cc, bins=30, color="C0", alpha=0.6, label="replicated")
    ax_cc.axvline(obs_cc, color="k", label="observed")
    ax_cc.set_xlabel("average clustering coefficient")
    ax_cc.set_ylabel("replicated networks")
    ax_cc.set_title(f"p = {ppc.p_values['average_clustering']:.2f}", fontsize=9)
    ax_cc.legend(frameon=False)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
    return fig


@dataclass(frozen=True)
class Reliability:
    """Numbers of a reliability diagram.

    Attributes
    ----------
    predicted : ndarray, shape (B,)
        Mean predicted probability in each non-empty bin.
    observed : ndarray, shape (B,)
        Fraction of links in each bin.
    counts : ndarray, shape (B,)
        Pairs per bin.
    edges : ndarray, shape (B + 1,)
        Bin edges (in probability).
    ece : float
        Expected calibration error ``sum_b counts_b / n * |observed_b - predicted_b|``.
    """

    predicted: np.ndarray
    observed: np.ndarray
    counts: np.ndarray
    edges: np.ndarray
    ece: float


def reliability(
    labels: Any, probs: Any, n_bins: int = 10, strategy: str = "quantile"
) -> Reliability:
    """Calibration of predicted link probabilities on held-out pairs.

    Parameters
    ----------
    labels : array-like of {0, 1}
        Held-out links.
    probs : array-like of float in [0, 1]
        Predicted link probabilities.
    n_bins : int
        Number of bins.
    strategy : {"quantile", "uniform"}
        ``"quantile"``: bins holding equal numbers of pairs (the default: link
        probabilities of sparse networks crowd near 0, leaving most uniform bins empty);
        ``"uniform"``: equal-width bins on [0, 1]. Empty bins are dropped.

    Returns
    -------
    Reliability

    Examples
    --------
    >>> r = reliability([0, 0, 1, 1], [0.1, 0.1, 0.9, 0.9], n_bins=2, strategy="uniform")
    >>> r.predicted.tolist(), r.observed.tolist(), round(r.ece, 3)
    ([0.1, 0.9], [0.0, 1.0], 0.1)
    """
    y, p = _np(labels).astype(np.float64).ravel(), _np(probs).astype(np.float64).ravel()
    if y.size != p.size or y.size == 0:
        raise ValueError(f"labels and probs must have the same non-zero length: {y.size}, {p.size}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0/1")
    if np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise ValueError("probs must be probabilities in [0, 1]")
    if n_bins < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    if strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
        if edges.size < 2:
            edges = np.array([p[0], p[0]])
    elif strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, edges.size - 2)
    counts = np.bincount(idx, minlength=edges.size - 1)
    keep = counts > 0
    pred = np.bincount(idx, weights=p, minlength=edges.size - 1)[keep] / counts[keep]
    obs = np.bincount(idx, weights=y, minlength=edges.size - 1)[keep] / counts[keep]
    ece = float(np.sum(counts[keep] / y.size * np.abs(obs - pred)))
    return Reliability(pred, obs, counts[keep], edges, ece)


def plot_reliability(
    rel: Reliability,
    label: str | None = None,
    ax: Axes | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Reliability diagram: observed link frequency against mean predicted probability.

    Both axes are logarithmic (sparse networks' probabilities span decades); the diagonal
    is perfect calibration. Call again with the same ``ax`` to overlay models.

    Parameters
    ----------
    rel : Reliability
        From :func:`reliability`.
    label : str, optional
        Legend entry (the ECE is appended).
    ax : matplotlib Axes, optional
        Where to draw (default: a new figure).
    path : path, optional
        Where to save the figure (PNG).
    """
    if ax is None:
        fig = new_figure(1, 4.6)
        ax = fig.axes[0]
        lim = [1e-6, 1.0]
        ax.plot(lim, lim, color="0.6", lw=1, ls="--", label="calibrated")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("mean predicted link probability")
        ax.set_ylabel("observed link frequency")
    fig = ax.figure
    text = f"ECE {rel.ece:.4f}" if label is None else f"{label} (ECE {rel.ece:.4f})"
    floor = 1e-4  # bins with no link are drawn at the floor of the log axis
    ax.plot(rel.predicted, np.maximum(rel.observed, floor), "o-", ms=4, label=text)
    ax.legend(frameon=False, fontsize=8)
    save_figure(fig, path)  # type: ignore[arg-type]
    return fig  # type: ignore[return-value]
