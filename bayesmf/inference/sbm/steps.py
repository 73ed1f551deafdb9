"""The block model's ELBO terms and its closed-form ``q(Z)`` step (the paper's Eq. 9).

The expected log-likelihood of a pair under the mean-field ``q(Z)`` is summed exactly over
the ``T x T`` cluster pairs (no sampling of the assignments); only the continuous latents
are Monte Carlo draws of :class:`~.posterior.SBMPosterior`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...models.sbm import DPStochasticBlockModel
from .graph import Graph, chunks
from .posterior import SBMPosterior

__all__ = [
    "expected_log_lik",
    "expected_log_lik_sum",
    "minibatch_objective",
    "full_elbo",
    "eta_targets",
]


def expected_log_lik(
    model: DPStochasticBlockModel,
    eta: torch.Tensor,
    z: dict[str, torch.Tensor],
    i: torch.Tensor,
    j: torch.Tensor,
    x: torch.Tensor,
    block: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact ``E_q(Z)[log p(x_ij | Z_i, Z_j, z)]`` per draw and pair, shape ``(S, B)``.

    ``sum_{a,b} eta_ia eta_jb [x log sigmoid(l_ab) + (1 - x) log sigmoid(-l_ab)]``,
    summed over the ``T x T`` cluster pairs (no sampling of the assignments).

    Parameters
    ----------
    model : DPStochasticBlockModel
        The model (its :meth:`~DPStochasticBlockModel.pair_logits`).
    eta : tensor, shape (N, T)
        ``q(Z_i) = Categorical(eta_i)`` of every node.
    z : dict of tensors
        Draws of the continuous latents, each with a leading draw dimension ``S``.
    i, j : long tensors, shape (B,)
        The node pairs.
    x : tensor, shape (B,)
        Their 0/1 values.
    block : tensor, optional
        Precomputed :meth:`~DPStochasticBlockModel.block_logits` of ``z``.

    Examples
    --------
    >>> import math
    >>> from bayesmf.models import DPStochasticBlockModel
    >>> m = DPStochasticBlockModel(5, truncation=3, rank=2, bilinear_dims=3)
    >>> z = {s.name: torch.zeros((1,) + s.shape) for s in m.latent_specs()}
    >>> eta = torch.full((5, 3), 1 / 3)
    >>> i, j, x = torch.tensor([0, 1]), torch.tensor([2, 4]), torch.tensor([1.0, 0.0])
    >>> ll = expected_log_lik(m, eta, z, i, j, x)  # all logits 0: log(1/2) per pair
    >>> torch.allclose(ll, torch.full((1, 2), math.log(0.5)))
    True
    """
    logits = model.pair_logits(z, i, j, block)
    x = x.to(logits.dtype)
    ei, ej = eta[i], eta[j]
    if logits.shape[1] == 1:  # same T x T table for every pair: two small einsums
        lp1, lp0 = F.logsigmoid(logits[:, 0]), F.logsigmoid(-logits[:, 0])
        w = torch.einsum("ba,bc->bac", ei, ej)  # (B, T, T)
        e1 = torch.einsum("bac,sac->sb", w, lp1)
        e0 = torch.einsum("bac,sac->sb", w, lp0)
        return x * e1 + (1 - x) * e0
    xb = x[None, :, None, None]
    lp = xb * F.logsigmoid(logits) + (1 - xb) * F.logsigmoid(-logits)
    return torch.einsum("ba,sbac,bc->sb", ei, lp, ej)


def expected_log_lik_sum(
    model: DPStochasticBlockModel,
    eta: torch.Tensor,
    z: dict[str, torch.Tensor],
    i: torch.Tensor,
    j: torch.Tensor,
    x: torch.Tensor,
    weights: torch.Tensor | None = None,
    block: torch.Tensor | None = None,
) -> torch.Tensor:
    """``sum_pairs w_ij E_q(Z)[log p(x_ij | Z_i, Z_j, z)]`` per draw, shape ``(S,)``.

    Equal to ``(expected_log_lik(...) * weights).sum(1)``; without degree correction it is
    computed from the ``T x T`` expected counts ``sum w x eta_i eta_j^T`` (two matrix
    products), which is much cheaper for large minibatches.
    """
    w = torch.ones_like(x) if weights is None else weights
    if model.degree_correction:
        return (expected_log_lik(model, eta, z, i, j, x, block) * w).sum(1)
    g = model.block_logits(z) if block is None else block
    x = x.to(g.dtype)
    ei, ej = eta[i], eta[j]
    n1 = ei.T @ (ej * (w * x)[:, None])
    n0 = ei.T @ (ej * (w * (1 - x))[:, None])
    return (F.logsigmoid(g) * n1).sum((-1, -2)) + (F.logsigmoid(-g) * n0).sum((-1, -2))


