"""Simulation-based calibration (SBC): rank statistics, uniformity tests and rank histograms.

Talts et al. (2018, "Validating Bayesian inference algorithms with simulation-based
calibration") observe that if ``theta ~ p(theta)``, ``y ~ p(y | theta)`` and
``theta_1..theta_L`` are draws from the exact posterior ``p(theta | y)``, then the rank of the
truth among the draws, ``#{l : theta_l < theta}``, is uniform on ``{0, ..., L}``. A sampler or a
variational approximation that is wrong shows up in the histogram of the ranks over many
simulated data sets: a U shape (the truth often outside every draw) means the draws are
over-confident or mix too slowly, a hump in the middle means they are over-dispersed, a slope
means a bias. The draws must be (nearly) independent: thin a Markov chain to about its
effective sample size first (:func:`thin`).

Functions here are pure NumPy/SciPy on arrays of truths and draws; matplotlib is imported
only inside :func:`plot_rank_histograms`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SBCResult",
    "chi2_uniformity",
    "ks_uniformity",
    "outside_fraction",
    "plot_rank_histograms",
    "prior_draw",
    "rank_coverage",
    "rank_histogram",
    "run_sbc",
    "sbc_quantities",
    "sbc_ranks",
    "thin",
]

log = logging.getLogger(__name__)


def thin(draws: Any, num: int, axis: int = 0) -> np.ndarray:
    """``num`` evenly spaced draws along ``axis`` (first and last included).

    Parameters
    ----------
    draws : array-like
        Draws with a sample axis.
    num : int
        How many to keep (at most the number of draws).
    axis : int
        The sample axis.

    Returns
    -------
    numpy.ndarray
        The kept draws, in order.

    Examples
    --------
    >>> thin(np.arange(10), 4).tolist()
    [0, 3, 6, 9]
    """
    x = np.asarray(draws)
    n = x.shape[axis]
    if not 1 <= num <= n:
        raise ValueError(f"cannot keep {num} of {n} draws")
    index = np.round(np.linspace(0, n - 1, num)).astype(int)
    return np.take(x, index, axis=axis)


def sbc_ranks(truth: Any, draws: Any) -> np.ndarray:
    """Rank of each true value among its posterior draws: ``#{l : draws[l] < truth}``.

    Parameters
    ----------
    truth : array-like, shape (*Q)
        The values the data were simulated from (any shape, e.g. one entry per quantity).
    draws : array-like, shape (L, *Q)
        ``L`` posterior draws of the same quantities.

    Returns
    -------
    numpy.ndarray of int, shape (*Q)
        Ranks in ``{0, ..., L}``; uniform over simulated data sets when the draws are
        independent draws of the exact posterior.

    Examples
    --------
    >>> sbc_ranks([0.5, 2.0], [[0.0, 3.0], [1.0, 1.0], [0.2, 0.0]]).tolist()
    [2, 2]
    """
    t = np.asarray(truth, dtype=np.float64)
    d = np.asarray(draws, dtype=np.float64)
    if d.shape[1:] != t.shape:
        raise ValueError(f"draws {d.shape} do not match the truth {t.shape} after the first axis")
    return (d < t).sum(0)


def _bin_edges(num_draws: int, bins: int) -> np.ndarray:
    """Edges splitting the ranks ``0..num_draws`` into ``bins`` contiguous groups of as equal
    a size as possible (``edges[j] <= rank < edges[j + 1]``)."""
    if not 1 <= bins <= num_draws + 1:
        raise ValueError(f"need 1 <= bins <= {num_draws + 1}, got {bins}")
    return np.round(np.linspace(0, num_draws + 1, bins + 1)).astype(int)


def rank_histogram(ranks: Any, num_draws: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts of ranks in ``bins`` groups and the counts expected under uniformity.

    Parameters
    ----------
    ranks : array-like of int
        Ranks in ``{0, ..., num_draws}`` (one per simulated data set).
    num_draws : int
        Number of draws ``L`` the ranks were computed against.
    bins : int
        Number of groups of consecutive ranks (when ``bins`` does not divide ``L + 1`` the
        groups differ by one rank and the expected counts account for it).

    Returns
    -------
    counts, expected : numpy.ndarray
        Observed and expected counts per group.

    Examples
    --------
    >>> counts, expected = rank_histogram([0, 1, 2, 3, 3, 3], num_draws=3, bins=2)
    >>> counts.tolist(), expected.tolist()
    ([2, 4], [3.0, 3.0])
    """
    r = np.asarray(ranks).ravel()
    if r.size and (r.min() < 0 or r.max() > num_draws):
        raise ValueError(f"ranks must lie in [0, {num_draws}]")
    edges = _bin_edges(num_draws, bins)
    counts = np.histogram(r, bins=edges)[0]
    expected = r.size * np.diff(edges) / (num_draws + 1)
    return counts, expected


