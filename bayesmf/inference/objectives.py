"""A minibatch ELBO whose cost grows with the batch, not with the matrix.

Pyro's ``TraceMeanField_ELBO`` over :meth:`FactorModel.model` treats each whole latent
array as one site: every minibatch step draws all users' and items' factors and computes
the KL divergence of all of them, so an epoch costs ``O(n / batch * (N + M) K)``.
:func:`local_elbo_loss` computes an unbiased estimate of the same (negative) ELBO in
``O(batch)``:

* **local sites** (real arrays whose first dimension is ``"user"`` or ``"item"``, e.g.
  ``U``, ``V``, the biases, NNMF's ``U'``, ``V'``; or ``"node"`` for a network model,
  indexed by both ends of each pair) are drawn only for the rows and columns that occur in
  the minibatch (``torch.unique`` and its inverse index);
* **global sites** (hyper-parameters, network weights, factor means) are drawn in full;
* the expected log-likelihood is the minibatch sum scaled by ``n / b``;
* the KL of a global site is analytic given the draws of the sites it depends on (Normal
  against the Normal prior whose mean and scale are the drawn hyper-parameters, LogNormal
  against its LogNormal hyper-prior), exactly as ``TraceMeanField_ELBO`` computes it;
* the KL of local row ``u`` is shared out among the row's ratings: each rating in the
  batch contributes ``KL_u / c_u * n / b`` with ``c_u`` the number of ratings of ``u`` in
  the data. Summed over a batch drawn uniformly (or averaged over the batches of a
  partition into equal parts) the expectation is ``sum_u KL_u``, so the estimator is
  unbiased. Rows without any rating in the data add their full KL at every step. A node
  counts once per end of a pair: ``c_u`` is its number of appearances, and each
  appearance in the batch carries ``KL_u / c_u * n / b``.

With ``index=None`` (the full batch) the value has the same distribution as
``TraceMeanField_ELBO``'s (it is the same function of the same draws), at the same cost.

The counts ``c_u`` are computed once per data object and cached (weakly keyed by it). When
an axis is no longer than the batch, the whole array is drawn (rows absent from the batch
get KL weight 0), which avoids sorting and gathering where nearly every row occurs anyway.

With a guide built with ``sparse_grads=True`` the local arrays' rows are gathered with
sparse gradients (:func:`~bayesmf.inference.guides.gather_rows`), so that the backward pass
and a lazy optimiser (:class:`~bayesmf.inference.loop.LazyAdam`) touch only the batch's rows
too: the whole step, not only the forward pass, costs ``O(batch)``. (An axis drawn whole,
being no longer than the batch, keeps its dense gradient: it costs ``O(batch)`` anyway.)

A data-parallel fit (:mod:`~bayesmf.inference.distributed`) calls it on each process's
shard of the data as if the shard were all of it, with ``likelihood_scale`` the number of
processes: averaged over the processes, the estimates are unbiased for the full ELBO.
"""

from __future__ import annotations

import functools
import inspect
import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..models.base import prior_normal_params
from .guides import LOCAL_AXES, MeanFieldGuide, correlate, local_axis

__all__ = [
    "AxisCounts",
    "ELBOTerms",
    "data_counts",
    "local_axis",
    "local_elbo_loss",
    "local_elbo_terms",
]

@dataclass(frozen=True)
class ELBOTerms:
    """The three parts of an ELBO estimate (each a scalar tensor).

    Attributes
    ----------
    loglik : torch.Tensor
        Estimate of ``sum_i E_q[log p(x_i | z)]`` over all of the data.
    kl_global : torch.Tensor
        KL divergence of the global sites (hyper-parameters, weights, factor means).
    kl_local : torch.Tensor
        Estimate of the summed KL divergence of every row and column of the local arrays.
    """

    loglik: torch.Tensor
    kl_global: torch.Tensor
    kl_local: torch.Tensor

    def loss(self, kl_weight: float = 1.0) -> torch.Tensor:
        """Negative ELBO with the KL weighted: ``-(loglik - kl_weight * KL)``."""
        return -(self.loglik - kl_weight * (self.kl_global + self.kl_local))


