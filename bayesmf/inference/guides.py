"""Vectorized mean-field variational families for the library's models.

:class:`MeanFieldGuide` reads a model's :meth:`latent_specs` and builds one fully
factorized Gaussian per real array (one loc and one scale per entry, the whole array a
single site) and one LogNormal per positive hyper-parameter. Its parameters are plain
``nn.Parameter`` s of the module, not entries of Pyro's global parameter store, so that
several fits can live side by side and a checkpoint is just ``state_dict()`` (tensors
only, loadable with ``torch.load(..., weights_only=True)``).

Local arrays (real arrays whose first dimension is a user, an item or a network node, see
:func:`local_axis`) can be gathered row by row with *sparse* gradients
(``sparse_grads=True``, :meth:`MeanFieldGuide.loc_scale` with an index): a minibatch step
then touches only the rows it drew, and the engine steps those parameters with a lazy Adam
(:class:`~bayesmf.inference.optim.LazyAdam`, see :meth:`MeanFieldGuide.parameter_groups`),
so that the cost of a step does not grow with the number of rows.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from ..models.base import GaussianFactorModel, LatentSpec

__all__ = ["LOCAL_AXES", "MeanFieldGuide", "gather_rows", "local_axis"]

#: first-dimension names of local arrays, and the data fields that index them ("node": the
#: nodes of a network, indexed by both ends of each pair)
LOCAL_AXES = {"user": ("rows",), "item": ("cols",), "node": ("rows", "cols")}


def local_axis(spec: LatentSpec) -> str | None:
    """``"user"``, ``"item"`` or ``"node"`` for a local array (a real array whose first
    dimension is a row, a column or a node of a network), ``None`` for a global site."""
    if spec.positive or not spec.dims or spec.dims[0] not in LOCAL_AXES:
        return None
    return spec.dims[0]


def _inv_softplus(x: float) -> float:
    return x + math.log(-math.expm1(-x))


class _GatherRows(torch.autograd.Function):
    """``param.index_select(0, index)`` whose gradient is a sparse COO tensor."""

    @staticmethod
    def forward(ctx: Any, param: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.shape = param.shape
        return param.index_select(0, index)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (index,) = ctx.saved_tensors
        sparse = torch.sparse_coo_tensor(
            index.unsqueeze(0), grad, ctx.shape, check_invariants=False
        )
        return sparse, None


def gather_rows(param: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` of ``param`` (along its first dimension), with a sparse gradient.

    The backward pass returns a :class:`torch.sparse_coo_tensor` holding only the gathered
    rows (duplicates in ``index`` are summed when it is coalesced; an increasing ``index``,
    as :func:`torch.unique` gives, spares :class:`~bayesmf.inference.optim.LazyAdam` that
    sort), like
    ``torch.nn.functional.embedding(..., sparse=True)`` but for a parameter of any number of
    dimensions: its cost is that of the rows, not of the whole array.

    Parameters
    ----------
    param : torch.Tensor
        A tensor of shape ``(N, ...)`` (usually a leaf parameter).
    index : LongTensor
        Positions along the first dimension, shape ``(n,)``.

    Returns
    -------
    torch.Tensor
        ``param[index]``, shape ``(n, ...)``.

    Examples
    --------
    >>> p = torch.nn.Parameter(torch.zeros(5, 2))
    >>> gather_rows(p, torch.tensor([1, 3])).sum().backward()
    >>> p.grad.is_sparse, p.grad.to_dense()[:, 0].tolist()
    (True, [0.0, 1.0, 0.0, 1.0, 0.0])
    """
    return _GatherRows.apply(param, index)


def correlate(x: torch.Tensor, off: torch.Tensor | None, eps: torch.Tensor) -> torch.Tensor:
    """``x + off @ eps`` row by row: the draws ``m + diag(s) eps`` of a mean-field row made
    draws ``m + L eps`` of a row with covariance factor ``L = diag(s) + off`` (``off``:
    ``(n, K, K)`` strictly lower triangular; ``eps``: ``(S, n, K)``); ``x`` if ``off`` is
    ``None``."""
    if off is None:
        return x
    return x + torch.einsum("nkj,snj->snk", off, eps)