def chi2_uniformity(ranks: Any, num_draws: int, bins: int) -> tuple[float, float]:
    """Pearson's chi-square test that ranks are uniform on ``{0, ..., num_draws}``.

    Parameters
    ----------
    ranks : array-like of int
        One rank per simulated data set.
    num_draws : int
        Number of posterior draws ``L`` per data set.
    bins : int
        Groups of consecutive ranks (aim for at least 5 expected per group).

    Returns
    -------
    (float, float)
        The statistic and its p-value (``bins - 1`` degrees of freedom).

    Examples
    --------
    >>> stat, p = chi2_uniformity(np.arange(40) % 20, num_draws=19, bins=4)
    >>> stat, p
    (0.0, 1.0)
    >>> chi2_uniformity([0] * 20 + [19] * 20, num_draws=19, bins=4)[1] < 1e-6
    True
    """
    from scipy import stats

    counts, expected = rank_histogram(ranks, num_draws, bins)
    stat, p = stats.chisquare(counts, expected)
    return float(stat), float(p)


def ks_uniformity(ranks: Any, num_draws: int, seed: int = 0) -> tuple[float, float]:
    """Kolmogorov-Smirnov test of uniformity of randomised ranks.

    A rank ``r`` out of ``L`` draws becomes ``(r + u) / (L + 1)`` with ``u ~ U(0, 1)`` (drawn
    from a generator seeded with ``seed``), which is exactly ``Uniform(0, 1)`` when the ranks
    are uniform, so the continuous KS test applies without a correction for ties.

    Parameters
    ----------
    ranks : array-like of int
        One rank per simulated data set.
    num_draws : int
        Number of posterior draws ``L`` per data set.
    seed : int
        Seed of the randomisation.

    Returns
    -------
    (float, float)
        The KS statistic and its p-value.

    Examples
    --------
    >>> ks_uniformity([0] * 30, num_draws=19)[1] < 1e-6
    True
    """
    from scipy import stats

    r = np.asarray(ranks, dtype=np.float64).ravel()
    u = np.random.default_rng(seed).uniform(size=r.size)
    res = stats.kstest((r + u) / (num_draws + 1), "uniform")
    return float(res.statistic), float(res.pvalue)