@dataclass(frozen=True)
class AxisCounts:
    """Numbers of entries of each row (column, node) of a data set.

    Attributes
    ----------
    total : LongTensor
        Entries of each row, ``(n_rows,)`` (a node counts once per end of a pair).
    empty : LongTensor
        Indices of the rows without any entry.
    """

    total: torch.Tensor
    empty: torch.Tensor


_COUNTS: weakref.WeakKeyDictionary[Any, dict[str, AxisCounts]] = weakref.WeakKeyDictionary()


def data_counts(data: Any, axis: str) -> AxisCounts:
    """Entries per row (``"user"``), column (``"item"``) or node (``"node"``) of ``data``.

    Cached per data object (weakly referenced), which is treated as immutable.

    Parameters
    ----------
    data : Ratings or Pairs
        Any container with ``rows``, ``cols`` and ``shape``.
    axis : {"user", "item", "node"}
        Which index to count; ``"node"`` counts both ends of each pair (square data).

    Returns
    -------
    AxisCounts
    """
    try:
        cache = _COUNTS.setdefault(data, {})
    except TypeError:  # not weakly referenceable: compute every time
        cache = {}
    if axis not in cache:
        n_rows, n_cols = (int(s) for s in data.shape)
        if axis == "node" and n_rows != n_cols:
            raise ValueError(f"node arrays need square data, got shape {(n_rows, n_cols)}")
        size = {"user": n_rows, "item": n_cols, "node": n_rows}[axis]
        idx = torch.cat([getattr(data, f) for f in LOCAL_AXES[axis]])
        total = torch.bincount(idx, minlength=size)
        cache[axis] = AxisCounts(total, torch.nonzero(total == 0).flatten())
    return cache[axis]


@functools.lru_cache(maxsize=256)
def _signature_takes_feature_index(fn: Any) -> bool:
    params = inspect.signature(fn).parameters
    return "feature_rows" in params and "feature_cols" in params


def _takes_feature_index(model: Any) -> bool:
    """Whether ``model.mean`` (the bound method, or a function set on the instance) takes
    the keywords ``feature_rows`` and ``feature_cols``."""
    fn = model.mean
    return _signature_takes_feature_index(getattr(fn, "__func__", fn))


def _take(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    # index_select: several times faster than advanced indexing on long arrays
    return t.index_select(0, index if index.dtype == torch.long else index.long())


def _getitem(t: torch.Tensor, index: Any) -> torch.Tensor:
    return t[index]


def _normal_kl(
    loc: torch.Tensor, scale: torch.Tensor, p_loc: torch.Tensor, p_scale: torch.Tensor,
    off: torch.Tensor | None = None,
) -> torch.Tensor:
    """Elementwise ``KL(N(loc, scale^2) || N(p_loc, p_scale^2))`` (broadcasting).

    With ``off`` (``(n, K, K)`` strictly lower triangular), the KL of the rows
    ``N(loc_n, L_n L_n^T)``, ``L_n = diag(scale_n) + off_n``, from the diagonal prior, split
    over the K entries of each row: ``log|L_n| = sum_k log scale_nk`` and the trace adds
    ``sum_j off_nkj^2`` to ``scale_nk^2`` (summed over a row, the exact KL)."""
    var = scale**2 if off is None else scale**2 + (off**2).sum(-1)
    return p_scale.log() - scale.log() + (var + (loc - p_loc) ** 2) / (2 * p_scale**2) - 0.5


def draw_site(
    spec: Any, loc: torch.Tensor, scale: torch.Tensor, off: torch.Tensor | None,
    noise: torch.Tensor, z: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]],
) -> torch.Tensor:
    """Draw a site by reparameterisation and return its elementwise KL from its prior.

    Sets ``z[spec.name]`` to the draw ``loc + scale * noise`` (correlated by ``off``;
    exponentiated for a positive site) and ``shapes[spec.name]`` to the drawn shape. The KL
    is analytic given the draws already in ``z`` of the sites the prior depends on:
    shaped like ``loc`` for a positive site (KL of the LogNormals = KL of the Normals of
    their logs), ``(S?, *loc.shape)`` for a real one (``S`` when the hyper-parameters carry
    the sample dimension)."""
    x = correlate(loc + scale * noise, off, noise)
    shapes[spec.name] = tuple(loc.shape)
    if spec.positive:
        z[spec.name] = x.exp()
        p_loc_f, p_scale_f = float(spec.prior_loc), float(spec.prior_scale)
        return (math.log(p_scale_f) - scale.log()
                + (scale**2 + (loc - p_loc_f) ** 2) / (2 * p_scale_f**2) - 0.5)
    z[spec.name] = x
    p_loc, p_scale = prior_normal_params(spec, z, x.device, shapes)
    return _normal_kl(loc, scale, p_loc, p_scale, off)


