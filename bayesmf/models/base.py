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

__all__ = [
    "BernoulliFactorModel",
    "FactorModel",
    "GaussianFactorModel",
    "LatentSpec",
    "prior_normal_params",
]


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


class FactorModel(PyroModule, metaclass=_AbstractPyroModuleMeta):
    """Base class: a likelihood around a mean function of latent arrays.

    A model states what is believed and nothing else: its latent sites
    (:meth:`latent_specs`), the mean function ``mean(z, rows, cols)`` on the linear
    predictor's scale and the observation distribution (:meth:`likelihood`). Every engine
    reads these: the SVI engine builds its guide from the specs, the Gibbs sampler reads the
    conjugate structure, ArviZ names dimensions from ``dims``. Data are any container with
    ``rows``, ``cols``, ``values``, ``shape`` and ``len`` (:class:`~bayesmf.data.Ratings`, or
    :class:`~bayesmf.data.Pairs` of a network).

    Subclasses implement :meth:`latent_specs`, :meth:`mean`, :meth:`likelihood` and
    :meth:`config`. The offset ``global_mean`` (on the linear predictor's scale) is set by
    :meth:`setup` from the training data unless given, so that zero latents predict the
    average observation.
    """

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
        """Linear predictor at ``(rows, cols)`` given latent values ``z``.

        ``z`` values may carry leading sample dimensions ``(S, *shape)``; the result then
        has shape ``(S, len(rows))``.
        """

    @abstractmethod
    def likelihood(self, mu: torch.Tensor, z: dict[str, torch.Tensor]) -> dist.Distribution:
        """Distribution of the observations given their linear predictor ``mu``.

        ``mu`` has shape ``(*S, n)``; site values in ``z`` carry the same leading ``S``.
        """

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Constructor arguments, for saving and re-building the model."""

    # ------------------------------------------------------------------ hooks
    @property
    def device(self) -> torch.device:
        """Where the model's buffers live."""
        return self.global_mean.device

    def default_offset(self, train: Any) -> float:
        """The offset set by :meth:`setup` (default: the mean observation)."""
        return float(train.values.mean())

    def setup(self, train: Any) -> None:
        """Called by the fitters before fitting: checks the shape, sets the offset."""
        self.check_data(train)
        if not self._mean_given:
            self.global_mean.fill_(self.default_offset(train))

    def check_data(self, data: Any) -> None:
        """Raise unless ``data`` holds entries of a matrix of this model's shape."""
        if not all(hasattr(data, a) for a in ("rows", "cols", "values", "shape")):
            raise TypeError(
                f"expected a bayesmf.data.Ratings (or Pairs), got {type(data).__name__}"
            )
        if tuple(data.shape) != (self.n_rows, self.n_cols):
            raise ValueError(
                f"data has shape {tuple(data.shape)} but the model was built for "
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

    def model(self, data: Any, index: torch.Tensor | None = None, predict: bool = False):
        """The Pyro model.

        Parameters
        ----------
        data : Ratings or Pairs
            The observations (training data when fitting).
        index : LongTensor, optional
            Positions of a minibatch of ``data``; the likelihood is scaled by
            ``len(data) / len(index)`` so the ELBO estimate stays unbiased.
        predict : bool
            Leave the observations unobserved (for ``Predictive``).
        """
        z = self.sample_latents()
        rows, cols, values = data.rows, data.cols, data.values
        with pyro.plate("ratings", len(data), subsample=index) as idx:
            mu = self.mean(z, rows[idx], cols[idx])
            obs = None if predict else values[idx]
            return pyro.sample("obs", self.likelihood(mu, z), obs=obs)

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
        return self.likelihood(self.mean(z, rows, cols), z).log_prob(values)

    def expected(
        self, z: dict[str, torch.Tensor], rows: torch.Tensor, cols: torch.Tensor
    ) -> torch.Tensor:
        """``E[x | z]`` at ``(rows, cols)``, shape ``(S, n)``."""
        return self.likelihood(self.mean(z, rows, cols), z).mean

    def predictive_draws(
        self,
        z: dict[str, torch.Tensor],
        rows: torch.Tensor,
        cols: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One draw ``x ~ p(x | z)`` per draw of ``z``, shape ``(S, n)``."""
        d = self.likelihood(self.mean(z, rows, cols), z)
        u = torch.rand(d.batch_shape, generator=generator, device=self.device)
        return d.icdf(u) if not isinstance(d, dist.Bernoulli) else (u < d.probs).to(u.dtype)


class GaussianFactorModel(FactorModel):
    """Gaussian likelihood ``x ~ N(mean, noise^2)`` with a latent noise scale ``noise``."""

    #: site of the observation noise scale (a positive latent)
    noise_site = "noise"

    def likelihood(self, mu: torch.Tensor, z: dict[str, torch.Tensor]) -> dist.Distribution:
        noise = z[self.noise_site]
        return dist.Normal(mu, noise.reshape(noise.shape + (1,) * (mu.dim() - noise.dim())))


class BernoulliFactorModel(FactorModel):
    """Bernoulli likelihood with a logit link: ``x ~ Bernoulli(sigmoid(mean))``.

    The offset is the logit of the training density, so zero latents predict the
    average link probability.
    """

    def likelihood(self, mu: torch.Tensor, z: dict[str, torch.Tensor]) -> dist.Distribution:
        return dist.Bernoulli(logits=mu)

    def default_offset(self, train: Any) -> float:
        p = float(train.values.float().mean().clamp(1e-4, 1 - 1e-4))
        return float(torch.logit(torch.tensor(p)))
