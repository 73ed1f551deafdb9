"""Blocked Gibbs sampling of :class:`bayesmf.models.BayesianMF` (the BPMF sampler).

The same model that :func:`~bayesmf.inference.fit_svi` fits by mean-field SVI and
:func:`~bayesmf.inference.als` fits by MAP, sampled from its exact posterior:

* each user's ``[u_n, b_n]`` given everything else is Gaussian: all users are drawn at
  once from batched Cholesky factors of their posterior precisions (the Gram matrices of
  ALS, :func:`bayesmf.inference.als._gram`), then all items likewise;
* each prior scale ``s_a`` and the noise scale ``sigma`` has a LogNormal hyper-prior,
  which is not conjugate; on ``t = log s`` the conditional
  ``-(t - m)^2 / (2 v) - n t - SS e^{-2t} / 2`` (``n`` entries with sum of squares ``SS``)
  is log-concave, so an independence Metropolis-Hastings step whose proposal is a
  Student-t at its mode (found by Newton's method) with the Laplace scale is accepted
  most of the time.

Salakhutdinov & Mnih (2008) sample BPMF the same way with conjugate Gaussian-Wishart
hyper-priors; myFM's Gibbs sampler of a Bayesian factorization machine is the
reference point of ``benchmarks/table1_ml100k.py``. The result is a :class:`SampleFit`
with the predictive API of a variational fit (``predict``, ``predict_interval``,
``log_likelihood``, ``to_inference_data``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.containers import Ratings
from ..models.bayesian_mf import BayesianMF
from .als import _GRAM_BUDGET, _gram
from .posterior import PosteriorFit
from .svi import _train_info

__all__ = ["SampleFit", "fit_gibbs"]

log = logging.getLogger(__name__)


@dataclass
class SampleFit(PosteriorFit):
    """Posterior draws of a model from a Markov chain.

    Attributes
    ----------
    model : BayesianMF
        The model (offset set to the training mean).
    draws : dict of str to tensor
        The kept draws of every latent site, each ``(num_draws, *shape)``, in chain order.
    history : dict of lists
        Per sweep (burn-in included): ``noise``, ``train_rmse`` (of that sweep's state),
        ``accept`` (mean acceptance rate of the hyper-parameter steps).
    train_info, settings : dict
        Training-data description (ArviZ coords) and the options used.
    fit_seconds : float
        Wall-clock time of the sampling.
    """

    model: BayesianMF
    draws: dict[str, torch.Tensor]
    history: dict[str, list[float]] = field(default_factory=dict)
    train_info: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    fit_seconds: float = 0.0

    inference_name = "Gibbs"

    @property
    def num_draws(self) -> int:
        """Number of kept draws."""
        return int(next(iter(self.draws.values())).shape[0])

    def _draw(self, num_samples: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``num_samples`` kept draws in chain order: evenly thinned when fewer than all
        are asked for, cycled when more."""
        S = self.num_draws
        if num_samples <= S:
            idx = torch.linspace(0, S - 1, num_samples).round().long()
        else:
            idx = torch.arange(num_samples) % S
        return {k: v[idx.to(v.device)] for k, v in self.draws.items()}

    def sample(self, num_samples: int | None = None, seed: int | None = None):
        """Kept draws (all of them by default); see :meth:`_draw`."""
        return self._draw(num_samples or self.num_draws, torch.Generator())

    def predict(
        self, data: Ratings, num_samples: int | None = None, clamp: bool = False, seed: int = 0
    ) -> torch.Tensor:
        """Posterior predictive mean, averaged over all kept draws by default."""
        return super().predict(data, num_samples or self.num_draws, clamp, seed)


def _sample_side(
    gram: torch.Tensor,
    rhs: torch.Tensor,
    prior_prec: torch.Tensor,
    noise_prec: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """One draw of every ``theta_n ~ N(Lambda_n^{-1} b_n, Lambda_n^{-1})`` with
    ``Lambda_n = noise_prec * gram_n + diag(prior_prec)`` and ``b_n = noise_prec * rhs_n``.

    Rows without ratings (zero Gram matrix) are drawn from the prior.
    """
    prec = noise_prec * gram
    prec.diagonal(dim1=-2, dim2=-1).add_(prior_prec)
    chol = torch.linalg.cholesky(prec)
    mean = torch.cholesky_solve((noise_prec * rhs).unsqueeze(-1), chol).squeeze(-1)
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    # L^{-T} eps has covariance L^{-T} L^{-1} = Lambda^{-1}
    dev = torch.linalg.solve_triangular(chol.mT, eps.unsqueeze(-1), upper=True).squeeze(-1)
    return mean + dev


def _log_target(
    t: torch.Tensor, n: torch.Tensor, ss: torch.Tensor, m: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Log density of ``t = log s`` given ``n`` N(0, s^2) entries with sum of squares ``ss``
    and a LogNormal(m, sqrt(v)) prior on ``s`` (up to a constant)."""
    return -((t - m) ** 2) / (2 * v) - n * t - ss * torch.exp(-2 * t) / 2


def _sample_log_scales(
    t: torch.Tensor,
    n: torch.Tensor,
    ss: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    generator: torch.Generator,
    newton_steps: int = 20,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Independence Metropolis-Hastings step for a vector of log-scales (each its own
    1-d target, see :func:`_log_target`); the proposal is a Student-t centred at the mode
    with the scale of the Laplace approximation.

    Returns the new values and the acceptance indicators.
    """
    mode = t.clone()
    for _ in range(newton_steps):  # concave target: damped Newton converges
        g = -(mode - m) / v - n + ss * torch.exp(-2 * mode)
        h = 1 / v + 2 * ss * torch.exp(-2 * mode)
        mode = mode + (g / h).clamp(-2.0, 2.0)
    sd = (1 / (1 / v + 2 * ss * torch.exp(-2 * mode))).sqrt()
    # Student-t proposal (df degrees of freedom, a chi-square as a sum of df squared
    # normals): its polynomial tails are heavier than the target's (exponential on the
    # right, doubly exponential on the left), so the importance weight target/proposal is
    # bounded and the independence sampler cannot get stuck in a tail, as it does with
    # the Gaussian Laplace approximation itself.
    df = 5
    eps = torch.randn((df + 1, *t.shape), generator=generator, dtype=t.dtype, device=t.device)
    prop = mode + sd * eps[0] / ((eps[1:] ** 2).sum(0) / df).sqrt()

    def log_q(x: torch.Tensor) -> torch.Tensor:
        return -(df + 1) / 2 * torch.log1p(((x - mode) / sd) ** 2 / df)

    log_alpha = (
        _log_target(prop, n, ss, m, v) - _log_target(t, n, ss, m, v) - log_q(prop) + log_q(t)
    )
    u = torch.rand(t.shape, generator=generator, dtype=t.dtype, device=t.device)
    accept = torch.log(u) < log_alpha
    return torch.where(accept, prop, t), accept


def fit_gibbs(
    model: BayesianMF,
    train: Ratings,
    *,
    num_samples: int = 200,
    warmup: int = 50,
    thin: int = 1,
    init_std: float = 0.1,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> SampleFit:
    """Sample the posterior of a :class:`~bayesmf.models.BayesianMF` by blocked Gibbs.

    Parameters
    ----------
    model : BayesianMF
        The model (its priors and hyper-priors are used as they are).
    train : Ratings
        Training ratings of the model's shape.
    num_samples : int
        Draws kept after the burn-in.
    warmup : int
        Burn-in sweeps, discarded.
    thin : int
        Keep every ``thin``-th sweep after the burn-in.
    init_std : float
        Standard deviation of the random initial factors (biases start at 0, scales at
        the model's initial values, the noise scale at 1).
    seed : int
        Seed of the chain.
    device : str or torch.device, optional
        Where to sample (default: the model's device). The chain runs in float64; the
        kept draws are stored in float32.
    progress : bool
        Show a tqdm bar with the noise scale and the training RMSE.

    Returns
    -------
    SampleFit

    Examples
    --------
    >>> from bayesmf import data, inference, models
    >>> R, _ = data.synthetic_ratings(n_rows=60, n_cols=40, rank=2, density=0.4,
    ...                               noise=0.3, seed=0)
    >>> fit = inference.fit_gibbs(models.BayesianMF(60, 40, rank=2), R, num_samples=50,
    ...                           warmup=30, progress=False)
    >>> fit.draws["U"].shape
    torch.Size([50, 60, 2])
    >>> 0.2 < float(fit.draws["noise"].mean()) < 0.4
    True
    """
    if not isinstance(model, BayesianMF):
        raise TypeError(
            f"fit_gibbs samples BayesianMF (conditionally conjugate); use fit_svi for "
            f"{type(model).__name__}"
        )
    if num_samples < 1 or warmup < 0 or thin < 1 or not init_std > 0:
        raise ValueError("need num_samples >= 1, warmup >= 0, thin >= 1 and init_std > 0")
    if device is not None:
        model.to(device)
    device = model.global_mean.device
    model.setup(train)
    train = train.to(device)
    f64 = torch.float64
    gen = torch.Generator(device=device).manual_seed(seed)
    K, N, M = model.rank, model.n_rows, model.n_cols
    rows, cols = train.rows, train.cols
    x = train.values.to(f64) - float(model.global_mean)
    bias = model.biases
    specs = {s.name: s for s in model.latent_specs()}
    # the positive sites, in a fixed order; noise last
    arrays = ["U", "V"] + (["row_bias", "col_bias"] if bias else [])
    hyper = [specs[a].prior_scale for a in arrays] + [model.noise_site]
    m = torch.tensor([float(specs[h].prior_loc) for h in hyper], dtype=f64, device=device)
    v = torch.tensor([float(specs[h].prior_scale) ** 2 for h in hyper], dtype=f64, device=device)
    t = torch.tensor(
        [math.log(specs[h].init_loc) for h in hyper[:-1]] + [0.0], dtype=f64, device=device
    )
    sizes = torch.tensor(
        [math.prod(specs[a].shape) for a in arrays] + [len(train)], dtype=f64, device=device
    )

    def randn(*shape: int) -> torch.Tensor:
        return init_std * torch.randn(shape, generator=gen, dtype=f64, device=device)

    U, V = randn(N, K), randn(M, K)
    b = torch.zeros(N, dtype=f64, device=device)
    c = torch.zeros(M, dtype=f64, device=device)
    D = K + int(bias)
    chunk = max(1, _GRAM_BUDGET // (D * D))

    def side(
        target: torch.Tensor, other: torch.Tensor, n_target: int, fixed: torch.Tensor,
        fixed_bias: torch.Tensor, other_bias: torch.Tensor, scale: torch.Tensor,
        bias_scale: torch.Tensor | None, noise_prec: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw one side's ``[factor, bias]`` given the other side's factors and biases."""
        if bias:
            feats = torch.cat([fixed, torch.ones(len(fixed), 1, dtype=f64, device=device)], 1)
            y = x - other_bias[other]
        else:
            feats, y = fixed, x
        gram, rhs = _gram(target, other, y, feats, n_target, chunk)
        prior = torch.full((D,), float(1 / scale**2), dtype=f64, device=device)
        if bias_scale is not None:
            prior[K] = 1 / bias_scale**2
        theta = _sample_side(gram, rhs, prior, noise_prec, gen)
        return theta[:, :K], (theta[:, K] if bias else fixed_bias)

    kept: dict[str, list[torch.Tensor]] = {h: [] for h in hyper} | {a: [] for a in arrays}
    history: dict[str, list[float]] = {"noise": [], "train_rmse": [], "accept": []}
    total = warmup + num_samples * thin
    t0 = time.perf_counter()
    bar = tqdm(range(total), disable=not progress, desc="Gibbs", unit="sweep")
    for sweep in bar:
        s = torch.exp(t)
        noise_prec = 1 / s[-1] ** 2
        # users [u_n, b_n] | V, c; then items [v_m, c_m] | U, b
        U, b = side(rows, cols, N, V, b, c, s[0], s[2] if bias else None, noise_prec)
        V, c = side(cols, rows, M, U, c, b, s[1], s[3] if bias else None, noise_prec)
        # hyper-parameters | arrays, residuals
        resid = x - (U[rows] * V[cols]).sum(-1)
        if bias:
            resid = resid - b[rows] - c[cols]
        ss = torch.stack(
            [(U**2).sum(), (V**2).sum()]
            + ([(b**2).sum(), (c**2).sum()] if bias else [])
            + [(resid**2).sum()]
        )
        t, accept = _sample_log_scales(t, sizes, ss, m, v, gen)
        rmse = float((resid**2).mean().sqrt())
        history["noise"].append(float(torch.exp(t[-1])))
        history["train_rmse"].append(rmse)
        history["accept"].append(float(accept.double().mean()))
        bar.set_postfix(noise=f"{history['noise'][-1]:.4f}", train_rmse=f"{rmse:.4f}")
        if sweep >= warmup and (sweep - warmup) % thin == 0:
            for h, val in zip(hyper, torch.exp(t), strict=True):
                kept[h].append(val.float())
            for a, val in zip(arrays, [U, V, b, c], strict=False):
                kept[a].append(val.float())
    bar.close()
    seconds = time.perf_counter() - t0
    draws = {k: torch.stack(vs) for k, vs in kept.items()}
    accept_rate = sum(history["accept"]) / len(history["accept"])
    if accept_rate < 0.5:
        log.warning("hyper-parameter acceptance rate %.2f is low", accept_rate)
    settings = {"num_samples": num_samples, "warmup": warmup, "thin": thin,
                "init_std": init_std, "seed": seed, "device": str(device),
                "accept_rate": accept_rate}
    return SampleFit(model, draws, history, _train_info(train), settings, seconds)

