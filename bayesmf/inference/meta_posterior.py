"""The posterior of a new matrix under a meta-learned prior, by the library's SVI engine.

A meta-trained :class:`~bayesmf.models.MetaPriorMF` gives the prior means ``(U0, V0)`` of
the factors of any new matrix from its observed entries. :func:`fit_meta_posterior` states
the Gaussian MF of that matrix with those prior means as a
:class:`~bayesmf.models.meta_prior.FixedPriorMF` (a
:class:`~bayesmf.models.GaussianFactorModel`; a batch of matrices is one block-diagonal
matrix) and fits it with :func:`~bayesmf.inference.fit_svi`, the same engine, guide and loop
as every other model. The result, a :class:`MetaPosteriorFit`, is a
:class:`~bayesmf.inference.VariationalFit`: ``predict``/``predict_interval`` at the query
entries of an :class:`~bayesmf.data.Episode` (or at block entries given as ``Ratings``),
``save`` and :func:`bayesmf.inference.load`, plus matrix-shaped summaries
(:meth:`MetaPosteriorFit.summary`).

:func:`calibrate_posterior` chooses the prior precision and the noise once, on
meta-validation episodes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..data.containers import Ratings
from ..data.episodes import Episode
from ..models.meta_prior import FixedPriorMF, MetaPosterior, MetaPriorMF
from .fits import deprecated_kwarg
from .guides import MeanFieldGuide
from .svi import VariationalFit, fit_svi
from .threads import uses_fit_threads

__all__ = ["MetaPosteriorFit", "fit_meta_posterior", "calibrate_posterior", "block_ratings"]

logger = logging.getLogger(__name__)


def _as_batch(X: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(batch, N, M)`` values (zero where unobserved) and bool mask."""
    X, B = torch.as_tensor(X), torch.as_tensor(B)
    if X.shape != B.shape or X.dim() not in (2, 3):
        raise ValueError(
            f"X and B must have equal shape (batch, N, M) or (N, M); got {tuple(X.shape)}, "
            f"{tuple(B.shape)}"
        )
    if X.dim() == 2:
        X, B = X[None], B[None]
    if not X.is_floating_point():
        X = X.to(torch.get_default_dtype())
    mask = B.bool()
    return torch.where(mask, X, torch.zeros((), dtype=X.dtype, device=X.device)), mask


def block_ratings(X: torch.Tensor, mask: torch.Tensor) -> Ratings:
    """The entries ``mask`` of a batch of matrices ``(B, N, M)`` as one block-diagonal matrix.

    Matrix ``b`` occupies rows ``b N ... (b+1) N - 1`` and columns ``b M ... (b+1) M - 1``
    of a ``(B N) x (B M)`` matrix (the layout of :class:`MetaPosteriorFit`).

    Examples
    --------
    >>> X = torch.arange(8.0).reshape(2, 2, 2)
    >>> R = block_ratings(X, torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 1]]]).bool())
    >>> R.shape, R.rows.tolist(), R.cols.tolist(), R.values.tolist()
    ((4, 4), [0, 3], [0, 3], [0.0, 7.0])
    """
    Bn, N, M = mask.shape
    b, n, m = mask.nonzero(as_tuple=True)
    return Ratings(b * N + n, b * M + m, X[b, n, m], shape=(Bn * N, Bn * M))


