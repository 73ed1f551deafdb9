"""Conversion of a variational fit to ArviZ (``InferenceData``, or ``DataTree`` in ArviZ 1).

:func:`to_inference_data` draws ``num_samples`` latent values from the fitted ``q`` and
stores them as one chain, with named dimensions (``user``, ``item``, ``factor``, ...)
whose coordinates are the ORIGINAL ids of the training data, so that
``idata.posterior["U"].sel(user="u42")`` works. With held-out ratings it adds
``posterior_predictive``, ``log_likelihood`` and ``observed_data`` groups over a
``rating`` dimension (with ``user``/``item`` coordinates per rating), ready for
``az.loo``, ``az.waic``, ``az.plot_ppc`` and ``az.loo_pit``.

Every group is computed from the SAME draws: draw ``s`` of ``log_likelihood`` and of
``posterior_predictive`` belongs to draw ``s`` of ``posterior``. The draws are those of
``fit.sample(num_samples, seed)``, and (when the computation needs no chunking) the
predictive groups equal ``fit.predictive_samples(test, num_samples, seed)`` and
``fit.log_likelihood(test, num_samples, seed)``.

ArviZ versions
--------------
Each group is built here as a plain :class:`xarray.Dataset` with ``chain`` and ``draw``
dimensions; only the final container depends on ArviZ. The choice is made by feature,
not by version string: if ``arviz.InferenceData`` exists (ArviZ < 1) the groups are
combined with ``az.InferenceData(**groups)``; otherwise (ArviZ >= 1, where
``InferenceData`` was replaced by xarray's ``DataTree``) they are combined with
``xarray.DataTree.from_dict``. Both containers give access to ``idata.posterior`` etc.
and are accepted by the ``az.loo``/``az.summary`` of their ArviZ version.
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
ROW_DIMS = ("user", "row")
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
    fit: Any, z: dict[str, torch.Tensor], data: Ratings, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise log-likelihood (float64) and predictive draws from the draws ``z``."""
    model = fit.model
    num_samples = next(iter(z.values())).shape[0]
    step = draw_chunk(model, len(data))
    gen = torch.Generator(device=model.device).manual_seed(seed + 1)
    lls, draws = [], []
    for a in range(0, num_samples, step):  # the draws of fit.predictive_samples, in order
        zc = {k: v[a : a + step] for k, v in z.items()}
        lls.append(model.log_likelihood(zc, data.rows, data.cols, data.values).double().cpu())
        draws.append(model.predictive_draws(zc, data.rows, data.cols, generator=gen))
    draws = torch.cat(draws)
    return torch.cat(lls).numpy(), _numpy(draws)


def to_inference_data(
    fit: Any,
    test: Ratings | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    include: Sequence[str] | None = None,
    *,
    use_train: bool = False,
    train: Ratings | None = None,
) -> Any:
    """ArviZ view of a variational fit: posterior draws, predictive groups on test data.

    Parameters
    ----------
    fit : VariationalFit
        A fit from :func:`bayesmf.inference.fit_svi`.
    test : Ratings, optional
        Held-out ratings: adds ``posterior_predictive`` (``obs``: draws of the ratings),
        ``log_likelihood`` (``obs``: ``log p(x_i | z_s)``, for ``az.loo``/``az.waic``)
        and ``observed_data`` (``obs``), all over a ``rating`` dimension whose
        ``user``/``item`` coordinates are the original ids of each rating.
    num_samples : int, optional
        Draws stored (as 1 chain of ``num_samples`` draws): from ``q`` for a variational
        fit (default 200); for a :class:`~bayesmf.inference.SampleFit` all its kept draws
        in chain order by default, evenly thinned when fewer are asked for.
    seed : int
        Seed of the draws (as in ``fit.sample(num_samples, seed)``).
    include : sequence of str, optional
        Latent sites stored in ``posterior`` (default: all); the big arrays (``U``,
        ``V``, network weights) can take ``num_samples`` times their size.
    use_train : bool
        Without ``test``, build the predictive groups on the training ratings instead
        (which the fit does not keep: pass them as ``train``).
    train : Ratings, optional
        The training ratings, for ``use_train=True``.

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
        ``InferenceData`` under ArviZ < 1; ``DataTree`` under ArviZ >= 1 (see the module
        notes). ``attrs`` name the model class, the bayesmf version and the inference
        (``fit.inference_name``: ``"SVI mean-field"``, ``"Gibbs"``).

    Examples
    --------
    >>> from bayesmf import data, inference, models
    >>> R, _ = data.synthetic_ratings(n_rows=20, n_cols=15, rank=2, density=0.4, seed=0)
    >>> tr, te = data.random_split(R, 0.2, seed=0)
    >>> fit = inference.fit_svi(models.BayesianMF(20, 15, rank=2), tr, epochs=5,
    ...                         batch_size=None, lr=0.05, progress=False)
    >>> idata = to_inference_data(fit, te, num_samples=50)
    >>> idata.posterior["U"].dims
    ('chain', 'draw', 'user', 'factor')
    >>> idata.log_likelihood["obs"].shape == (1, 50, len(te))
    True
    """
    import xarray as xr

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
    specs = model.latent_specs()
    groups: dict[str, Any] = {
        "posterior": _posterior(z, specs, include, row_ids, col_ids, num_samples, chains)
    }

    data = test
    if data is None and use_train:
        if train is None:
            raise ValueError(
                "use_train=True needs the training ratings: the fit does not keep them"
            )
        data = train
    if data is not None:
        model.check_data(data)
        if not (
            np.array_equal(np.asarray(data.row_ids).astype(str), row_ids.astype(str))
            and np.array_equal(np.asarray(data.col_ids).astype(str), col_ids.astype(str))
        ):
            log.warning("the ids of the data differ from the training ids; coords use the latter")
        data = data.to(model.global_mean.device)
        ll, draws = _predictive(fit, z, data, seed)
        rows, cols = _numpy(data.rows), _numpy(data.cols)
        coords = {
            "chain": np.arange(chains),
            "draw": np.arange(num_samples // chains),
            "rating": np.arange(len(data)),
            "user": ("rating", row_ids[rows]),
            "item": ("rating", col_ids[cols]),
        }
        obs_coords = {k: v for k, v in coords.items() if k not in ("chain", "draw")}
        dims = ("chain", "draw", "rating")
        draws, ll = draws.reshape(chains, -1, len(data)), ll.reshape(chains, -1, len(data))
        groups["posterior_predictive"] = xr.Dataset({"obs": (dims, draws)}, coords=coords)
        groups["log_likelihood"] = xr.Dataset({"obs": (dims, ll)}, coords=coords)
        groups["observed_data"] = xr.Dataset(
            {"obs": (("rating",), _numpy(data.values))}, coords=obs_coords
        )
    return combine_groups(groups, _attrs(fit, num_samples, seed))
