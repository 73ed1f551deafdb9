"""A fitted block model: :class:`SBMFit`, a :class:`~bayesmf.inference.fits.Fit`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.distributions import Gamma

from ...data.containers import Network, Pairs
from ...models.sbm import DPStochasticBlockModel, stick_breaking_log_weights
from .. import files
from ..fits import Fit, check_statistic, load, summarise
from .graph import Graph, as_network, as_pairs, chunks
from .posterior import SBMPosterior
from .steps import full_elbo

__all__ = ["SBMFit", "load_sbm", "network_info"]


def network_info(net: Network) -> dict[str, Any]:
    """Name, sizes, node names and fingerprint of a training network (``train_info``)."""
    return {
        "name": net.name,
        "shape": [net.n_nodes, net.n_nodes],
        "n": net.n_pairs,
        "scale": [0.0, 1.0],
        "n_nodes": net.n_nodes,
        "n_links": net.n_edges,
        "n_pairs": net.n_pairs,
        "names": np.asarray(net.names),
        "fingerprint": files.fingerprint(net),
    }


@dataclass
class SBMFit(Fit):
    """A fitted :class:`~bayesmf.models.DPStochasticBlockModel` (mean-field VI).

    Attributes
    ----------
    model : DPStochasticBlockModel
        The model (with the fitted ``alpha``).
    posterior : SBMPosterior
        The variational factors (``eta``, ``rho``, Gaussian ``q``).
    history : dict of lists
        Of the kept restart, per epoch: ``elbo`` (minibatch estimate of the ELBO, averaged
        over the epoch's steps), ``alpha``, ``effective_clusters``, ``lr``; per evaluation
        (with validation pairs): ``val_auc``, ``val_log_lik`` (mean per pair) and ``val``
        (its negative, the loop's score).
    restarts : list of dict
        Initialisation and final ELBO of every restart (the best one is kept).
    train_info : dict
        Node names, numbers of nodes, links and observed pairs, data fingerprint.
    settings : dict
        The options the fit ran with.
    fit_seconds : float
        Time spent in the training loop, all restarts.
    network : Network, optional
        The training network (for :meth:`elbo`; saved with the fit).
    """

    model: DPStochasticBlockModel
    posterior: SBMPosterior
    history: dict[str, list[float]] = field(default_factory=dict)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    train_info: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    fit_seconds: float = 0.0
    network: Network | None = field(default=None, repr=False)

    kind = "SBMFit"
    inference_name = "mean-field VI (fit_sbm)"
    #: draws of the continuous latents used by :meth:`predict` when ``num_samples`` is None
    default_num_samples: ClassVar[int] = 64

    # ------------------------------------------------------------- assignments
    @property
    def eta(self) -> torch.Tensor:
        """``q(Z_i) = Categorical(eta_i)``, shape ``(N, T)``."""
        return self.posterior.eta.detach()

    def soft_assignments(self) -> torch.Tensor:
        """The cluster probabilities of each node, ``eta`` (rows sum to one)."""
        return self.eta.clone()

    def assignments(self) -> torch.Tensor:
        """Hard assignments ``argmax_c eta_ic``, shape ``(N,)``."""
        return self.eta.argmax(1)

    def effective_clusters(self) -> float:
        """Posterior expected number of non-empty clusters, ``sum_c 1 - prod_i (1 - eta_ic)``."""
        log_empty = torch.log1p(-self.eta.clamp_max(1 - 1e-12)).sum(0)
        return float((1 - log_empty.exp()).sum())

    def cluster_sizes(self) -> torch.Tensor:
        """Expected number of nodes per cluster, ``sum_i eta_ic``."""
        return self.eta.sum(0)

    @property
    def elbo_history(self) -> list[float]:
        """ELBO estimate after each epoch of the kept restart."""
        return self.history.get("elbo", [])

    # ---------------------------------------------------------- alpha and pi
    @property
    def alpha(self) -> float:
        """The type-II maximum-likelihood estimate of ``alpha``."""
        return float(self.model.alpha.detach())

    def alpha_posterior(self, prior: tuple[float, float] = (1.0, 1.0)) -> Gamma:
        """Mean-field ``q*(alpha)`` given ``q(V)`` under a ``Gamma(a, b)`` prior.

        ``alpha`` itself is fitted as a point estimate; this is the optimal Gamma factor
        ``q*(alpha) ∝ p(alpha) exp E_q(V)[log p(V | alpha)]`` =
        ``Gamma(a + T - 1, b - sum_c E[log(1 - V_c)])`` (Blei & Jordan 2006), a measure of
        how well the sticks pin ``alpha`` down.
        """
        a, b = prior
        rho = self.posterior.rho.detach().cpu()
        e_log_1mv = torch.digamma(rho[:, 1]) - torch.digamma(rho.sum(1))
        return Gamma(torch.tensor(a + rho.shape[0]), torch.tensor(b) - e_log_1mv.sum())

    def pi_mean(self) -> torch.Tensor:
        """``E_q[pi]``: ``E[V_c] prod_{l<c} E[1 - V_l]``, shape ``(T,)``."""
        rho = self.posterior.rho.detach().cpu()
        if rho.shape[0] == 0:
            return torch.ones(1)
        ev = rho[:, 0] / rho.sum(1)
        stick = torch.cat([ev, torch.ones(1)])
        rest = torch.cat([torch.ones(1), torch.cumprod(1 - ev, 0)])
        return stick * rest

    def pi_posterior(self, num_samples: int = 1000, seed: int = 0) -> torch.Tensor:
        """Draws of ``pi`` under ``q(V)``, shape ``(num_samples, T)``."""
        rho = self.posterior.rho.detach().cpu()
        if rho.shape[0] == 0:
            return torch.ones(num_samples, 1)
        gen = torch.Generator().manual_seed(seed)
        # Beta draws from two Gammas with a local generator (torch's Beta takes none)
        g1 = torch._standard_gamma(rho[:, 0].expand(num_samples, -1).contiguous(), generator=gen)
        g2 = torch._standard_gamma(rho[:, 1].expand(num_samples, -1).contiguous(), generator=gen)
        V = (g1 / (g1 + g2)).clamp(1e-7, 1 - 1e-7)
        return stick_breaking_log_weights(V).exp()

    # ------------------------------------------------------------- predictions
    def _draws(self, num_samples: int, seed: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator(device=self.eta.device).manual_seed(seed)
        with torch.no_grad():
            return self.posterior.rsample(num_samples, generator=gen)

    @torch.no_grad()
    def link_draws(
        self, pairs: Any, num_samples: int | None = None, seed: int = 0
    ) -> torch.Tensor:
        """``P(X_ij = 1 | z_s) = sum_ab eta_ia eta_jb sigmoid(l_ab(z_s))`` for draws ``z_s``
        of the continuous latents (the assignments summed out under ``q(Z)``), ``(S, B)``.

        Parameters
        ----------
        pairs : Pairs or (i, j)
            The node pairs (any order of ``i`` and ``j``; ``p_ij = p_ji``).
        """
        i, j = as_pairs(pairs, self.model.n_nodes)
        dev = self.eta.device
        i, j = i.to(dev), j.to(dev)
        S = num_samples or self.default_num_samples
        z = self._draws(S, seed)
        out = [
            self.model.link_probability(self.eta, z, i[sl], j[sl])
            for sl in chunks(i.numel(), S * self.model.truncation**2)
        ]
        return torch.cat(out, 1) if out else torch.zeros(S, 0, device=dev)

    @torch.no_grad()
    def predict(
        self,
        data: Any,
        *,
        clamp: bool = False,
        num_samples: int | None = None,
        seed: int = 0,
        statistic: str = "mean",
    ) -> torch.Tensor:
        """Posterior predictive link probabilities ``P(X_ij = 1)`` of node pairs.

        ``E_q[sum_ab eta_ia eta_jb sigmoid(l_ab)]``, a Monte Carlo average over
        ``num_samples`` draws (default 64) of the continuous latents (the assignments are
        summed exactly). Probabilities are never outside ``[0, 1]``, so ``clamp`` changes
        nothing (it is accepted for the one interface of every fit).

        Parameters
        ----------
        data : Pairs or (i, j)
            The node pairs (any order of ``i`` and ``j``; ``p_ij = p_ji``).
        statistic : {"mean", "median"}
            The mean over the draws (the predictive probability) or their median
            (:func:`~bayesmf.inference.fits.summarise`).
        """
        check_statistic(statistic)
        p = summarise(self.link_draws(data, num_samples, seed), statistic)
        return p.clamp(0.0, 1.0) if clamp else p

    @torch.no_grad()
    def predict_interval(
        self, data: Any, level: float = 0.9, *, num_samples: int | None = 500, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Central ``level`` interval ``(lower, upper)`` of the link probability of each pair
        over posterior draws of the continuous latents (assignments summed under ``q(Z)``)."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        p = self.link_draws(data, num_samples, seed)
        q = torch.tensor([(1 - level) / 2, (1 + level) / 2], device=p.device, dtype=p.dtype)
        lo, hi = torch.quantile(p, q, dim=0)
        return lo, hi

    @torch.no_grad()
    def log_likelihood(
        self, pairs: Pairs, num_samples: int | None = 200, seed: int = 0
    ) -> torch.Tensor:
        """Pointwise ``log p(x_ij | z_s) = log sum_ab eta_ia eta_jb p(x_ij | a, b, z_s)``
        for draws ``z_s`` of the continuous latents, shape ``(S, n)``.

        The assignments are marginalised under ``q(Z)``; the result is the per-pair
        log predictive density of held-out pairs given each draw, as ArviZ's LOO/WAIC
        expect.
        """
        p = self.link_draws(pairs, num_samples or 200, seed).clamp(1e-12, 1 - 1e-12)
        x = pairs.labels.to(p.device)
        return x * p.log() + (1 - x) * torch.log1p(-p)

    @torch.no_grad()
    def elbo(self, network: Any = None, num_samples: int = 8, seed: int = 0) -> float:
        """The full ELBO on the training network (exact over pairs and assignments,
        Monte Carlo over the continuous latents)."""
        net = self.network if network is None else as_network(network)
        if net is None:
            raise ValueError("this fit holds no training network: pass network=")
        graph = Graph.build(net, self.eta.device)
        return full_elbo(self.model, self.posterior, graph, num_samples, seed)

    def to_inference_data(
        self, data: Pairs | None = None, *, num_samples: int = 200, seed: int = 0, **kw: Any
    ) -> Any:
        """ArviZ ``InferenceData`` (or ``DataTree``) of the fit.

        ``posterior``: draws of ``pi`` (``cluster``), the Gaussian latents (``U``:
        ``cluster x factor``, ``U_prime``, the weights, ``s``: ``node``) and ``alpha``
        (a type-II ML point estimate, the same in every draw); ``eta`` is stored as a
        ``constant_data`` group. With held-out pairs ``data`` (also accepted as ``test=``):
        ``log_likelihood`` and ``observed_data`` over a ``pair`` dimension (with
        ``node_i``/``node_j`` coords).
        """
        import xarray as xr

        from ...diagnostics.arviz import combine_groups

        test = kw.pop("test", data)
        if kw:
            raise TypeError(f"unexpected keyword arguments {sorted(kw)}")
        names = np.asarray(self.train_info.get("names", np.arange(self.model.n_nodes)))
        if names.dtype == object:
            names = names.astype(str)
        z = self._draws(num_samples, seed)
        coords: dict[str, Any] = {
            "chain": [0],
            "draw": np.arange(num_samples),
            "cluster": np.arange(self.model.truncation),
            "node": names,
        }
        data_vars: dict[str, Any] = {
            "alpha": (("chain", "draw"), np.full((1, num_samples), self.alpha)),
            "pi": (
                ("chain", "draw", "cluster"),
                self.pi_posterior(num_samples, seed).numpy()[None],
            ),
        }
        for spec in self.posterior.specs:
            data_vars[spec.name] = (
                ("chain", "draw", *spec.dims),
                z[spec.name].detach().cpu().numpy()[None],
            )
        groups = {
            "posterior": xr.Dataset(data_vars, coords=coords),
            "constant_data": xr.Dataset(
                {"eta": (("node", "cluster"), self.eta.cpu().numpy())},
                coords={"node": names, "cluster": coords["cluster"]},
            ),
        }
        if test is not None:
            ll = self.log_likelihood(test, num_samples, seed).cpu().numpy()
            pc = {
                "pair": np.arange(len(test)),
                "node_i": ("pair", names[test.i.numpy()]),
                "node_j": ("pair", names[test.j.numpy()]),
            }
            groups["log_likelihood"] = xr.Dataset(
                {"x": (("chain", "draw", "pair"), ll[None])},
                coords={"chain": [0], "draw": np.arange(num_samples), **pc},
            )
            groups["observed_data"] = xr.Dataset({"x": (("pair",), test.labels.numpy())}, coords=pc)
        attrs = {
            "model": "DPStochasticBlockModel",
            "inference": self.inference_name,
            "num_draws": int(num_samples),
            "seed": int(seed),
        }
        return combine_groups(groups, attrs)

    # ------------------------------------------------------------ persistence
    def _payload(self) -> dict[str, Any]:
        net = self.network
        return {
            **self._common_payload(),
            "model_config": self.model.config(),
            "model_state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "posterior": {k: v.detach().cpu() for k, v in self.posterior.state_dict().items()},
            "restarts": [dict(r) for r in self.restarts],
            "network": None if net is None else {
                "edges": net.edges.clone(),
                "unobserved": None if net.unobserved is None else net.unobserved.clone(),
                "name": net.name,
            },
        }

    @classmethod
    def _from_payload(
        cls, payload: dict[str, Any], device: str | torch.device | None = None
    ) -> SBMFit:
        model = DPStochasticBlockModel(**payload["model_config"])
        model.load_state_dict(payload["model_state"])
        if device is not None:
            model.to(device)
        post = SBMPosterior(model)
        post.load_state_dict(payload["posterior"])
        common = cls._common_from(payload)
        net = None
        if payload.get("network") is not None:
            saved = payload["network"]
            net = Network(model.n_nodes, saved["edges"], names=common["train_info"].get("names"),
                          unobserved=saved["unobserved"], name=saved["name"])
        return cls(model, post, restarts=list(payload["restarts"]), network=net, **common)


def load_sbm(path: str | Path, device: str | torch.device | None = None) -> SBMFit:
    """Load a fit written by :meth:`SBMFit.save` (``bayesmf.load`` reads it as well).

    Raises
    ------
    bayesmf.inference.files.FitFileError
        Naming the file, when it is missing, damaged, foreign or holds another kind of fit.
    """
    fit = load(path, device)
    if not isinstance(fit, SBMFit):
        raise files.FitFileError(f"{path}: holds a {fit.kind!r}, not an 'SBMFit'")
    return fit
