"""Meta-learned neural priors for matrix factorisation without shared rows or columns.

Iwata (2021), "Meta-learning for matrix factorization without shared rows or
columns". A network reads a partially observed matrix ``X`` (indicator ``B``) of
any size and outputs the prior means of its factors; the factors are adapted by
``T`` gradient steps of MAP estimation (:func:`bayesmf.models.unrolled.unrolled_map`, also
``bayesmf.inference.unrolled_map``);
the network is trained episodically (:func:`bayesmf.inference.meta_train`) by
back-propagating the held-out imputation error through those steps.

Model
-----
* ``Z = g(X, B)``: exchangeable matrix layers (Eq. 4, :mod:`.exchangeable`),
  ``(batch, N, M, C)``.
* Prior means (Eq. 5): ``u0_n = f_U(mean_m z_nm)``, ``v0_m = f_V(mean_n z_nm)``
  with feed-forward ``f_U``, ``f_V`` of ``K`` outputs.

  **The means are over the observed elements** (``B == 1``) of the row/column,
  like the means inside the exchangeable layers. Reasons: (i) padding rows and
  columns, which are indistinguishable from unobserved ones given only
  ``(X, B)``, then never enter a mean, so a padded batch of matrices of
  different sizes gives exactly the result of each matrix on its own; (ii) the
  representation of a row does not shrink towards the representation of
  unobserved entries as the matrix gets sparser or larger (tested on sizes other
  than the training size). A row or column without any observed entry gets
  ``f_U(0)`` (``f_V(0)``), a learned "nothing known" prior mean.
* Prior precision ``lam = exp(log_lam) > 0``, learned; ``U ~ N(U0, 1/lam I)``,
  ``V ~ N(V0, 1/lam I)``, ``x_nm ~ N(u_n^T v_m, 1)`` on standardised values.
* :meth:`MetaPriorMF.adapt`: ``T`` steps of Eqs. (6)-(7) from ``(U0, V0)``.
* :class:`FixedPriorMF`: the same Gaussian MF of a new matrix with the meta-learned
  prior means as a real prior (fixed prior scale and noise), a
  :class:`~bayesmf.models.GaussianFactorModel` that the library's SVI engine fits
  (:func:`bayesmf.inference.fit_meta_posterior`): predictive means and intervals for the
  missing entries. Its prior precision and noise are chosen once on meta-validation tasks
  by :func:`bayesmf.inference.calibrate_posterior` (the meta-learned ``lam`` makes the
  intervals uselessly wide) and kept in the network's ``post_precision``/``post_noise``.
* :class:`MetaPosterior`: such a posterior's factors and predictive, as tensors.

Only what is believed lives here; meta-training, the posterior fit and the calibration are
in :mod:`bayesmf.inference`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import pyro.distributions as dist
import torch
from torch import nn

from .base import GaussianFactorModel, LatentSpec
from .exchangeable import ExchangeableEncoder, masked_mean
from .unrolled import unrolled_map

__all__ = ["FixedPriorMF", "MetaPriorMF", "MetaPosterior", "mlp"]

logger = logging.getLogger(__name__)


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    """A feed-forward network of ``layers`` linear layers with ReLU between them.

    Examples
    --------
    >>> mlp(32, 32, 8, layers=4)(torch.zeros(5, 32)).shape
    torch.Size([5, 8])
    """
    if layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    sizes = [in_dim] + [hidden] * (layers - 1) + [out_dim]
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):  # loop over layers
        mods.append(nn.Linear(a, b))
        if i < layers - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def _as_batch(X: torch.Tensor, B: torch.Tensor) -> tuple[bool, torch.Tensor, torch.Tensor]:
    X = torch.as_tensor(X)
    B = torch.as_tensor(B)
    if X.shape != B.shape or X.dim() not in (2, 3):
        raise ValueError(
            f"X and B must have equal shape (batch, N, M) or (N, M); got {tuple(X.shape)}, "
            f"{tuple(B.shape)}"
        )
    squeeze = X.dim() == 2
    if squeeze:
        X, B = X[None], B[None]
    if not X.is_floating_point():
        X = X.to(torch.get_default_dtype())
    Bf = B.to(X.dtype)
    X = torch.where(Bf > 0, X, torch.zeros((), dtype=X.dtype, device=X.device))
    return squeeze, X, Bf


@dataclass(eq=False)
class MetaPosterior:
    """Variational posterior of the factors of a batch of matrices, and its predictive.

    Made by :meth:`bayesmf.inference.MetaPosteriorFit.summary` (the fit of
    :class:`FixedPriorMF` by SVI). All tensors have a leading batch dimension. ``mean``,
    ``std``, ``lower`` and ``upper`` cover every entry ``(batch, N, M)``; read them at the
    missing entries (``B == 0``) for imputation.

    Attributes
    ----------
    mean : Tensor
        Posterior predictive mean ``E[u_n^T v_m]``.
    std : Tensor
        Posterior predictive standard deviation (factor uncertainty and noise).
    lower, upper : Tensor
        Central ``level`` predictive interval (Monte Carlo quantiles).
    level : float
        Interval probability.
    U_loc, U_scale, V_loc, V_scale : Tensor
        The mean-field Gaussian variational parameters.
    noise : float
        Observation noise standard deviation used.
    elbo : list of float
        ELBO per observation after each SVI step.
    """

    mean: torch.Tensor
    std: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    level: float
    U_loc: torch.Tensor
    U_scale: torch.Tensor
    V_loc: torch.Tensor
    V_scale: torch.Tensor
    noise: float
    elbo: list[float]

    def coverage(self, X: torch.Tensor, mask: torch.Tensor) -> float:
        """Fraction of the entries ``mask`` of ``X`` inside ``[lower, upper]``."""
        m = mask.bool()
        inside = (X >= self.lower) & (X <= self.upper)
        return float(inside[m].float().mean())

    def draws(self, num_samples: int = 500, seed: int = 0, noise: bool = True) -> torch.Tensor:
        """Posterior predictive draws ``(num_samples, batch, N, M)`` (with noise if ``noise``)."""
        g = torch.Generator(device=self.U_loc.device).manual_seed(seed)
        S, dt, dev = int(num_samples), self.U_loc.dtype, self.U_loc.device
        U = self.U_loc + self.U_scale * torch.randn((S, *self.U_loc.shape), generator=g,
                                                    dtype=dt, device=dev)
        V = self.V_loc + self.V_scale * torch.randn((S, *self.V_loc.shape), generator=g,
                                                    dtype=dt, device=dev)
        mu = U @ V.transpose(-1, -2)
        if noise:
            mu = mu + self.noise * torch.randn(mu.shape, generator=g, dtype=dt, device=dev)
        return mu

    def interval(self, level: float, num_samples: int = 500, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Central ``level`` predictive interval ``(lower, upper)`` of every entry."""
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}")
        d = self.draws(num_samples, seed)
        a = (1.0 - level) / 2
        qs = torch.tensor([a, 1.0 - a], dtype=d.dtype, device=d.device)
        lower, upper = torch.quantile(d, qs, dim=0)
        return lower, upper

    def log_predictive(self, X: torch.Tensor, mask: torch.Tensor, num_samples: int = 500,
                       seed: int = 0) -> float:
        """Mean log predictive density of the entries ``mask`` of ``X`` (Monte Carlo mixture)."""
        m = mask.bool()
        mu = self.draws(num_samples, seed, noise=False)[:, m]  # (S, n)
        lp = dist.Normal(mu, self.noise).log_prob(X[m])
        return float((torch.logsumexp(lp, 0) - math.log(mu.shape[0])).mean())


