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
    ) -> None:
        super().__init__(n_rows, n_cols, global_mean)
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.rank = int(rank)
        self.biases = bool(biases)

    def config(self) -> dict[str, Any]:
        return {
            "n_rows": self.n_rows,
            "n_cols": self.n_cols,
            "rank": self.rank,
            "biases": self.biases,
        }

    def latent_specs(self) -> list[LatentSpec]:
        K = self.rank
        specs = [
            LatentSpec("noise", (), positive=True, init_loc=1.0),
            LatentSpec("scale_U", (), positive=True, init_loc=0.5),
            LatentSpec("scale_V", (), positive=True, init_loc=0.5),
        ]
        if self.biases:
            specs += [
                LatentSpec("scale_row_bias", (), positive=True, init_loc=0.3),
                LatentSpec("scale_col_bias", (), positive=True, init_loc=0.3),
            ]
        specs += [
            LatentSpec("U", (self.n_rows, K), prior_scale="scale_U", dims=("user", "factor")),
            LatentSpec("V", (self.n_cols, K), prior_scale="scale_V", dims=("item", "factor")),
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
