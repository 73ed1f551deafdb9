"""A Bayesian latent-feature model for binary undirected networks.

For nodes ``i < j`` of a symmetric network without self-links,

    y_ij ~ Bernoulli(sigmoid(eta_ij)),
    eta_ij = offset + b_i + b_j
             + sum_k lam_k U_ik U_jk                      (eigenmodel term)
             + alpha - sum_k rho_k^2 (U_ik - U_jk)^2      (latent distance term)
             [+ f_theta(U_i * U_j, (U_i - U_j)^2)]        (optional Bayesian MLP)

* The eigenmodel term is Hoff's (2008, "Modeling homophily and stochastic equivalence in
  symmetric relational data"): one real feature vector ``U_i`` per node and a real diagonal
  ``Lambda = diag(lam)``, so that both homophily (``lam_k > 0``) and stochastic equivalence
  or heterophily (``lam_k < 0``) are expressible.
* The distance term is the latent space model of Hoff, Raftery & Handcock (2002) with one
  weight ``rho_k^2`` per dimension. Since ``-(u - v)^2 = 2uv - u^2 - v^2`` it is an
  eigenmodel with positive eigenvalues whose node terms are tied to the norms of the
  features, which builds transitivity in (a friend's friend is near): on co-authorship
  networks such as NIPS234 the two terms together predict held-out links markedly better
  than either alone under mean-field VI (validation AUC 0.91 against 0.81 for the
  eigenmodel alone and 0.90 for the distance model alone, see ``benchmarks/links.py``).
* ``b_i`` are node sociability biases (degree heterogeneity), ``alpha`` a latent intercept
  of the distance term (distances only lower the logit) and the fixed offset the logit of
  the training density (:class:`~bayesmf.models.base.BernoulliFactorModel`).
* The optional Bayesian MLP ``f_theta`` (as in :class:`~bayesmf.models.BayesianNNMF`, the
  Kampman & Heaukulani NNMF, here with a Bernoulli likelihood) reads features that are
  symmetric in ``(i, j)``, so the model stays undirected.

Priors are hierarchical: ``U_ik ~ N(0, 1)`` (the scale of the features is fixed, which
removes the scale trade-off between ``U`` and ``lam``/``rho`` that otherwise lets
mean-field VI prune the features), ``lam_k ~ N(0, s_k^2)`` and ``rho_k ~ N(0, r_k^2)`` with
one LogNormal scale per factor (``ard=True``: automatic relevance determination, unused
dimensions shrink away, so ``rank`` is an upper bound rather than a setting to tune
finely), ``b_i ~ N(0, s_b^2)`` with a LogNormal ``s_b``, every MLP array with its own
LogNormal scale, and ``alpha ~ N(0, 3^2)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .base import BernoulliFactorModel, LatentSpec
from .bayesian_mf import take
from .bnn import ACTIVATIONS, mlp_forward

__all__ = ["LatentFeatureNetwork"]


class LatentFeatureNetwork(BernoulliFactorModel):
    """Bayesian latent-feature network model: eigenmodel + latent distance (+ Bayesian MLP).

    ``logit p_ij = offset + b_i + b_j + U_i diag(lam) U_j + alpha - |diag(rho) (U_i - U_j)|^2``
    (see the module docstring). Fit it on the observed pairs of a training network
    (:meth:`bayesmf.data.Network.observed_pairs`); ``expected(z, rows, cols)`` gives the
    link probabilities for posterior draws ``z``.

    Parameters
    ----------
    n_nodes : int
        Number of nodes (the data are pairs ``i < j`` of an ``n_nodes x n_nodes`` matrix,
        :class:`bayesmf.data.Pairs`).
    rank : int
        ``K``, the length of each node's feature vector ``U_i``.
    hidden : sequence of int
        Hidden layer widths of the optional Bayesian MLP ``f_theta`` added to the logit;
        ``()`` (default): none.
    activation : {"sigmoid", "tanh", "relu"}
        Hidden unit non-linearity of ``f_theta``.
    eigen : bool
        Include the eigenmodel term ``U_i diag(lam) U_j``.
    distance : bool
        Include the latent distance term ``alpha - sum_k rho_k^2 (U_ik - U_jk)^2``.
    biases : bool
        Include the node biases ``b_i``.
    ard : bool
        One prior scale per factor for ``lam`` and ``rho`` (shape ``(K,)``) instead of one.
    global_mean : float, optional
        Fixed logit offset; the logit of the training density by default.
    init_factor_std : float
        Standard deviation of the random initial posterior means of ``U``, ``lam``, ``rho``.
    init_weight_scale : float
        Initial posterior standard deviation of the MLP weights and biases.

    Examples
    --------
    >>> import pyro, torch
    >>> from bayesmf import data
    >>> from bayesmf.models.latent_network import LatentFeatureNetwork
    >>> net, _ = data.synthetic_network(30, n_blocks=2, p_in=0.5, p_out=0.05, seed=0)
    >>> m = LatentFeatureNetwork(30, rank=3)
    >>> pairs = net.observed_pairs()
    >>> m.setup(pairs)
    >>> tr = pyro.poutine.trace(m.model).get_trace(pairs)
    >>> tr.nodes["U"]["value"].shape, tr.nodes["lam"]["value"].shape
    (torch.Size([30, 3]), torch.Size([3]))
    >>> tr.nodes["obs"]["value"].shape  # one Bernoulli per observed pair i < j
    torch.Size([435])
    """

    def __init__(
        self,
        n_nodes: int,
        rank: int = 10,
        hidden: Sequence[int] = (),
        activation: str = "tanh",
        eigen: bool = True,
        distance: bool = True,
        biases: bool = True,
        ard: bool = True,
        global_mean: float | None = None,
        init_factor_std: float = 0.3,
        init_weight_scale: float = 0.01,
    ) -> None:
        super().__init__(n_nodes, n_nodes, global_mean)
        if n_nodes < 2:
            raise ValueError(f"a network needs at least 2 nodes, got {n_nodes}")
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if not (eigen or distance or hidden):
            raise ValueError("need at least one of eigen, distance or hidden layers")
        if any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden widths must be positive, got {tuple(hidden)}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        if not init_factor_std > 0 or not init_weight_scale > 0:
            raise ValueError("init_factor_std and init_weight_scale must be positive")
        self.n_nodes = int(n_nodes)
        self.rank = int(rank)
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self._act = ACTIVATIONS[activation]
        self.eigen = bool(eigen)
        self.distance = bool(distance)
        self.biases = bool(biases)
        self.ard = bool(ard)
        self.init_factor_std = float(init_factor_std)
        self.init_weight_scale = float(init_weight_scale)

    def config(self) -> dict[str, Any]:
        return {
            "n_nodes": self.n_nodes,
            "rank": self.rank,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "eigen": self.eigen,
            "distance": self.distance,
            "biases": self.biases,
            "ard": self.ard,
            "init_factor_std": self.init_factor_std,
            "init_weight_scale": self.init_weight_scale,
        }

    def layer_sizes(self) -> list[int]:
        """Widths of ``f_theta``: ``2K`` symmetric inputs, the hidden layers, one output."""
        return [2 * self.rank, *self.hidden, 1] if self.hidden else []

    def latent_specs(self) -> list[LatentSpec]:
        """Prior scales (positive) first, then ``b``, ``U``, ``lam``, ``rho``, ``alpha`` and
        the MLP arrays.

        ``U``, ``lam`` and ``rho`` start at random means of standard deviation
        ``init_factor_std`` (symmetry breaking); their products then start small, so the
        first steps fit the offset and biases and the features grow from there.
        """
        K, N = self.rank, self.n_nodes
        a = self.init_factor_std
        scale_shape, scale_dims = ((K,), ("factor",)) if self.ard else ((), ())
        specs: list[LatentSpec] = []
        arrays = [LatentSpec("U", (N, K), prior_scale=1.0, dims=("node", "factor"), init_loc=a)]
        if self.biases:
            specs.append(LatentSpec("scale_b", (), positive=True, init_loc=0.5))
            arrays.insert(
                0, LatentSpec("b", (N,), prior_scale="scale_b", dims=("node",), init_loc=0.0)
            )
        for site, on in (("lam", self.eigen), ("rho", self.distance)):
            if on:
                specs.append(
                    LatentSpec(
                        f"scale_{site}", scale_shape, positive=True, init_loc=1.0, dims=scale_dims
                    )
                )
                arrays.append(
                    LatentSpec(
                        site, (K,), prior_scale=f"scale_{site}", dims=("factor",), init_loc=a
                    )
                )
        if self.distance:
            arrays.append(LatentSpec("alpha", (), prior_scale=3.0, init_loc=0.0))
        sizes = self.layer_sizes()
        ws = self.init_weight_scale
        for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            # unit-variance first pre-activations (inputs are products of two features)
            std = (1.0 / a**2 if layer == 0 else 1.0) / math.sqrt(n_in)
            for name, shape, dims, init in (
                (f"W{layer}", (n_in, n_out), (f"in{layer}", f"out{layer}"), std),
                (f"b{layer}", (n_out,), (f"out{layer}",), 0.0),
            ):
                specs.append(
                    LatentSpec(f"scale_{name}", (), positive=True, init_loc=max(init, 0.1))
                )
                arrays.append(
                    LatentSpec(
                        name,
                        shape,
                        prior_scale=f"scale_{name}",
                        dims=dims,
                        init_loc=init,
                        init_scale=ws,
                    )
                )
        return specs + arrays

    def mean(
        self, z: dict[str, torch.Tensor], rows: torch.Tensor, cols: torch.Tensor
    ) -> torch.Tensor:
        """Logit of the link probability of the pairs ``(rows, cols)``, shape ``(*S, n)``.

        Symmetric in ``(rows, cols)``: swapping them gives the same logits.
        """
        u, v = take(z["U"], rows, 2), take(z["U"], cols, 2)
        prod = u * v
        eta = self.global_mean.expand(prod.shape[:-1])
        if self.eigen:
            eta = eta + (prod * z["lam"].unsqueeze(-2)).sum(-1)
        if self.distance:
            w = z["rho"].unsqueeze(-2) ** 2
            eta = eta + z["alpha"].unsqueeze(-1) - (w * (u - v) ** 2).sum(-1)
        if self.biases:
            eta = eta + take(z["b"], rows, 1) + take(z["b"], cols, 1)
        if self.hidden:
            h = torch.cat([prod, (u - v) ** 2], dim=-1)
            eta = eta + mlp_forward(h, z, len(self.hidden) + 1, self._act).squeeze(-1)
        return eta