class MetaPriorMF(nn.Module):
    """Meta-learned neural prior for Gaussian matrix factorisation (Iwata, 2021).

    Parameters
    ----------
    channels : int
        Channels of the exchangeable layers.
    layers : int
        Number of exchangeable layers.
    rank : int
        Number of latent factors ``K``.
    steps : int
        Unrolled MAP steps ``T`` used by :meth:`adapt` (and meta-training).
    step_size : float
        Step size ``eta`` of the unrolled steps.
    hidden : int
        Hidden units of ``f_U`` and ``f_V``.
    mlp_layers : int
        Layers of ``f_U`` and ``f_V``.
    dropout : float
        Dropout between the exchangeable layers (active in ``train()`` mode only).
    init_precision : float
        Initial prior precision ``lam``.

    Examples
    --------
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> m = MetaPriorMF(channels=8, layers=2, rank=4, steps=3).eval()
    >>> X, B = torch.randn(2, 6, 5), (torch.rand(2, 6, 5) < 0.5).float()
    >>> U0, V0 = m.prior_means(X, B)
    >>> U0.shape, V0.shape
    (torch.Size([2, 6, 4]), torch.Size([2, 5, 4]))
    >>> U, V = m.adapt(X, B)
    >>> m.predict(X, B).shape
    torch.Size([2, 6, 5])
    """

    def __init__(
        self,
        channels: int = 32,
        layers: int = 3,
        rank: int = 32,
        steps: int = 10,
        step_size: float = 1e-2,
        *,
        hidden: int = 32,
        mlp_layers: int = 4,
        dropout: float = 0.1,
        init_precision: float = 1.0,
    ) -> None:
        super().__init__()
        if rank < 1 or steps < 0 or not step_size > 0 or not init_precision > 0:
            raise ValueError("need rank >= 1, steps >= 0, step_size > 0, init_precision > 0")
        self.channels, self.n_layers, self.rank = int(channels), int(layers), int(rank)
        self.steps, self.step_size = int(steps), float(step_size)
        self.hidden, self.mlp_layers, self.p_dropout = int(hidden), int(mlp_layers), float(dropout)
        self.encoder = ExchangeableEncoder(channels, layers, dropout=dropout)
        self.f_u = mlp(channels, hidden, rank, mlp_layers)
        self.f_v = mlp(channels, hidden, rank, mlp_layers)
        self.log_lam = nn.Parameter(torch.tensor(math.log(float(init_precision))))
        # posterior settings chosen by calibrate_posterior (NaN: not calibrated)
        self.register_buffer("post_precision", torch.tensor(float("nan")))
        self.register_buffer("post_noise", torch.tensor(float("nan")))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any, **kwargs: Any) -> None:
        # models saved before calibration existed have no posterior buffers: keep NaN
        for k in ("post_precision", "post_noise"):
            state_dict.setdefault(prefix + k, torch.tensor(float("nan")))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def calibrated(self) -> bool:
        """Whether :func:`calibrate_posterior` has set the posterior's precision and noise."""
        return bool(torch.isfinite(self.post_precision) & torch.isfinite(self.post_noise))

    def config(self) -> dict[str, Any]:
        """Constructor arguments (for :meth:`load`)."""
        return {
            "channels": self.channels, "layers": self.n_layers, "rank": self.rank,
            "steps": self.steps, "step_size": self.step_size, "hidden": self.hidden,
            "mlp_layers": self.mlp_layers, "dropout": self.p_dropout,
        }

    @property
    def lam(self) -> torch.Tensor:
        """The prior precision ``lam = exp(log_lam)``."""
        return self.log_lam.exp()

    @property
    def device(self) -> torch.device:
        return self.log_lam.device

    # ------------------------------------------------------------------ priors
    def prior_means(self, X: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior means ``(U0, V0)`` of the factors of each matrix (Eq. 5).

        Parameters
        ----------
        X : Tensor, shape (batch, N, M) or (N, M)
            Values (only observed entries are read).
        B : Tensor, shape like ``X``
            Indicator of the observed entries (0/1 or bool); padding has ``B == 0``.

        Returns
        -------
        U0 : Tensor, shape (batch, N, K)
        V0 : Tensor, shape (batch, M, K)
            Without the batch dimension when ``X`` is 2-D.
        """
        squeeze, X, Bf = _as_batch(X, B)
        Z = self.encoder(X, Bf)
        U0 = self.f_u(masked_mean(Z, Bf, 2).squeeze(2))  # mean over observed m of z_nm
        V0 = self.f_v(masked_mean(Z, Bf, 1).squeeze(1))  # mean over observed n of z_nm
        return (U0[0], V0[0]) if squeeze else (U0, V0)

    def adapt(
        self, X: torch.Tensor, B: torch.Tensor, steps: int | None = None,
        step_size: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Factors ``(U, V)`` after ``T`` unrolled MAP steps from the prior means.

        ``steps``/``step_size`` default to the model's ``T`` and ``eta``. Differentiable.
        """
        squeeze, X, Bf = _as_batch(X, B)
        U0, V0 = self.prior_means(X, Bf)
        U, V = unrolled_map(
            X, Bf, U0, V0, self.lam,
            self.step_size if step_size is None else step_size,
            self.steps if steps is None else steps,
        )
        return (U[0], V[0]) if squeeze else (U, V)

    def predict(self, X: torch.Tensor, B: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Imputed matrix ``U V^T`` of the adapted factors, the shape of ``X``."""
        U, V = self.adapt(X, B, steps=steps)
        return U @ V.transpose(-1, -2)

    def forward(self, X: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return self.predict(X, B)


class FixedPriorMF(GaussianFactorModel):
    """Gaussian MF of one matrix under given prior means of its factors (e.g. meta-learned).

    The factors are the prior means plus Gaussian deviations,

    .. math::

        U = U^0 + \\Delta_U,\\quad V = V^0 + \\Delta_V,\\quad
        \\Delta_U, \\Delta_V \\sim N(0, s^2 I),\\quad x_{nm} \\sim N(u_n^\\top v_m, \\sigma^2),

    with the prior scale ``s`` and the noise ``sigma`` fixed (not latent). The latent sites
    are the deviations ``dU`` and ``dV`` (prior mean zero, so the library's
    :class:`LatentSpec` states them and any engine fits them; a mean-field guide then starts
    at the prior means). A batch of matrices is one block-diagonal matrix: matrix ``b`` of
    ``B`` occupies rows ``b N ... (b+1) N - 1`` and columns ``b M ... (b+1) M - 1``, and its
    factors are rows of ``U^0`` and ``V^0``, so the matrices are independent a posteriori.

    Parameters
    ----------
    n_rows, n_cols, rank : int
        Shape and number of factors ``K``.
    prior_mean_U, prior_mean_V : Tensor, shapes (n_rows, K) and (n_cols, K)
        The prior means ``U^0``, ``V^0`` (stored as buffers).
    prior_scale : float
        Prior standard deviation ``s`` of every factor entry (``1 / sqrt(precision)``).
    noise : float
        Observation noise standard deviation ``sigma``.
    init_scale : float, optional
        Initial variational standard deviation of the deviations (default ``0.1 s``).
    global_mean : float
        Offset added to every prediction (default 0: standardised values).

    Examples
    --------
    >>> m = FixedPriorMF(4, 3, 2, torch.ones(4, 2), torch.zeros(3, 2), prior_scale=0.5)
    >>> [s.name for s in m.latent_specs()]
    ['dU', 'dV']
    >>> z = {"dU": torch.zeros(4, 2), "dV": torch.ones(3, 2)}
    >>> m.mean(z, torch.tensor([0]), torch.tensor([1])).tolist()
    [2.0]
    """

    def __init__(
        self,
        n_rows: int,
        n_cols: int,
        rank: int,
        prior_mean_U: torch.Tensor,
        prior_mean_V: torch.Tensor,
        prior_scale: float = 1.0,
        noise: float = 1.0,
        init_scale: float | None = None,
        global_mean: float | None = 0.0,
    ) -> None:
        super().__init__(n_rows, n_cols, global_mean)
        U0 = torch.as_tensor(prior_mean_U, dtype=torch.get_default_dtype())
        V0 = torch.as_tensor(prior_mean_V, dtype=torch.get_default_dtype())
        if U0.shape != (n_rows, rank) or V0.shape != (n_cols, rank):
            raise ValueError(
                f"prior means must have shapes {(n_rows, rank)} and {(n_cols, rank)}, got "
                f"{tuple(U0.shape)} and {tuple(V0.shape)}"
            )
        if not (prior_scale > 0 and noise > 0):
            raise ValueError(f"prior_scale and noise must be > 0, got {prior_scale}, {noise}")
        self.rank = int(rank)
        self.prior_scale, self.noise = float(prior_scale), float(noise)
        self.init_scale = 0.1 * self.prior_scale if init_scale is None else float(init_scale)
        self.register_buffer("prior_mean_U", U0.detach().clone())
        self.register_buffer("prior_mean_V", V0.detach().clone())

    def latent_specs(self) -> list[LatentSpec]:
        return [
            LatentSpec("dU", (self.n_rows, self.rank), prior_scale=self.prior_scale,
                       dims=("row", "factor"), init_loc=0.0, init_scale=self.init_scale),
            LatentSpec("dV", (self.n_cols, self.rank), prior_scale=self.prior_scale,
                       dims=("col", "factor"), init_loc=0.0, init_scale=self.init_scale),
        ]

    def factors(self, z: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U, V) = (U^0 + dU, V^0 + dV)``, with the sample dimensions of ``z``."""
        return self.prior_mean_U + z["dU"], self.prior_mean_V + z["dV"]

    def mean(
        self, z: dict[str, torch.Tensor], rows: torch.Tensor, cols: torch.Tensor
    ) -> torch.Tensor:
        U, V = self.factors(z)
        return (U[..., rows, :] * V[..., cols, :]).sum(-1) + self.global_mean

    def likelihood(self, mu: torch.Tensor, z: dict[str, torch.Tensor]) -> dist.Distribution:
        return dist.Normal(mu, torch.full((), self.noise, dtype=mu.dtype, device=mu.device))

    def config(self) -> dict[str, Any]:
        """Constructor arguments (the prior means as CPU tensors)."""
        return {
            "n_rows": self.n_rows, "n_cols": self.n_cols, "rank": self.rank,
            "prior_mean_U": self.prior_mean_U.detach().cpu(),
            "prior_mean_V": self.prior_mean_V.detach().cpu(),
            "prior_scale": self.prior_scale, "noise": self.noise, "init_scale": self.init_scale,
        }