@dataclass(frozen=True)
class _AxisBatch:
    """The rows (or columns) of a minibatch.

    ``uniq``: the rows gathered from the guide (``None``: all rows, the whole array is
    drawn); ``inv``: each rating's position in the drawn array; ``weight``: the factor of
    each drawn row's KL; ``empty``: rows without data whose whole KL is added separately
    (``None`` when ``weight`` already gives them 1).
    """

    uniq: torch.Tensor | None
    inv: torch.Tensor
    weight: torch.Tensor
    empty: torch.Tensor | None


def _axis_batch(
    idx: torch.Tensor, counts: AxisCounts, ratio: float, dtype: torch.dtype,
    whole_at: int | None = None,
) -> _AxisBatch:
    """Rows of a minibatch, their inverse index and KL weights ``(# in batch) / c_u * n/b``.

    When the axis is no longer than the batch (most rows occur in it), the whole array is
    drawn: this avoids sorting the batch (``torch.unique``) and gathering parameters, and
    rows absent from the batch get weight 0 (rows without data weight 1), which is the
    same estimate as gathering. ``whole_at`` (default ``len(idx)``) is the longest axis
    drawn whole.
    """
    total, empty = counts.total, counts.empty
    n_axis = len(total)
    if n_axis <= (len(idx) if whole_at is None else whole_at):
        in_batch = torch.bincount(idx, minlength=n_axis)
        weight = in_batch / total.clamp(min=1) * ratio
        weight = torch.where(total == 0, torch.ones_like(weight), weight)
        return _AxisBatch(None, idx, weight.to(dtype), None)
    uniq, inv = torch.unique(idx, return_inverse=True)
    weight = torch.bincount(inv, minlength=len(uniq)) / total[uniq] * ratio
    return _AxisBatch(uniq, inv, weight.to(dtype), empty)


