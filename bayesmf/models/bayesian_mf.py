"""Bayesian (biased) probabilistic matrix factorization.

x_nm ~ N(mu + b_n + c_m + u_n^T v_m, sigma^2), with Gaussian priors on U, V and the
biases whose scales are array-specific and have LogNormal hyper-priors (see
:mod:`bayesmf.models.base`).
"""

from __future__ import annotations

from typing import Any

import torch

from .base import GaussianFactorModel, LatentSpec

__all__ = ["BayesianMF"]


def take(z: torch.Tensor, index: torch.Tensor, event_dims: int) -> torch.Tensor:
    """Index the first event dimension of ``z`` (which may have leading sample dims)."""
    return z.index_select(z.dim() - event_dims, index)


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
    ) -> None:
        super().__init__(n_rows, n_cols, global_mean)
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.rank = int(rank)
        self.biases = bool(biases)
        self.ard = bool(ard)
        self.factor_means = bool(factor_means)

    def config(self) -> dict[str, Any]:
        return {
            "n_rows": self.n_rows,
            "n_cols": self.n_cols,
            "rank": self.rank,
            "biases": self.biases,
            "ard": self.ard,
            "factor_means": self.factor_means,
        }

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
        means: dict[str, str | float] = {"U": 0.0, "V": 0.0}
        if self.factor_means:
            specs += [
                LatentSpec(f"mean_{a}", (K,), prior_scale=1.0, dims=("factor",), init_loc=0.0)
                for a in ("U", "V")
            ]
            means = {"U": "mean_U", "V": "mean_V"}
        specs += [
            LatentSpec("U", (self.n_rows, K), prior_scale="scale_U", prior_mean=means["U"],
                       dims=("user", "factor")),
            LatentSpec("V", (self.n_cols, K), prior_scale="scale_V", prior_mean=means["V"],
                       dims=("item", "factor")),
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
        self, z: dict[str, torch.Tensor], rows: torch.Tensor, cols: torch.Tensor
    ) -> torch.Tensor:
        u = take(z["U"], rows, 2)
        v = take(z["V"], cols, 2)
        out = (u * v).sum(-1) + self.global_mean
        if self.biases:
            out = out + take(z["row_bias"], rows, 1) + take(z["col_bias"], cols, 1)
        return out