def rank_coverage(ranks: Any, num_draws: int, level: float = 0.9) -> tuple[float, float]:
    """Coverage of central posterior intervals, read off the SBC ranks.

    With ``L`` draws the truth lies strictly inside the ``k``-th smallest and the ``k``-th
    largest draw when ``k <= rank <= L - k``, which for a calibrated posterior happens with
    probability exactly ``(L + 1 - 2k) / (L + 1)``. ``k`` is chosen so that this nominal
    level is the closest to ``level``; sample quantiles of a few draws would instead give
    intervals that cover less than their name says (the 5-95% range of 19 draws covers 80%).

    Parameters
    ----------
    ranks : array-like of int
        One rank per simulated data set.
    num_draws : int
        Draws ``L`` per data set.
    level : float
        Wanted interval probability (exact when ``(1 - level) (L + 1) / 2`` is an integer,
        e.g. ``L = 19, 39, 99`` for 90%).

    Returns
    -------
    (float, float)
        The observed coverage and its nominal value.

    Examples
    --------
    >>> rank_coverage([0, 1, 10, 19], num_draws=19, level=0.9)  # ranks 1..18 are inside
    (0.5, 0.9)
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    r = np.asarray(ranks).ravel()
    k = int(np.clip(round((1 - level) * (num_draws + 1) / 2), 0, num_draws // 2))
    nominal = (num_draws + 1 - 2 * k) / (num_draws + 1)
    return float(np.mean((r >= k) & (r <= num_draws - k))), float(nominal)


def outside_fraction(ranks: Any, num_draws: int) -> tuple[float, float]:
    """Fractions of data sets whose truth lies below every draw (rank 0) and above every
    draw (rank ``L``); ``1 / (L + 1)`` each for a calibrated posterior.

    Examples
    --------
    >>> outside_fraction([0, 0, 5, 9], num_draws=9)
    (0.5, 0.25)
    """
    r = np.asarray(ranks).ravel()
    return float(np.mean(r == 0)), float(np.mean(r == num_draws))


def plot_rank_histograms(
    ranks: Mapping[str, Sequence[int] | np.ndarray],
    num_draws: int,
    bins: int,
    title: str | None = None,
    path: str | Path | None = None,
    band: float = 0.99,
    ncols: int = 4,
):
    """One SBC rank histogram per quantity, with the band a uniform histogram stays in.

    Parameters
    ----------
    ranks : dict of str to array-like of int
        Ranks of each quantity over the simulated data sets.
    num_draws : int
        Number of draws ``L`` the ranks were computed against.
    bins : int
        Groups of consecutive ranks per histogram.
    title : str, optional
        Figure title.
    path : str or Path, optional
        Save the figure there (PNG, 110 dpi) and close it.
    band : float
        Pointwise probability of the grey band: the central binomial interval of each
        group's count under uniformity.
    ncols : int
        Panels per row.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (closed when saved to ``path``).
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from scipy import stats

    names = list(ranks)
    ncols = max(1, min(ncols, len(names)))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 2.4 * nrows), squeeze=False)
    edges = _bin_edges(num_draws, bins)
    for ax, name in zip(axes.ravel(), names, strict=False):
        counts, expected = rank_histogram(ranks[name], num_draws, bins)
        n = int(np.asarray(ranks[name]).size)
        prob = np.diff(edges) / (num_draws + 1)
        lo = stats.binom.ppf((1 - band) / 2, n, prob)
        hi = stats.binom.ppf((1 + band) / 2, n, prob)
        steps = np.column_stack([edges[:-1], edges[1:]]).ravel()
        ax.fill_between(steps, np.repeat(lo, 2), np.repeat(hi, 2), color="0.85", lw=0)
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge",
               color="tab:blue", edgecolor="white")
        ax.plot(steps, np.repeat(expected, 2), color="k", lw=0.8)
        p = chi2_uniformity(ranks[name], num_draws, bins)[1]
        ax.set_title(f"{name}\nchi2 p = {p:.2g}", fontsize=9)
        ax.set_xlim(0, num_draws + 1)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


# ------------------------------------------------------------------ simulation
def prior_draw(model: Any, pattern: Any, seed: int) -> tuple[dict[str, Any], Any]:
    """Draw every latent site and the observations from the prior of a factor model.

    The observations are drawn at the positions of ``pattern`` (its values are ignored) by
    tracing ``model.model(pattern, predict=True)``; the global random state is restored
    afterwards, so the draw depends on ``seed`` alone.

    Parameters
    ----------
    model : GaussianFactorModel
        E.g. a :class:`~bayesmf.models.BayesianMF`; give it a fixed ``global_mean`` so that
        fitting does not move the offset away from the one the data were drawn with.
    pattern : Ratings
        The observed positions.
    seed : int
        Seed of the draw.

    Returns
    -------
    (dict of str to tensor, Ratings)
        The true value of every latent site and the simulated ratings.

    Examples
    --------
    >>> from bayesmf import data, models
    >>> R = data.Ratings([0, 1, 2], [1, 0, 1], [0.0, 0.0, 0.0], shape=(3, 2))
    >>> m = models.BayesianMF(3, 2, rank=1, global_mean=0.0)
    >>> z, sim = prior_draw(m, R, seed=0)
    >>> sorted(z)[:3], sim.values.shape
    (['U', 'V', 'col_bias'], torch.Size([3]))
    >>> bool((prior_draw(m, R, seed=0)[1].values == sim.values).all())
    True
    """
    import pyro
    import torch

    from ..data import Ratings

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        trace = pyro.poutine.trace(model.model).get_trace(pattern, predict=True)
    z = {
        name: node["value"].detach()
        for name, node in trace.nodes.items()
        if node["type"] == "sample" and name != "obs"
    }
    values = trace.nodes["obs"]["value"].detach()
    sim = Ratings(pattern.rows, pattern.cols, values, shape=tuple(pattern.shape))
    return z, sim


