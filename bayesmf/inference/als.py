"""MAP matrix factorisation by alternating least squares (ALS).

The model is the Gaussian matrix factorisation

.. math::

    x_{nm} = \\mu + b_n + c_m + u_n^\\top v_m + \\varepsilon_{nm},
    \\qquad \\varepsilon_{nm} \\sim \\mathcal N(0, 1),

with priors :math:`u_n \\sim \\mathcal N(u^0_n, \\lambda_U^{-1} I)`,
:math:`v_m \\sim \\mathcal N(v^0_m, \\lambda_V^{-1} I)`,
:math:`b_n, c_m \\sim \\mathcal N(0, \\lambda_b^{-1})` and a flat prior on the
global mean :math:`\\mu`. Its negative log posterior (up to a constant) is the
regularised objective

.. math::

    J = \\tfrac12 \\sum_{(n,m) \\in \\Omega} (x_{nm} - \\hat x_{nm})^2
      + \\tfrac{\\lambda_U}{2} \\sum_n \\lVert u_n - u^0_n \\rVert^2
      + \\tfrac{\\lambda_V}{2} \\sum_m \\lVert v_m - v^0_m \\rVert^2
      + \\tfrac{\\lambda_b}{2} \\Big(\\sum_n b_n^2 + \\sum_m c_m^2\\Big).

For fixed :math:`V` the minimiser over each row is available in closed form,

.. math::

    u_n = \\Big(\\sum_{m \\in \\Omega_n} v_m v_m^\\top + \\lambda_U I\\Big)^{-1}
          \\Big(\\sum_{m \\in \\Omega_n} x_{nm} v_m + \\lambda_U u^0_n\\Big),

and likewise for the columns. :func:`als` alternates these exact block
minimisations (each is one batched linear solve over all rows or columns), so
the objective never increases and every fixed point is a stationary point of
:math:`J`: a MAP estimate of the model. With ``biases=True`` the bias is solved
jointly with the factor by augmenting it with a constant 1, and the global mean
is updated in closed form after every sweep; with ``biases=False`` the model is
the plain :math:`x_{nm} = u_n^\\top v_m + \\varepsilon` (no mean, no biases).
"""

from __future__ import annotations

import logging
import numbers
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.containers import Ratings
from . import distributed, files
from .checks import check_int, check_positive, check_rank
from .fits import Fit, check_statistic, data_info, deprecated_kwarg
from .loop import show_progress
from .threads import uses_fit_threads

__all__ = ["MAPFactors", "als"]

logger = logging.getLogger(__name__)

#: Number of Gram-matrix elements materialised at once when accumulating the
#: per-rating outer products (``chunk * D * D``); bounds memory for large data.
GRAM_BUDGET = 1 << 20


