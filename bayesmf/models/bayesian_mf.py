"""Bayesian (biased) probabilistic matrix factorization, optionally with implicit feedback.

x_nm ~ N(mu + b_n + c_m + p_n^T q_m, sigma^2) with p_n = u_n and q_m = v_m, with Gaussian
priors on U, V and the biases whose scales are array-specific and have LogNormal
hyper-priors (see :mod:`bayesmf.models.base`).

With ``implicit=True`` each user is also described by the set ``N(n)`` of items it rated
in the training data and each item by the set ``N(m)`` of users who rated it (SVD++,
Koren 2008; the "implicit" feature groups of a Bayesian factorization machine, as in myFM's
MovieLens example):

    p_n = u_n + |N(n)|^{-1/2} sum_{j in N(n)} y_j,    q_m = v_m + |N(m)|^{-1/2} sum_{i in N(m)} w_i

with ``Y_row`` (one ``y_j`` per item) and ``Y_col`` (one ``w_i`` per user) Gaussian arrays
with their own prior scales (and means). Which user rated what is fixed by
:meth:`BayesianMF.setup` from the training data and stored in the model; predictions for
any entry, held-out ones included, use that training incidence.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import GaussianFactorModel, LatentSpec

__all__ = ["BayesianMF", "implicit_incidence"]

#: the implicit-feedback arrays and the side whose representation each one enters
IMPLICIT_ARRAYS = {"Y_row": "U", "Y_col": "V"}


def take(z: torch.Tensor, index: torch.Tensor, event_dims: int) -> torch.Tensor:
    """Index the first event dimension of ``z`` (which may have leading sample dims)."""
    return z.index_select(z.dim() - event_dims, index)


def implicit_incidence(
    target: torch.Tensor, other: torch.Tensor, n_target: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The normalised incidence of the training pattern seen from one side, in CSR form.

    Parameters
    ----------
    target, other : LongTensor
        Indices of the observed entries on this side (e.g. users) and on the other side.
    n_target : int
        Number of targets (rows of the incidence).

    Returns
    -------
    crow : LongTensor
        ``(n_target + 1,)`` row pointers.
    index : LongTensor
        ``(nnz,)`` the other side's index of each distinct observed pair, sorted by target.
    weight : Tensor
        ``(nnz,)`` ``|N(t)|^{-1/2}`` for each pair of target ``t`` (``N(t)``: the distinct
        entries of ``t``; a repeated pair counts once).
    """
    n_other = int(other.max()) + 1 if len(other) else 1
    key = torch.unique(target.long() * n_other + other.long())  # sorted, distinct
    t, o = key // n_other, key % n_other
    count = torch.bincount(t, minlength=n_target)
    crow = torch.zeros(n_target + 1, dtype=torch.long, device=target.device)
    torch.cumsum(count, 0, out=crow[1:])
    weight = count.clamp_min(1).to(torch.get_default_dtype()).rsqrt()[t]
    return crow, o, weight