def sbc_quantities(
    model: Any, z: Mapping[str, Any], rows: Any, cols: Any
) -> dict[str, np.ndarray]:
    """Scalar quantities checked by SBC, from one state or a stack of draws.

    Every entry of every positive site (the noise, the prior scales), the first entry of
    each real vector (the biases), the norm of the first row of each real matrix (``|u_0|``,
    ``|v_0|``: invariant under the rotations and sign flips of the factors, which a sampler
    need not explore since they leave the likelihood unchanged) and the latent function
    ``E[x | z]`` at the cells ``(rows, cols)``.

    Parameters
    ----------
    model : FactorModel
        The model (its :meth:`latent_specs` and :meth:`expected`).
    z : dict of str to tensor
        Site values, each either of the site's shape or with one leading draw dimension.
    rows, cols : LongTensor
        Cells at which the latent function is checked.

    Returns
    -------
    dict of str to numpy.ndarray
        Each ``()`` for one state, ``(S,)`` for ``S`` draws.
    """
    import torch

    specs = model.latent_specs()
    first = specs[0]
    batched = z[first.name].dim() > len(first.shape)
    zz = {k: torch.as_tensor(v) if batched else torch.as_tensor(v).unsqueeze(0)
          for k, v in z.items()}
    out: dict[str, Any] = {}
    for spec in specs:
        v = zz[spec.name].double()
        flat = v.reshape(v.shape[0], -1)
        if spec.positive:
            for j in range(flat.shape[1]):
                out[spec.name if flat.shape[1] == 1 else f"{spec.name}[{j}]"] = flat[:, j]
        elif len(spec.shape) == 1:
            out[f"{spec.name}[0]"] = v[:, 0]
        elif len(spec.shape) == 2:
            out[f"|{spec.name}[0]|"] = v[:, 0].norm(dim=-1)
    rows = torch.as_tensor(rows, dtype=torch.long)
    cols = torch.as_tensor(cols, dtype=torch.long)
    with torch.no_grad():
        f = model.expected({k: v for k, v in zz.items()}, rows, cols).double()
    for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
        out[f"f[{r},{c}]"] = f[:, i]
    return {k: (np.asarray(v.cpu()) if batched else np.asarray(v.cpu())[0])
            for k, v in out.items()}


@dataclass
class SBCResult:
    """Ranks and interval coverage of an SBC run.

    Attributes
    ----------
    ranks : dict of str to numpy.ndarray of int
        Rank of each quantity's truth among its ``num_draws`` draws, one per replication.
    num_draws : int
        Draws per replication (ranks lie in ``0..num_draws``).
    seconds : float
        Wall-clock time of the fits.
    """

    ranks: dict[str, np.ndarray]
    num_draws: int
    seconds: float = 0.0

    def summary(self, bins: int, level: float = 0.9) -> dict[str, dict[str, float]]:
        """Per quantity: chi-square (``bins`` groups) and KS p-values, the coverage of the
        central ``level`` intervals (:func:`rank_coverage`; ``coverage_nominal`` is its
        exact target), the fractions of truths below and above every draw
        (``1 / (num_draws + 1)`` each when calibrated) and the mean rank scaled to [0, 1].

        Examples
        --------
        >>> res = SBCResult({"a": np.arange(40) % 20}, num_draws=19)
        >>> s = res.summary(bins=5)["a"]
        >>> s["chi2_p"], s["coverage"], s["coverage_nominal"], s["below_all"]
        (1.0, 0.9, 0.9, 0.05)
        """
        out = {}
        for name, r in self.ranks.items():
            below, above = outside_fraction(r, self.num_draws)
            cov, nominal = rank_coverage(r, self.num_draws, level)
            out[name] = {
                "chi2_p": chi2_uniformity(r, self.num_draws, bins)[1],
                "ks_p": ks_uniformity(r, self.num_draws)[1],
                "coverage": cov,
                "coverage_nominal": nominal,
                "below_all": below,
                "above_all": above,
                "mean_rank": float(np.mean(r) / self.num_draws),
            }
        return out