def _as_index(x: Any, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x
    else:
        t = torch.as_tensor(np.asarray(x))
    if t.is_floating_point():
        raise ValueError("row/column indices must be integers")
    return t.long().to(device)


@dataclass(eq=False)
class MAPFactors(Fit):
    """A point estimate of a (biased) matrix factorisation (from :func:`als` or
    :func:`~bayesmf.inference.sgd_mf`).

    Predictions are ``mean + row_bias[n] + col_bias[m] + U[n] @ V[m]`` (bias
    terms left out when they are ``None``).

    Parameters
    ----------
    U : Tensor, shape (n_rows, K)
        Row factors.
    V : Tensor, shape (n_cols, K)
        Column factors.
    row_bias : Tensor, shape (n_rows,), optional
        Row biases (``None`` when fitted without biases).
    col_bias : Tensor, shape (n_cols,), optional
        Column biases.
    mean : float
        Global offset (0 when fitted without biases).
    history : list of float
        The objective (ALS: the regularised objective :math:`J`; SGD: the
        epoch-average training loss) after each iteration/epoch.
    converged : bool
        Whether the stopping criterion was met before the iteration limit.
    n_iter : int
        Number of iterations (ALS) or epochs (SGD) run.
    val_history : list of float
        Validation RMSE per epoch (SGD with ``val=``), else empty.
    scale : (float, float), optional
        The rating scale of the training data, used by ``predict(clamp=True)``.
    settings, train_info : dict
        The options of the fit and the training data's shape, ids and fingerprint.
    fit_seconds : float
        Wall-clock time of the fit.

    Examples
    --------
    >>> import torch
    >>> f = MAPFactors(U=torch.ones(2, 1), V=torch.full((3, 1), 2.0), mean=1.0)
    >>> f.predict(torch.tensor([0, 1]), torch.tensor([2, 0])).tolist()
    [3.0, 3.0]
    >>> U, V = f
    >>> U.shape, V.shape
    (torch.Size([2, 1]), torch.Size([3, 1]))
    """

    U: torch.Tensor
    V: torch.Tensor
    row_bias: torch.Tensor | None = None
    col_bias: torch.Tensor | None = None
    mean: float = 0.0
    history: list[float] = field(default_factory=list)
    converged: bool = False
    n_iter: int = 0
    val_history: list[float] = field(default_factory=list)
    scale: tuple[float, float] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    train_info: dict[str, Any] = field(default_factory=dict)
    fit_seconds: float = 0.0

    kind = "MAPFactors"
    has_posterior = False
    inference_name = "MAP point estimate"

    # ---------------------------------------------------------------- shape
    @property
    def rank(self) -> int:
        """Number of latent dimensions ``K``."""
        return int(self.U.shape[1])

    @property
    def n_rows(self) -> int:
        return int(self.U.shape[0])

    @property
    def n_cols(self) -> int:
        return int(self.V.shape[0])

    @property
    def device(self) -> torch.device:
        return self.U.device

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Yield ``U`` then ``V`` so that ``U, V = als(...)`` works."""
        yield self.U
        yield self.V

    def __repr__(self) -> str:
        b = "with" if self.row_bias is not None else "without"
        return (
            f"MAPFactors(shape=({self.n_rows}, {self.n_cols}), rank={self.rank}, {b} biases, "
            f"mean={self.mean:.4g}, n_iter={self.n_iter}, converged={self.converged})"
        )

    # ------------------------------------------------------------ transforms
    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
           ) -> MAPFactors:
        """A copy with all tensors moved to ``device`` (and cast to ``dtype`` if given)."""

        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype)

        return replace(
            self,
            U=mv(self.U),
            V=mv(self.V),
            row_bias=mv(self.row_bias),
            col_bias=mv(self.col_bias),
            history=list(self.history),
            val_history=list(self.val_history),
        )

    # ------------------------------------------------------------ prediction
    def predict(
        self,
        ratings_or_rows: Ratings | torch.Tensor | Sequence[int] | np.ndarray,
        cols: torch.Tensor | Sequence[int] | np.ndarray | None = None,
        *,
        clamp: tuple[float, float] | bool = False,
        num_samples: int | None = None,
        seed: int = 0,
        statistic: str = "mean",
        **deprecated: Any,
    ) -> torch.Tensor:
        """Predicted values at the given (row, column) pairs.

        Parameters
        ----------
        ratings_or_rows : Ratings or int array of shape (n,)
            A :class:`~bayesmf.data.Ratings` (its entries' positions are used) or
            the row indices.
        cols : int array of shape (n,), optional
            Column indices; required when row indices are given.
        clamp : bool or (float, float)
            Clamp the predictions: ``True`` to the scale of the given ``Ratings`` or,
            failing that, of the training data (no-op when neither is known); or to a given
            ``(low, high)``.
            (``clamp_to=`` is the deprecated spelling.)
        num_samples, seed, statistic
            Ignored (a point estimate: its mean and median are the point); accepted so every
            fit is called alike.

        Returns
        -------
        Tensor, shape (n,)
            On the factors' device.

        Examples
        --------
        >>> import torch
        >>> f = MAPFactors(U=torch.ones(1, 1), V=torch.tensor([[9.0]]), scale=(1.0, 5.0))
        >>> f.predict([0], [0]).item(), f.predict([0], [0], clamp=True).item()
        (9.0, 5.0)
        """
        if "clamp_to" in deprecated:
            clamp = deprecated_kwarg(deprecated, "clamp_to", "clamp", "MAPFactors.predict")
            clamp = False if clamp is None else clamp
        if deprecated:
            raise TypeError(f"unexpected keyword arguments {sorted(deprecated)}")
        check_statistic(statistic)
        scale = self.scale
        if isinstance(ratings_or_rows, Ratings):
            if cols is not None:
                raise ValueError("give either a Ratings or row and column indices, not both")
            rows = ratings_or_rows.rows.to(self.device)
            cols_t = ratings_or_rows.cols.to(self.device)
            scale = ratings_or_rows.scale or scale
        else:
            if cols is None:
                raise ValueError("column indices are required when row indices are given")
            rows = _as_index(ratings_or_rows, self.device)
            cols_t = _as_index(cols, self.device)
        if rows.shape != cols_t.shape or rows.ndim != 1:
            raise ValueError(
                f"rows and cols must be 1-d of equal length, got {tuple(rows.shape)} "
                f"and {tuple(cols_t.shape)}"
            )
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= self.n_rows):
            raise ValueError(f"row indices out of range [0, {self.n_rows})")
        if cols_t.numel() and (int(cols_t.min()) < 0 or int(cols_t.max()) >= self.n_cols):
            raise ValueError(f"column indices out of range [0, {self.n_cols})")
        pred = (self.U[rows] * self.V[cols_t]).sum(-1) + self.mean
        if self.row_bias is not None:
            pred = pred + self.row_bias[rows]
        if self.col_bias is not None:
            pred = pred + self.col_bias[cols_t]
        if clamp is True:
            clamp = scale or False  # no scale known: nothing to clamp to
        if clamp:
            lo, hi = clamp  # type: ignore[misc]
            pred = pred.clamp(float(lo), float(hi))
        return pred

    # --------------------------------------------------------------- saving
    def _payload(self) -> dict[str, Any]:
        return {
            **self._common_payload(),
            "U": self.U.detach().cpu(), "V": self.V.detach().cpu(),
            "row_bias": None if self.row_bias is None else self.row_bias.detach().cpu(),
            "col_bias": None if self.col_bias is None else self.col_bias.detach().cpu(),
            "mean": float(self.mean), "converged": bool(self.converged),
            "n_iter": int(self.n_iter), "val_history": [float(x) for x in self.val_history],
            "scale": None if self.scale is None else list(self.scale),
        }

    @classmethod
    def _from_payload(
        cls, payload: dict[str, Any], device: str | torch.device | None = None
    ) -> MAPFactors:
        common = cls._common_from(payload)
        fit = cls(
            U=payload["U"], V=payload["V"], row_bias=payload["row_bias"],
            col_bias=payload["col_bias"], mean=payload["mean"], history=common["history"],
            converged=payload["converged"], n_iter=payload["n_iter"],
            val_history=payload["val_history"],
            scale=None if payload["scale"] is None else tuple(payload["scale"]),
            settings=common["settings"], train_info=common["train_info"],
            fit_seconds=common["fit_seconds"],
        )
        return fit if device is None else fit.to(device)


# ---------------------------------------------------------------------------
# helpers


def _prior_mean(
    prior: Any, n: int, rank: int, name: str, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    if prior is None:
        return torch.zeros(n, rank, device=device, dtype=dtype)
    t = torch.as_tensor(prior, dtype=dtype).to(device)
    try:
        t = torch.broadcast_to(t, (n, rank)).clone()
    except RuntimeError as err:
        raise ValueError(
            f"{name} must broadcast to shape ({n}, {rank}), got {tuple(t.shape)}"
        ) from err
    if not torch.all(torch.isfinite(t)):
        raise ValueError(f"{name} contains NaN/inf")
    return t


def _chunk_size(chunk_size: int | None, dim: int) -> int:
    if chunk_size is None:
        return max(1, GRAM_BUDGET // (dim * dim))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return chunk_size


def gram(
    target: torch.Tensor,
    other: torch.Tensor,
    y: torch.Tensor,
    feats: torch.Tensor,
    n_target: int,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-target Gram matrices ``sum_m f_m f_m^T`` ``(n_target, D, D)`` and right-hand
    sides ``sum_m y_nm f_m`` ``(n_target, D)`` of a least-squares side update.

    ``target``/``other`` are the rating indices on the side being solved and on the
    fixed side, ``feats`` the fixed side's (augmented) factors ``(n_other, D)``.
    """
    dim = feats.shape[1]
    # Accumulate in a flat (n_target, D*D) layout: index_add_ on CPU is far
    # faster on 2-d sources than on 3-d ones with unsorted indices.
    flat = torch.zeros(n_target, dim * dim, dtype=feats.dtype, device=feats.device)
    rhs = torch.zeros(n_target, dim, dtype=feats.dtype, device=feats.device)
    # Reused buffers: writing into preallocated memory (out=) avoids page faults
    # on fresh allocations, which otherwise dominate for larger ranks.
    size = min(chunk, target.shape[0])
    fbuf = torch.empty(size, dim, dtype=feats.dtype, device=feats.device)
    obuf = torch.empty(size, dim, dim, dtype=feats.dtype, device=feats.device)
    for start in range(0, target.shape[0], chunk):
        t = target[start : start + chunk]
        m = t.shape[0]
        f = torch.index_select(feats, 0, other[start : start + chunk], out=fbuf[:m])
        outer = torch.mul(f.unsqueeze(2), f.unsqueeze(1), out=obuf[:m])
        flat.index_add_(0, t, outer.view(m, dim * dim))
        rhs.index_add_(0, t, f * y[start : start + chunk, None])
    return flat.view(n_target, dim, dim), rhs


def _solve_side(
    target: torch.Tensor,
    other: torch.Tensor,
    y: torch.Tensor,
    feats: torch.Tensor,
    n_target: int,
    lam: torch.Tensor,
    prior: torch.Tensor,
    has_data: torch.Tensor,
    chunk: int,
) -> torch.Tensor:
    """Solve all ``(sum_m f_m f_m^T + diag(lam_n)) theta_n = sum_m y_nm f_m + lam_n * prior_n``.

    ``lam`` holds the per-target diagonal regularisers ``(n_target, D)`` (see :func:`gram`
    for the other arguments).
    """
    G, rhs = gram(target, other, y, feats, n_target, chunk)
    distributed.all_reduce_(G)  # data parallel: sums over every process's ratings
    distributed.all_reduce_(rhs)
    G.diagonal(dim1=-2, dim2=-1).add_(lam)
    rhs.add_(lam * prior)
    chol, info = torch.linalg.cholesky_ex(G)
    sol = torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)
    bad = info != 0
    if bool(bad.any()):  # numerically indefinite (extreme scales): fall back to LU
        sol[bad] = torch.linalg.solve(G[bad], rhs[bad])
    # Rows/columns without ratings get exactly their prior mean.
    return torch.where(has_data[:, None], sol, prior)


def _global_mean(t: torch.Tensor) -> float:
    """Mean (in float64) of ``t`` over the ratings of every process."""
    if not distributed.is_distributed():
        return float(t.double().mean())
    both = torch.stack([t.double().sum(), torch.tensor(float(t.numel()), dtype=torch.float64,
                                                        device=t.device)])
    distributed.all_reduce_(both)
    return float(both[0] / both[1])


def _dot(
    A: torch.Tensor, B: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor, chunk: int
) -> torch.Tensor:
    """``(A[ia] * B[ib]).sum(-1)`` computed in chunks."""
    out = torch.empty(ia.shape[0], dtype=A.dtype, device=A.device)
    for start in range(0, ia.shape[0], chunk):
        sl = slice(start, start + chunk)
        out[sl] = (A[ia[sl]] * B[ib[sl]]).sum(-1)
    return out


# ---------------------------------------------------------------------------
# ALS


@uses_fit_threads
def als(
    ratings: Ratings,
    rank: int = 10,
    reg_u: float = 10.0,
    reg_v: float = 10.0,
    epochs: int = 30,
    *,
    reg: float | None = None,
    biases: bool = True,
    reg_bias: float | None = None,
    tol: float = 1e-5,
    prior_mean_u: torch.Tensor | np.ndarray | float | None = None,
    prior_mean_v: torch.Tensor | np.ndarray | float | None = None,
    weighted_reg: bool = False,
    init_scale: float = 0.1,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    dtype: torch.dtype | None = None,
    chunk_size: int | None = None,
    **deprecated: Any,
) -> MAPFactors:
    """MAP matrix factorisation by (vectorised) alternating least squares.

    Each iteration solves, for all rows at once,

    ``u_n = (sum_{m in Omega_n} v_m v_m^T + lam_U I)^-1 (sum_{m in Omega_n} x_nm v_m + lam_U u0_n)``

    then the same for all columns (with the roles of ``U`` and ``V`` swapped),
    then (with biases) the global mean. The per-row Gram matrices are built with
    ``index_add_`` over chunks of ratings and solved with one batched Cholesky
    factorisation: there is no Python loop over rows, columns or ratings.

    Under ``torch.distributed`` (launched by ``torchrun``, every process passing the same
    ``ratings``) each process reads only its :func:`~bayesmf.inference.distributed.shard`;
    the Gram matrices, right-hand sides, counts and residual sums are summed over the
    processes (``all_reduce``) and every process solves the same systems, so all return
    the same factors as a single process would (up to rounding).

    Parameters
    ----------
    ratings : Ratings
        The observed entries.
    rank : int
        Number of latent dimensions ``K`` (>= 1).
    reg_u, reg_v : float
        Prior precisions ``lambda_U``, ``lambda_V`` of the row and column factors
        (> 0). With unit noise variance these are the usual L2 penalties of
        ``1/2 sum (x - x_hat)^2 + lambda_U/2 sum ||u_n - u0_n||^2 + ...``.
        The penalty is not scaled by the number of ratings, so it should grow with
        the noise variance; the default 10 suits ratings on a 1-5 scale with tens of
        ratings per row (on MovieLens-100K, 15 with ``reg_bias=5`` was best on a
        validation split, see ``benchmarks/classical.py``). Use small values for
        nearly noise-free data.
    epochs : int
        Maximum number of sweeps.
    reg : float, optional
        Shorthand for ``reg_u = reg_v = reg`` (overrides both).
    biases : bool
        Fit a global mean and row/column biases jointly with the factors. When
        ``False`` the model is plain ``x = u^T v`` (mean 0, no biases).
    reg_bias : float, optional
        Prior precision of the biases; defaults to ``reg_u`` for row biases and
        ``reg_v`` for column biases.
    tol : float
        Stop when the relative change of the regularised objective between two
        sweeps falls below ``tol`` (``converged`` is then ``True``).
    prior_mean_u, prior_mean_v : tensor or float, optional
        Prior means ``u0`` (broadcastable to ``(n_rows, K)``) and ``v0`` (to
        ``(n_cols, K)``); default 0. Rows/columns without ratings get exactly
        their prior mean (and bias 0).
    weighted_reg : bool
        Scale each row's (column's) regularisers by its number of ratings, as in
        ALS-WR (Zhou et al., 2008). The objective then uses the weighted penalties.
    init_scale : float
        Standard deviation of the random initialisation around the prior mean:
        ``U = u0 + init_scale * randn(n_rows, K)`` then ``V = v0 + init_scale *
        randn(n_cols, K)``, drawn on the CPU from ``torch.Generator`` seeded with
        ``seed`` (so results do not depend on the device); biases start at 0 and
        the mean at the average rating. Only ``V`` matters (``U`` is solved first).
    seed : int
        Seed of the local random generator (initialisation only).
    device : str or torch.device, optional
        Where to compute; default the device of ``ratings``.
    progress : bool
        Show a tqdm progress bar (default: only in a terminal).
    dtype : torch.dtype, optional
        Floating dtype of the computation and of the result; default the dtype of
        ``ratings.values`` (usually float32). Use ``torch.float64`` for exact MAP
        comparisons.
    chunk_size : int, optional
        Number of ratings whose outer products are materialised at once; default
        chosen so that a chunk holds about 1M Gram elements.

    Returns
    -------
    MAPFactors
        ``U``, ``V``, the biases and mean, the objective ``history`` (one value
        per sweep), ``converged`` and ``n_iter``.

    Raises
    ------
    ValueError
        If ``rank < 1``, a regulariser is not positive, ``epochs < 1``, ``tol < 0``,
        ``init_scale < 0`` or a prior mean has the wrong shape.

    Examples
    --------
    >>> from bayesmf.data import Ratings
    >>> R = Ratings([0, 0, 1, 1, 2], [0, 1, 1, 2, 0], [5.0, 3.0, 4.0, 1.0, 4.0],
    ...             shape=(3, 3), scale=(1, 5))
    >>> fit = als(R, rank=2, reg_u=0.5, reg_v=0.5, epochs=50)
    >>> U, V = fit
    >>> U.shape, V.shape
    (torch.Size([3, 2]), torch.Size([3, 2]))
    >>> fit.predict(R, clamp=True).shape
    torch.Size([5])
    >>> all(a >= b - 1e-6 for a, b in zip(fit.history, fit.history[1:]))
    True
    """
    if not isinstance(ratings, Ratings):
        raise ValueError(f"ratings must be a bayesmf.data.Ratings, got {type(ratings).__name__}")
    rank = check_rank(rank)
    if reg is not None:
        reg_u = reg_v = check_positive("reg", reg)
    reg_u = check_positive("reg_u", reg_u)
    reg_v = check_positive("reg_v", reg_v)
    reg_b_rows = reg_u if reg_bias is None else check_positive("reg_bias", reg_bias)
    reg_b_cols = reg_v if reg_bias is None else reg_b_rows
    if "iters" in deprecated:
        epochs = deprecated_kwarg(deprecated, "iters", "epochs", "als")
    if deprecated:
        raise TypeError(f"als() got unexpected keyword arguments {sorted(deprecated)}")
    epochs = check_int("epochs", epochs)
    if not (isinstance(tol, numbers.Real) and tol >= 0):
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    if not (isinstance(init_scale, numbers.Real) and init_scale >= 0):
        raise ValueError(f"init_scale must be >= 0, got {init_scale!r}")
    dev = torch.device(device) if device is not None else ratings.device
    dt = dtype if dtype is not None else ratings.values.dtype
    if not dt.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dt}")

    n_rows, n_cols = ratings.shape
    local = distributed.shard(ratings)  # the whole data without torch.distributed
    rows = local.rows.to(dev)
    cols = local.cols.to(dev)
    x = local.values.to(device=dev, dtype=dt)
    u0 = _prior_mean(prior_mean_u, n_rows, rank, "prior_mean_u", dev, dt)
    v0 = _prior_mean(prior_mean_v, n_cols, rank, "prior_mean_v", dev, dt)
    # Two copies of the ratings, sorted by row and by column: accumulating the
    # Gram matrices in target order is markedly faster (memory locality).
    by_col = torch.argsort(cols, stable=True)
    c_rows, c_cols, c_x = rows[by_col], cols[by_col], x[by_col]
    by_row = torch.argsort(rows, stable=True)
    rows, cols, x = rows[by_row], cols[by_row], x[by_row]
    row_counts = distributed.all_reduce_(torch.bincount(rows, minlength=n_rows))
    col_counts = distributed.all_reduce_(torch.bincount(cols, minlength=n_cols))

    dim = rank + 1 if biases else rank
    chunk = _chunk_size(chunk_size, dim)

    def lam_matrix(reg: float, reg_b: float, counts: torch.Tensor) -> torch.Tensor:
        diag = torch.full((dim,), reg, dtype=dt, device=dev)
        if biases:
            diag[-1] = reg_b
        w = counts.clamp(min=1).to(dt) if weighted_reg else torch.ones_like(counts, dtype=dt)
        return w[:, None] * diag

    lam_rows = lam_matrix(reg_u, reg_b_rows, row_counts)
    lam_cols = lam_matrix(reg_v, reg_b_cols, col_counts)
    prior_rows = torch.cat([u0, torch.zeros(n_rows, 1, dtype=dt, device=dev)], 1) if biases else u0
    prior_cols = torch.cat([v0, torch.zeros(n_cols, 1, dtype=dt, device=dev)], 1) if biases else v0

    gen = torch.Generator().manual_seed(int(seed))
    U = u0 + init_scale * torch.randn(n_rows, rank, generator=gen, dtype=dt).to(dev)
    V = v0 + init_scale * torch.randn(n_cols, rank, generator=gen, dtype=dt).to(dev)
    b = torch.zeros(n_rows, dtype=dt, device=dev)
    c = torch.zeros(n_cols, dtype=dt, device=dev)
    mu = _global_mean(x) if biases else 0.0
    ones_r = torch.ones(n_rows, 1, dtype=dt, device=dev)
    ones_c = torch.ones(n_cols, 1, dtype=dt, device=dev)
    dot_chunk = max(1, GRAM_BUDGET // max(rank, 1))

    def objective() -> float:
        resid = x - _dot(U, V, rows, cols, dot_chunk) - mu
        if biases:
            resid = resid - b[rows] - c[cols]
        val = distributed.all_reduce_(resid.double().pow(2).sum().reshape(1)).squeeze(0)
        val = val + (lam_rows[:, :rank].double() * (U - u0).double().pow(2)).sum()
        val = val + (lam_cols[:, :rank].double() * (V - v0).double().pow(2)).sum()
        if biases:
            val = val + (lam_rows[:, -1].double() * b.double().pow(2)).sum()
            val = val + (lam_cols[:, -1].double() * c.double().pow(2)).sum()
        return 0.5 * float(val)

    history: list[float] = []
    converged = False
    prev = objective()
    n_iter = 0
    t0 = time.perf_counter()
    bar = tqdm(range(epochs), desc="ALS", leave=False,
               disable=not show_progress(progress) or distributed.rank() != 0)
    for it in bar:
        # rows: unknowns [u_n, b_n], features [v_m, 1], target x - mu - c_m
        y = x - mu - c[cols] if biases else x
        feats = torch.cat([V, ones_c], 1) if biases else V
        sol = _solve_side(rows, cols, y, feats, n_rows, lam_rows, prior_rows,
                          row_counts > 0, chunk)
        if biases:
            U, b = sol[:, :rank].contiguous(), sol[:, rank].contiguous()
        else:
            U = sol
        # columns: unknowns [v_m, c_m], features [u_n, 1], target x - mu - b_n
        y = c_x - mu - b[c_rows] if biases else c_x
        feats = torch.cat([U, ones_r], 1) if biases else U
        sol = _solve_side(c_cols, c_rows, y, feats, n_cols, lam_cols, prior_cols,
                          col_counts > 0, chunk)
        if biases:
            V, c = sol[:, :rank].contiguous(), sol[:, rank].contiguous()
            # global mean (flat prior): the mean residual
            resid = x - _dot(U, V, rows, cols, dot_chunk) - b[rows] - c[cols]
            mu = _global_mean(resid)
        else:
            V = sol
        obj = objective()
        history.append(obj)
        n_iter = it + 1
        rel = abs(prev - obj) / max(abs(prev), 1e-30)
        logger.debug("als iter %d: objective %.8g (relative change %.3g)", n_iter, obj, rel)
        if progress:
            bar.set_postfix(objective=f"{obj:.6g}")
        prev = obj
        if rel < tol:
            converged = True
            break
    bar.close()
    logger.info(
        "als: rank %d, %d iterations, objective %.6g, converged=%s", rank, n_iter, prev, converged
    )
    return MAPFactors(
        U=U,
        V=V,
        row_bias=b if biases else None,
        col_bias=c if biases else None,
        mean=mu,
        history=history,
        converged=converged,
        n_iter=n_iter,
        scale=ratings.scale,
        settings={"engine": "als", "rank": rank, "reg_u": reg_u, "reg_v": reg_v,
                  "reg_bias": reg_bias, "epochs": epochs, "biases": biases, "tol": tol,
                  "weighted_reg": weighted_reg, "init_scale": init_scale, "seed": seed},
        train_info={**data_info(ratings), "fingerprint": files.fingerprint(ratings)},
        fit_seconds=time.perf_counter() - t0,
    )