class BayesianMF(GaussianFactorModel):
    """Linear Bayesian MF with optional biases (BiasMF when fitted by MAP).

    Parameters
    ----------
    n_rows, n_cols : int
        Matrix shape (users x items).
    rank : int
        Number of latent factors ``K``.
    biases : bool
        Include row and column biases ``b_n``, ``c_m`` (the global mean is a fixed offset).
    ard : bool
        One prior scale per factor (automatic relevance determination): ``scale_U`` and
        ``scale_V`` have shape ``(K,)`` instead of ``()``.
    factor_means : bool
        Latent prior means ``mean_U``, ``mean_V`` of shape ``(K,)`` (``Normal(0, 1)``
        priors): ``u_n ~ N(mean_U, diag(scale_U^2))``. With ``ard`` this is the prior of
        Bayesian PMF with diagonal precisions and of a Bayesian factorization machine on
        one-hot user/item features (Rendle's libFM, myFM); on MovieLens-100K both help
        the Gibbs sampler (``benchmarks/table1_ml100k.py``).
    global_mean : float, optional
        Offset ``mu``; by default the mean of the training ratings (set when fitting).
    implicit : bool
        Add the implicit-feedback terms of the module notes: arrays ``Y_row``
        ``(n_cols, K)`` and ``Y_col`` ``(n_rows, K)`` with their own prior scales
        ``scale_Y_row``/``scale_Y_col`` (per factor with ``ard``) and, with
        ``factor_means``, their own means. :meth:`setup` stores the normalised incidence of
        the training data (buffers ``implicit_row_*`` and ``implicit_col_*``); it must be
        called before the model is used (every fitter does).
    likelihood : {"gaussian", "discretized"}
        Observation model (see :class:`~bayesmf.models.base.GaussianFactorModel`):
        ``"discretized"`` for integer ratings, a Normal binned to the levels, fitted by SVI
        or NUTS (the conjugate Gibbs sampler needs the Gaussian).
    levels : (int, int), optional
        First and last rating level of the discretized likelihood (default: from the data).

    Examples
    --------
    >>> import pyro
    >>> from bayesmf import data, models
    >>> R, _ = data.synthetic_ratings(n_rows=30, n_cols=20, rank=2, density=0.3, seed=0)
    >>> m = models.BayesianMF(30, 20, rank=2)
    >>> m.setup(R)
    >>> tr = pyro.poutine.trace(m.model).get_trace(R)
    >>> tr.nodes["U"]["value"].shape, tr.nodes["obs"]["value"].shape
    (torch.Size([30, 2]), torch.Size([180]))
    """

    def __init__(
        self,
        n_rows: int,
        n_cols: int,
        rank: int = 10,
        biases: bool = True,
        global_mean: float | None = None,
        ard: bool = False,
        factor_means: bool = False,
        implicit: bool = False,
        likelihood: str = "gaussian",
        levels: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(n_rows, n_cols, global_mean, likelihood=likelihood, levels=levels)
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.rank = int(rank)
        self.biases = bool(biases)
        self.ard = bool(ard)
        self.factor_means = bool(factor_means)
        self.implicit = bool(implicit)
        if self.implicit:
            for side, n in (("row", self.n_rows), ("col", self.n_cols)):
                self.register_buffer(f"implicit_{side}_crow", torch.zeros(n + 1, dtype=torch.long))
                self.register_buffer(f"implicit_{side}_index", torch.zeros(0, dtype=torch.long))
                self.register_buffer(f"implicit_{side}_weight", torch.zeros(0))
            self._implicit_ready = False

    def config(self) -> dict[str, Any]:
        return {
            "n_rows": self.n_rows,
            "n_cols": self.n_cols,
            "rank": self.rank,
            "biases": self.biases,
            "ard": self.ard,
            "factor_means": self.factor_means,
            "implicit": self.implicit,
            **self.likelihood_config(),
        }

    # --------------------------------------------------------------- implicit feedback
    def setup(self, train: Any) -> None:
        """Check the shape, set the offset and, with ``implicit``, store the normalised
        incidence of ``train`` (who rated what), which every later prediction uses.

        Parameters
        ----------
        train : Ratings
            The training data (of this model's shape).
        """
        super().setup(train)
        if self.implicit:
            rows = train.rows.to(self.device)
            cols = train.cols.to(self.device)
            self.set_implicit_state({
                **self._incidence("row", rows, cols, self.n_rows),
                **self._incidence("col", cols, rows, self.n_cols),
            })

    @staticmethod
    def _incidence(side: str, target: torch.Tensor, other: torch.Tensor,
                   n: int) -> dict[str, torch.Tensor]:
        crow, index, weight = implicit_incidence(target, other, n)
        return {f"implicit_{side}_crow": crow, f"implicit_{side}_index": index,
                f"implicit_{side}_weight": weight}

    def implicit_state(self) -> dict[str, torch.Tensor]:
        """The stored incidence buffers, for saving a fit.

        Returns
        -------
        dict of str to Tensor
            ``implicit_{row,col}_{crow,index,weight}`` (empty without ``implicit``).
        """
        if not self.implicit:
            return {}
        return {f"implicit_{side}_{part}": getattr(self, f"implicit_{side}_{part}")
                for side in ("row", "col") for part in ("crow", "index", "weight")}

    def set_implicit_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the incidence buffers saved by :meth:`implicit_state`.

        Parameters
        ----------
        state : dict of str to Tensor
            What :meth:`implicit_state` returned (ignored without ``implicit``).
        """
        if not self.implicit:
            return
        for key, n in (("implicit_row_crow", self.n_rows), ("implicit_col_crow", self.n_cols)):
            if tuple(state[key].shape) != (n + 1,):
                raise ValueError(f"{key} has shape {tuple(state[key].shape)}, expected {(n + 1,)}")
        for key, value in state.items():
            setattr(self, key, value.to(self.device))
        self._implicit_ready = True

    def implicit_matrix(self, side: str, index: torch.Tensor | None = None) -> torch.Tensor:
        """The normalised incidence as a sparse COO matrix.

        Parameters
        ----------
        side : {"row", "col"}
            ``"row"``: users x items (user ``n``'s row holds ``|N(n)|^{-1/2}`` at the items
            it rated); ``"col"``: items x users.
        index : LongTensor, optional
            Only these rows (in this order; repeats allowed), default all of them.

        Returns
        -------
        torch.Tensor
            Sparse COO ``(len(index), n_other)``.
        """
        if not self.implicit:
            raise ValueError("the model has no implicit-feedback terms (implicit=False)")
        if not self._implicit_ready:
            raise RuntimeError(
                "the implicit-feedback incidence is not set: call model.setup(train) first")
        crow = getattr(self, f"implicit_{side}_crow")
        other = getattr(self, f"implicit_{side}_index")
        weight = getattr(self, f"implicit_{side}_weight")
        n_other = self.n_cols if side == "row" else self.n_rows
        if index is None:
            index = torch.arange(len(crow) - 1, device=crow.device)
        start, count = crow[index], crow[index + 1] - crow[index]
        row = torch.repeat_interleave(torch.arange(len(index), device=crow.device), count)
        first = torch.repeat_interleave(start - (torch.cumsum(count, 0) - count), count)
        pos = first + torch.arange(len(row), device=crow.device)
        return torch.sparse_coo_tensor(
            torch.stack([row, other[pos]]), weight[pos], (len(index), n_other),
            is_coalesced=True, check_invariants=False,
        )

    def implicit_sum(self, y: torch.Tensor, side: str,
                     index: torch.Tensor | None = None) -> torch.Tensor:
        """``|N(t)|^{-1/2} sum_{j in N(t)} y_j`` for the targets ``index`` of ``side``.

        Parameters
        ----------
        y : Tensor
            ``(*S, n_other, K)`` implicit vectors (``Y_row`` for ``side="row"``).
        side : {"row", "col"}
        index : LongTensor, optional
            Targets (default all).

        Returns
        -------
        Tensor
            ``(*S, len(index), K)``; one sparse product, differentiable in ``y``.
        """
        inv = None
        if index is not None and len(index) > 1:  # each distinct target once
            index, inv = torch.unique(index, return_inverse=True)
        A = self.implicit_matrix(side, index).to(y.dtype)
        batch = y.shape[:-2]
        n_other, K = y.shape[-2:]
        flat = y.reshape(-1, n_other, K).permute(1, 0, 2).reshape(n_other, -1)
        out = torch.sparse.mm(A, flat)  # (n, S * K)
        out = out.reshape(-1, max(1, flat.shape[1] // K), K).permute(1, 0, 2).reshape(
            *batch, -1, K)
        return out if inv is None else out.index_select(out.dim() - 2, inv)

    @property
    def collapsible_rows(self) -> tuple[str, ...]:
        """``("U", "row_bias")`` (``("U",)`` without biases) for the Gaussian likelihood:
        the mean is affine in a user's vector and bias, also with implicit feedback, so
        SVI can integrate them out (:mod:`bayesmf.inference.collapsed`); none for the
        discretized likelihood."""
        if self.discrete:
            return ()
        return ("U", "row_bias") if self.biases else ("U",)

    def row_design(
        self, z: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The mean as an affine function of each user's entries ``w_n = [u_n, b_n]``.

        ``mean(n, m) = x_m . (w_n + shift_n) + offset_m`` with ``x_m = [v_m, 1]`` (``v_m``
        plus the item's implicit sum with ``implicit``; no 1 without biases), ``offset_m =
        c_m + mu`` and ``shift_n`` the user's implicit sum (``None`` without
        ``implicit``); used to integrate the users out (:attr:`collapsible_rows`).

        Parameters
        ----------
        z : dict of str to Tensor
            Draws of the sites other than ``U`` and ``row_bias``, with leading sample dims.

        Returns
        -------
        X : Tensor
            ``(*S, n_cols, D)``.
        offset : Tensor
            ``(*S, n_cols)``.
        shift : Tensor or None
            ``(*S, n_rows, D)``.
        """
        v, shift = z["V"], None
        if self.implicit:
            v = v + self.implicit_sum(z["Y_col"], "col")
            shift = self.implicit_sum(z["Y_row"], "row")
        offset = self.global_mean.to(v.dtype).expand(v.shape[:-1])
        if not self.biases:
            return v, offset, shift
        X = torch.cat([v, torch.ones_like(v[..., :1])], -1)
        if shift is not None:
            shift = torch.cat([shift, torch.zeros_like(shift[..., :1])], -1)
        return X, offset + z["col_bias"], shift

    def latent_specs(self) -> list[LatentSpec]:
        K = self.rank
        shape, dims = ((K,), ("factor",)) if self.ard else ((), ())
        specs = [
            LatentSpec("noise", (), positive=True, init_loc=1.0),
            LatentSpec("scale_U", shape, positive=True, init_loc=0.5, dims=dims),
            LatentSpec("scale_V", shape, positive=True, init_loc=0.5, dims=dims),
        ]
        if self.biases:
            specs += [
                LatentSpec("scale_row_bias", (), positive=True, init_loc=0.3),
                LatentSpec("scale_col_bias", (), positive=True, init_loc=0.3),
            ]
        factors = ("U", "V")
        if self.implicit:
            # their own scales, initially smaller than the explicit factors'
            specs += [
                LatentSpec(f"scale_{a}", shape, positive=True, init_loc=0.2, dims=dims)
                for a in IMPLICIT_ARRAYS
            ]
            factors += tuple(IMPLICIT_ARRAYS)
        means: dict[str, str | float] = dict.fromkeys(factors, 0.0)
        if self.factor_means:
            specs += [
                LatentSpec(f"mean_{a}", (K,), prior_scale=1.0, dims=("factor",), init_loc=0.0)
                for a in factors
            ]
            means = {a: f"mean_{a}" for a in factors}
        specs += [
            LatentSpec("U", (self.n_rows, K), prior_scale="scale_U", prior_mean=means["U"],
                       dims=("user", "factor")),
            LatentSpec("V", (self.n_cols, K), prior_scale="scale_V", prior_mean=means["V"],
                       dims=("item", "factor")),
        ]
        if self.implicit:
            # indexed by item (Y_row) / user (Y_col) but needed in full for any row's mean:
            # dims that are not local axes, so the O(batch) objective draws them whole
            specs += [
                LatentSpec("Y_row", (self.n_cols, K), prior_scale="scale_Y_row",
                           prior_mean=means["Y_row"], dims=("implicit_item", "factor")),
                LatentSpec("Y_col", (self.n_rows, K), prior_scale="scale_Y_col",
                           prior_mean=means["Y_col"], dims=("implicit_user", "factor")),
            ]
        if self.biases:
            specs += [
                LatentSpec(
                    "row_bias", (self.n_rows,), prior_scale="scale_row_bias", dims=("user",)
                ),
                LatentSpec(
                    "col_bias", (self.n_cols,), prior_scale="scale_col_bias", dims=("item",)
                ),
            ]
        return specs

    def mean(
        self,
        z: dict[str, torch.Tensor],
        rows: torch.Tensor,
        cols: torch.Tensor,
        feature_rows: torch.Tensor | None = None,
        feature_cols: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Linear predictor at ``(rows, cols)``.

        ``feature_rows``/``feature_cols`` are the original user/item indices when ``rows``
        and ``cols`` index arrays gathered for a minibatch (the ``O(batch)`` objective); the
        implicit sums look the training incidence up by them (default: ``rows``/``cols``).
        """
        u = take(z["U"], rows, 2)
        v = take(z["V"], cols, 2)
        if self.implicit:
            u = u + self.implicit_sum(z["Y_row"], "row",
                                      rows if feature_rows is None else feature_rows)
            v = v + self.implicit_sum(z["Y_col"], "col",
                                      cols if feature_cols is None else feature_cols)
        out = (u * v).sum(-1) + self.global_mean
        if self.biases:
            out = out + take(z["row_bias"], rows, 1) + take(z["col_bias"], cols, 1)
        return out