def run_sbc(
    make_model: Callable[[], Any],
    pattern: Any,
    fit: Callable[[Any, Any, int], Mapping[str, Any]],
    replications: int,
    num_draws: int,
    cells: tuple[Any, Any],
    seed: int = 0,
    predictive: bool = True,
) -> SBCResult:
    """Simulation-based calibration of a fitting procedure on a factor model's prior.

    For each replication ``i``: draw the latents and the ratings from the prior
    (:func:`prior_draw`, seed ``seed + i``), fit, and rank every quantity of
    :func:`sbc_quantities` among the fit's draws; with ``predictive``, also a new
    observation ``y[r,c]`` at each cell (the truth drawn given the true latents, the draws
    from the posterior predictive: one per posterior draw).

    Parameters
    ----------
    make_model : callable
        Returns a fresh model (with a fixed ``global_mean``).
    pattern : Ratings
        Observed positions, the same in every replication.
    fit : callable
        ``fit(model, ratings, seed)`` returns ``num_draws`` (nearly independent) posterior
        draws of every site, each with a leading draw dimension.
    replications : int
        Number of simulated data sets.
    num_draws : int
        Draws per fit.
    cells : (LongTensor, LongTensor)
        Rows and columns where the latent function is checked.
    seed : int
        Seed of the first replication.
    predictive : bool
        Add the new observations ``y[r,c]`` at ``cells``.

    Returns
    -------
    SBCResult

    Examples
    --------
    Draws from the prior ignore the data, so they are the exact posterior of a fit that
    sees nothing, and their ranks are uniform:

    >>> from bayesmf import data, models
    >>> R = data.Ratings([0, 1], [1, 0], [0.0, 0.0], shape=(2, 2))
    >>> make = lambda: models.BayesianMF(2, 2, rank=1, global_mean=0.0)
    >>> def prior_fit(model, ratings, seed):
    ...     zs = [prior_draw(model, ratings, 1000 * seed + l)[0] for l in range(4)]
    ...     return {k: torch.stack([z[k] for z in zs]) for k in zs[0]}
    >>> import torch
    >>> res = run_sbc(make, R, prior_fit, replications=20, num_draws=4,
    ...               cells=(torch.tensor([0]), torch.tensor([0])))
    >>> min(s["chi2_p"] for s in res.summary(bins=5).values()) > 0.001
    True
    """
    import time

    import torch

    rows, cols = cells
    ranks: dict[str, list[int]] = {}
    t0 = time.perf_counter()
    for i in range(replications):
        model = make_model()
        z_true, sim = prior_draw(model, pattern, seed + i)
        truth = sbc_quantities(model, z_true, rows, cols)
        draws = fit(model, sim, seed + i)
        got = {k: torch.as_tensor(v)[:num_draws] for k, v in draws.items()}
        if next(iter(got.values())).shape[0] != num_draws:
            raise ValueError(f"fit returned fewer than {num_draws} draws")
        q = sbc_quantities(model, got, rows, cols)
        if predictive:
            gen = torch.Generator(device=model.device).manual_seed(seed + i)
            with torch.no_grad():
                one = {k: v.unsqueeze(0) for k, v in z_true.items()}
                y_true = model.predictive_draws(one, rows, cols, generator=gen)[0]
                y = model.predictive_draws(got, rows, cols, generator=gen)
            for j, (r, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
                truth[f"y[{r},{c}]"] = y_true[j].double().cpu().numpy()
                q[f"y[{r},{c}]"] = y[:, j].double().cpu().numpy()
        for name, t in truth.items():
            ranks.setdefault(name, []).append(int(sbc_ranks(t, q[name])))
    seconds = time.perf_counter() - t0
    log.info("SBC: %d replications in %.1f s", replications, seconds)
    return SBCResult({k: np.asarray(v) for k, v in ranks.items()}, num_draws, seconds)
