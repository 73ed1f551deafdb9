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
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.nn import PyroModule
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

__all__ = [
    "BernoulliFactorModel",
    "DiscretizedNormal",
    "FactorModel",
    "GaussianFactorModel",
    "LIKELIHOODS",
    "LatentSpec",
    "check_likelihood",
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
        Real arrays: standard deviation of the random initial variational means. The
        default 0.5 starts factor arrays away from the saddle at zero: from 0.1, SVI of a
        small ``BayesianMF`` (40 x 30, rank 2, noise 0.5) can settle in a collapsed optimum
        that explains the data by noise (noise posterior 1.14, ELBO -1.60 per rating), while
        from 0.5 it reaches ELBO -1.21 to -1.27 and a noise posterior 0.47-0.51 on every
        seed tried.
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
    init_loc: float = 0.5
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
    def collapsible_rows(self) -> tuple[str, ...]:
        """Sites of each row that SVI may integrate out exactly (default: none).

        A model names here its real arrays indexed by user (first dimension ``"user"``)
        on which :meth:`mean` is affine, whose priors are Normal and whose likelihood is
        Gaussian: given the other sites, each user's entries of these arrays are then a
        Bayesian linear regression on that user's ratings, with a closed-form marginal
        likelihood and posterior (``fit_svi(..., collapse_rows=True)``,
        :mod:`bayesmf.inference.collapsed`). Such a model also implements
        ``row_design(z) -> (X, offset, shift)``, the affine form ``mean(n, m) = X[m] .
        (w_n + shift[n]) + offset[m]`` with ``w_n`` the user's entries of these arrays in
        this order (see :meth:`bayesmf.models.BayesianMF.row_design`).
        """
        return ()

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


#: observation models of :class:`GaussianFactorModel` (its ``likelihood=`` option)
LIKELIHOODS = ("gaussian", "discretized")


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, accurate at both ends (Maechler 2012)."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)),
                       torch.log1p(-torch.exp(x)))


