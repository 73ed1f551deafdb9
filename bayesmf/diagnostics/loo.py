"""PSIS-LOO over many observations at once (Vehtari, Gelman & Gabry 2017).

``az.loo`` smooths the importance weights of each observation in a Python loop: on the
72,000 training ratings of ``bayesmf demo`` that took 28 s of its 44. :func:`psis_loo` does
the same computation for all observations together in NumPy -- one sort of the
``(N, S)`` log-likelihood matrix, and the generalized Pareto tail fits of Zhang & Stephens
(2009) vectorised over observations in chunks -- with the same estimates as ArviZ's (the
tests compare them); observations whose tail is not the usual ``M`` largest draws (ties,
weights below the smallest float) take the one-vector :func:`~bayesmf.diagnostics.vi.psislw`.

For LOO the importance ratios of observation ``i`` are ``1 / p(x_i | z_s)``: use the
log-likelihood of the *training* data (``to_inference_data(fit, train=train)``); held-out
data get the log predictive density instead
(:func:`~bayesmf.diagnostics.log_predictive_density`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .vi import _gpd_fit_rows, psislw

__all__ = ["LooResult", "psis_loo", "psislw_rows"]

#: observations whose tail fits are computed together (bounds the ``(rows, grid, tail)``
#: array of the fits to a few tens of MB)
CHUNK = 2048


@dataclass(frozen=True)
class LooResult:
    """PSIS-LOO estimate of the expected log pointwise predictive density.

    Attributes
    ----------
    elpd_loo : float
        ``sum_i log p(x_i | x_{-i})`` estimated by PSIS.
    se : float
        Its standard error, ``sqrt(N var_i(loo_i))``.
    p_loo : float
        Effective number of parameters, ``lppd - elpd_loo``.
    loo_i : ndarray, shape (N,)
        Each observation's ``log p(x_i | x_{-i})``.
    pareto_k : ndarray, shape (N,)
        Each observation's Pareto shape ``k``: above ``good_k`` its estimate is unreliable.
    good_k : float
        ``min(1 - 1 / log10(S), 0.7)`` for ``S`` draws.
    """

    elpd_loo: float
    se: float
    p_loo: float
    loo_i: np.ndarray
    pareto_k: np.ndarray
    good_k: float

    @property
    def n_bad(self) -> int:
        """Observations whose ``k`` exceeds ``good_k``."""
        return int((self.pareto_k > self.good_k).sum())

    def __str__(self) -> str:
        n = len(self.loo_i)
        return (f"PSIS-LOO over {n:,} observations: elpd {self.elpd_loo:.1f} (se {self.se:.1f}; "
                f"{self.elpd_loo / n:.4f} per observation), p_loo {self.p_loo:.1f}, "
                f"{self.n_bad:,} with Pareto k > {self.good_k:.2f}")


def _logsumexp_rows(x: np.ndarray) -> np.ndarray:
    mx = x.max(axis=1)
    return mx + np.log(np.exp(x - mx[:, None]).sum(axis=1))


def psislw_rows(log_ratios: Any, r_eff: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Pareto smoothed importance sampling of each row of ``log_ratios``.

    Row by row the result is :func:`~bayesmf.diagnostics.vi.psislw`'s (ArviZ's algorithm):
    the ``M = ceil(min(S / 5, 3 sqrt(S / r_eff)))`` largest ratios replaced by the expected
    order statistics of a generalized Pareto distribution fitted to them, truncated at the
    largest raw ratio, and the weights normalized.

    Parameters
    ----------
    log_ratios : array-like, shape (N, S)
        Log importance ratios, one row per observation.
    r_eff : float
        Relative efficiency of the draws (1 for independent draws).

    Returns
    -------
    log_weights : ndarray, shape (N, S)
        Smoothed log weights, each row normalized to ``logsumexp == 0``.
    khat : ndarray, shape (N,)
        Pareto shapes (``inf`` where the tail has 4 draws or fewer).

    Examples
    --------
    >>> import numpy as np
    >>> lw, k = psislw_rows(np.random.default_rng(0).normal(size=(3, 1000)))
    >>> lw.shape, k.shape, np.allclose(np.exp(lw).sum(1), 1.0)
    ((3, 1000), (3,), True)
    """
    raw = np.asarray(log_ratios, dtype=np.float64)
    x = raw.copy()
    if x.ndim != 2 or x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError("log_ratios must be a non-empty (N, S) array of finite values")
    n_obs, s = x.shape
    x -= x.max(axis=1, keepdims=True)
    tail_len = math.ceil(min(s / 5.0, 3.0 * math.sqrt(s / r_eff)))
    order = np.argsort(x, axis=1)
    srt = np.take_along_axis(x, order, axis=1)
    tiny = math.log(np.finfo(float).tiny)
    cutoff = np.maximum(srt[:, -tail_len - 1] if tail_len < s else -np.inf, tiny)
    # the usual case: exactly the M largest ratios lie above the cut-off, none tied (the
    # order of tied ratios, and so which of them gets which smoothed value, is the
    # one-vector sort's)
    if tail_len < s:
        regular = (srt[:, -tail_len - 1] <= cutoff) & (srt[:, -tail_len] > cutoff)
        regular &= np.all(np.diff(srt[:, -tail_len - 1:], axis=1) > 0, axis=1)
    else:
        regular = np.zeros(n_obs, dtype=bool)
    khat = np.full(n_obs, np.inf)
    if tail_len > 4:
        p = (np.arange(tail_len) + 0.5) / tail_len
        for start in range(0, n_obs, CHUNK):
            rows = np.flatnonzero(regular[start:start + CHUNK]) + start
            if not len(rows):
                continue
            base = np.exp(cutoff[rows])[:, None]
            k, sigma = _gpd_fit_rows(np.exp(srt[rows, s - tail_len:]) - base)
            khat[rows] = k
            ok = np.isfinite(k) & (sigma > 0)
            small = np.abs(k) < np.finfo(np.float64).eps
            kk = np.where(small, 1.0, k)[:, None]
            q = np.where(small[:, None], -np.log1p(-p)[None, :],
                         np.expm1(-kk * np.log1p(-p)[None, :]) / kk) * sigma[:, None]
            smoothed = np.log(q + base)
            done = rows[ok]
            srt[done, s - tail_len:] = smoothed[ok]
            srt[done] = np.minimum(srt[done], 0.0)
    out = np.empty_like(srt)
    np.put_along_axis(out, order, srt, axis=1)
    out -= _logsumexp_rows(out)[:, None]
    for i in np.flatnonzero(~regular):  # ties or tiny weights: one vector at a time
        out[i], khat[i] = psislw(raw[i], r_eff)
    return out, khat


