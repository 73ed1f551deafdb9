"""Conversion of a fit with draws to ArviZ (``InferenceData``, or ``DataTree`` in ArviZ 1).

:func:`to_inference_data` stores ``num_samples`` draws of the latent arrays as ``posterior``
(one chain per Markov chain, draws from a variational ``q`` as one chain), with named
dimensions (``user``, ``item``, ``factor``, ...) whose coordinates are the ORIGINAL ids of the
training data, so that ``idata.posterior["U"].sel(user="u42")`` works. The data groups say
what each set of ratings is:

* ``train=`` (the training ratings, which the fit does not keep): ``log_likelihood``
  (``obs``: ``log p(x_i | z_s)``) over them, for ``az.loo`` / ``az.waic``. Leave-one-out
  is only meaningful for data the posterior was conditioned on.
* ``test`` (held-out ratings): ``posterior_predictive`` (``obs``: draws of the ratings;
  ``heldout_log_lik``: ``log p(x_i | z_s)`` of the held-out values) and ``observed_data``
  (``obs``), for ``az.plot_ppc`` and calibration checks. The held-out log predictive density
  of rating ``i`` is ``log mean_s p(x_i | z_s)`` (a log-mean-exp of ``heldout_log_lik`` over
  ``chain`` and ``draw``; :func:`bayesmf.diagnostics.log_predictive_density` computes it,
  and the root ``attrs`` carry its mean and total). It needs no importance sampling and is
  *not* in ``log_likelihood``: ``az.loo`` over points that were never in the fit is
  meaningless.
* the training ratings themselves as ``test`` (recognised by their fingerprint, or
  ``test=train``): the classic in-sample layout, ``log_likelihood``,
  ``posterior_predictive`` and ``observed_data`` all over them (``az.loo``, ``az.plot_ppc``,
  ``az.loo_pit``).

Each ratings dimension is called ``rating`` and carries ``user``/``item`` coordinates (the
original ids of each rating); ``attrs`` (``log_likelihood_data``, ``predictive_data``,
``likelihood``, ``loo_note``) say which data each group holds.

For a variational fit the draws come from ``q``: PSIS-LOO over them estimates
leave-one-out under ``q``, not the posterior's (``q`` is narrower than the posterior and its
``k`` diagnostics are about ``q``); ``attrs["loo_note"]`` says so.

Every group is computed from the SAME draws: draw ``s`` of ``log_likelihood`` and of
``posterior_predictive`` belongs to draw ``s`` of ``posterior``. The draws are those of
``fit.sample(num_samples, seed)``, and the predictive groups equal
``fit.predictive_samples(test, num_samples, seed)`` and ``fit.log_likelihood(test,
num_samples, seed)`` (when the computation needs no chunking).

ArviZ versions
--------------
Each group is built here as a plain :class:`xarray.Dataset` with ``chain`` and ``draw``
dimensions; only the final container depends on ArviZ. The choice is made by feature,
not by version string: if ``arviz.InferenceData`` exists (ArviZ < 1) the groups are
combined with ``az.InferenceData(**groups)``; otherwise (ArviZ >= 1, where
``InferenceData`` was replaced by xarray's ``DataTree``) they are combined with
``xarray.DataTree.from_dict``. Both containers give access to ``idata.posterior`` etc.
and are accepted by the ``az.loo``/``az.summary`` of their ArviZ version. Only groups of
ArviZ's schema are used, so ArviZ < 1 does not warn about unknown groups.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..data.containers import Ratings
from .vi import draw_chunk

__all__ = ["to_inference_data", "combine_groups"]

log = logging.getLogger(__name__)

#: dimension names whose coordinates are the original row / column ids
ROW_DIMS = ("user", "row", "node")
COL_DIMS = ("item", "col")


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _ids(info: dict[str, Any], key: str, n: int) -> np.ndarray:
    ids = info.get(key)
    if ids is None:
        return np.arange(n)
    ids = np.asarray(ids)
    if ids.dtype == object:  # e.g. mixed ids: store as strings (netCDF-friendly)
        ids = ids.astype(str)
    return ids


def _dim_coords(dim: str, size: int, row_ids: np.ndarray, col_ids: np.ndarray) -> np.ndarray:
    if dim in ROW_DIMS and len(row_ids) == size:
        return row_ids
    if dim in COL_DIMS and len(col_ids) == size:
        return col_ids
    if dim in ROW_DIMS + COL_DIMS:
        log.warning("dimension %r has size %d, not the number of ids; using 0..n-1", dim, size)
    return np.arange(size)


def combine_groups(groups: dict[str, Any], attrs: dict[str, Any] | None = None) -> Any:
    """Combine ``xarray.Dataset`` groups into the container of the installed ArviZ.

    ``az.InferenceData(**groups)`` when ArviZ has it (ArviZ < 1), else
    ``xarray.DataTree.from_dict`` (ArviZ >= 1), with ``attrs`` on the root node.

    Parameters
    ----------
    groups : dict of str to xarray.Dataset
        Group name (``"posterior"``, ...) to its dataset.
    attrs : dict, optional
        Attributes of the whole object (also set on each group).

    Returns
    -------
    arviz.InferenceData or xarray.DataTree

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"a": (("chain", "draw"), np.zeros((1, 3)))})
    >>> "posterior" in combine_groups({"posterior": ds})
    True
    """
    import arviz as az
    import xarray as xr

    attrs = dict(attrs or {})
    groups = {name: ds.assign_attrs(**attrs) for name, ds in groups.items()}
    if hasattr(az, "InferenceData"):
        return az.InferenceData(**groups)
    if not hasattr(xr, "DataTree"):  # pragma: no cover - ArviZ >= 1 needs a recent xarray
        raise ImportError("this ArviZ has no InferenceData and xarray has no DataTree")
    return xr.DataTree.from_dict({"/": xr.Dataset(attrs=attrs), **groups})


def _attrs(fit: Any, num_samples: int, seed: int) -> dict[str, Any]:
    import pyro

    from .. import __version__

    info = getattr(fit, "train_info", {}) or {}
    return {
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "model": type(fit.model).__name__,
        "bayesmf_version": __version__,
        "inference": getattr(fit, "inference_name", "SVI mean-field"),
        "inference_library": "pyro",
        "inference_library_version": pyro.__version__,
        "num_draws": int(num_samples),
        "seed": int(seed),
        "train_name": str(info.get("name", "")),
    }


def _posterior(
    z: dict[str, torch.Tensor],
    specs: Sequence[Any],
    include: Sequence[str] | None,
    row_ids: np.ndarray,
    col_ids: np.ndarray,
    num_samples: int,
    chains: int = 1,
) -> Any:
    import xarray as xr

    names = [s.name for s in specs]
    if include is not None:
        unknown = sorted(set(include) - set(names))
        if unknown:
            raise ValueError(f"unknown latent sites {unknown}; the model has {names}")
    data_vars: dict[str, Any] = {}
    coords: dict[str, Any] = {"chain": np.arange(chains),
                              "draw": np.arange(num_samples // chains)}
    for spec in specs:
        if include is not None and spec.name not in include:
            continue
        dims = tuple(spec.dims)
        if len(dims) != len(spec.shape):
            dims = tuple(f"{spec.name}_dim_{i}" for i in range(len(spec.shape)))
        for dim, size in zip(dims, spec.shape, strict=True):
            c = _dim_coords(dim, size, row_ids, col_ids)
            if dim in coords and len(coords[dim]) != size:
                raise ValueError(f"dimension {dim!r} has two sizes ({len(coords[dim])}, {size})")
            coords[dim] = c
        value = _numpy(z[spec.name])
        value = value.reshape(chains, -1, *value.shape[1:])  # chain after chain
        data_vars[spec.name] = (("chain", "draw", *dims), value)
    return xr.Dataset(data_vars, coords=coords)


@torch.no_grad()
def _predictive(
    fit: Any, z: dict[str, torch.Tensor], data: Ratings, seed: int, draws: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pointwise log-likelihood (float64) and (optionally) predictive draws from ``z``."""
    model = fit.model
    num_samples = next(iter(z.values())).shape[0]
    step = draw_chunk(model, len(data))
    gen = torch.Generator(device=model.device).manual_seed(seed + 1)
    lls, out = [], []
    for a in range(0, num_samples, step):  # the draws of fit.predictive_samples, in order
        zc = {k: v[a : a + step] for k, v in z.items()}
        lls.append(model.log_likelihood(zc, data.rows, data.cols, data.values).double().cpu())
        if draws:
            out.append(model.predictive_draws(zc, data.rows, data.cols, generator=gen))
    return torch.cat(lls).numpy(), (_numpy(torch.cat(out)) if draws else None)