class MeanFieldGuide(nn.Module):
    """Fully factorized Gaussian / LogNormal guide for a :class:`GaussianFactorModel`.

    Parameters
    ----------
    model : GaussianFactorModel
        The model whose latent sites are approximated.
    init_scale : float, optional
        Initial posterior standard deviation of real arrays (default: each spec's).
    seed : int
        Seed of the random initial means (symmetry breaking of factor arrays).
    sparse_grads : bool
        Gather rows of local arrays (:meth:`loc_scale` with an ``index``) with sparse
        gradients; their parameters (:meth:`parameter_groups`) must then be stepped by an
        optimiser that takes sparse gradients (:class:`~bayesmf.inference.optim.LazyAdam`).
        Whole-array uses (the Pyro guide, :meth:`log_q`, ...) keep dense gradients. May be
        changed after construction (it is not part of the state).
    row_covariance : bool
        Give each row of a local real array of two dimensions (a user's or an item's
        latent vector) a full covariance, ``q(u_n) = N(m_n, L_n L_n^T)`` with ``L_n`` lower
        triangular (diagonal: the mean-field scales, strictly lower part: :attr:`offdiag`
        times each row's scales, started at zero, i.e. at the mean-field guide); rows stay
        independent. The factors of one row are correlated in the posterior (the likelihood
        couples them through ``u_n . v_m``), which a diagonal ``q`` can only match by
        shrinking its variances. Costs ``K (K - 1) / 2`` more parameters per row.
    exclude : tuple of str
        Sites left out of the family (e.g. those a collapsed guide integrates out,
        :class:`~bayesmf.inference.collapsed.CollapsedRowsGuide`).

    Examples
    --------
    >>> from bayesmf import models
    >>> from bayesmf.inference.guides import MeanFieldGuide
    >>> g = MeanFieldGuide(models.BayesianMF(5, 4, rank=2))
    >>> draws = g.sample_latents(3)
    >>> draws["U"].shape, draws["noise"].shape
    (torch.Size([3, 5, 2]), torch.Size([3]))
    """

    def __init__(
        self,
        model: GaussianFactorModel,
        init_scale: float | None = None,
        seed: int = 0,
        sparse_grads: bool = False,
        row_covariance: bool = False,
        exclude: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        unknown = set(exclude) - {s.name for s in model.latent_specs()}
        if unknown:
            raise ValueError(f"exclude names sites the model does not have: {sorted(unknown)}")
        self.specs: list[LatentSpec] = [s for s in model.latent_specs()
                                        if s.name not in exclude]
        self.sparse_grads = bool(sparse_grads)
        self._local = frozenset(s.name for s in self.specs if local_axis(s) is not None)
        self.row_covariance = bool(row_covariance)
        #: strictly lower-triangular factors of the rows' covariances (``row_covariance``)
        self.offdiag = nn.ParameterDict()
        gen = torch.Generator().manual_seed(seed)
        self.locs = nn.ParameterDict()
        self.raw_scales = nn.ParameterDict()
        for spec in self.specs:
            if spec.positive:
                loc = torch.full(spec.shape, math.log(spec.init_loc))
                s = spec.init_scale
            else:
                loc = spec.init_loc * torch.randn(spec.shape, generator=gen)
                s = spec.init_scale if init_scale is None else init_scale
            self.locs[spec.name] = nn.Parameter(loc)
            self.raw_scales[spec.name] = nn.Parameter(torch.full(spec.shape, _inv_softplus(s)))
            if (self.row_covariance and spec.name in self._local and len(spec.shape) == 2
                    and spec.shape[1] > 1):
                self.offdiag[spec.name] = nn.Parameter(torch.zeros(*spec.shape, spec.shape[1]))
        self.to(model.device)

    def row_factor(
        self, name: str, index: torch.Tensor | None = None, scale: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """The strictly lower-triangular part of the rows' covariance factors ``L_n`` of a
        site, ``(n, K, K)`` (rows ``index``; gathered like :meth:`loc_scale`), or ``None``
        when the site's rows are mean-field.

        Entry ``(k, j)`` is ``offdiag[n, k, j] * scale[n, k]``: the parameters are relative
        to the row's own scales (``L_n = diag(s_n) (I + tril(offdiag_n, -1))``), so that
        Adam's first steps of a given size move a row's correlation, whatever its scale.
        ``scale``: the rows' scales (:meth:`loc_scale`'s), when already at hand."""
        if name not in self.offdiag:
            return None
        off = self.offdiag[name]
        if index is not None:
            off = gather_rows(off, index) if self.sparse_grads else off.index_select(0, index)
        if scale is None:
            scale = self.loc_scale(name, index)[1]
        return off.tril(-1) * scale.unsqueeze(-1)

    def _scale_tril(self, name: str) -> torch.Tensor:
        scale = self.scale(name)
        off = self.row_factor(name, scale=scale)
        assert off is not None
        return off + torch.diag_embed(scale)

    def local_names(self) -> list[str]:
        """Names of the local arrays (see :func:`local_axis`), in the order of the specs."""
        return [s.name for s in self.specs if local_axis(s) is not None]

    def parameter_groups(
        self, whole_rows: int | None = None
    ) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """The parameters split into ``(dense, sparse)``.

        ``sparse`` are the locations and raw scales of the local arrays when
        ``sparse_grads`` is set (their gradients from :meth:`loc_scale` with an index are
        sparse: step them with :class:`~bayesmf.inference.optim.LazyAdam` or
        :class:`torch.optim.SparseAdam`), else empty; ``dense`` are
        all the others.

        Parameters
        ----------
        whole_rows : int, optional
            The ``whole_rows`` of :func:`~bayesmf.inference.objectives.local_elbo_terms`:
            local arrays of at most that many rows (twice as many for node arrays) are
            drawn whole at every step, so their gradients are dense and they are ``dense``.

        Returns
        -------
        dense, sparse : list of nn.Parameter
        """
        local = self.local_names() if self.sparse_grads else []
        if whole_rows is not None:
            specs = {s.name: s for s in self.specs}
            local = [n for n in local if specs[n].shape[0]
                     > whole_rows * (2 if local_axis(specs[n]) == "node" else 1)]
        sparse = [d[n] for n in local for d in (self.locs, self.raw_scales, self.offdiag)
                  if n in d]
        ids = {id(p) for p in sparse}
        dense = [p for p in self.parameters() if id(p) not in ids]
        return dense, sparse

    def scale(self, name: str) -> torch.Tensor:
        """Posterior standard deviation (log scale for positive sites) of a site."""
        return softplus(self.raw_scales[name]) + 1e-6

    def loc_scale(
        self, name: str, index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Variational location and scale of a site, optionally of some entries only.

        Parameters
        ----------
        name : str
            The site.
        index : LongTensor, optional
            Positions along the site's first dimension (e.g. the users of a minibatch);
            only these rows are gathered, so the cost and the gradient are confined to
            them (the other rows' gradients are zero; a sparse tensor of these rows when
            ``sparse_grads`` is set and the site is a local array).

        Returns
        -------
        loc, scale : torch.Tensor
            Shaped like the site, or ``(len(index), *shape[1:])``; the scale is
            :meth:`scale`'s (log scale for positive sites).
        """
        loc, raw = self.locs[name], self.raw_scales[name]
        if index is not None and self.sparse_grads and name in self._local:
            loc, raw = gather_rows(loc, index), gather_rows(raw, index)
        elif index is not None:
            loc, raw = loc.index_select(0, index), raw.index_select(0, index)
        return loc, softplus(raw) + 1e-6

    def distribution(self, spec: LatentSpec) -> dist.Distribution:
        loc, scale = self.locs[spec.name], self.scale(spec.name)
        if spec.name in self.offdiag:  # one multivariate normal per row
            return dist.MultivariateNormal(loc, scale_tril=self._scale_tril(spec.name)).to_event(1)
        if spec.positive:
            return dist.LogNormal(loc, scale).to_event(len(spec.shape))
        return dist.Normal(loc, scale).to_event(len(spec.shape))

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The Pyro guide; takes (and ignores) the model's arguments."""
        return {s.name: pyro.sample(s.name, self.distribution(s)) for s in self.specs}

    @torch.no_grad()
    def sample_latents(
        self, num_samples: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Independent draws of every latent site, each with a leading ``num_samples`` dim."""
        out: dict[str, torch.Tensor] = {}
        for spec in self.specs:
            loc, scale = self.locs[spec.name], self.scale(spec.name)
            eps = torch.randn((num_samples, *spec.shape), generator=generator, device=loc.device)
            x = correlate(loc + scale * eps, self.row_factor(spec.name, scale=scale), eps)
            out[spec.name] = x.exp() if spec.positive else x
        return out

    @torch.no_grad()
    def posterior_mean(self) -> dict[str, torch.Tensor]:
        """Posterior means of every site (LogNormal mean ``exp(loc + s^2/2)``)."""
        out: dict[str, torch.Tensor] = {}
        for spec in self.specs:
            loc, scale = self.locs[spec.name], self.scale(spec.name)
            out[spec.name] = (loc + scale**2 / 2).exp() if spec.positive else loc.clone()
        return out

    @torch.no_grad()
    def posterior_std(self) -> dict[str, torch.Tensor]:
        """Posterior standard deviations of every site (on the natural scale)."""
        out: dict[str, torch.Tensor] = {}
        for spec in self.specs:
            loc, s = self.locs[spec.name], self.scale(spec.name)
            if spec.positive:  # LogNormal standard deviation
                out[spec.name] = ((s**2).exp() - 1).sqrt() * (loc + s**2 / 2).exp()
            elif spec.name in self.offdiag:  # sqrt of the diagonal of L L^T
                off = self.row_factor(spec.name, scale=s)
                out[spec.name] = (s**2 + (off**2).sum(-1)).sqrt()
            else:
                out[spec.name] = s.clone()
        return out

    def log_q(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        """``log q(z)`` for draws with a leading sample dimension, shape ``(S,)``."""
        total = 0.0
        for spec in self.specs:
            d = self.distribution(spec)
            total = total + d.log_prob(z[spec.name])
        return total