@dataclass(eq=False)
class MetaPosteriorFit(VariationalFit):
    """The SVI posterior of a batch of new matrices under meta-learned prior means.

    A :class:`~bayesmf.inference.VariationalFit` of a :class:`FixedPriorMF` whose rows and
    columns are those of the ``batch`` matrices laid out block-diagonally
    (:func:`block_ratings`). ``predict`` and ``predict_interval`` take an
    :class:`~bayesmf.data.Episode` of these matrices (answering at its query entries) or
    ``Ratings`` in the block layout; :meth:`summary` gives matrix-shaped predictive means,
    standard deviations and intervals.

    Attributes
    ----------
    batch_shape : tuple of int
        ``(batch, N, M)``.
    """

    batch_shape: tuple[int, int, int] = (1, 1, 1)

    kind = "MetaPosteriorFit"
    inference_name = "SVI mean-field under a meta-learned prior"

    @property
    def noise(self) -> float:
        """Observation noise standard deviation of the model."""
        return float(self.model.noise)

    def _entries(self, data: Any) -> Any:
        if isinstance(data, Episode):
            if tuple(data.X.shape) != tuple(self.batch_shape):
                raise ValueError(
                    f"episode of shape {tuple(data.X.shape)}, but the posterior is of "
                    f"{tuple(self.batch_shape)} matrices"
                )
            return block_ratings(data.X, data.test_mask)
        return data

    def predict(
        self, data: Any, *, clamp: bool = False, num_samples: int | None = None, seed: int = 0,
        statistic: str = "mean",
    ) -> torch.Tensor:
        """Posterior predictive mean at the query entries of an Episode (in the order of
        ``data.X[data.test_mask]``) or at the entries of block-layout ``Ratings``."""
        return super().predict(self._entries(data), clamp=clamp, num_samples=num_samples,
                               seed=seed, statistic=statistic)

    def predict_interval(
        self, data: Any, level: float = 0.9, *, num_samples: int | None = 500, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Central ``level`` predictive interval at the query entries of an Episode (or at
        block-layout ``Ratings``)."""
        return super().predict_interval(self._entries(data), level, num_samples=num_samples,
                                        seed=seed)

    @torch.no_grad()
    def summary(
        self, level: float = 0.9, num_samples: int = 500, seed: int = 0
    ) -> MetaPosterior:
        """Matrix-shaped posterior: factors, predictive mean, sd and central interval.

        Parameters
        ----------
        level : float
            Probability of the central predictive interval.
        num_samples, seed
            Monte Carlo draws of the predictive interval (the mean and the standard
            deviation are exact).

        Returns
        -------
        MetaPosterior
            ``mean``, ``std``, ``lower``, ``upper`` of shape ``(batch, N, M)``; factor means
            ``U_loc = U0 + E[dU]`` and scales, ``(batch, N, K)`` and ``(batch, M, K)``.
        """
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}")
        Bn, N, M = self.batch_shape
        K = self.model.rank
        loc = self.guide.posterior_mean()
        U, V = self.model.factors(loc)
        post = MetaPosterior(
            mean=U, std=U, lower=U, upper=U, level=float(level),
            U_loc=U.reshape(Bn, N, K), U_scale=self.guide.scale("dU").detach().reshape(Bn, N, K),
            V_loc=V.reshape(Bn, M, K), V_scale=self.guide.scale("dV").detach().reshape(Bn, M, K),
            noise=self.noise, elbo=list(self.history.get("elbo", [])),
        )
        # exact moments of u^T v for independent Gaussian u, v; Monte Carlo interval
        mu_u, mu_v = post.U_loc, post.V_loc.transpose(-1, -2)
        var_u, var_v = post.U_scale**2, (post.V_scale**2).transpose(-1, -2)
        post.mean = mu_u @ mu_v
        var = (mu_u**2) @ var_v + var_u @ (mu_v**2) + var_u @ var_v
        post.std = (var + self.noise**2).sqrt()
        post.lower, post.upper = post.interval(level, num_samples, seed)
        return post

    def _payload(self) -> dict[str, Any]:
        return {**super()._payload(), "batch_shape": [int(s) for s in self.batch_shape]}

    @classmethod
    def _from_payload(
        cls, payload: dict[str, Any], device: str | torch.device | None = None
    ) -> MetaPosteriorFit:
        model = FixedPriorMF(**payload["model_config"], global_mean=payload["global_mean"])
        guide = MeanFieldGuide(model)
        guide.load_state_dict(payload["guide"])
        if device is not None:
            model.to(device)
            guide.to(device)
        return cls(model, guide, **cls._common_from(payload),
                   batch_shape=tuple(payload["batch_shape"]))


def _defaults(meta_model: MetaPriorMF, precision: float | None, noise: float | None
              ) -> tuple[float, float]:
    if (precision is None or noise is None) and not meta_model.calibrated:
        logger.warning("posterior of an uncalibrated MetaPriorMF: using the meta-learned "
                       "lam and noise 1 (wide intervals); run calibrate_posterior first")
    if precision is None:
        precision = float(meta_model.post_precision if meta_model.calibrated
                          else meta_model.lam.detach())
    if noise is None:
        noise = float(meta_model.post_noise) if meta_model.calibrated else 1.0
    if not (precision > 0 and noise > 0):
        raise ValueError(f"precision and noise must be > 0, got {precision}, {noise}")
    return float(precision), float(noise)


@uses_fit_threads
def fit_meta_posterior(
    meta_model: MetaPriorMF,
    X: torch.Tensor,
    B: torch.Tensor,
    *,
    precision: float | None = None,
    noise: float | None = None,
    steps: int = 300,
    lr: float = 0.05,
    final_lr: float | None = None,
    num_particles: int = 4,
    clip_norm: float | None = None,
    seed: int = 0,
    progress: bool | None = None,
    **deprecated: Any,
) -> MetaPosteriorFit:
    """Posterior of the factors of new matrices under the meta-learned prior means, by SVI.

    The prior is ``N(U0, 1/precision I)``, ``N(V0, 1/precision I)`` with ``(U0, V0)`` from
    :meth:`MetaPriorMF.prior_means`, the likelihood ``N(u_n^T v_m, noise^2)`` on the observed
    entries (:class:`~bayesmf.models.meta_prior.FixedPriorMF`); it is fitted by
    :func:`~bayesmf.inference.fit_svi` (mean-field Gaussian guide started at the prior means,
    analytic KL, full batch: one step per epoch). The network is not changed, and torch's
    global random state is restored afterwards.

    **Default precision and noise.** The meta-learned ``lam`` is tuned for the ``T``-step MAP
    adaptation, not for predictive variances: with ``K = 32`` factors and ``lam ~ 1`` the
    prior variance of ``u^T v`` is about ``K / lam^2``, and the intervals are uselessly
    wide. So, when the model has been calibrated (:func:`calibrate_posterior`, run once after
    meta-training on the *meta-validation* tasks), the defaults are the calibrated
    ``post_precision`` and ``post_noise``. An uncalibrated model falls back to ``lam`` and
    ``noise = 1`` (the model whose MAP :meth:`~MetaPriorMF.adapt` approximates on
    standardised values) and logs a warning.

    Parameters
    ----------
    meta_model : MetaPriorMF
        A meta-trained prior.
    X, B : Tensor, shape (batch, N, M) or (N, M)
        Values and observation indicator of the new matrices.
    precision, noise : float, optional
        Prior precision and noise standard deviation (defaults above).
    steps : int
        SVI steps (full-batch epochs; old spelling ``num_steps=``, deprecated).
    lr, final_lr : float
        Adam learning rate, decayed to ``final_lr`` (default ``lr / 10``).
    num_particles : int
        Monte Carlo draws per ELBO estimate.
    clip_norm : float, optional
        Gradient norm clipping.
    seed : int
        Seeds the guide and the ELBO's draws.
    progress : bool, optional
        Show a tqdm bar (default: only in a terminal).

    Returns
    -------
    MetaPosteriorFit

    Examples
    --------
    >>> m = MetaPriorMF(channels=4, layers=2, rank=2, steps=2)
    >>> X, B = torch.randn(6, 5), (torch.rand(6, 5) < 0.6).float()
    >>> fit = fit_meta_posterior(m, X, B, steps=20, precision=10.0, noise=1.0)
    >>> post = fit.summary(num_samples=50)
    >>> post.mean.shape, bool((post.lower <= post.upper).all()), fit.noise
    (torch.Size([1, 6, 5]), True, 1.0)
    """
    if "num_steps" in deprecated:
        steps = deprecated_kwarg(deprecated, "num_steps", "steps", "fit_meta_posterior")
    if deprecated:
        raise TypeError(
            f"fit_meta_posterior() got unexpected keyword arguments {sorted(deprecated)}"
        )
    X, mask = _as_batch(X, B)
    precision, noise = _defaults(meta_model, precision, noise)
    was_training = meta_model.training
    meta_model.eval()
    try:
        with torch.no_grad():
            dev = meta_model.device
            U0, V0 = meta_model.prior_means(X.to(dev), mask.to(dev).to(X.dtype))
    finally:
        meta_model.train(was_training)
    Bn, N, M = X.shape
    K = meta_model.rank
    prior_scale = 1.0 / math.sqrt(precision)
    model = FixedPriorMF(Bn * N, Bn * M, K, U0.reshape(Bn * N, K), V0.reshape(Bn * M, K),
                         prior_scale=prior_scale, noise=noise, global_mean=0.0).to(dev)
    data = block_ratings(X.to(dev), mask.to(dev))
    forked = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        vf = fit_svi(model, data, epochs=steps, batch_size=None, lr=lr, final_lr=final_lr,
                     num_particles=num_particles, clip_norm=clip_norm, seed=seed,
                     progress=progress)
    settings = {**vf.settings, "engine": "svi-meta-posterior", "precision": precision,
                "noise": noise, "meta_model": type(meta_model).__name__,
                "meta_model_config": meta_model.config()}
    settings.pop("model_config", None)  # holds the prior means (tensors): in the payload
    return MetaPosteriorFit(vf.model, vf.guide, vf.history, vf.train_info, settings,
                            vf.fit_seconds, batch_shape=(Bn, N, M))


def calibrate_posterior(
    meta_model: MetaPriorMF,
    episodes: Sequence[Episode],
    *,
    precisions: Sequence[float] = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0),
    noises: Sequence[float] = (0.6, 0.7, 0.8, 0.9, 1.1),
    steps: int = 200,
    num_samples: int = 200,
    seed: int = 0,
    progress: bool | None = False,
    **deprecated: Any,
) -> dict[str, Any]:
    """Choose the posterior's prior precision and noise on meta-validation tasks.

    Type-II-style selection on *held-out tasks* rather than per matrix: for each candidate
    ``(precision, noise)`` the posterior of every meta-validation episode is fitted on its
    train (support) entries by :func:`fit_meta_posterior`, and scored by the mean log
    predictive density of its test (query) entries. A proper scoring rule, so it rewards
    calibrated intervals as well as accurate means, and the meta-test tasks are never looked
    at. The search is coordinate-wise on the log-spaced grids: precision (at ``noise = 1``),
    then noise, then the neighbouring precisions again. The winners are stored in the model
    (``post_precision``, ``post_noise``; saved with it) and become the defaults of
    :func:`fit_meta_posterior`.

    Why not per-matrix empirical Bayes (optimising the precision and noise in each test
    matrix's ELBO)? With ``K = 32`` mean-field factors and a few hundred observations, the
    ELBO's hyper-parameter optimum is dominated by the KL terms of the factors and the
    mean-field under-estimate of the posterior variance; choosing on held-out entries of
    held-out tasks calibrates the predictive directly.

    Parameters
    ----------
    meta_model : MetaPriorMF
        A meta-trained model (updated in place: its posterior buffers only).
    episodes : sequence of Episode
        Meta-validation episode batches (``X``, ``train_mask``, ``test_mask``).
    precisions, noises : sequence of float
        Candidate values.
    steps, num_samples, seed, progress
        SVI steps of each fit (old spelling ``num_steps=``), predictive draws, seed and
        progress bars of each fit.

    Returns
    -------
    dict
        ``precision``, ``noise``, ``loglik`` (of the winner) and ``grid`` (one record per
        fit: ``precision``, ``noise``, ``loglik``, ``coverage90``).

    Examples
    --------
    >>> from bayesmf.data import EpisodeSampler, synthetic_ratings
    >>> R, _ = synthetic_ratings(30, 30, density=0.5, seed=0)
    >>> eps = EpisodeSampler(R, n_rows=8, n_cols=8, batch_size=4).fixed(4)
    >>> m = MetaPriorMF(channels=4, layers=2, rank=2, steps=2)
    >>> out = calibrate_posterior(m, eps, precisions=(1.0, 10.0), noises=(0.5,), steps=10,
    ...                           num_samples=20)
    >>> m.calibrated, out["precision"] in (1.0, 10.0), out["noise"] in (0.5, 1.0)
    (True, True, True)
    """
    if "num_steps" in deprecated:
        steps = deprecated_kwarg(deprecated, "num_steps", "steps", "calibrate_posterior")
    if deprecated:
        raise TypeError(
            f"calibrate_posterior() got unexpected keyword arguments {sorted(deprecated)}"
        )
    cache: dict[tuple[float, float], dict[str, float]] = {}

    def score(p: float, s: float) -> float:
        key = (float(p), float(s))
        if key not in cache:
            ll = cov = n = 0.0
            for ep in episodes:  # loop over batches of episodes
                post = fit_meta_posterior(
                    meta_model, ep.X_train, ep.train_mask, steps=steps, precision=p, noise=s,
                    seed=seed, progress=progress,
                ).summary(0.9, num_samples, seed)
                k = float(ep.test_mask.sum())
                X, t = ep.X.to(post.mean.device), ep.test_mask.to(post.mean.device)
                ll += k * post.log_predictive(X, t, num_samples, seed)
                cov += k * post.coverage(X, t)
                n += k
            cache[key] = {"precision": key[0], "noise": key[1], "loglik": ll / max(n, 1.0),
                          "coverage90": cov / max(n, 1.0)}
            logger.info("calibrate_posterior: %s", cache[key])
        return cache[key]["loglik"]

    ps = sorted(float(p) for p in precisions)
    best_p = max(ps, key=lambda p: score(p, 1.0))
    best_s = max(sorted({1.0, *map(float, noises)}), key=lambda s: score(best_p, s))
    i = ps.index(best_p)
    best_p = max(ps[max(i - 1, 0): i + 2], key=lambda p: score(p, best_s))
    meta_model.post_precision.fill_(best_p)
    meta_model.post_noise.fill_(best_s)
    return {"precision": best_p, "noise": best_s, "loglik": cache[(best_p, best_s)]["loglik"],
            "grid": list(cache.values())}
