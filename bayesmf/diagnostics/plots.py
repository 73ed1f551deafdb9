"""Plots of a variational fit: optimisation trace and posterior predictive check.

The figures are built on :class:`matplotlib.figure.Figure` directly, not on
``pyplot``: no GUI backend is selected or needed (PNG files are written by the Agg
canvas), no global figure state is touched, and the functions run in headless jobs.
Matplotlib is imported inside the functions so that ``import bayesmf`` stays light.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data.containers import Ratings

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_elbo", "plot_ppc", "CALIBRATION_LEVELS"]

log = logging.getLogger(__name__)

#: nominal central-interval levels of the calibration panel of :func:`plot_ppc`
CALIBRATION_LEVELS = tuple(round(0.1 * i, 1) for i in range(1, 10))


def new_figure(ncols: int, width: float) -> Figure:
    """A pyplot-free figure (no GUI backend, no global state) with ``ncols`` axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 3.8), layout="constrained")
    fig.subplots(1, ncols)
    return fig


def save_figure(fig: Figure, path: str | Path | None) -> None:
    """Write ``fig`` to ``path`` (parent folders created) unless ``path`` is None."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        log.info("saved %s", path)


def plot_elbo(fit: Any, ax: Axes | None = None, path: str | Path | None = None) -> Figure:
    """ELBO per rating by epoch, with the validation RMSE on a twin axis when recorded.

    Epochs of a KL warm-up (``fit_svi(kl_warmup=...)``), whose objective is the annealed
    ELBO, are shaded.

    Parameters
    ----------
    fit : VariationalFit
        A fit from :func:`bayesmf.inference.fit_svi` (uses ``fit.history``).
    ax : matplotlib Axes, optional
        Where to draw (default: a new figure).
    path : path, optional
        Also save the figure there as a PNG.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from bayesmf import data, inference, models
    >>> R, _ = data.synthetic_ratings(n_rows=20, n_cols=15, rank=2, density=0.4, seed=0)
    >>> fit = inference.fit_svi(models.BayesianMF(20, 15, rank=2), R, epochs=5, val=R,
    ...                         batch_size=None, lr=0.05, progress=False)
    >>> fig = plot_elbo(fit)
    >>> [a.get_ylabel() for a in fig.axes]
    ['ELBO per rating', 'validation RMSE']
    """
    from matplotlib.ticker import MaxNLocator

    parts = list(getattr(fit, "components", None) or [fit])  # restarts: one line each
    history = getattr(parts[0], "history", {}) or {}
    elbos = [np.asarray((getattr(p, "history", {}) or {}).get("elbo", []), dtype=float)
             for p in parts]
    if elbos[0].size == 0:
        raise ValueError("the fit has no ELBO history")
    if ax is None:
        fig = new_figure(1, 6.0)
        ax = fig.axes[0]
    fig = ax.figure
    lines = []
    for r, elbo in enumerate(elbos):
        label = "ELBO per rating" if len(elbos) == 1 else f"ELBO per rating, restart {r}"
        lines += ax.plot(np.arange(1, elbo.size + 1), elbo, color="C0", lw=1.5,
                         alpha=1.0 if r == 0 else 0.5, label=label)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("ELBO per rating", color="C0")
    ax.grid(alpha=0.3)
    warm = np.asarray(history.get("kl_weight", []) or [], dtype=float)
    if warm.size and (warm < 1).any():  # the annealed ELBO is not the ELBO: mark those epochs
        end = int(np.argmax(warm >= 1)) + 1 if (warm >= 1).any() else warm.size
        ax.axvspan(0.5, end + 0.5, color="0.9", zorder=0)
        ax.text(0.5 + end / 2, 0.02, "KL warm-up", transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=8, color="0.4")
    val = np.asarray(history.get("val", []) or [], dtype=float)
    if val.size:
        val_epochs = 1 + np.asarray(history.get("val_epoch", np.arange(val.size)), dtype=float)
        ax2 = ax.twinx()
        lines += ax2.plot(val_epochs, val, color="C1", lw=1.5, ls="--", label="validation RMSE")
        ax2.set_ylabel("validation RMSE", color="C1")
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center right", frameon=False)
    ax.set_title(f"SVI trace: {type(fit.model).__name__}")
    save_figure(fig, path)
    return fig


def _bins(observed: np.ndarray, draws: np.ndarray, scale: Any) -> np.ndarray:
    """Integer-centred bins for integer ratings, else 30 bins over the central range."""
    if np.allclose(observed, np.round(observed)):
        lo, hi = (observed.min(), observed.max()) if scale is None else scale
        return np.arange(np.floor(lo) - 1.5, np.ceil(hi) + 1.5 + 1e-9, 1.0)
    lo = min(observed.min(), np.quantile(draws, 0.005))
    hi = max(observed.max(), np.quantile(draws, 0.995))
    return np.linspace(lo, hi, 31)


def plot_ppc(
    fit: Any,
    test: Ratings,
    num_samples: int = 200,
    ax: Sequence[Axes] | None = None,
    path: str | Path | None = None,
    seed: int = 0,
    n_draws_shown: int = 20,
) -> Figure:
    """Posterior predictive check on held-out ratings and calibration of the intervals.

    Left: histogram (density) of the observed test ratings against the predictive
    distribution: thin lines for ``n_draws_shown`` single predictive draws of all the
    test ratings and a thick line for all draws pooled. Integer ratings get one bin per
    rating value (predictive draws fall into the nearest one). Right: empirical coverage
    of the central predictive intervals against their nominal level (0.1, ..., 0.9);
    a calibrated model follows the diagonal.

    Parameters
    ----------
    fit : VariationalFit
        The fit.
    test : Ratings
        Held-out ratings.
    num_samples : int
        Predictive draws (``fit.predictive_samples(test, num_samples, seed)``).
    ax : pair of matplotlib Axes, optional
        Where to draw the two panels (default: a new figure).
    path : path, optional
        Also save the figure there as a PNG.
    seed : int
        Seed of the draws.
    n_draws_shown : int
        Number of single draws drawn as thin lines.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from bayesmf import data, inference, models
    >>> R, _ = data.synthetic_ratings(n_rows=20, n_cols=15, rank=2, density=0.4, seed=0)
    >>> fit = inference.fit_svi(models.BayesianMF(20, 15, rank=2), R, epochs=5,
    ...                         batch_size=None, lr=0.05, progress=False)
    >>> fig = plot_ppc(fit, R, num_samples=50)
    >>> [a.get_xlabel() for a in fig.axes]
    ['rating', 'nominal level of the central interval']
    """
    if ax is None:
        fig = new_figure(2, 10.0)
        ax_hist, ax_cal = fig.axes
    else:
        ax_hist, ax_cal = ax
        fig = ax_hist.figure
    with torch.no_grad():
        x = fit.predictive_samples(test, num_samples, seed)
    draws = x.detach().cpu().double().numpy()
    observed = test.values.detach().cpu().double().numpy()

    bins = _bins(observed, draws, test.scale)
    centers = (bins[:-1] + bins[1:]) / 2
    rng = np.random.default_rng(seed)
    shown = rng.choice(draws.shape[0], size=min(n_draws_shown, draws.shape[0]), replace=False)
    for i, s in enumerate(shown):
        h, _ = np.histogram(draws[s], bins=bins, density=True)
        ax_hist.plot(
            centers, h, color="C0", alpha=0.25, lw=0.8, label="single draws" if i == 0 else None
        )
    pooled, _ = np.histogram(draws.ravel(), bins=bins, density=True)
    ax_hist.plot(centers, pooled, color="C0", lw=2.0, label="posterior predictive")
    ax_hist.hist(observed, bins=bins, density=True, color="0.3", alpha=0.35, label="observed")
    ax_hist.set_xlabel("rating")
    ax_hist.set_ylabel("density")
    ax_hist.set_title(f"Posterior predictive check ({len(test)} test ratings)")
    ax_hist.legend(frameon=False, fontsize="small")

    from .vi import interval_coverage

    levels = CALIBRATION_LEVELS
    cov = interval_coverage(fit, test, levels=levels, num_samples=num_samples, seed=seed)
    ax_cal.plot([0, 1], [0, 1], color="0.5", ls=":", lw=1, label="calibrated")
    ax_cal.plot(levels, [cov[v] for v in levels], "o-", color="C3", label="empirical")
    ax_cal.set_xlim(0, 1)
    ax_cal.set_ylim(0, 1)
    ax_cal.set_aspect("equal")
    ax_cal.set_xlabel("nominal level of the central interval")
    ax_cal.set_ylabel("empirical coverage")
    ax_cal.set_title("Interval calibration")
    ax_cal.grid(alpha=0.3)
    ax_cal.legend(frameon=False, loc="upper left")
    save_figure(fig, path)
    return fig