def _log_ndtr_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log(Phi(b) - Phi(a))`` for ``a < b``; the upper tail is used where ``a + b > 0``
    (``Phi(b) - Phi(a) = Phi(-a) - Phi(-b)``) so that neither end loses precision."""
    flip = (a + b) > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    l_hi = torch.special.log_ndtr(hi)
    return l_hi + _log1mexp(torch.special.log_ndtr(lo) - l_hi)


class DiscretizedNormal(TorchDistribution):
    """A Normal rounded to the integers ``low, ..., high``, the end bins open.

    ``P(X = k) = Phi((k + 1/2 - loc) / scale) - Phi((k - 1/2 - loc) / scale)`` for
    ``low < k < high``; ``P(X = low) = Phi((low + 1/2 - loc) / scale)`` and ``P(X = high) =
    1 - Phi((high - 1/2 - loc) / scale)``. Equivalently: ``X = clamp(round(Y), low, high)``
    with ``Y ~ N(loc, scale^2)``, which is how it is sampled (and its :meth:`icdf`, used for
    predictive draws with common random numbers). ``log_prob`` is the log of a probability
    (at most 0), so it is comparable with the log-likelihood of any other model of the same
    integer data; it is computed in float64 from differences of ``log Phi`` taken in the
    tail where they are accurate, so that gradients stay finite for outlying ratings.

    Parameters
    ----------
    loc, scale : Tensor or float
        Location and scale (> 0) of the underlying Normal.
    low, high : int
        The first and last level (``low < high``), e.g. 1 and 5 for MovieLens stars.
    validate_args : bool, optional
        As for torch distributions.

    Examples
    --------
    >>> import torch
    >>> d = DiscretizedNormal(torch.tensor([3.0, 5.4]), torch.tensor(0.8), 1, 5)
    >>> p = d.log_prob(torch.arange(1.0, 6.0)[:, None]).exp()   # (5 levels, 2 entries)
    >>> torch.allclose(p.sum(0), torch.ones(2))
    True
    >>> bool(((d.mean >= 1) & (d.mean <= 5)).all())
    True
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = False

    def __init__(
        self,
        loc: torch.Tensor | float,
        scale: torch.Tensor | float,
        low: int,
        high: int,
        validate_args: bool | None = None,
    ) -> None:
        if int(low) != low or int(high) != high or not int(low) < int(high):
            raise ValueError(f"need integer levels low < high, got {low}, {high}")
        self.loc, self.scale = broadcast_all(loc, scale)
        self.low, self.high = int(low), int(high)
        super().__init__(self.loc.shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> constraints.Constraint:
        return constraints.integer_interval(self.low, self.high)

    def expand(self, batch_shape: Any, _instance: Any = None) -> DiscretizedNormal:
        new = self._get_checked_instance(DiscretizedNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        new.low, new.high = self.low, self.high
        super(DiscretizedNormal, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        loc, scale = self.loc.double(), self.scale.double()
        value = torch.as_tensor(value, device=loc.device).double()
        a = (value - 0.5 - loc) / scale
        b = (value + 0.5 - loc) / scale
        # every branch is finite, so torch.where passes finite gradients
        lp = torch.where(
            value <= self.low,
            torch.special.log_ndtr(b),
            torch.where(value >= self.high, torch.special.log_ndtr(-a), _log_ndtr_diff(a, b)),
        )
        return lp.to(self.loc.dtype)

    def _levels(self) -> torch.Tensor:
        return torch.arange(self.low, self.high + 1, device=self.loc.device, dtype=torch.float64)

    def probs(self) -> torch.Tensor:
        """``P(X = k)`` for ``k = low..high`` (last dimension), float64."""
        loc, scale = self.loc.double()[..., None], self.scale.double()[..., None]
        upper = torch.special.ndtr((self._levels()[:-1] + 0.5 - loc) / scale)
        zero = torch.zeros_like(upper[..., :1])
        one = torch.ones_like(zero)
        return torch.cat([upper, one], -1) - torch.cat([zero, upper], -1)

    @property
    def mean(self) -> torch.Tensor:
        # E[X] = low + sum_{k=low}^{high-1} P(X > k), with P(X > k) = Phi((loc - k - 1/2)/scale)
        loc, scale = self.loc.double()[..., None], self.scale.double()[..., None]
        z = (loc - self._levels()[:-1] - 0.5) / scale
        return (self.low + torch.special.ndtr(z).sum(-1)).to(self.loc.dtype)

    @property
    def variance(self) -> torch.Tensor:
        p = self.probs()
        k = self._levels()
        m = (p * k).sum(-1)
        return ((p * k**2).sum(-1) - m**2).clamp(min=0).to(self.loc.dtype)

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        value = torch.as_tensor(value, device=self.loc.device, dtype=self.loc.dtype)
        c = torch.special.ndtr((torch.floor(value) + 0.5 - self.loc) / self.scale)
        return torch.where(value < self.low, torch.zeros_like(c),
                           torch.where(value >= self.high, torch.ones_like(c), c))

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        """``clamp(round(Phi^{-1}(u) * scale + loc), low, high)``: a draw for uniform ``u``."""
        u = torch.as_tensor(value, device=self.loc.device)
        y = self.loc + self.scale * torch.special.ndtri(u)
        return torch.round(y).clamp(self.low, self.high)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            y = torch.normal(self.loc.expand(shape), self.scale.expand(shape))
            return torch.round(y).clamp(self.low, self.high)

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        values = torch.arange(self.low, self.high + 1, device=self.loc.device, dtype=self.loc.dtype)
        values = values.reshape((-1,) + (1,) * len(self.batch_shape))
        return values.expand((-1,) + self.batch_shape) if expand else values


def check_likelihood(
    likelihood: str, levels: tuple[int, int] | list[int] | None
) -> tuple[str, tuple[int, int] | None]:
    """Validate a ``likelihood=`` / ``levels=`` pair of :class:`GaussianFactorModel`.

    Parameters
    ----------
    likelihood : {"gaussian", "discretized"}
        The observation model.
    levels : (int, int), optional
        First and last rating level of a discretized likelihood (``None``: set from the
        training data by :meth:`GaussianFactorModel.setup`).

    Returns
    -------
    (str, (int, int) or None)
        The likelihood name (``"discretised"`` is accepted for ``"discretized"``) and levels.
    """
    kind = str(likelihood).lower().replace("discretised", "discretized")
    if kind not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    if levels is None:
        return kind, None
    low, high = (float(v) for v in levels)
    if not (low.is_integer() and high.is_integer() and low < high):
        raise ValueError(f"levels must be two integers low < high, got {levels}")
    if kind == "gaussian":
        raise ValueError("levels= is for likelihood='discretized'")
    return kind, (int(low), int(high))


class GaussianFactorModel(FactorModel):
    """Gaussian observations ``x ~ N(mean, noise^2)`` (with a latent noise scale ``noise``),
    or the same Normal discretized to an integer rating scale.

    Parameters
    ----------
    n_rows, n_cols : int
        Matrix shape.
    global_mean : float, optional
        Offset of the mean (by default the mean training rating, set by :meth:`setup`).
    likelihood : {"gaussian", "discretized"}
        ``"gaussian"`` (default): ``x ~ N(mean, noise^2)`` on the real line.
        ``"discretized"``: ratings are integers ``low..high`` and ``P(x = k)`` is the mass of
        ``N(mean, noise^2)`` on ``[k - 1/2, k + 1/2]``, the end bins open
        (:class:`DiscretizedNormal`; a probit-style ordinal model with fixed, evenly
        spaced cut points). Then the posterior predictive lives on the scale: ``predict``
        gives its mean (always inside ``[low, high]``), predictive draws are integers, and
        log-likelihoods are log probabilities, comparable with any discrete model.
        Fitted by SVI (``fit_svi``), Pyro ``Predictive`` and ``MCMC``; the conjugate Gibbs
        sampler samples the Gaussian likelihood only.
    levels : (int, int), optional
        First and last level of the discretized scale (default: set by :meth:`setup` from
        the training data's ``scale``, or from the smallest and largest rating).

    Notes
    -----
    **How the Gaussian predictive maps to the rating scale.** With ``likelihood="gaussian"``
    the predictive of an integer rating is a continuous Normal mixture: on MovieLens-100K
    4.1-4.2% of its mass lies outside ``[0.5, 5.5]`` (SVI and Gibbs fits of
    :class:`~bayesmf.models.BayesianMF`). ``predict(data, clamp=True)`` clamps
    the predictive mean to ``data.scale``; intervals are quantiles of continuous draws and
    may reach beyond the scale (clamping them to the scale does not change their coverage of
    ratings on the scale); and ``log p(x)`` is a *density* at the integer, not a probability,
    so it cannot be compared with a discrete model's log-likelihood. Rounding each Gaussian
    draw to the nearest level and clamping it to the scale gives the discretized predictive
    of the *same* posterior: ``diagnostics.log_predictive_density(fit, test,
    discretize=True)`` and ``diagnostics.interval_coverage(fit, test, discretize=True)``
    evaluate it. On MovieLens-100K (``random_split`` seed 0, rank 10) the held-out log
    probability per rating is -1.240 for the Gaussian SVI fit mapped to the scale, -1.227 for
    the Gaussian Gibbs fit mapped, and -1.226 for ``likelihood="discretized"`` fitted by SVI
    (whose predictive mean also has the lower RMSE: 0.882 against 0.887 and 0.883).
    """

    #: site of the observation noise scale (a positive latent)
    noise_site = "noise"

    def __init__(
        self,
        n_rows: int,
        n_cols: int,
        global_mean: float | None = None,
        likelihood: str = "gaussian",
        levels: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(n_rows, n_cols, global_mean)
        self.likelihood_kind, self.levels = check_likelihood(likelihood, levels)

    @property
    def discrete(self) -> bool:
        """Whether observations are integer levels (the discretized likelihood)."""
        return getattr(self, "likelihood_kind", "gaussian") == "discretized"

    def likelihood_config(self) -> dict[str, Any]:
        """The ``likelihood`` and ``levels`` constructor arguments, for :meth:`config`."""
        levels = None if self.levels is None else list(self.levels)
        return {"likelihood": self.likelihood_kind, "levels": levels}

    def setup(self, train: Any) -> None:
        """As :meth:`FactorModel.setup`; a discretized model also checks that the ratings
        are integers on its levels (setting the levels from the data when not given)."""
        super().setup(train)
        if not self.discrete:
            return
        values = train.values
        bad = torch.nonzero(values != torch.round(values)).flatten()
        if len(bad):
            raise ValueError(
                f"likelihood='discretized' needs integer ratings; {len(bad)} are not "
                f"(first at positions {bad[:5].tolist()}: {values[bad[:5]].tolist()})"
            )
        if self.levels is None:
            scale = getattr(train, "scale", None)
            lo, hi = scale if scale is not None else (values.min(), values.max())
            self.levels = check_likelihood("discretized", (round(float(lo)), round(float(hi))))[1]
        low, high = self.levels
        out = torch.nonzero((values < low) | (values > high)).flatten()
        if len(out):
            raise ValueError(f"{len(out)} ratings lie outside the levels {self.levels} "
                             f"(first at positions {out[:5].tolist()})")

    def likelihood(self, mu: torch.Tensor, z: dict[str, torch.Tensor]) -> dist.Distribution:
        noise = z[self.noise_site]
        noise = noise.reshape(noise.shape + (1,) * (mu.dim() - noise.dim()))
        if not self.discrete:
            return dist.Normal(mu, noise)
        if self.levels is None:
            raise ValueError("the discretized likelihood needs its levels: pass levels=(low, "
                             "high) or call setup(train) (the fitters do)")
        return DiscretizedNormal(mu, noise, *self.levels)


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