def _is_training_data(fit: Any, data: Ratings) -> bool | None:
    """Whether ``data`` are the fit's training ratings (``None`` when unknown)."""
    recorded = (getattr(fit, "train_info", {}) or {}).get("fingerprint")
    if not recorded:
        return None
    from ..inference.files import fingerprint

    return fingerprint(data) == recorded


def _prepare(fit: Any, data: Ratings, row_ids: np.ndarray, col_ids: np.ndarray) -> Ratings:
    fit.model.check_data(data)
    if not (
        np.array_equal(np.asarray(data.row_ids).astype(str), row_ids.astype(str))
        and np.array_equal(np.asarray(data.col_ids).astype(str), col_ids.astype(str))
    ):
        log.warning("the ids of the data differ from the training ids; coords use the latter")
    return data.to(fit.model.global_mean.device)


def _rating_coords(
    data: Ratings, row_ids: np.ndarray, col_ids: np.ndarray, chains: int, per_chain: int
) -> dict[str, Any]:
    rows, cols = _numpy(data.rows), _numpy(data.cols)
    return {
        "chain": np.arange(chains),
        "draw": np.arange(per_chain),
        "rating": np.arange(len(data)),
        "user": ("rating", row_ids[rows]),
        "item": ("rating", col_ids[cols]),
    }