def psis_loo(log_lik: Any, r_eff: float = 1.0) -> LooResult:
    """PSIS-LOO from the pointwise log-likelihood of posterior draws.

    Parameters
    ----------
    log_lik : array-like, shape (S, N) or (chains, draws, N)
        ``log p(x_i | z_s)`` of each draw and training observation, e.g. the ``obs``
        variable of the ``log_likelihood`` group of
        :func:`~bayesmf.diagnostics.to_inference_data` (``fit, train=train``).
    r_eff : float
        Relative efficiency of the draws (1 for independent draws, as ArviZ takes for one
        chain).

    Returns
    -------
    LooResult
        The same estimates as ``az.loo(idata, pointwise=True)`` (``elpd_loo``, ``se``,
        ``p_loo``, ``loo_i``, ``pareto_k``), computed for all observations together.

    Examples
    --------
    >>> import numpy as np
    >>> ll = np.random.default_rng(0).normal(-1.0, 0.1, size=(200, 50))
    >>> res = psis_loo(ll)
    >>> res.loo_i.shape, bool(res.elpd_loo < 0), res.n_bad
    ((50,), True, 0)
    """
    ll = np.asarray(log_lik, dtype=np.float64)
    if ll.ndim == 3:
        ll = ll.reshape(-1, ll.shape[-1])
    if ll.ndim != 2:
        raise ValueError(f"log_lik must be (S, N) or (chains, draws, N), got shape {ll.shape}")
    s, n = ll.shape
    lw, khat = psislw_rows(-ll.T, r_eff)
    loo_i = _logsumexp_rows(lw + ll.T)
    lppd = float((_logsumexp_rows(ll.T) - math.log(s)).sum())
    elpd = float(loo_i.sum())
    return LooResult(elpd_loo=elpd, se=float(math.sqrt(n * np.var(loo_i))),
                     p_loo=lppd - elpd, loo_i=loo_i, pareto_k=khat,
                     good_k=min(1 - 1 / math.log10(s), 0.7))