def local_elbo_terms(
    model: Any,
    guide: MeanFieldGuide,
    data: Any,
    index: torch.Tensor | None = None,
    num_particles: int = 1,
    eps: Mapping[str, torch.Tensor] | None = None,
    whole_rows: int | None = None,
    likelihood_scale: float = 1.0,
) -> ELBOTerms:
    """The parts of an unbiased ``O(batch)`` ELBO estimate (see the module docstring).

    Parameters
    ----------
    model : FactorModel
        The model (e.g. :class:`bayesmf.models.BayesianMF`); its ``mean`` must index local
        arrays only along their first dimension by ``rows``/``cols``, or accept the
        keywords ``feature_rows``/``feature_cols`` for any other per-row lookup (side
        features), which then receive the original indices.
    guide : MeanFieldGuide
        The variational family built from ``model``.
    data : Ratings or Pairs
        The whole training data (its per-row counts are cached on first use).
    index : LongTensor, optional
        Positions of the minibatch in ``data`` (``None``: all of it).
    num_particles : int
        Draws of ``z`` averaged in the estimate.
    eps : mapping of str to tensor, optional
        Standard-normal noise of each site, shaped ``(num_particles, *site_shape)`` (the
        full arrays; local sites use the rows of the batch), instead of fresh draws: common
        random numbers for tests and variance-reduced comparisons.
    whole_rows : int, optional
        Draw a local array whole (dense gradient) when its axis has at most this many rows
        (twice as many for node arrays, indexed by both ends of each pair); default: the
        batch's length, which may differ between the batches of an epoch. A fixed value
        (the batch size) keeps each array's gradients always dense or always sparse, so
        that its parameters can be given to one optimiser
        (:meth:`MeanFieldGuide.parameter_groups` with the same value).
    likelihood_scale : float
        Factor of the likelihood term: the number of processes of a data-parallel fit in
        which ``data`` is one process's shard (the KL terms, estimated from the shard as if
        it were all of the data, are not scaled), so that the average over the processes of
        their estimates is an unbiased estimate of the full data's ELBO.

    Returns
    -------
    ELBOTerms
    """
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1, got {num_particles}")
    n = len(data)
    if index is None:
        rows, cols, values, b = data.rows, data.cols, data.values, n
    else:
        take = _take if index.dim() == 1 and index.dtype in (torch.long, torch.int) else _getitem
        rows, cols, values = (take(t, index) for t in (data.rows, data.cols, data.values))
        b = len(rows)
    if b == 0:
        raise ValueError("empty minibatch")
    ratio = n / b
    axes = {local_axis(spec) for spec in guide.specs} - {None}
    if "node" in axes and axes != {"node"}:
        raise ValueError(f"a model cannot have node arrays and user/item arrays: {axes}")
    batch: dict[str, _AxisBatch] = {}
    for axis in axes:
        idx = {"user": rows, "item": cols}.get(axis)
        idx = torch.cat([rows, cols]) if idx is None else idx
        whole_at = None if whole_rows is None else whole_rows * (2 if axis == "node" else 1)
        batch[axis] = _axis_batch(idx, data_counts(data, axis), ratio, values.dtype, whole_at)
    if "node" in batch:  # both ends of each pair index the node arrays
        local_rows, local_cols = batch["node"].inv[:b], batch["node"].inv[b:]
    else:
        local_rows = batch["user"].inv if "user" in batch else rows
        local_cols = batch["item"].inv if "item" in batch else cols

    S = num_particles
    device = values.device
    z: dict[str, torch.Tensor] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    kl_global = torch.zeros((), device=device)
    kl_local = torch.zeros((), device=device)
    for spec in guide.specs:
        axis = local_axis(spec)
        uniq = None if axis is None else batch[axis].uniq
        empty = None if axis is None else batch[axis].empty
        e_off = None
        if uniq is not None and empty is not None and len(empty):
            # one gather for the batch's rows and the rows without data (one dense backward)
            both = torch.cat([uniq, empty])
            loc, scale = guide.loc_scale(spec.name, both)
            loc, e_loc = loc[: len(uniq)], loc[len(uniq) :]
            scale, e_scale = scale[: len(uniq)], scale[len(uniq) :]
            off = guide.row_factor(spec.name, both, torch.cat([scale, e_scale]))
            if off is not None:
                off, e_off = off[: len(uniq)], off[len(uniq) :]
        else:
            loc, scale = guide.loc_scale(spec.name, uniq)
            off = guide.row_factor(spec.name, uniq, scale)
            empty = None
        if eps is None:
            noise = torch.randn((S, *loc.shape), device=loc.device, dtype=loc.dtype)
        else:
            noise = eps[spec.name] if uniq is None else eps[spec.name].index_select(1, uniq)
        kl = draw_site(spec, loc, scale, off, noise, z, shapes)
        nd = len(spec.shape)
        if spec.positive:
            kl_global = kl_global + kl.sum()
            continue
        if axis is None:
            kl = kl.flatten(kl.dim() - nd).sum(-1) if nd else kl
            kl_global = kl_global + (kl.mean(0) if kl.dim() else kl)
            continue
        per_row = kl.flatten(kl.dim() - nd + 1).sum(-1) if nd > 1 else kl  # (S?, n_u)
        weighted = (per_row * batch[axis].weight).sum(-1)
        kl_local = kl_local + (weighted.mean(0) if weighted.dim() else weighted)
        if empty is not None:  # rows without data: their whole KL at every step
            p_loc, p_scale = prior_normal_params(spec, z, device, shapes)
            e_kl = _normal_kl(e_loc, e_scale, p_loc, p_scale, e_off)
            e_kl = e_kl.flatten(e_kl.dim() - nd).sum(-1)
            kl_local = kl_local + (e_kl.mean(0) if e_kl.dim() else e_kl)

    kwargs: dict[str, torch.Tensor] = {}
    if _takes_feature_index(model):
        kwargs = {"feature_rows": rows, "feature_cols": cols}
    mu = model.mean(z, local_rows, local_cols, **kwargs)
    loglik = model.likelihood(mu, z).log_prob(values).sum(-1).mean(0)
    loglik = loglik * (ratio * likelihood_scale)
    return ELBOTerms(loglik, kl_global, kl_local)


