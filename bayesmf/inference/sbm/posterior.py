"""The mean-field posterior of the block model (Kampman & Heaukulani 2019, §4).

``q(Z, V, U, U', theta[, s]) = prod_i q(Z_i) prod_c q(V_c) q(U, U', theta[, s])`` with

* ``q(Z_i) = Categorical(eta_i)`` for every node (``eta``: a buffer, updated in closed form);
* ``q(V_c) = Beta(rho_c1, rho_c2)`` for the ``T - 1`` free sticks;
* a fully factorised Gaussian on ``U``, ``U'``, the weights of ``f_theta`` and the node
  effects ``s``: the library's one mean-field Gaussian family,
  :class:`~bayesmf.inference.guides.MeanFieldGuide`, built from the model's latent sites.

``alpha`` is a point estimate (a parameter of the model, type-II maximum likelihood).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Beta, kl_divergence

from ...models.base import LatentSpec
from ...models.sbm import DPStochasticBlockModel
from ..guides import MeanFieldGuide

__all__ = ["SBMPosterior", "expected_log_pi"]


def expected_log_pi(rho1: torch.Tensor, rho2: torch.Tensor) -> torch.Tensor:
    """``E_q[log pi_c]`` under ``q(V_c) = Beta(rho1_c, rho2_c)``, shape ``(T,)``.

    Examples
    --------
    >>> e = expected_log_pi(torch.tensor([1.0]), torch.tensor([1.0]))
    >>> [round(x, 4) for x in e.tolist()]  # E[log V] = E[log(1 - V)] = -1 for V ~ U(0, 1)
    [-1.0, -1.0]
    """
    dg = torch.digamma(rho1 + rho2)
    e_log_v = torch.digamma(rho1) - dg
    e_log_1mv = torch.digamma(rho2) - dg
    zero = torch.zeros_like(rho1[..., :1])
    cum = torch.cat([zero, torch.cumsum(e_log_1mv, -1)], -1)
    return torch.cat([e_log_v, zero], -1) + cum


class _LatentSites:
    """What :class:`MeanFieldGuide` reads of a model: its latent sites and its device."""

    def __init__(self, model: DPStochasticBlockModel) -> None:
        self._specs = model.latent_specs()
        self.device = model.device
        self.global_mean = torch.zeros((), device=model.device)

    def latent_specs(self) -> list[LatentSpec]:
        return list(self._specs)


class SBMPosterior(torch.nn.Module):
    """The mean-field ``q`` of a :class:`~bayesmf.models.DPStochasticBlockModel`.

    Parameters
    ----------
    model : DPStochasticBlockModel
        The model whose latents are approximated.
    init_scale : float, optional
        Initial standard deviation of the Gaussian factors (default: each site's, 0.05).

    Attributes
    ----------
    gaussian : MeanFieldGuide
        ``q(U, U', theta[, s])``.
    log_rho : Parameter, shape (T - 1, 2)
        Log of the Beta parameters of ``q(V)``.
    eta : buffer, shape (N, T)
        ``q(Z_i) = Categorical(eta_i)``.
    """

    def __init__(self, model: DPStochasticBlockModel, init_scale: float | None = None) -> None:
        super().__init__()
        self.gaussian = MeanFieldGuide(_LatentSites(model), init_scale=init_scale)  # type: ignore[arg-type]
        T = model.truncation
        self.log_rho = torch.nn.Parameter(torch.zeros(max(T - 1, 0), 2))
        self.register_buffer("eta", torch.full((model.n_nodes, T), 1.0 / T))
        self.to(model.device)

    @property
    def specs(self) -> list[LatentSpec]:
        """The Gaussian latent sites."""
        return self.gaussian.specs

    @property
    def locs(self) -> torch.nn.ParameterDict:
        """Variational means of the Gaussian sites."""
        return self.gaussian.locs

    @property
    def rho(self) -> torch.Tensor:
        """Beta parameters of ``q(V)``, shape ``(T - 1, 2)``."""
        return self.log_rho.exp()

    def scales(self, name: str) -> torch.Tensor:
        """Variational standard deviation of a Gaussian site."""
        return self.gaussian.scale(name)

    def rsample(
        self, num: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Reparameterised draws of the Gaussian latents, each with leading dim ``num``."""
        out = {}
        for s in self.specs:
            loc, scale = self.gaussian.loc_scale(s.name)
            eps = torch.randn((num, *loc.shape), generator=generator, device=loc.device)
            out[s.name] = loc + scale * eps
        return out

    def mean(self) -> dict[str, torch.Tensor]:
        """The variational means, each with a leading draw dimension of one."""
        return {s.name: self.locs[s.name][None] for s in self.specs}

    def expected_log_pi(self) -> torch.Tensor:
        """``E_q(V)[log pi_c]``, shape ``(T,)``."""
        if self.log_rho.shape[0] == 0:
            return torch.zeros(1, device=self.log_rho.device)
        rho = self.rho
        return expected_log_pi(rho[:, 0], rho[:, 1])

    def kl_gaussian(self) -> torch.Tensor:
        """``KL(q(U, U', theta[, s]) || p)``, analytic (zero-mean Gaussian priors)."""
        total = torch.zeros((), device=self.log_rho.device)
        for s in self.specs:
            loc, sd = self.gaussian.loc_scale(s.name)
            ps = float(s.prior_scale)
            ratio = (sd**2 + loc**2) / ps**2
            total = total + 0.5 * (ratio - 1.0 - 2 * sd.log() + 2 * math.log(ps)).sum()
        return total

    def kl_sticks(self, alpha: torch.Tensor) -> torch.Tensor:
        """``KL(q(V) || Beta(1, alpha))`` summed over the sticks."""
        if self.log_rho.shape[0] == 0:
            return torch.zeros((), device=self.log_rho.device)
        rho = self.rho
        prior = Beta(torch.ones_like(rho[:, 0]), alpha.expand(rho.shape[0]))
        return kl_divergence(Beta(rho[:, 0], rho[:, 1]), prior).sum()

    def entropy_z(self) -> torch.Tensor:
        """Entropy of ``q(Z)``."""
        eta = self.eta.clamp_min(1e-30)
        return -(eta * eta.log()).sum()
