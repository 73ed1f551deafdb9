"""A stick-breaking Dirichlet-process stochastic block model for networks.

Kampman & Heaukulani (2019, §4): a nonparametric stochastic block model (SBM) whose
link probabilities come from a Bayesian network ``f_theta`` on cluster features.

* ``X_ij ~ Bernoulli(p_ij)`` for every pair ``i < j`` (links and non-links) of a
  symmetric 0/1 network without self-links;
* ``Z_i ~ Categorical(pi)``, ``pi_c = V_c prod_{l<c} (1 - V_l)``,
  ``V_c ~ Beta(1, alpha)`` for ``c < T`` and ``V_T = 1`` (truncation at ``T`` sticks);
* cluster features ``U_c in R^K`` and ``U'_{c,d} in R^{K'}`` (``d = 1..D``) and the weights
  of ``f_theta`` with independent Gaussian priors;
* ``logit p_ij = g(Z_i, Z_j) [+ s_i + s_j]`` with the block logit
  ``g(a, b) = (f_theta([U_a, U_b, U'_a1 . U'_b1, ..., U'_aD . U'_bD])
  + f_theta([U_b, U_a, U'_b1 . U'_a1, ...])) / 2``.

Symmetry: the bilinear inputs ``<U'_ad, U'_bd>`` are symmetric in ``(a, b)`` already; the
plain features enter in the order ``[U_a, U_b]``, so the network output is symmetrised by
averaging it over both orders **on the logit scale**. ``g`` is then a symmetric ``T x T``
matrix and ``p_ij = p_ji`` for every draw of the latents. ``f_theta`` is linear by default
(``hidden=()``).

Degree correction (``degree_correction=True``, an extension, off by default) adds a
per-node effect ``s_i ~ N(0, degree_prior_scale^2)`` to the logit of every pair of node
``i``, which absorbs the heavy-tailed degrees of real networks (hubs) so that the blocks
capture community structure rather than degree classes. With it off the model is the
seed model of the paper, as is.

``alpha`` is a (positive) model parameter, fitted by type-II maximum likelihood.

This module says *what* is believed: :meth:`DPStochasticBlockModel.model` is the Pyro program
of the prior and the likelihood (the assignments ``Z`` are a discrete latent site), and
:meth:`~DPStochasticBlockModel.block_logits`, :meth:`~DPStochasticBlockModel.pair_logits` and
:meth:`~DPStochasticBlockModel.link_probability` are its pure functions. *How* it is fitted
(the mean-field ``q(Z) q(V) q(U, U', theta)``, the exact ``T x T`` expected log-likelihood
under ``q(Z)``, the closed-form ``q(Z)`` steps) is :mod:`bayesmf.inference.sbm`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from .base import LatentSpec
from .bnn import ACTIVATIONS, mlp_forward

__all__ = ["DPStochasticBlockModel", "stick_breaking_log_weights"]


def stick_breaking_log_weights(V: torch.Tensor) -> torch.Tensor:
    """``log pi`` of the stick-breaking weights, shape ``(..., T)`` from ``V (..., T-1)``.

    ``pi_c = V_c prod_{l<c} (1 - V_l)`` for ``c < T`` and the last stick takes the rest.

    Examples
    --------
    >>> w = stick_breaking_log_weights(torch.tensor([0.5, 0.5])).exp()
    >>> w.tolist()
    [0.5, 0.25, 0.25]
    """
    log_v = torch.log(V)
    log_1mv = torch.log1p(-V)
    zero = torch.zeros_like(V[..., :1])
    cum = torch.cat([zero, torch.cumsum(log_1mv, -1)], -1)  # sum_{l<c} log(1 - V_l)
    return torch.cat([log_v, zero], -1) + cum


class DPStochasticBlockModel(PyroModule):
    """Truncated stick-breaking DP stochastic block model with a Bayesian link network.

    Parameters
    ----------
    n_nodes : int
        Number of nodes ``N``.
    truncation : int
        ``T``, the number of sticks (maximum number of clusters); 7 in the paper.
    rank : int
        ``K``, size of the plain cluster features ``U_c``.
    bilinear_dims : int
        ``D``, number of bilinear features ``<U'_ad, U'_bd>``. With a linear ``f_theta``
        the block logits are ``u_a + u_b + sum_d w_d <U'_ad, U'_bd> + b``, so ``D >= T``
        lets them take any symmetric ``T x T`` pattern.
    bilinear_rank : int
        ``K'``, size of each ``U'_{c,d}`` (1 in the paper: an elementwise product).
    hidden : sequence of int
        Hidden layer widths of ``f_theta``; ``()`` (default) is linear.
    activation : {"tanh", "sigmoid", "relu"}
        Hidden unit non-linearity.
    degree_correction : bool
        Add per-node logit effects ``s_i`` (degree-corrected SBM); off in the seed model.
    prior_scale : float
        Standard deviation of the Gaussian priors of ``U``, ``U'`` and the weights.
    bias_prior_scale : float
        Standard deviation of the Gaussian prior of the biases (the output bias sets the
        overall link density, around ``logit(density)``, so it gets a wide prior).
    degree_prior_scale : float
        Standard deviation of the prior of the node effects ``s_i``.
    alpha : float
        Initial concentration of the stick-breaking prior (fitted by type-II ML).

    Examples
    --------
    >>> import torch
    >>> m = DPStochasticBlockModel(5, truncation=3, rank=2, bilinear_dims=3)
    >>> z = {s.name: torch.zeros((1,) + s.shape) for s in m.latent_specs()}
    >>> m.block_logits(z).shape  # (draws, T, T)
    torch.Size([1, 3, 3])
    >>> i, j = torch.tensor([0, 1]), torch.tensor([2, 4])
    >>> m.link_probability(torch.tensor([0, 1, 2, 0, 1]), z, i, j)  # all logits 0
    tensor([[0.5000, 0.5000]])
    >>> import pyro
    >>> trace = pyro.poutine.trace(m.model).get_trace(i, j, torch.tensor([1.0, 0.0]))
    >>> [name for name in trace.stochastic_nodes][:2], trace.nodes["Z"]["value"].shape
    (['V', 'U'], torch.Size([5]))
    """

    def __init__(
        self,
        n_nodes: int,
        truncation: int = 7,
        rank: int = 5,
        bilinear_dims: int = 10,
        bilinear_rank: int = 1,
        hidden: Sequence[int] = (),
        activation: str = "tanh",
        degree_correction: bool = False,
        prior_scale: float = 1.0,
        bias_prior_scale: float = 5.0,
        degree_prior_scale: float = 1.0,
        alpha: float = 1.0,
    ) -> None:
        super().__init__()
        n_nodes, truncation = int(n_nodes), int(truncation)
        if n_nodes < 2:
            raise ValueError(f"n_nodes must be at least 2, got {n_nodes}")
        if truncation < 1:
            raise ValueError(f"truncation must be a positive integer, got {truncation}")
        if rank < 0 or bilinear_dims < 0 or rank + bilinear_dims == 0:
            raise ValueError("need rank >= 0, bilinear_dims >= 0 and at least one of them > 0")
        if bilinear_dims and bilinear_rank < 1:
            raise ValueError(f"bilinear_rank must be >= 1, got {bilinear_rank}")
        if any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden widths must be positive, got {tuple(hidden)}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        for name, v in (
            ("prior_scale", prior_scale),
            ("bias_prior_scale", bias_prior_scale),
            ("degree_prior_scale", degree_prior_scale),
            ("alpha", alpha),
        ):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be positive, got {v}")
        self.n_nodes = n_nodes
        self.truncation = truncation
        self.rank = int(rank)
        self.bilinear_dims = int(bilinear_dims)
        self.bilinear_rank = int(bilinear_rank)
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self._act = ACTIVATIONS[activation]
        self.degree_correction = bool(degree_correction)
        self.prior_scale = float(prior_scale)
        self.bias_prior_scale = float(bias_prior_scale)
        self.degree_prior_scale = float(degree_prior_scale)
        #: log of the stick-breaking concentration (a point estimate, type-II ML)
        self.log_alpha = torch.nn.Parameter(torch.tensor(math.log(alpha)))

    # ------------------------------------------------------------------ structure
    @property
    def alpha(self) -> torch.Tensor:
        """The concentration ``alpha`` of the stick-breaking prior."""
        return self.log_alpha.exp()

    @property
    def n_inputs(self) -> int:
        """Width of the network input ``[U_a, U_b, bilinear features]``."""
        return 2 * self.rank + self.bilinear_dims

    def layer_sizes(self) -> list[int]:
        return [self.n_inputs, *self.hidden, 1]

    def config(self) -> dict[str, Any]:
        """Constructor arguments (for saving and rebuilding the model)."""
        return {
            "n_nodes": self.n_nodes,
            "truncation": self.truncation,
            "rank": self.rank,
            "bilinear_dims": self.bilinear_dims,
            "bilinear_rank": self.bilinear_rank,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "degree_correction": self.degree_correction,
            "prior_scale": self.prior_scale,
            "bias_prior_scale": self.bias_prior_scale,
            "degree_prior_scale": self.degree_prior_scale,
            "alpha": float(self.alpha.detach()),
        }

    def latent_specs(self) -> list[LatentSpec]:
        """The Gaussian latent arrays: ``U``, ``U_prime``, ``W{l}``/``b{l}`` and ``s``.

        ``prior_scale`` of each spec is its prior standard deviation (a number);
        ``init_loc`` the standard deviation of the random initial variational means.
        The stick proportions ``V`` (Beta) are not listed: their ``q`` is a Beta.
        """
        T, K, D, Kp = self.truncation, self.rank, self.bilinear_dims, self.bilinear_rank
        ps = self.prior_scale
        specs: list[LatentSpec] = []
        if K:
            specs.append(
                LatentSpec("U", (T, K), prior_scale=ps, dims=("cluster", "factor"), init_loc=0.5)
            )
        if D:
            specs.append(
                LatentSpec(
                    "U_prime",
                    (T, D, Kp),
                    prior_scale=ps,
                    dims=("cluster", "bilinear", "bfactor"),
                    init_loc=0.5,
                )
            )
        sizes = self.layer_sizes()
        for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            specs.append(
                LatentSpec(
                    f"W{layer}",
                    (n_in, n_out),
                    prior_scale=ps,
                    dims=(f"in{layer}", f"out{layer}"),
                    init_loc=1.0 / math.sqrt(n_in),
                )
            )
            specs.append(
                LatentSpec(
                    f"b{layer}",
                    (n_out,),
                    prior_scale=self.bias_prior_scale,
                    dims=(f"out{layer}",),
                    init_loc=0.0,
                )
            )
        if self.degree_correction:
            specs.append(
                LatentSpec(
                    "s",
                    (self.n_nodes,),
                    prior_scale=self.degree_prior_scale,
                    dims=("node",),
                    init_loc=0.0,
                )
            )
        return specs

    # ------------------------------------------------------------- link function
    def block_logits(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        """Symmetric block logits ``g(a, b)``, shape ``(S, T, T)``, for draws ``z``.

        ``z`` maps each latent name to a tensor with a leading draw dimension ``S``.
        """
        T = self.truncation
        parts = []
        if self.rank:
            U = z["U"]  # (S, T, K)
            S = U.shape[0]
            parts.append(U[:, :, None, :].expand(S, T, T, self.rank))
            parts.append(U[:, None, :, :].expand(S, T, T, self.rank))
        if self.bilinear_dims:
            Up = z["U_prime"]  # (S, T, D, K')
            parts.append(torch.einsum("sadk,sbdk->sabd", Up, Up))
        h = torch.cat(parts, -1)  # (S, T, T, n_inputs)
        g = mlp_forward(h, z, len(self.layer_sizes()) - 1, self._act)[..., 0]
        return 0.5 * (g + g.transpose(-1, -2))

    def pair_logits(
        self,
        z: dict[str, torch.Tensor],
        i: torch.Tensor,
        j: torch.Tensor,
        block: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of every cluster pair for the node pairs ``(i, j)``.

        Shape ``(S, 1, T, T)`` without degree correction (the same for every pair) and
        ``(S, B, T, T)`` with it.
        """
        g = self.block_logits(z) if block is None else block
        g = g[:, None]
        if self.degree_correction:
            s = z["s"]
            g = g + (s[:, i] + s[:, j])[:, :, None, None]
        return g


    def link_probability(
        self,
        assignments: torch.Tensor,
        z: dict[str, torch.Tensor],
        i: torch.Tensor,
        j: torch.Tensor,
    ) -> torch.Tensor:
        """``P(X_ij = 1 | z, Z)`` per draw of the continuous latents, shape ``(S, B)``.

        Parameters
        ----------
        assignments : tensor
            Either hard cluster labels ``Z``, a long tensor of shape ``(N,)``, or cluster
            probabilities of every node, shape ``(N, T)`` (rows summing to one); then the
            assignments are summed out exactly,
            ``P(X_ij = 1 | z) = sum_ab P(Z_i = a) P(Z_j = b) sigmoid(l_ab)``.
        z : dict of tensors
            Draws of the continuous latents, each with a leading draw dimension ``S``.
        i, j : long tensors, shape (B,)
            The node pairs.
        """
        p = torch.sigmoid(self.pair_logits(z, i, j))  # (S, 1 or B, T, T)
        if assignments.dim() == 1:
            zi, zj = assignments[i], assignments[j]
            p = p.expand(-1, i.shape[0], -1, -1)
            return p[:, torch.arange(i.shape[0], device=p.device), zi, zj]
        probs = assignments.to(p.dtype)
        if p.shape[1] == 1:  # one T x T table for every pair
            return torch.einsum("ba,sac,bc->sb", probs[i], p[:, 0], probs[j])
        return torch.einsum("ba,sbac,bc->sb", probs[i], p, probs[j])

    # ----------------------------------------------------------------- Pyro model
    @property
    def device(self) -> torch.device:
        """Where the model's parameter ``log_alpha`` lives."""
        return self.log_alpha.device

    def model(
        self,
        i: torch.Tensor,
        j: torch.Tensor,
        x: torch.Tensor | None = None,
        scale: float | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        """The Pyro program of the prior and the likelihood of the pairs ``(i, j)``.

        Sites: ``V`` (the ``T - 1`` sticks, ``Beta(1, alpha)``), the Gaussian arrays of
        :meth:`latent_specs` (``U``, ``U_prime``, ``W{l}``, ``b{l}`` and ``s``), ``Z`` (one
        ``Categorical(pi)`` assignment per node, in a ``nodes`` plate) and ``X`` (one
        ``Bernoulli(logits = g(Z_i, Z_j) [+ s_i + s_j])`` per pair, in a ``pairs`` plate,
        observed when ``x`` is given).

        The program runs under :mod:`pyro.infer` with any guide that draws ``Z`` (e.g. a
        ``Categorical`` per node) and under ``Predictive``; an exact sum over ``Z`` is not
        tractable for the whole network (every pair couples two nodes), so the library's
        engine (:func:`bayesmf.inference.fit_sbm`) sums it exactly per pair under a
        mean-field ``q(Z)`` instead.

        Parameters
        ----------
        i, j : long tensors, shape (B,)
            The node pairs.
        x : tensor, shape (B,), optional
            Their 0/1 values (``None``: drawn, for prior/posterior predictive checks).
        scale : float or tensor of shape (B,)
            Weight of each pair's log-likelihood (e.g. inverse sampling fractions of a
            minibatch, so that the likelihood estimate is unbiased).

        Returns
        -------
        tensor, shape (B,)
            The values of the pairs (``x`` itself when observed).
        """
        T, dev = self.truncation, self.device
        if T > 1:
            alpha = self.alpha
            V = pyro.sample(
                "V", dist.Beta(torch.ones_like(alpha), alpha).expand([T - 1]).to_event(1)
            )
            pi = stick_breaking_log_weights(V).exp()
        else:
            pi = torch.ones(1, device=dev)
        z: dict[str, torch.Tensor] = {}
        for spec in self.latent_specs():
            prior = dist.Normal(torch.zeros(spec.shape, device=dev), spec.prior_scale)
            z[spec.name] = pyro.sample(spec.name, prior.to_event(len(spec.shape)))[None]
        with pyro.plate("nodes", self.n_nodes, device=dev):
            Z = pyro.sample("Z", dist.Categorical(probs=pi))
        logits = self.pair_logits(z, i, j)[0].expand(i.shape[0], T, T)
        logits = logits[torch.arange(i.shape[0], device=dev), Z[i], Z[j]]
        w = torch.as_tensor(scale, dtype=logits.dtype, device=dev)
        obs = None if x is None else x.to(logits.dtype)
        with pyro.plate("pairs", i.shape[0], device=dev), pyro.poutine.scale(scale=w):
            return pyro.sample("X", dist.Bernoulli(logits=logits), obs=obs)