def local_elbo_loss(
    model: Any,
    guide: MeanFieldGuide,
    data: Any,
    index: torch.Tensor | None = None,
    kl_weight: float = 1.0,
    num_particles: int = 1,
    whole_rows: int | None = None,
    likelihood_scale: float = 1.0,
) -> torch.Tensor:
    """Unbiased ``O(batch)`` estimate of the negative ELBO, KL weighted by ``kl_weight``.

    ``-(E_q[log p(x | z)] - kl_weight * KL(q || p))`` estimated from the minibatch
    ``data[index]``: only the rows and columns of the batch are drawn and their KL enters
    in proportion to their share of the batch (see :func:`local_elbo_terms` and the module
    docstring). Drop-in for ``TraceMeanField_ELBO().differentiable_loss(model.model,
    guide, data, index)`` (same expectation and, with ``index=None``, same distribution).

    Parameters
    ----------
    model : FactorModel
        The model.
    guide : MeanFieldGuide
        Its mean-field guide.
    data : Ratings or Pairs
        The whole training data.
    index : LongTensor, optional
        Positions of the minibatch in ``data`` (``None``: all of it).
    kl_weight : float
        Weight of the KL term in ``(0, 1]`` (KL warm-up); 1 is the plain negative ELBO.
    num_particles : int
        Monte Carlo draws of ``z``.
    whole_rows : int, optional
        Longest axis drawn whole (see :func:`local_elbo_terms`).
    likelihood_scale : float
        Factor of the likelihood: the number of processes when ``data`` is one process's
        shard of a data-parallel fit (see :func:`local_elbo_terms`).

    Returns
    -------
    torch.Tensor
        A differentiable scalar.

    Examples
    --------
    >>> import torch
    >>> from bayesmf import data, models
    >>> from bayesmf.inference.guides import MeanFieldGuide
    >>> R, _ = data.synthetic_ratings(n_rows=30, n_cols=20, rank=2, density=0.3, seed=0)
    >>> m = models.BayesianMF(30, 20, rank=2)
    >>> m.setup(R)
    >>> loss = local_elbo_loss(m, MeanFieldGuide(m), R, torch.arange(50))
    >>> loss.shape, bool(torch.isfinite(loss))
    (torch.Size([]), True)
    """
    if not 0 < kl_weight <= 1:
        raise ValueError(f"kl_weight must be in (0, 1], got {kl_weight}")
    terms = local_elbo_terms(model, guide, data, index, num_particles,
                             whole_rows=whole_rows, likelihood_scale=likelihood_scale)
    return terms.loss(kl_weight)
