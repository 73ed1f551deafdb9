"""Diagnostics of a variational fit: PSIS k-hat ("Yes, but did it work?") and coverage.

:func:`pareto_khat` implements the diagnostic of Yao, Vehtari, Simpson & Gelman (2018):
draw ``z_s ~ q``, form the log importance ratios ``log p(z_s, x) - log q(z_s)`` and fit a
generalized Pareto distribution to their largest values (Pareto smoothed importance
sampling, Vehtari et al. 2024). The fitted shape ``k`` measures how heavy the right
tail of ``p / q`` is: below 0.7 importance sampling from ``q`` is reliable (and ``q`` is
close to the posterior in the directions that matter); above it the variational
approximation misses posterior mass, typically because a mean-field ``q`` is too
narrow. High-dimensional mean-field fits of matrix factorization models usually give
``k > 0.7``; the value is most useful to compare fits of the same data.

:func:`interval_coverage` checks the calibration of the posterior predictive intervals
on held-out ratings, and :func:`log_predictive_density` scores the predictive distribution
itself: ``log mean_s p(x_i | z_s)`` per held-out rating, with ``z_s`` draws of the fit (the
held-out counterpart of PSIS-LOO on the training ratings, and needing no importance
sampling). Both respect integer rating scales: for a model with
``likelihood="discretized"`` intervals have integer ends and the densities are
probabilities; for a Gaussian model ``discretize=True`` evaluates the Gaussian predictive
mapped to the scale (each draw rounded to the nearest level and clamped to the ends), so
that its scores are comparable with a discrete model's.

The PSIS step uses ArviZ when it offers the ArviZ < 1 function ``az.psislw``, otherwise
``arviz_stats`` (ArviZ >= 1), and, when neither is usable, a NumPy implementation of the
same algorithm (:func:`psislw`, Zhang & Stephens 2009 tail fit) that is part of this
module.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyro.distributions as dist
import torch

from ..data.containers import Ratings
from ..models.base import DiscretizedNormal, GaussianFactorModel, prior_normal_params
from .metrics import coverage

__all__ = [
    "PSISResult",
    "PredictiveDensity",
    "interval_bounds",
    "interval_coverage",
    "log_joint",
    "log_predictive_density",
    "log_prior",
    "pareto_khat",
    "psislw",
]

log = logging.getLogger(__name__)

#: elements per intermediate tensor when a computation is split into chunks
_CHUNK_ELEMENTS = 2**24


@dataclass
class PSISResult:
    """Result of :func:`pareto_khat`.

    Attributes
    ----------
    khat : float
        Estimated shape of the generalized Pareto tail of the importance ratios.
    log_weights : ndarray, shape (num_samples,)
        Pareto-smoothed, normalized log importance weights (``logsumexp == 0``).
    ess : float
        Effective sample size of the smoothed weights, ``1 / sum(w**2)``.
    threshold : float
        ``khat`` below this value means the approximation is reliable (0.7).
    reliable : bool
        ``khat < threshold``.
    log_ratios : ndarray, shape (num_samples,)
        The raw log ratios ``log p(z_s, x) - log q(z_s)``; their mean estimates the ELBO.
    """

    khat: float
    log_weights: np.ndarray
    ess: float
    threshold: float = 0.7
    reliable: bool = field(init=False)
    log_ratios: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.khat = float(self.khat)
        self.ess = float(self.ess)
        self.reliable = bool(self.khat < self.threshold)

    @property
    def reading(self) -> str:
        """What ``khat`` says about this fit, in words (Yao et al. 2018's thresholds)."""
        n = len(self.log_weights)
        head = f"k-hat {self.khat:.2f} (ESS {self.ess:.0f} of {n} draws): "
        if self.khat < 0.5:
            return head + ("q is close to the posterior; its means, intervals and "
                           "importance-weighted estimates can be trusted.")
        if self.khat < self.threshold:
            return head + ("q is usable: its summaries are good approximations, and "
                           "importance sampling with it converges, slowly.")
        if self.khat < 1.0:
            return head + ("q misses part of the posterior's mass: its variances and "
                           "tail intervals are doubtful; check them against held-out "
                           "coverage or an exact sampler (fit_gibbs, NUTS).")
        return head + ("q is far from the joint posterior (usual for a mean-field q of "
                       "thousands of latent entries, whose small errors add up over the "
                       "dimensions): the importance ratios have no finite mean, so no "
                       "reweighting can repair it. Its predictions may still be "
                       "calibrated (interval_coverage on held-out data says), but read "
                       "its posterior of single entries and of the noise as approximate.")

    def __str__(self) -> str:
        return self.reading


# ------------------------------------------------------------------ densities
def log_prior(model: GaussianFactorModel, z: dict[str, torch.Tensor]) -> torch.Tensor:
    """Log prior density of latent values, summed over every latent site of ``model``.

    Positive sites have ``LogNormal(prior_loc, prior_scale)`` priors; real arrays have
    independent ``Normal(prior mean, prior scale)`` entries (latent or fixed, see
    :func:`bayesmf.models.base.prior_normal_params`). The
    values may carry leading sample dimensions; the result has those dimensions
    (``()`` for a single draw) and dtype float64.

    Parameters
    ----------
    model : GaussianFactorModel
        The model whose :meth:`latent_specs` define the priors.
    z : dict of tensors
        A value for every latent site, each of shape ``(*S, *spec.shape)``.

    Returns
    -------
    Tensor, shape ``S``

    Examples
    --------
    >>> from bayesmf import models
    >>> from bayesmf.inference.guides import MeanFieldGuide
    >>> m = models.BayesianMF(5, 4, rank=2)
    >>> z = MeanFieldGuide(m).sample_latents(3)
    >>> log_prior(m, z).shape
    torch.Size([3])
    """
    total: torch.Tensor | float = 0.0
    specs = model.latent_specs()
    shapes = {s.name: tuple(s.shape) for s in specs}
    for spec in specs:
        x = z[spec.name]
        batch = x.shape[: x.dim() - len(spec.shape)]
        if spec.positive:
            loc = torch.tensor(float(spec.prior_loc), dtype=x.dtype, device=x.device)
            scale = torch.tensor(float(spec.prior_scale), dtype=x.dtype, device=x.device)
            lp = dist.LogNormal(loc, scale).log_prob(x)
        else:
            mean, s = prior_normal_params(spec, z, x.device, shapes)
            lp = dist.Normal(mean.to(x.dtype), s.to(x.dtype)).log_prob(x)
        total = total + lp.double().reshape(*batch, -1).sum(-1)
    assert isinstance(total, torch.Tensor)
    return total


def _entry_chunk(model: GaussianFactorModel, num_draws: int) -> int:
    width = max(int(getattr(model, "n_inputs", 0) or 0), int(getattr(model, "rank", 0) or 0), 1)
    return max(1, _CHUNK_ELEMENTS // (num_draws * width))


def draw_chunk(model: GaussianFactorModel, n: int) -> int:
    width = max(int(getattr(model, "n_inputs", 0) or 0), int(getattr(model, "rank", 0) or 0), 1)
    return max(1, _CHUNK_ELEMENTS // max(1, n * width))


@torch.no_grad()
def log_joint(
    model: GaussianFactorModel, z: dict[str, torch.Tensor], data: Ratings
) -> torch.Tensor:
    """``log p(z, x) = log prior(z) + sum_i log p(x_i | z)`` over all of ``data``.

    Vectorized over the leading sample dimension of ``z`` and chunked over the entries of
    ``data`` so that memory stays bounded; accumulated in float64.

    Parameters
    ----------
    model : GaussianFactorModel
        The model.
    z : dict of tensors
        Latent draws with a leading sample dimension ``S``.
    data : Ratings
        The ratings (normally the training data of the fit).

    Returns
    -------
    Tensor, shape (S,), float64

    Examples
    --------
    >>> from bayesmf import data, models
    >>> from bayesmf.inference.guides import MeanFieldGuide
    >>> R, _ = data.synthetic_ratings(n_rows=5, n_cols=4, rank=2, density=0.5, seed=0)
    >>> m = models.BayesianMF(5, 4, rank=2)
    >>> log_joint(m, MeanFieldGuide(m).sample_latents(3), R).shape
    torch.Size([3])
    """
    total = log_prior(model, z)
    num_draws = int(total.shape[0]) if total.dim() else 1
    step = _entry_chunk(model, num_draws)
    for a in range(0, len(data), step):
        ll = model.log_likelihood(
            z, data.rows[a : a + step], data.cols[a : a + step], data.values[a : a + step]
        )
        total = total + ll.double().sum(-1)
    return total


# ----------------------------------------------------------------------- PSIS
def _gpd_fit_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Generalized Pareto fits to each row of ``x`` (rows of sorted positive exceedances, all
    of one length; Zhang & Stephens 2009): shapes ``k`` and scales ``sigma``.

    Empirical-Bayes estimate of ``b = -k / sigma`` on a grid, with the weakly informative
    prior on ``k`` of Vehtari et al. (2024) (``k`` pulled toward 0.5 with weight 10).
    """
    n = x.shape[1]
    m = 30 + int(math.sqrt(n))
    grid = 1.0 - np.sqrt(m / (np.arange(1, m + 1, dtype=np.float64) - 0.5))
    b = grid[None, :] / (3.0 * x[:, int(n / 4 + 0.5) - 1])[:, None] + (1.0 / x[:, -1])[:, None]
    k = np.log1p(-b[:, :, None] * x[:, None, :]).mean(axis=2)  # (rows, m)
    profile = n * (np.log(-b / k) - k - 1.0)
    # the grid's weights 1 / sum_j exp(profile_j - profile_i) are the softmax of the profile
    # (m exponentials a row instead of m^2); negligible ones are dropped
    weights = np.exp(profile - profile.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    weights = np.where(weights >= 10 * np.finfo(np.float64).eps, weights, 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    b_hat = (b * weights).sum(axis=1)
    k_hat = np.log1p(-b_hat[:, None] * x).mean(axis=1)
    sigma = -k_hat / b_hat
    return (n * k_hat + 10 * 0.5) / (n + 10), sigma


def _gpd_fit(x: np.ndarray) -> tuple[float, float]:
    """:func:`_gpd_fit_rows` of one vector."""
    k, sigma = _gpd_fit_rows(x[None, :])
    return float(k[0]), float(sigma[0])


def _gpd_quantiles(p: np.ndarray, k: float, sigma: float) -> np.ndarray:
    if abs(k) < np.finfo(np.float64).eps:
        return -sigma * np.log1p(-p)
    return sigma * np.expm1(-k * np.log1p(-p)) / k


def _logsumexp(x: np.ndarray) -> float:
    mx = float(np.max(x))
    return mx + math.log(float(np.exp(x - mx).sum()))


def psislw(log_ratios: Any, r_eff: float = 1.0) -> tuple[np.ndarray, float]:
    """Pareto smoothed importance sampling of one vector of log ratios (NumPy only).

    The ``M = ceil(min(S / 5, 3 sqrt(S / r_eff)))`` largest ratios are replaced by the
    expected order statistics of a generalized Pareto distribution fitted to them
    (Vehtari et al. 2024), truncated at the largest raw ratio; the same algorithm as
    ArviZ's ``psislw``, used when no ArviZ PSIS function is available.

    Parameters
    ----------
    log_ratios : array-like, shape (S,)
        Log importance ratios.
    r_eff : float
        Relative efficiency of the draws (1 for independent draws).

    Returns
    -------
    log_weights : ndarray, shape (S,)
        Smoothed log weights, normalized to ``logsumexp == 0``.
    khat : float
        Estimated Pareto shape (``inf`` when the tail has 4 draws or fewer).

    Examples
    --------
    >>> import numpy as np
    >>> lw, k = psislw(np.random.default_rng(0).normal(size=1000))
    >>> lw.shape, bool(k < 0.7), round(float(np.exp(lw).sum()), 6)
    ((1000,), True, 1.0)
    """
    x = np.array(log_ratios, dtype=np.float64).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError("log_ratios must be a non-empty vector of finite values")
    s = x.size
    x -= x.max()
    tail_len = math.ceil(min(s / 5.0, 3.0 * math.sqrt(s / r_eff)))
    order = np.argsort(x)
    cutoff = max(
        x[order[-tail_len - 1]] if tail_len < s else -np.inf, math.log(np.finfo(float).tiny)
    )
    tail = np.flatnonzero(x > cutoff)
    khat = math.inf
    if len(tail) > 4:
        tail = tail[np.argsort(x[tail])]
        exceed = np.exp(x[tail]) - math.exp(cutoff)
        khat, sigma = _gpd_fit(exceed)
        if np.isfinite(khat) and sigma > 0:
            p = (np.arange(len(tail)) + 0.5) / len(tail)
            x[tail] = np.log(_gpd_quantiles(p, khat, sigma) + math.exp(cutoff))
            x = np.minimum(x, 0.0)
    return x - _logsumexp(x), float(khat)


def _psis(log_ratios: np.ndarray) -> tuple[np.ndarray, float, str]:
    """Smoothed normalized log weights and k-hat, via ArviZ when it can (feature-detected)."""
    try:
        import arviz as az
    except ImportError:  # pragma: no cover - arviz is a dependency
        az = None
    if az is not None and hasattr(az, "psislw") and hasattr(az, "InferenceData"):
        # ArviZ < 1: psislw takes log ratios and returns normalized log weights
        lw, k = az.psislw(log_ratios.copy())
        return np.asarray(lw, dtype=np.float64), float(np.asarray(k)), "arviz"
    try:  # ArviZ >= 1: arviz_stats' array interface takes the *negated* log ratios
        from arviz_stats.base import array_stats

        lw, k = array_stats.psislw(-log_ratios, r_eff=1.0)
        lw = np.asarray(lw, dtype=np.float64).ravel()
        # the sign convention is checked, not assumed: smoothing keeps the order of ratios
        if lw.shape == log_ratios.shape and np.argmax(lw) == np.argmax(log_ratios):
            return lw - _logsumexp(lw), float(np.asarray(k)), "arviz_stats"
        log.debug("arviz_stats.psislw has an unexpected convention; using bayesmf's PSIS")
    except Exception as err:  # noqa: BLE001 - any failure falls back to the NumPy version
        log.debug("arviz_stats PSIS unavailable (%s); using bayesmf's PSIS", err)
    lw, k = psislw(log_ratios)
    return lw, k, "bayesmf"


def _guides(fit: Any) -> list[Any]:
    """The variational guide of ``fit``, or each component's of a mixture of SVI restarts."""
    parts = getattr(fit, "components", None) or [fit]
    if not all(hasattr(p, "guide") for p in parts):
        raise TypeError(f"pareto_khat needs a variational fit (draws from q with a density), "
                        f"got {type(fit).__name__} ({getattr(fit, 'inference_name', '?')})")
    return [p.guide for p in parts]


@torch.no_grad()
def pareto_khat(fit: Any, data: Ratings, num_samples: int = 1000, seed: int = 0) -> PSISResult:
    """PSIS diagnostic of a variational fit (Yao et al. 2018, "Yes, but did it work?").

    Draws ``z_s ~ q``, computes ``log p(z_s, x) - log q(z_s)`` with ``x`` all of ``data``
    (the training ratings), and fits a generalized Pareto distribution to the tail of the
    ratios. ``khat < 0.7`` means ``q`` is usable as an importance sampling proposal for
    the posterior; larger values flag an unreliable approximation.

    Parameters
    ----------
    fit : VariationalFit or MixtureFit
        A fit from :func:`bayesmf.inference.fit_svi` (with ``restarts > 1``, the mixture
        ``q = (1 / R) sum_r q_r`` of the restarts is the proposal).
    data : Ratings
        The training ratings of the fit (the likelihood of the joint density).
    num_samples : int
        Number of draws from ``q`` (at least 5 tail draws are needed: >= 25).
    seed : int
        Seed of the draws.

    Returns
    -------
    PSISResult

    Examples
    --------
    >>> from bayesmf import data, inference, models
    >>> R, _ = data.synthetic_ratings(n_rows=20, n_cols=15, rank=2, density=0.4, seed=0)
    >>> fit = inference.fit_svi(models.BayesianMF(20, 15, rank=2), R, epochs=5,
    ...                         batch_size=None, lr=0.05, progress=False)
    >>> res = pareto_khat(fit, R, num_samples=200)
    >>> res.log_weights.shape, bool(np.isfinite(res.khat))
    ((200,), True)
    """
    if num_samples < 25:
        raise ValueError(f"num_samples must be >= 25 for a Pareto tail fit, got {num_samples}")
    model: GaussianFactorModel = fit.model
    model.check_data(data)
    device = model.global_mean.device
    data = data.to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    guides = _guides(fit)
    ratios = []
    step = draw_chunk(model, len(data))
    # a mixture's draws come from each component in turn (equal shares); its density is
    # log q(z) = logsumexp_r log q_r(z) - log R
    shares = [num_samples // len(guides) + int(r < num_samples % len(guides))
              for r in range(len(guides))]
    for guide, n in zip(guides, shares, strict=True):
        for a in range(0, n, step):
            s = min(step, n - a)
            z = guide.sample_latents(s, generator=gen)
            log_q = torch.stack([g.log_q(z).double() for g in guides])
            log_q = torch.logsumexp(log_q, 0) - math.log(len(guides))
            ratios.append((log_joint(model, z, data) - log_q).cpu())
    log_ratios = torch.cat(ratios).numpy()
    if not np.all(np.isfinite(log_ratios)):
        raise FloatingPointError("non-finite log importance ratios; is the fit diverged?")
    lw, khat, backend = _psis(log_ratios)
    ess = float(np.exp(-_logsumexp(2.0 * lw)))
    log.info("PSIS k-hat %.3f (ESS %.1f of %d draws, via %s)", khat, ess, num_samples, backend)
    return PSISResult(khat=khat, log_weights=lw, ess=ess, log_ratios=log_ratios)


# ------------------------------------------------------------- integer scales
def _scale_levels(fit: Any, test: Ratings, discretize: bool | None) -> tuple[int, int] | None:
    """The integer levels the predictive is mapped to, or ``None`` for a continuous one.

    A discretized model uses its own levels; ``discretize=True`` on a Gaussian model uses
    the model's levels if set, else ``test.scale`` (which must be two integers)."""
    model = fit.model
    if getattr(model, "discrete", False):
        if discretize is False:
            raise ValueError("discretize=False: the model's likelihood is already discrete")
        return tuple(model.levels)
    if not discretize:
        return None
    if not isinstance(model, GaussianFactorModel):
        raise ValueError(f"discretize=True needs a Gaussian model, got {type(model).__name__}")
    scale = getattr(model, "levels", None) or getattr(test, "scale", None)
    if scale is None:
        raise ValueError("discretize=True needs the rating scale: test.scale is not set")
    low, high = (float(v) for v in scale)
    if not (low.is_integer() and high.is_integer() and low < high):
        raise ValueError(f"discretize=True needs an integer scale, got {scale}")
    return int(low), int(high)


# ------------------------------------------------------------------- coverage
def interval_bounds(
    draws: torch.Tensor, levels: Sequence[float], discrete: bool = False
) -> torch.Tensor:
    """Central predictive intervals from predictive draws, per entry.

    Parameters
    ----------
    draws : Tensor, shape (S, n)
        Predictive draws.
    levels : sequence of float
        Nominal levels in ``(0, 1)``.
    discrete : bool
        Integer draws: the lower end is the largest draw at or below the ``(1 - level) / 2``
        quantile and the upper end the smallest at or above the ``(1 + level) / 2`` one
        (``torch.quantile``'s ``"lower"``/``"higher"``), so the ends are levels of the scale
        and the interval holds at least ``level`` of the draws. Otherwise linear
        interpolation (as :meth:`predict_interval`).

    Returns
    -------
    Tensor, shape (len(levels), 2, n)
        ``[lower, upper]`` per level.
    """
    out = []
    # torch.quantile refuses inputs above 2**24 elements: split over the entries
    step = max(1, _CHUNK_ELEMENTS // max(1, draws.shape[0]))
    for v in levels:
        q = torch.tensor([(1 - v) / 2, (1 + v) / 2], dtype=draws.dtype, device=draws.device)
        if discrete:
            lo = torch.cat([torch.quantile(c, q[0], dim=0, interpolation="lower")
                            for c in draws.split(step, dim=1)])
            hi = torch.cat([torch.quantile(c, q[1], dim=0, interpolation="higher")
                            for c in draws.split(step, dim=1)])
            out.append(torch.stack([lo, hi]))
        else:
            out.append(torch.cat([torch.quantile(c, q, dim=0) for c in draws.split(step, dim=1)],
                                 dim=1))
    return torch.stack(out)


@torch.no_grad()
def interval_coverage(
    fit: Any,
    test: Ratings,
    levels: Sequence[float] = (0.5, 0.8, 0.9, 0.95),
    num_samples: int = 500,
    seed: int = 0,
    *,
    discretize: bool | None = None,
) -> dict[float, float]:
    """Empirical coverage of central posterior predictive intervals on held-out ratings.

    For each nominal ``level`` the interval is the one of :meth:`VariationalFit.
    predict_interval` (``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of
    ``num_samples`` predictive draws with seed ``seed``); the draws are made once and
    shared by all levels. A calibrated model covers about ``level`` of the test ratings.
    On an integer scale (a model with ``likelihood="discretized"``, or ``discretize=True``)
    the ends are integers (see :func:`interval_bounds`) and, the predictive being discrete,
    coverage is usually somewhat above ``level``.

    Parameters
    ----------
    fit : PosteriorFit
        The fit (SVI or Gibbs).
    test : Ratings
        Held-out ratings.
    levels : sequence of float
        Nominal levels in ``(0, 1)``.
    num_samples : int
        Predictive draws.
    seed : int
        Seed of the draws.
    discretize : bool, optional
        ``True`` with a Gaussian model: round each predictive draw to the nearest level of
        the integer scale (``test.scale``) and clamp it to the ends, i.e. the Gaussian
        predictive mapped to the scale. ``None`` (default): the model's own predictive.

    Returns
    -------
    dict
        ``{level: fraction of test ratings inside the interval}``.

    Examples
    --------
    >>> from bayesmf import data, inference, models
    >>> R, _ = data.synthetic_ratings(n_rows=20, n_cols=15, rank=2, density=0.4, seed=0)
    >>> fit = inference.fit_svi(models.BayesianMF(20, 15, rank=2), R, epochs=5,
    ...                         batch_size=None, lr=0.05, progress=False)
    >>> sorted(interval_coverage(fit, R, levels=(0.5, 0.9), num_samples=100))
    [0.5, 0.9]
    """
    levels = [float(v) for v in levels]
    if not levels or any(not 0.0 < v < 1.0 for v in levels):
        raise ValueError(f"levels must be in (0, 1), got {levels}")
    scale = _scale_levels(fit, test, discretize)
    x = fit.predictive_samples(test, num_samples, seed)
    if scale is not None:
        x = torch.round(x).clamp(*scale)
    bounds = interval_bounds(x, levels, discrete=scale is not None)
    values = test.values.to(bounds.device)
    return {v: coverage(values, bounds[i, 0], bounds[i, 1]) for i, v in enumerate(levels)}


# ------------------------------------------------------ log predictive density
@dataclass
class PredictiveDensity:
    """Result of :func:`log_predictive_density`.

    Attributes
    ----------
    mean : float
        Mean over the ratings of ``log mean_s p(x_i | z_s)`` (nats per rating).
    total : float
        Its sum over the ratings.
    pointwise : ndarray, shape (n,)
        ``log mean_s p(x_i | z_s)`` per rating (float64).
    num_draws : int
        Draws ``z_s`` averaged over.
    kind : str
        ``"log probability"`` (integer scale: comparable with any discrete model of the same
        ratings) or ``"log density"`` (Gaussian at the observed values: comparable only with
        other densities).
    """

    mean: float
    total: float
    pointwise: np.ndarray = field(repr=False)
    num_draws: int
    kind: str


@torch.no_grad()
def log_predictive_density(
    fit: Any,
    test: Ratings,
    num_samples: int | None = None,
    seed: int = 0,
    *,
    discretize: bool | None = None,
) -> PredictiveDensity:
    """Held-out log predictive density ``log mean_s p(x_i | z_s)`` of each test rating.

    The draws ``z_s`` are those of ``fit.sample(num_samples, seed)`` (the same as
    ``fit.log_likelihood(test, num_samples, seed)``); the average over draws is taken in
    float64 with a running log-sum-exp, chunked over draws. This is the score of held-out
    data (Vehtari, Gelman & Gabry 2017, eq. 3); PSIS-LOO (``az.loo``) is its estimate for
    the *training* data and is not meant for data that were never in the fit. For a
    variational fit the draws come from ``q``: the score is that of the approximate
    predictive, which is what the fit predicts with.

    Parameters
    ----------
    fit : PosteriorFit
        A fit with draws (SVI or Gibbs).
    test : Ratings
        Held-out ratings.
    num_samples : int, optional
        Draws averaged over (default: all kept draws of a Markov chain fit, 200 from ``q``).
    seed : int
        Seed of the draws.
    discretize : bool, optional
        ``True`` with a Gaussian model: score ``P(x_i)`` under the Gaussian predictive
        mapped to the integer scale ``test.scale`` (mass of ``[x - 1/2, x + 1/2]``, end bins
        open), a log probability comparable with a discrete model. ``None``: the model's own
        likelihood (a density for a Gaussian model, a probability for a discretized one).

    Returns
    -------
    PredictiveDensity

    Examples
    --------
    >>> from bayesmf import data, inference, models
    >>> R, _ = data.synthetic_ratings(n_rows=20, n_cols=15, rank=2, density=0.4, seed=0)
    >>> tr, te = data.random_split(R, 0.2, seed=0)
    >>> fit = inference.fit_svi(models.BayesianMF(20, 15, rank=2), tr, epochs=5,
    ...                         batch_size=None, lr=0.05, progress=False)
    >>> res = log_predictive_density(fit, te, num_samples=50)
    >>> res.pointwise.shape == (len(te),), res.kind
    (True, 'log density')
    """
    model = fit.model
    scale = _scale_levels(fit, test, discretize)
    map_gaussian = scale is not None and not getattr(model, "discrete", False)
    model.check_data(test)
    test = test.to(model.device)
    if num_samples is None:
        num_samples = int(getattr(fit, "num_draws", 200))
    z = fit.sample(num_samples, seed=seed)
    S = int(next(iter(z.values())).shape[0])
    step = draw_chunk(model, len(test))
    lse = torch.full((len(test),), -math.inf, dtype=torch.float64, device=model.device)
    for a in range(0, S, step):
        zc = {k: v[a : a + step] for k, v in z.items()}
        d = model.likelihood(model.mean(zc, test.rows, test.cols), zc)
        if map_gaussian:
            assert scale is not None
            d = DiscretizedNormal(d.loc, d.scale, *scale)
        ll = d.log_prob(test.values).double()
        lse = torch.logaddexp(lse, torch.logsumexp(ll, 0))
    pointwise = (lse - math.log(S)).cpu().numpy()
    return PredictiveDensity(
        mean=float(pointwise.mean()),
        total=float(pointwise.sum()),
        pointwise=pointwise,
        num_draws=S,
        kind="log probability" if scale is not None else "log density",
    )