def _likelihood_name(model: Any) -> str:
    if getattr(model, "discrete", False):
        low, high = model.levels
        return f"discretized Gaussian on the integers {low}..{high} (log probabilities)"
    if hasattr(model, "noise_site"):
        return "Gaussian (log densities at the observed values)"
    return f"{type(model).__name__} observation model"


def _logmeanexp(ll: np.ndarray) -> np.ndarray:
    """``log mean_s exp(ll[s, i])`` over the first axis, per column."""
    mx = ll.max(axis=0)
    return mx + np.log(np.exp(ll - mx).mean(axis=0))


def to_inference_data(
    fit: Any,
    test: Ratings | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    include: Sequence[str] | None = None,
    *,
    train: Ratings | None = None,
    use_train: bool = False,
) -> Any:
    """ArviZ view of a fit with draws: posterior draws, ``az.loo`` on the training ratings,
    posterior predictive and log predictive density on held-out ratings.

    Parameters
    ----------
    fit : PosteriorFit
        A fit with draws: :func:`bayesmf.inference.fit_svi` (draws from ``q``) or
        :func:`bayesmf.inference.fit_gibbs` (Markov chains).
    test : Ratings, optional
        HELD-OUT ratings: adds ``posterior_predictive`` (``obs``: draws of the ratings;
        ``heldout_log_lik``: ``log p(x_i | z_s)`` of the held-out values, whose log-mean-exp
        over draws is the log predictive density) and ``observed_data`` (``obs``), over a
        ``rating`` dimension whose ``user``/``item`` coordinates are the original ids of
        each rating. They do not enter ``log_likelihood``. When these are the fit's own
        training ratings (the same object as ``train``, or the same fingerprint as the
        training data), the groups are the classic in-sample ones instead:
        ``log_likelihood``, ``posterior_predictive`` and ``observed_data`` all over them
        (``attrs`` say so).
    num_samples : int, optional
        Draws stored: from ``q`` for a variational fit (default 200, one chain); for a
        :class:`~bayesmf.inference.SampleFit` all its kept draws, chain after chain, by
        default, evenly thinned when fewer are asked for.
    seed : int
        Seed of the draws (as in ``fit.sample(num_samples, seed)``).
    include : sequence of str, optional
        Latent sites stored in ``posterior`` (default: all); the big arrays (``U``,
        ``V``, network weights) can take ``num_samples`` times their size.
    train : Ratings, optional
        The TRAINING ratings of the fit (it does not keep them), or a subset of them: adds
        ``log_likelihood`` (``obs``: ``log p(x_i | z_s)``) for ``az.loo``/``az.waic``. A
        warning is logged when they are not (a subset of) the fit's training data
        (checked by fingerprint for the whole set).
    use_train : bool
        Deprecated: ``use_train=True, train=train`` (without ``test``) is the former way to
        get every group on the training ratings; it equals ``test=train, train=train`` (the
        in-sample groups).

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
        ``InferenceData`` under ArviZ < 1; ``DataTree`` under ArviZ >= 1 (see the module
        notes). ``attrs`` name the model class, the bayesmf version, the inference
        (``fit.inference_name``: ``"SVI mean-field"``, ``"Gibbs"``), the likelihood, which
        data each group holds (``log_likelihood_data``, ``predictive_data``), the held-out
        log predictive density (``heldout_lpd_mean``, ``heldout_lpd_total``) and, for a
        variational fit, that PSIS-LOO over draws from ``q`` is not posterior LOO
        (``loo_note``).

    Examples
    --------
    >>> import arviz as az
    >>> from bayesmf import data, inference, models
    >>> R, _ = data.synthetic_ratings(n_rows=20, n_cols=15, rank=2, density=0.4, seed=0)
    >>> tr, te = data.random_split(R, 0.2, seed=0)
    >>> fit = inference.fit_svi(models.BayesianMF(20, 15, rank=2), tr, epochs=5,
    ...                         batch_size=None, lr=0.05, progress=False)
    >>> idata = to_inference_data(fit, te, num_samples=50, train=tr)
    >>> idata.posterior["U"].dims
    ('chain', 'draw', 'user', 'factor')
    >>> idata.log_likelihood["obs"].shape == (1, 50, len(tr))        # training: for az.loo
    True
    >>> idata.posterior_predictive["heldout_log_lik"].shape == (1, 50, len(te))
    True
    """
    import xarray as xr

    if use_train:
        import warnings

        warnings.warn("to_inference_data: 'use_train=True' is deprecated; pass train= (for "
                      "az.loo) and test= (predictive groups)", DeprecationWarning, stacklevel=2)
        if train is None:
            raise ValueError(
                "use_train=True needs the training ratings: the fit does not keep them"
            )
        test = train if test is None else test
    if num_samples is None:
        num_samples = int(getattr(fit, "num_draws", 200))
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    model = fit.model
    info = getattr(fit, "train_info", {}) or {}
    row_ids = _ids(info, "row_ids", model.n_rows)
    col_ids = _ids(info, "col_ids", model.n_cols)

    z = fit.sample(num_samples, seed=seed)
    # a SampleFit returns its kept draws, chain after chain (possibly fewer than asked for)
    num_samples = int(next(iter(z.values())).shape[0])
    chains = int(getattr(fit, "num_chains", 1))
    chains = chains if num_samples % chains == 0 else 1
    per_chain = num_samples // chains
    specs = model.latent_specs()
    groups: dict[str, Any] = {
        "posterior": _posterior(z, specs, include, row_ids, col_ids, num_samples, chains)
    }
    attrs = _attrs(fit, num_samples, seed)
    attrs["likelihood"] = _likelihood_name(model)
    attrs["log_likelihood_data"] = "none (pass train= for az.loo)"
    attrs["predictive_data"] = "none"
    dims = ("chain", "draw", "rating")

    in_sample = test is not None and (
        test is train or (train is None and bool(_is_training_data(fit, test)))
    )
    if in_sample:
        # the fit's own training ratings: the classic in-sample layout (LOO and PPC)
        log.info("the ratings given are this fit's training ratings: log_likelihood and the "
                 "predictive groups are in-sample (for az.loo, az.plot_ppc, az.loo_pit)")
        train = None
    if train is not None:
        if _is_training_data(fit, train) is False:
            log.info("train= holds %d ratings that are not this fit's whole training set; "
                     "az.loo is meaningful only for (a subset of) the training ratings",
                     len(train))
        data = _prepare(fit, train, row_ids, col_ids)
        ll, _ = _predictive(fit, z, data, seed, draws=False)
        coords = _rating_coords(data, row_ids, col_ids, chains, per_chain)
        groups["log_likelihood"] = xr.Dataset(
            {"obs": (dims, ll.reshape(chains, per_chain, len(data)))}, coords=coords
        )
        attrs["log_likelihood_data"] = (
            f"training ratings ({len(data)}): log_likelihood.obs = log p(x_i | z_s), for az.loo"
        )
    if test is not None:
        data = _prepare(fit, test, row_ids, col_ids)
        ll, draws = _predictive(fit, z, data, seed)
        assert draws is not None
        coords = _rating_coords(data, row_ids, col_ids, chains, per_chain)
        obs_coords = {k: v for k, v in coords.items() if k not in ("chain", "draw")}
        ll, draws = ll.reshape(chains, per_chain, -1), draws.reshape(chains, per_chain, -1)
        groups["observed_data"] = xr.Dataset(
            {"obs": (("rating",), _numpy(data.values))}, coords=obs_coords
        )
        if in_sample:
            groups["posterior_predictive"] = xr.Dataset({"obs": (dims, draws)}, coords=coords)
            groups["log_likelihood"] = xr.Dataset({"obs": (dims, ll)}, coords=coords)
            attrs["log_likelihood_data"] = (
                f"training ratings ({len(data)}): log_likelihood.obs = log p(x_i | z_s), for "
                "az.loo"
            )
            attrs["predictive_data"] = (
                f"training ratings ({len(data)}), in-sample: posterior_predictive.obs (draws), "
                "observed_data.obs (values)"
            )
        else:
            groups["posterior_predictive"] = xr.Dataset(
                {"obs": (dims, draws), "heldout_log_lik": (dims, ll)}, coords=coords
            )
            lpd = _logmeanexp(ll.reshape(num_samples, -1))
            attrs["predictive_data"] = (
                f"held-out ratings ({len(data)}): posterior_predictive.obs (draws), "
                "observed_data.obs (values), posterior_predictive.heldout_log_lik = "
                "log p(x_i | z_s); log predictive density per rating = log-mean-exp of "
                "heldout_log_lik over chain and draw"
            )
            attrs["heldout_lpd_mean"] = float(lpd.mean())
            attrs["heldout_lpd_total"] = float(lpd.sum())
            if "log_likelihood" not in groups:
                # keep the four groups of the fixed interface; labelled for what they are
                groups["log_likelihood"] = xr.Dataset({"obs": (dims, ll)}, coords=coords)
                attrs["log_likelihood_data"] = (
                    f"held-out ratings ({len(data)}): log p(x_i | z_s) for the log predictive "
                    "density; az.loo on it is NOT leave-one-out (these ratings were never in "
                    "the fit): pass train= to get the training ratings here for az.loo"
                )
    if getattr(fit, "variational", hasattr(fit, "guide")):
        attrs["loo_note"] = (
            "draws are from the variational approximation q, not the posterior: PSIS-LOO over "
            "them estimates leave-one-out under q, not posterior LOO"
        )
    else:
        attrs["loo_note"] = "draws are posterior draws (Markov chains): PSIS-LOO applies"
    return combine_groups(groups, attrs)