def minibatch_objective(
    model: DPStochasticBlockModel,
    post: SBMPosterior,
    i: torch.Tensor,
    j: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    num_particles: int,
    gen: torch.Generator | None,
) -> torch.Tensor:
    """Unbiased minibatch estimate of the ELBO without the entropy of ``q(Z)`` (constant in
    the gradient step): reparameterised likelihood, analytic ``E_q[log p(Z | V)]`` and KLs."""
    z = post.rsample(num_particles, generator=gen)
    eta = post.eta
    ll = expected_log_lik_sum(model, eta, z, i, j, x, w).mean()
    z_prior = (eta.sum(0) * post.expected_log_pi()).sum()
    return ll + z_prior - post.kl_sticks(model.alpha) - post.kl_gaussian()


@torch.no_grad()
def full_elbo(
    model: DPStochasticBlockModel, post: SBMPosterior, graph: Graph, num_samples: int, seed: int
) -> float:
    """The full ELBO: exact over the observed pairs and the assignments, Monte Carlo
    (``num_samples`` draws, seeded) over the continuous latents."""
    dev = post.eta.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    z = post.rsample(num_samples, generator=gen)
    block = model.block_logits(z)
    i, j, x = (t.to(dev) for t in graph.all_pairs())
    ll = 0.0
    for sl in chunks(i.numel(), num_samples * model.truncation**2):
        ll += float(
            expected_log_lik_sum(model, post.eta, z, i[sl], j[sl], x[sl], None, block).mean()
        )
    z_prior = float((post.eta.sum(0) * post.expected_log_pi()).sum())
    rest = float(post.entropy_z() - post.kl_sticks(model.alpha) - post.kl_gaussian())
    return ll + z_prior + rest


@torch.no_grad()
def eta_targets(
    model: DPStochasticBlockModel,
    post: SBMPosterior,
    graph: Graph,
    nodes: torch.Tensor,
    num_samples: int,
    gen: torch.Generator | None,
) -> torch.Tensor:
    """The closed-form optimum (Eq. 9) of ``eta_i`` for ``nodes`` given the other factors.

    ``log eta*_ic = E[log pi_c] + sum_j sum_c' eta_jc' E[log p(X_ij | c, c')]`` over the
    observed pairs of node ``i``. Without degree correction the sum over ``j`` needs only
    the link sums ``A eta`` and the total ``sum_j eta_j`` (``O(E T)``); with it, it is
    computed densely in chunks of nodes (``O(N^2 T^2)``). ``E[.]`` over the continuous
    latents is a Monte Carlo average over ``num_samples`` draws.
    """
    z = post.rsample(num_samples, generator=gen)
    block = model.block_logits(z)  # (S, T, T)
    eta = post.eta
    T = model.truncation
    if not model.degree_correction:
        lp1 = F.logsigmoid(block).mean(0)  # (T, T), symmetric
        lp0 = F.logsigmoid(-block).mean(0)
        link_sum = torch.sparse.mm(graph.A, eta)[nodes]  # sum_{j linked to i} eta_j
        unobs_sum = torch.sparse.mm(graph.Un, eta)[nodes]
        obs_sum = eta.sum(0, keepdim=True) - eta[nodes] - unobs_sum
        score = link_sum @ lp1 + (obs_sum - link_sum) @ lp0
    else:
        s = z["s"]
        S, n = s.shape
        score = torch.empty(nodes.numel(), T, device=eta.device)
        for sl in chunks(nodes.numel(), S * n * T * T):
            c = nodes[sl]
            Ad, NLd = graph.observed_rows(c)
            logits = block[:, None, None] + (s[:, c, None] + s[:, None, :])[..., None, None]
            t1 = torch.einsum("cj,scjab,jb->ca", Ad, F.logsigmoid(logits), eta)
            t0 = torch.einsum("cj,scjab,jb->ca", NLd, F.logsigmoid(-logits), eta)
            score[sl] = (t1 + t0) / S
    return torch.softmax(score + post.expected_log_pi()[None], 1)
