"""Shared machinery of the Gaussian-likelihood factor models.

A model lists its latent arrays (:class:`LatentSpec`) and a vectorized mean function
``mean(z, rows, cols)``; this base class turns them into a Pyro ``model`` with

* a LogNormal hyper-prior on each array-specific prior scale and on the noise scale,
* independent ``Normal(mean_a, scale_a)`` priors on every entry of array ``a`` (``mean_a``
  zero or a latent vector, ``scale_a`` one scale or one per trailing index: ARD),
* a Gaussian likelihood over a plate of the observed ratings that supports
  subsampling (minibatches) with the exact ELBO scaling.

Hyper-priors with their own variational factors were chosen over type-II maximum
likelihood so that the posterior of every hyper-parameter is available to ArviZ
(``az.summary`` shows their uncertainty) and so that the same model runs unchanged
under NUTS, where point-estimated hyper-parameters would need a separate outer loop.
Each scale is shared by thousands of entries, so its posterior is concentrated and the
choice costs nothing in accuracy.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from ..data.containers import Ratings

__all__ = ["LatentSpec", "GaussianFactorModel", "prior_normal_params"]


@dataclass(frozen=True)
class LatentSpec:
    """One latent site of a model.

    Parameters
    ----------
    name : str
        Pyro site name.
    shape : tuple of int
        Event shape of the site (the whole array is one site).
    positive : bool
        A positive hyper-parameter (LogNormal prior and guide) rather than a real array.
    prior_scale : str or float
        For real arrays, the name of the positive site that is its prior scale, or a
        fixed number. For positive sites, the scale of the LogNormal hyper-prior. A scale
        site may be a vector: its shape then matches the array's trailing dimensions
        (e.g. one scale per factor, ``(K,)`` for a ``(N, K)`` array: ARD).
    prior_mean : str or float
        For real arrays, the name of the real site that is its prior mean (shaped like the
        array's trailing dimensions, e.g. ``(K,)``), or a fixed number (default 0).
    prior_loc : float
        For positive sites, the location of the LogNormal hyper-prior (log scale).
    dims : tuple of str
        Names of the dimensions (``"user"``, ``"item"``, ``"factor"``, ...) for ArviZ.
    init_loc : float
        Positive sites: initial value of the variational median (natural scale).
        Real arrays: standard deviation of the random initial variational means.
    init_scale : float
        Initial variational standard deviation (log scale for positive sites).
    """

    name: str
    shape: tuple[int, ...]
    positive: bool = False
    prior_scale: str | float = 1.0
    prior_loc: float = 0.0
    prior_mean: str | float = 0.0
    dims: tuple[str, ...] = ()
    init_loc: float = 0.1
    init_scale: float = 0.05


def _align(p: torch.Tensor, param_shape: tuple[int, ...], array_dims: int) -> torch.Tensor:
    """Reshape a prior parameter ``(*S, *param_shape)`` to broadcast against an array value
    ``(*S, *shape)`` with ``len(shape) == array_dims``: its event dims align with the
    array's trailing ones."""
    batch = p.shape[: p.dim() - len(param_shape)]
    return p.reshape(*batch, *([1] * (array_dims - len(param_shape))), *param_shape)


def prior_normal_params(
    spec: LatentSpec,
    z: dict[str, torch.Tensor],
    device: torch.device | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and scale of a real array's Normal prior, broadcastable against its value.

    ``z`` holds the values of the sites named by ``spec.prior_mean``/``spec.prior_scale``,
    possibly with leading sample dimensions ``S``; the results then have shape
    ``(*S, 1, ..., *param_shape)``. ``shapes`` maps site names to their event shapes
    (default: the trailing dims of the value, assuming no sample dimensions).
    """
    out = []
    for ref in (spec.prior_mean, spec.prior_scale):
        if isinstance(ref, str):
            value = z[ref]
            shape = shapes[ref] if shapes is not None else tuple(value.shape)
            out.append(_align(value, shape, len(spec.shape)))
        else:
            out.append(torch.tensor(float(ref), device=device))
    return out[0], out[1]


class _AbstractPyroModuleMeta(type(PyroModule), ABCMeta):  # type: ignore[misc]
    """PyroModule's metaclass with ABC's, so abstract methods are enforced."""


class GaussianFactorModel(PyroModule, metaclass=_AbstractPyroModuleMeta):
    """Base class: Gaussian likelihood around a mean function of latent arrays.

    Subclasses implement :meth:`latent_specs` and :meth:`mean`. The global mean of the
    training ratings is a fixed offset (set by :meth:`setup` unless given), so that zero
    latents predict the average rating.
    """

    #: site of the observation noise scale (a positive latent)
    noise_site = "noise"

    def __init__(self, n_rows: int, n_cols: int, global_mean: float | None = None) -> None:
        super().__init__()
        if n_rows < 1 or n_cols < 1:
            raise ValueError(f"n_rows and n_cols must be positive, got {n_rows}, {n_cols}")
        self.n_rows = int(n_rows)
        self.n_cols = int(n_cols)
        self.register_buffer(
            "global_mean", torch.tensor(0.0 if global_mean is None else float(global_mean))
        )
        self._mean_given = global_mean is not None

    # ----------------------------------------------------------- to implement
    @abstractmethod
    def latent_specs(self) -> list[LatentSpec]:
        """The latent sites, hyper-parameters (positive) before the arrays they scale."""

    @abstractmethod
    def mean(
        self, z: dict[str, torch.Tensor], rows: torch.Tensor, cols: torch.Tensor
    ) -> torch.Tensor:
        """Mean of the ratings at ``(rows, cols)`` given latent values ``z``.

        ``z`` values may carry leading sample dimensions ``(S, *shape)``; the result then
        has shape ``(S, len(rows))``.
        """

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Constructor arguments, for saving and re-building the model."""

    # ------------------------------------------------------------------ hooks
    def setup(self, train: Ratings) -> None:
        """Called by the fitters before fitting: checks the shape, sets the offset."""
        self.check_data(train)
        if not self._mean_given:
            self.global_mean.fill_(float(train.values.mean()))

    def check_data(self, data: Ratings) -> None:
        """Raise ValueError unless ``data`` is a :class:`Ratings` of this model's shape."""
        if not isinstance(data, Ratings):
            raise TypeError(f"expected a bayesmf.data.Ratings, got {type(data).__name__}")
        if data.shape != (self.n_rows, self.n_cols):
            raise ValueError(
                f"data has shape {data.shape} but the model was built for "
                f"({self.n_rows}, {self.n_cols})"
            )

    # ------------------------------------------------------------- the model
    def sample_latents(self) -> dict[str, torch.Tensor]:
        """Draw every latent site from its prior (inside a Pyro model)."""
        z: dict[str, torch.Tensor] = {}
        device = self.global_mean.device
        for spec in self.latent_specs():
            if spec.positive:
                loc = torch.tensor(float(spec.prior_loc), device=device)
                scale = torch.tensor(float(spec.prior_scale), device=device)
                prior = dist.LogNormal(loc, scale).expand(spec.shape).to_event(len(spec.shape))
            else:
                mean, s = prior_normal_params(spec, z, device)
                prior = dist.Normal(mean.expand(spec.shape), s.expand(spec.shape))
                prior = prior.to_event(len(spec.shape))
            z[spec.name] = pyro.sample(spec.name, prior)
        return z

    def model(
        self, data: Ratings, index: torch.Tensor | None = None, predict: bool = False
    ) -> torch.Tensor:
        """The Pyro model.

        Parameters
        ----------
        data : Ratings
            The ratings (training data when fitting).
        index : LongTensor, optional
            Positions of a minibatch of ``data``; the likelihood is scaled by
            ``len(data) / len(index)`` so the ELBO estimate stays unbiased.
        predict : bool
            Leave the ratings unobserved (for ``Predictive``).
        """
        z = self.sample_latents()
        rows, cols, values = data.rows, data.cols, data.values
        with pyro.plate("ratings", len(data), subsample=index) as idx:
            mu = self.mean(z, rows[idx], cols[idx])
            obs = None if predict else values[idx]
            return pyro.sample("obs", dist.Normal(mu, z[self.noise_site]), obs=obs)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.model(*args, **kwargs)

    def log_likelihood(
        self,
        z: dict[str, torch.Tensor],
        rows: torch.Tensor,
        cols: torch.Tensor,
        values: torch.Tensor,
    ) -> torch.Tensor:
        """Pointwise log-likelihood ``log p(x_i | z)``, shape ``(S, n)`` for ``S`` draws."""
        mu = self.mean(z, rows, cols)
        noise = z[self.noise_site]
        noise = noise.reshape(noise.shape + (1,) * (mu.dim() - noise.dim()))
        return dist.Normal(mu, noise).log_prob(values)
