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

import itertools
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

    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild the fit (tensors and plain values)."""
        return {
            "format": "bayesmf.SampleFit/1",
            **self._common_state(),
            "draws": {k: v.detach().cpu() for k, v in self.draws.items()},
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], device: str | torch.device | None = None
    ) -> SampleFit:
        """Rebuild a fit from :meth:`state`."""
        if state.get("format") != "bayesmf.SampleFit/1":
            raise ValueError("not a bayesmf SampleFit checkpoint")
        model = cls._rebuild_model(state)
        draws = dict(state["draws"])
        if device is not None:
            model.to(device)
            draws = {k: v.to(device) for k, v in draws.items()}
        return cls(model, draws, state["history"], state["train_info"], state["settings"],
                   state["fit_seconds"])

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
    prior_mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """One draw of every ``theta_n ~ N(Lambda_n^{-1} b_n, Lambda_n^{-1})`` with
    ``Lambda_n = noise_prec * gram_n + diag(prior_prec)`` and
    ``b_n = noise_prec * rhs_n + prior_prec * prior_mean``.

    Rows without ratings (zero Gram matrix) are drawn from the prior.
    """
    prec = noise_prec * gram
    prec.diagonal(dim1=-2, dim2=-1).add_(prior_prec)
    chol = torch.linalg.cholesky(prec)
    b = noise_prec * rhs
    if prior_mean is not None:
        b = b + prior_prec * prior_mean
    mean = torch.cholesky_solve(b.unsqueeze(-1), chol).squeeze(-1)
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
    arrays = ["U", "V"] + (["row_bias", "col_bias"] if bias else [])
    scale_of = {a: str(specs[a].prior_scale) for a in arrays}
    mean_of = {a: specs[a].prior_mean for a in ("U", "V") if isinstance(specs[a].prior_mean, str)}
    # every positive site (the prior scales, then the noise) as one vector of log-scales
    hyper = [scale_of[a] for a in arrays] + [model.noise_site]
    numel = [math.prod(specs[h].shape) for h in hyper]
    offsets = [0, *itertools.accumulate(numel)]

    def per_entry(values: list[float]) -> torch.Tensor:
        return torch.cat([torch.full((k,), val, dtype=f64, device=device)
                          for k, val in zip(numel, values, strict=True)])

    m = per_entry([float(specs[h].prior_loc) for h in hyper])
    v = per_entry([float(specs[h].prior_scale) ** 2 for h in hyper])
    t = per_entry([math.log(specs[h].init_loc) for h in hyper[:-1]] + [0.0])

    def scale(h: str, s: torch.Tensor) -> torch.Tensor:
        i = hyper.index(h)
        return s[offsets[i] : offsets[i + 1]].reshape(specs[h].shape)

    def randn(*shape: int) -> torch.Tensor:
        return init_std * torch.randn(shape, generator=gen, dtype=f64, device=device)

    z: dict[str, torch.Tensor] = {"U": randn(N, K), "V": randn(M, K)}
    zeros = torch.zeros(K, dtype=f64, device=device)
    for mname in mean_of.values():
        z[mname] = zeros.clone()
    if bias:
        z["row_bias"] = torch.zeros(N, dtype=f64, device=device)
        z["col_bias"] = torch.zeros(M, dtype=f64, device=device)
    D = K + int(bias)
    chunk = max(1, _GRAM_BUDGET // (D * D))

    def side(
        factor: str, bias_name: str, target: torch.Tensor, other: torch.Tensor, n_target: int,
        fixed: torch.Tensor, other_bias: torch.Tensor | None, s: torch.Tensor,
        noise_prec: torch.Tensor,
    ) -> None:
        """Draw one side's ``[factor, bias]`` given the other side's factors and biases."""
        if other_bias is not None:
            feats = torch.cat([fixed, torch.ones(len(fixed), 1, dtype=f64, device=device)], 1)
            y = x - other_bias[other]
        else:
            feats, y = fixed, x
        gram, rhs = _gram(target, other, y, feats, n_target, chunk)
        prec = [(1 / scale(scale_of[factor], s) ** 2).expand(K)]
        mean = [z[mean_of[factor]] if factor in mean_of else zeros]
        if bias:
            prec.append((1 / scale(scale_of[bias_name], s) ** 2).reshape(1))
            mean.append(zeros[:1])
        theta = _sample_side(gram, rhs, torch.cat(prec), noise_prec, gen, torch.cat(mean))
        z[factor] = theta[:, :K]
        if bias:
            z[bias_name] = theta[:, K]

    kept: dict[str, list[torch.Tensor]] = {k: [] for k in (*hyper, *mean_of.values(), *arrays)}
    history: dict[str, list[float]] = {"noise": [], "train_rmse": [], "accept": []}
    total = warmup + num_samples * thin
    t0 = time.perf_counter()
    bar = tqdm(range(total), disable=not progress, desc="Gibbs", unit="sweep")
    for sweep in bar:
        s = torch.exp(t)
        noise_prec = 1 / s[-1] ** 2
        # users [u_n, b_n] | V, c; then items [v_m, c_m] | U, b
        side("U", "row_bias", rows, cols, N, z["V"], z.get("col_bias"), s, noise_prec)
        side("V", "col_bias", cols, rows, M, z["U"], z.get("row_bias"), s, noise_prec)
        # factor means | factors, scales: Normal(0, prior_scale^2) prior, conjugate
        for a, mname in mean_of.items():
            prec0 = 1 / float(specs[mname].prior_scale) ** 2
            lam = (1 / scale(scale_of[a], s) ** 2).expand(K)
            post_prec = prec0 + len(z[a]) * lam
            post_mean = lam * z[a].sum(0) / post_prec
            eps = torch.randn(K, generator=gen, dtype=f64, device=device)
            z[mname] = post_mean + eps / post_prec.sqrt()
        # scales | arrays (and means), noise | residuals
        resid = x - (z["U"][rows] * z["V"][cols]).sum(-1)
        if bias:
            resid = resid - z["row_bias"][rows] - z["col_bias"][cols]
        sizes, ss = [], []
        for a in arrays:
            dev = z[a] - z[mean_of[a]] if a in mean_of else z[a]
            if specs[scale_of[a]].shape == ():
                sizes.append(torch.tensor([float(dev.numel())], dtype=f64, device=device))
                ss.append((dev**2).sum().reshape(1))
            else:  # one scale per trailing index (ARD)
                sizes.append(torch.full((dev.shape[-1],), float(dev.shape[0]), dtype=f64,
                                        device=device))
                ss.append((dev**2).sum(0))
        sizes.append(torch.tensor([float(len(x))], dtype=f64, device=device))
        ss.append((resid**2).sum().reshape(1))
        t, accept = _sample_log_scales(t, torch.cat(sizes), torch.cat(ss), m, v, gen)
        rmse = float((resid**2).mean().sqrt())
        history["noise"].append(float(torch.exp(t[-1])))
        history["train_rmse"].append(rmse)
        history["accept"].append(float(accept.double().mean()))
        bar.set_postfix(noise=f"{history['noise'][-1]:.4f}", train_rmse=f"{rmse:.4f}")
        if sweep >= warmup and (sweep - warmup) % thin == 0:
            s = torch.exp(t)
            for h in hyper:
                kept[h].append(scale(h, s).float())
            for k in (*mean_of.values(), *arrays):
                kept[k].append(z[k].float())
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

