"""Mean-field variational inference for :class:`~bayesmf.models.DPStochasticBlockModel`.

The variational family (Kampman & Heaukulani 2019, §4) is

* ``q(Z_i) = Categorical(eta_i)`` for every node,
* ``q(V_c) = Beta(rho_c1, rho_c2)`` for the ``T - 1`` free sticks,
* a fully factorised Gaussian ``q`` on ``U``, ``U'``, the weights of ``f_theta`` (and the
  node effects ``s`` of the degree-corrected variant),
* ``alpha`` a point estimate (type-II maximum likelihood).

:func:`fit_sbm` follows the schedule of the paper's Algorithm 1. Each step draws a
minibatch of pairs (``batch_size``: links and ``neg_ratio`` times as many non-links drawn
uniformly among the observed non-links, each part reweighted by its inverse sampling
fraction so that the likelihood estimate of the ELBO is unbiased), then

1. updates ``eta_i`` of every node in the minibatch in closed form (the paper's Eq. 9),
   ``log eta*_ic = E[log pi_c] + sum_j sum_c' eta_jc' E[log p(X_ij | c, c')]`` over all
   observed pairs of node ``i``; the step ``eta <- (1 - r) eta + r eta*`` with
   ``r = eta_step`` is the natural-gradient step of the local factor (damped, since the
   nodes of a minibatch are updated in parallel). Without degree correction the sum
   over ``j`` needs only the link sums ``A eta`` and the total ``sum_j eta_j`` (``O(E T)``
   per step); with it, it is computed densely in chunks of nodes (``O(N^2 T^2)``).
   ``E[.]`` over the continuous latents is a Monte Carlo average (``eta_samples`` draws);
2. takes a gradient step (Adam, reparameterised Monte Carlo for the likelihood, analytic
   KL terms) on ``rho``, the Gaussian ``q`` and ``log alpha``.

The expected log-likelihood over the assignments is always exact (the ``T x T`` sum of
:meth:`DPStochasticBlockModel.expected_log_lik`). The first ``warmup`` epochs update only
the global factors, so the link function fits the initial partition before the
partition moves. Local optima are common: the initial ``eta`` comes from regularised
spectral clustering (``init="spectral"``), and ``n_restarts`` fits from different
initialisations keep the one with the best final ELBO.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributions import Beta, Gamma, kl_divergence
from tqdm.auto import tqdm

from ..data.containers import Network, Pairs
from ..models.sbm import DPStochasticBlockModel, expected_log_pi

__all__ = [
    "fit_sbm",
    "SBMFit",
    "SBMPosterior",
    "as_network",
    "spectral_init",
    "bethe_hessian_clusters",
    "load_sbm",
]

log = logging.getLogger(__name__)

_MAX_ELEMENTS = 4_000_000  # per chunk of the dense computations


# ------------------------------------------------------------------------ input
def as_network(data: Any) -> Network:
    """A :class:`Network` from a Network, a ``networkx.Graph`` or a 0/1 adjacency matrix.

    Raises
    ------
    ValueError
        For an asymmetric, self-looped or non-binary adjacency matrix (or graph).
    TypeError
        For anything else.

    Examples
    --------
    >>> as_network([[0, 1], [1, 0]]).n_edges
    1
    >>> as_network([[0, 1], [0, 0]])
    Traceback (most recent call last):
    ...
    ValueError: adjacency is not symmetric at pairs [[0, 1]]
    """
    if isinstance(data, Network):
        return data
    if hasattr(data, "is_directed") and hasattr(data, "nodes"):
        from ..data.networks import from_networkx

        return from_networkx(data)
    if isinstance(data, (torch.Tensor, np.ndarray, list, tuple)) or hasattr(data, "todense"):
        if isinstance(data, torch.Tensor):
            data = data.detach().cpu().numpy()
        return Network.from_adjacency(data)
    raise TypeError(
        f"expected a Network, a networkx graph or an adjacency matrix, got {type(data).__name__}"
    )


def _as_pairs(pairs: Any, n_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(pairs, Pairs):
        return pairs.i, pairs.j
    i, j = pairs
    i, j = torch.as_tensor(i).long().reshape(-1), torch.as_tensor(j).long().reshape(-1)
    if i.shape != j.shape:
        raise ValueError("i and j must have the same length")
    if ((i < 0) | (i >= n_nodes) | (j < 0) | (j >= n_nodes)).any():
        raise ValueError(f"node indices out of range [0, {n_nodes})")
    if (i == j).any():
        raise ValueError("self-pairs (i == j) have no link probability in this model")
    return i, j


@dataclass
class _Graph:
    """Precomputed structure of a training network."""

    n: int
    edges: torch.Tensor  # (E, 2)
    link_keys: torch.Tensor  # sorted keys i*n+j of links
    blocked_keys: torch.Tensor  # sorted keys of links and unobserved pairs
    A: torch.Tensor  # sparse (n, n) symmetric adjacency
    Un: torch.Tensor  # sparse (n, n) symmetric unobserved indicator
    n_pairs: int
    n_links: int

    @classmethod
    def build(cls, net: Network, device: torch.device) -> _Graph:
        n = net.n_nodes
        e = net.edges
        un = net.unobserved if net.unobserved is not None else torch.zeros((0, 2), dtype=torch.long)

        def sym_sparse(p: torch.Tensor) -> torch.Tensor:
            idx = torch.cat([p, p.flip(1)]).T
            vals = torch.ones(idx.shape[1])
            return (
                torch.sparse_coo_tensor(idx, vals, (n, n), check_invariants=False)
                .coalesce()
                .to(device)
            )

        link_keys = torch.sort(e[:, 0] * n + e[:, 1]).values
        blocked = torch.sort(torch.cat([link_keys, un[:, 0] * n + un[:, 1]])).values
        return cls(
            n,
            e.to(device),
            link_keys,
            blocked,
            sym_sparse(e),
            sym_sparse(un),
            net.n_pairs,
            net.n_edges,
        )

    def observed_rows(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense 0/1 rows ``A[nodes]`` and ``non-link observed[nodes]``, shape (|nodes|, n)."""
        dev = self.A.device
        Ad = torch.zeros(nodes.numel(), self.n, device=dev)
        Ud = torch.zeros(nodes.numel(), self.n, device=dev)
        pos = torch.full((self.n,), -1, dtype=torch.long, device=dev)
        pos[nodes] = torch.arange(nodes.numel(), device=dev)
        for M, D in ((self.A, Ad), (self.Un, Ud)):
            r, c = M.indices()
            keep = pos[r] >= 0
            D[pos[r[keep]], c[keep]] = 1.0
        obs = 1.0 - Ud
        obs[torch.arange(nodes.numel(), device=dev), nodes] = 0.0
        return Ad, obs - Ad

    def sample_nonlinks(self, m: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``m`` pairs drawn uniformly (with replacement) among the observed non-links."""
        n = self.n
        out_i, out_j, got = [], [], 0
        for _ in range(100):  # rejection sampling; each round accepts most draws
            k = int(1.2 * (m - got)) + 16
            a = torch.randint(n, (k,), generator=gen)
            b = torch.randint(n - 1, (k,), generator=gen)
            b = b + (b >= a).long()
            i, j = torch.minimum(a, b), torch.maximum(a, b)
            keys = i * n + j
            if self.blocked_keys.numel():
                pos = torch.searchsorted(self.blocked_keys, keys).clamp_max(
                    self.blocked_keys.numel() - 1
                )
                ok = self.blocked_keys[pos] != keys
            else:
                ok = torch.ones_like(keys, dtype=torch.bool)
            out_i.append(i[ok])
            out_j.append(j[ok])
            got += int(ok.sum())
            if got >= m:
                break
        else:  # pragma: no cover - only for networks that are (almost) complete
            raise RuntimeError("could not sample non-links: the network has (almost) none")
        return torch.cat(out_i)[:m], torch.cat(out_j)[:m]

    def minibatch(
        self, n_links: int, n_nonlinks: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n_links`` links and ``n_nonlinks`` non-links drawn uniformly (with replacement)
        and their weights ``E / n_links`` and ``(P - E) / n_nonlinks``, so that
        ``sum w f(pair)`` is an unbiased estimate of the sum of ``f`` over all observed
        pairs. Returns ``(i, j, x, w)``."""
        dev = self.edges.device
        e = self.edges[torch.randint(self.n_links, (n_links,), generator=gen).to(dev)]
        ni, nj = self.sample_nonlinks(n_nonlinks, gen)
        i = torch.cat([e[:, 0], ni.to(dev)])
        j = torch.cat([e[:, 1], nj.to(dev)])
        x = torch.cat([torch.ones(n_links, device=dev), torch.zeros(n_nonlinks, device=dev)])
        w = torch.cat(
            [
                torch.full((n_links,), self.n_links / n_links, device=dev),
                torch.full((n_nonlinks,), (self.n_pairs - self.n_links) / n_nonlinks, device=dev),
            ]
        )
        return i, j, x, w

    def all_pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every observed pair ``i < j`` with its 0/1 value (``O(n^2)`` memory)."""
        n = self.n
        i, j = torch.triu_indices(n, n, offset=1)
        keys = i * n + j
        blocked = torch.isin(keys, self.blocked_keys)
        links = torch.isin(keys, self.link_keys)
        keep = ~blocked | links
        return i[keep], j[keep], links[keep].float()


# ------------------------------------------------------------------ variational q
class SBMPosterior(torch.nn.Module):
    """The mean-field ``q``: ``eta`` (a buffer), ``log rho`` and the Gaussian factors."""

    def __init__(self, model: DPStochasticBlockModel, init_scale: float = 0.05) -> None:
        super().__init__()
        self.specs = model.latent_specs()
        self.locs = torch.nn.ParameterDict()
        self.log_scales = torch.nn.ParameterDict()
        for s in self.specs:
            self.locs[s.name] = torch.nn.Parameter(torch.zeros(s.shape))
            self.log_scales[s.name] = torch.nn.Parameter(torch.full(s.shape, math.log(init_scale)))
        T = model.truncation
        self.log_rho = torch.nn.Parameter(torch.zeros(max(T - 1, 0), 2))
        self.register_buffer("eta", torch.full((model.n_nodes, T), 1.0 / T))

    @property
    def rho(self) -> torch.Tensor:
        return self.log_rho.exp()

    def scales(self, name: str) -> torch.Tensor:
        return self.log_scales[name].exp()

    def rsample(
        self, num: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Reparameterised draws of the Gaussian latents, each with leading dim ``num``."""
        out = {}
        for s in self.specs:
            loc = self.locs[s.name]
            eps = torch.randn((num, *loc.shape), generator=generator, device=loc.device)
            out[s.name] = loc + self.scales(s.name) * eps
        return out

    def mean(self) -> dict[str, torch.Tensor]:
        return {s.name: self.locs[s.name][None] for s in self.specs}

    def expected_log_pi(self) -> torch.Tensor:
        if self.log_rho.shape[0] == 0:
            return torch.zeros(1, device=self.log_rho.device)
        rho = self.rho
        return expected_log_pi(rho[:, 0], rho[:, 1])

    def kl_gaussian(self) -> torch.Tensor:
        total = torch.zeros((), device=self.log_rho.device)
        for s in self.specs:
            loc, log_sd = self.locs[s.name], self.log_scales[s.name]
            ratio = (log_sd.exp() ** 2 + loc**2) / s.prior_scale**2
            total = total + 0.5 * (ratio - 1.0 - 2 * log_sd + 2 * math.log(s.prior_scale)).sum()
        return total

    def kl_sticks(self, alpha: torch.Tensor) -> torch.Tensor:
        if self.log_rho.shape[0] == 0:
            return torch.zeros((), device=self.log_rho.device)
        rho = self.rho
        prior = Beta(torch.ones_like(rho[:, 0]), alpha.expand(rho.shape[0]))
        return kl_divergence(Beta(rho[:, 0], rho[:, 1]), prior).sum()

    def entropy_z(self) -> torch.Tensor:
        eta = self.eta.clamp_min(1e-30)
        return -(eta * eta.log()).sum()


# ------------------------------------------------------------------------ result
@dataclass
class SBMFit:
    """A fitted :class:`~bayesmf.models.DPStochasticBlockModel`.

    Attributes
    ----------
    model : DPStochasticBlockModel
        The model (with the fitted ``alpha``).
    posterior : SBMPosterior
        The variational factors (``eta``, ``rho``, Gaussian ``q``).
    history : dict of lists
        Per epoch: ``elbo`` (minibatch estimate of the ELBO, summed over the epoch's
        steps and divided by their number), ``alpha``, ``effective_clusters`` and, with
        validation pairs, ``val_auc`` and ``val_log_lik`` (mean per pair).
    restarts : list of dict
        Initialisation and final ELBO of every restart (the best one is kept).
    train_info : dict
        Node names, numbers of nodes, links and observed pairs.
    settings : dict
        The options the fit ran with.
    fit_seconds : float
        Wall-clock time of all restarts.
    """

    model: DPStochasticBlockModel
    posterior: SBMPosterior
    history: dict[str, list[float]] = field(default_factory=dict)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    train_info: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    fit_seconds: float = 0.0

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
        rho = self.posterior.rho.detach()
        e_log_1mv = torch.digamma(rho[:, 1]) - torch.digamma(rho.sum(1))
        return Gamma(torch.tensor(a + rho.shape[0]), torch.tensor(b) - e_log_1mv.sum())

    def pi_mean(self) -> torch.Tensor:
        """``E_q[pi]``: ``E[V_c] prod_{l<c} E[1 - V_l]``, shape ``(T,)``."""
        rho = self.posterior.rho.detach()
        if rho.shape[0] == 0:
            return torch.ones(1)
        ev = rho[:, 0] / rho.sum(1)
        stick = torch.cat([ev, torch.ones(1, device=ev.device)])
        rest = torch.cat([torch.ones(1, device=ev.device), torch.cumprod(1 - ev, 0)])
        return stick * rest

    def pi_posterior(self, num_samples: int = 1000, seed: int = 0) -> torch.Tensor:
        """Draws of ``pi`` under ``q(V)``, shape ``(num_samples, T)``."""
        from ..models.sbm import stick_breaking_log_weights

        rho = self.posterior.rho.detach()
        if rho.shape[0] == 0:
            return torch.ones(num_samples, 1)
        gen = torch.Generator().manual_seed(seed)
        # Beta draws from two Gammas with a local generator (torch's Beta takes none)
        g1 = torch._standard_gamma(
            rho[:, 0].cpu().expand(num_samples, -1).contiguous(), generator=gen
        )
        g2 = torch._standard_gamma(
            rho[:, 1].cpu().expand(num_samples, -1).contiguous(), generator=gen
        )
        V = (g1 / (g1 + g2)).clamp(1e-7, 1 - 1e-7)
        return stick_breaking_log_weights(V).exp()

    # ------------------------------------------------------------- predictions
    def _draws(self, num_samples: int, seed: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator(device=self.eta.device).manual_seed(seed)
        with torch.no_grad():
            return self.posterior.rsample(num_samples, generator=gen)

    @torch.no_grad()
    def predict(self, pairs: Any, num_samples: int = 64, seed: int = 0) -> torch.Tensor:
        """Posterior predictive link probabilities ``P(X_ij = 1)`` of node pairs.

        ``E_q[sum_ab eta_ia eta_jb sigmoid(l_ab)]``, a Monte Carlo average over
        ``num_samples`` draws of the continuous latents (the assignments are summed
        exactly).

        Parameters
        ----------
        pairs : Pairs or (i, j)
            The node pairs (any order of ``i`` and ``j``; ``p_ij = p_ji``).
        """
        i, j = _as_pairs(pairs, self.model.n_nodes)
        dev = self.eta.device
        i, j = i.to(dev), j.to(dev)
        out = []
        z = self._draws(num_samples, seed)
        for sl in _slices(i.numel(), num_samples * self.model.truncation**2):
            out.append(self.model.link_probability(self.eta, z, i[sl], j[sl]).mean(0))
        return torch.cat(out) if out else torch.zeros(0)

    @torch.no_grad()
    def log_likelihood(self, pairs: Pairs, num_samples: int = 200, seed: int = 0) -> torch.Tensor:
        """Pointwise ``log p(x_ij | z_s) = log sum_ab eta_ia eta_jb p(x_ij | a, b, z_s)``
        for draws ``z_s`` of the continuous latents, shape ``(S, n)``.

        The assignments are marginalised under ``q(Z)``; the result is the per-pair
        log predictive density of held-out pairs given each draw, as ArviZ's LOO/WAIC
        expect.
        """
        i, j = _as_pairs(pairs, self.model.n_nodes)
        x = pairs.labels.to(self.eta.device)
        z = self._draws(num_samples, seed)
        out = []
        for sl in _slices(i.numel(), num_samples * self.model.truncation**2):
            p = self.model.link_probability(self.eta, z, i[sl], j[sl]).clamp(1e-12, 1 - 1e-12)
            xs = x[sl]
            out.append(xs * p.log() + (1 - xs) * torch.log1p(-p))
        return torch.cat(out, 1)

    @torch.no_grad()
    def elbo(self, network: Any = None, num_samples: int = 8, seed: int = 0) -> float:
        """The full ELBO on the training network (exact over pairs and assignments,
        Monte Carlo over the continuous latents)."""
        net = self._train_network if network is None else as_network(network)
        return _full_elbo(
            self.model, self.posterior, _Graph.build(net, self.eta.device), num_samples, seed
        )

    def to_inference_data(
        self, test: Pairs | None = None, num_samples: int = 200, seed: int = 0
    ) -> Any:
        """ArviZ ``InferenceData`` (or ``DataTree``) of the fit.

        ``posterior``: draws of ``pi`` (``cluster``), the Gaussian latents (``U``:
        ``cluster x factor``, ``U_prime``, the weights, ``s``: ``node``) and ``alpha``
        (a type-II ML point estimate, the same in every draw); ``eta`` is stored as a
        ``constant_data`` group. With held-out ``test`` pairs: ``log_likelihood`` and
        ``observed_data`` over a ``pair`` dimension (with ``node_i``/``node_j`` coords).
        """
        import xarray as xr

        from ..diagnostics.arviz import combine_groups

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
            "posterior": xr.Dataset(data_vars, coords={k: v for k, v in coords.items()}),
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
            "inference": "mean-field VI (fit_sbm)",
            "num_draws": int(num_samples),
            "seed": int(seed),
        }
        return combine_groups(groups, attrs)

    # ------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Save to ``path`` (loadable with :func:`load_sbm`, ``weights_only=True``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        names = np.asarray(self.train_info.get("names", []))
        torch.save(
            {
                "format": "bayesmf.SBMFit/1",
                "model_config": self.model.config(),
                "model_state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "posterior": {k: v.detach().cpu() for k, v in self.posterior.state_dict().items()},
                "history": self.history,
                "restarts": self.restarts,
                "train_info": {**self.train_info, "names": names.astype(str).tolist()},
                "settings": {
                    k: v
                    for k, v in self.settings.items()
                    if isinstance(v, (int, float, str, bool, type(None)))
                },
                "fit_seconds": self.fit_seconds,
            },
            path,
        )
        return path

    _train_network: Any = field(default=None, repr=False)


def load_sbm(path: str | Path) -> SBMFit:
    """Load a fit written by :meth:`SBMFit.save`."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if state.get("format") != "bayesmf.SBMFit/1":
        raise ValueError(f"{path} is not a bayesmf SBMFit file")
    model = DPStochasticBlockModel(**state["model_config"])
    model.load_state_dict(state["model_state"])
    post = SBMPosterior(model)
    post.load_state_dict(state["posterior"])
    return SBMFit(
        model,
        post,
        state["history"],
        state["restarts"],
        state["train_info"],
        state["settings"],
        state["fit_seconds"],
    )


def _slices(n: int, per_item: int) -> list[slice]:
    size = max(1, _MAX_ELEMENTS // max(per_item, 1))
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


# ------------------------------------------------------------------ init
def _kmeans(X: torch.Tensor, k: int, gen: torch.Generator, iters: int = 50) -> torch.Tensor:
    """Labels of k-means (k-means++ seeding, Lloyd iterations) of the rows of ``X``."""
    n = X.shape[0]
    k = min(k, n)
    centers = X[torch.randint(n, (1,), generator=gen)]
    for _ in range(1, k):  # k-means++ seeding: loop over the k centres, not the points
        d2 = torch.cdist(X, centers).min(1).values ** 2
        p = d2 / d2.sum() if d2.sum() > 0 else torch.full((n,), 1.0 / n)
        centers = torch.cat([centers, X[torch.multinomial(p, 1, generator=gen)]])
    labels = torch.cdist(X, centers).argmin(1)
    for _ in range(iters):
        onehot = F.one_hot(labels, k).to(X.dtype)
        counts = onehot.sum(0)
        new = (onehot.T @ X) / counts.clamp_min(1)[:, None]
        new[counts == 0] = centers[counts == 0]
        centers = new
        new_labels = torch.cdist(X, centers).argmin(1)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    return labels


def bethe_hessian_clusters(adjacency: torch.Tensor) -> int:
    """Number of communities estimated by the Bethe Hessian (Saade et al. 2014).

    The number of negative eigenvalues of ``H(r) = (r^2 - 1) I - r A + D`` with
    ``r = sqrt(sum d^2 / sum d - 1)`` (Le & Levina 2015); dense, ``O(N^3)``.

    Examples
    --------
    >>> from bayesmf.data import synthetic_network
    >>> net, _ = synthetic_network(90, block_sizes=[40, 30, 20], p_in=0.5, p_out=0.04)
    >>> bethe_hessian_clusters(net.adjacency)
    3
    """
    A = adjacency.double()
    d = A.sum(1)
    if float(d.sum()) == 0:
        return 1
    r = math.sqrt(max(float((d**2).sum() / d.sum()) - 1.0, 1e-6))
    H = (r * r - 1) * torch.eye(A.shape[0], dtype=A.dtype) - r * A + torch.diag(d)
    return max(1, int((torch.linalg.eigvalsh(H) < 0).sum()))


def spectral_init(
    network: Network, n_clusters: int | str, truncation: int, seed: int = 0
) -> tuple[torch.Tensor, int]:
    """Cluster labels from regularised spectral clustering, and the number of clusters.

    The regularised normalised adjacency ``D^-1/2 (A + tau/N) D^-1/2`` with ``tau`` the
    mean degree (Amini et al. 2013; unobserved pairs read as non-links) is eigen-decomposed;
    the rows of its leading ``k`` eigenvectors, normalised, are clustered by k-means.
    ``n_clusters="auto"`` takes ``k`` from :func:`bethe_hessian_clusters`, clipped to
    ``[1, truncation]``.

    Examples
    --------
    >>> from bayesmf.data import synthetic_network
    >>> net, truth = synthetic_network(60, block_sizes=[30, 20, 10], p_in=0.6, p_out=0.02)
    >>> labels, k = spectral_init(net, "auto", truncation=6)
    >>> k
    3
    """
    A = network.adjacency.double()
    n = A.shape[0]
    tau = max(float(A.sum()) / n, 1e-3)
    Ar = A + tau / n
    d = Ar.sum(1).rsqrt()
    L = d[:, None] * Ar * d[None, :]
    evals, evecs = torch.linalg.eigh(L)
    evals, evecs = evals.flip(0), evecs.flip(1)
    if n_clusters == "auto":
        k = min(max(bethe_hessian_clusters(A), 1), truncation, n)
    else:
        k = max(1, min(int(n_clusters), truncation, n))
    if k == 1:
        return torch.zeros(n, dtype=torch.long), 1
    X = evecs[:, :k]
    X = X / X.norm(dim=1, keepdim=True).clamp_min(1e-12)
    gen = torch.Generator().manual_seed(seed)
    labels = _kmeans(X.float(), k, gen)
    # relabel by decreasing size so that big clusters take the long sticks
    counts = torch.bincount(labels, minlength=k)
    order = torch.argsort(counts, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(k)
    labels = rank[labels]
    return labels, int(torch.unique(labels).numel())


# ------------------------------------------------------------------ objective
def _global_objective(
    model: DPStochasticBlockModel,
    post: SBMPosterior,
    i: torch.Tensor,
    j: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    num_particles: int,
    gen: torch.Generator | None,
) -> torch.Tensor:
    """Minibatch estimate of the ELBO (without the constant entropy of ``q(Z)``)."""
    z = post.rsample(num_particles, generator=gen)
    eta = post.eta
    ll = model.expected_log_lik_sum(eta, z, i, j, x, w).mean()
    z_prior = (eta.sum(0) * post.expected_log_pi()).sum()
    return ll + z_prior - post.kl_sticks(model.alpha) - post.kl_gaussian()


@torch.no_grad()
def _full_elbo(
    model: DPStochasticBlockModel, post: SBMPosterior, graph: _Graph, num_samples: int, seed: int
) -> float:
    gen = torch.Generator(device=post.eta.device).manual_seed(seed)
    z = post.rsample(num_samples, generator=gen)
    block = model.block_logits(z)
    i, j, x = graph.all_pairs()
    dev = post.eta.device
    i, j, x = i.to(dev), j.to(dev), x.to(dev)
    ll = 0.0
    for sl in _slices(i.numel(), num_samples * model.truncation**2):
        ll += float(
            model.expected_log_lik_sum(post.eta, z, i[sl], j[sl], x[sl], None, block).mean()
        )
    z_prior = float((post.eta.sum(0) * post.expected_log_pi()).sum())
    rest = float(post.entropy_z() - post.kl_sticks(model.alpha) - post.kl_gaussian())
    return ll + z_prior + rest


@torch.no_grad()
def _eta_targets(
    model: DPStochasticBlockModel,
    post: SBMPosterior,
    graph: _Graph,
    nodes: torch.Tensor,
    num_samples: int,
    gen: torch.Generator | None,
) -> torch.Tensor:
    """The closed-form optimum (Eq. 9) of ``eta_i`` for ``nodes`` given the other factors."""
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
        for sl in _slices(nodes.numel(), S * n * T * T):
            c = nodes[sl]
            Ad, NLd = graph.observed_rows(c)
            logits = block[:, None, None] + (s[:, c, None] + s[:, None, :])[..., None, None]
            t1 = torch.einsum("cj,scjab,jb->ca", Ad, F.logsigmoid(logits), eta)
            t0 = torch.einsum("cj,scjab,jb->ca", NLd, F.logsigmoid(-logits), eta)
            score[sl] = (t1 + t0) / S
    return torch.softmax(score + post.expected_log_pi()[None], 1)


def _init_posterior(
    model: DPStochasticBlockModel,
    post: SBMPosterior,
    labels: torch.Tensor | None,
    graph: _Graph,
    gen: torch.Generator,
    smoothing: float = 0.1,
) -> None:
    T = model.truncation
    dev = post.eta.device
    with torch.no_grad():
        for s in post.specs:
            post.locs[s.name].copy_(s.init_loc * torch.randn(s.shape, generator=gen).to(dev))
        last = len(model.layer_sizes()) - 2
        density = max(graph.n_links / max(graph.n_pairs, 1), 1e-4)
        post.locs[f"b{last}"].fill_(math.log(density / (1 - density)))
        if labels is None:  # random soft assignments
            eta = torch._standard_gamma(torch.ones(model.n_nodes, T), generator=gen)
            eta = eta / eta.sum(1, keepdim=True)
        else:
            eta = (1 - smoothing) * F.one_hot(labels, T).float() + smoothing / T
        post.eta.copy_(eta.to(dev))
        if T > 1:
            counts = post.eta.sum(0)
            tail = torch.flip(torch.cumsum(torch.flip(counts, [0]), 0), [0])[1:]
            rho1 = 1.0 + counts[:-1]
            rho2 = float(model.alpha.detach()) + tail
            post.log_rho.copy_(torch.stack([rho1, rho2], 1).log())


def _init_plan(init: str, n_restarts: int, truncation: int, seed: int) -> list[tuple[str, Any]]:
    if init == "random":
        return [("random", None)] * n_restarts
    rng = np.random.default_rng(seed)
    plan: list[tuple[str, Any]] = [
        ("spectral", "auto"),
        ("spectral", "auto+1"),
        ("spectral", truncation),
        ("spectral", "auto-1"),
    ]
    while len(plan) < n_restarts:
        plan.append(("spectral", int(rng.integers(2, max(truncation, 2) + 1))))
    return plan[:n_restarts]


# ------------------------------------------------------------------ fitting
def fit_sbm(
    model: DPStochasticBlockModel,
    network: Any,
    *,
    epochs: int = 200,
    batch_size: int | None = None,
    neg_ratio: float = 5.0,
    lr: float = 0.05,
    final_lr: float | None = None,
    eta_step: float = 0.5,
    eta_samples: int = 4,
    num_particles: int = 1,
    warmup: int | None = None,
    n_restarts: int = 1,
    init: str = "spectral",
    init_clusters: int | str | None = None,
    val: Pairs | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    elbo_samples: int = 8,
) -> SBMFit:
    """Fit a DP stochastic block model by mean-field VI (Algorithm 1 of the paper).

    Parameters
    ----------
    model : DPStochasticBlockModel
        The model; its ``n_nodes`` must match the network.
    network : Network, networkx.Graph or array
        The training network (held-out pairs marked ``unobserved`` are left out of the
        likelihood), a simple undirected graph or a symmetric 0/1 adjacency matrix with a
        zero diagonal.
    epochs : int
        Passes over the pairs; an epoch has ``ceil(n_pairs / batch_size)`` steps.
    batch_size : int or None
        Pairs per minibatch (``None``: every observed pair, exactly). A minibatch holds
        ``batch_size / (1 + neg_ratio)`` links and the rest non-links, each reweighted by
        its inverse sampling fraction.
    neg_ratio : float
        Non-links per link in a minibatch.
    lr, final_lr : float
        Adam learning rate of the global factors, decayed exponentially to ``final_lr``
        (default ``lr / 10``).
    eta_step : float
        Step size of the closed-form ``eta`` update (1: plain coordinate ascent).
    eta_samples : int
        Monte Carlo draws of the continuous latents in the ``eta`` update.
    num_particles : int
        Draws per gradient estimate.
    warmup : int, optional
        Epochs of global-only updates at the start (default ``epochs // 4``).
    n_restarts : int
        Independent fits; the one with the best final ELBO is returned.
    init : {"spectral", "random"}
        Initial ``eta``: regularised spectral clustering into ``k`` clusters, with ``k``
        the Bethe-Hessian estimate ``k0`` for restart 0, then ``k0 + 1``,
        ``truncation``, ``k0 - 1`` and random numbers of clusters (each restart with its
        own k-means seed); or random soft assignments (``"random"``).
    init_clusters : int or "auto", optional
        Force the number of spectral clusters of every restart.
    val : Pairs, optional
        Held-out pairs whose AUC and mean log-likelihood are recorded every epoch.
    seed : int
        Seeds the initialisation, the minibatches and the Monte Carlo draws.
    device : str or torch.device, optional
        Where to fit.
    progress : bool
        Show a tqdm bar.
    elbo_samples : int
        Draws of the continuous latents for the final (full) ELBO of each restart.

    Returns
    -------
    SBMFit

    Raises
    ------
    ValueError
        For an asymmetric, self-looped or non-binary network, a size mismatch or bad
        options.

    Examples
    --------
    >>> from bayesmf import data, inference, models
    >>> net, truth = data.synthetic_network(40, block_sizes=[25, 15], p_in=0.6, p_out=0.03)
    >>> model = models.DPStochasticBlockModel(40, truncation=4)
    >>> fit = inference.fit_sbm(model, net, epochs=100, progress=False)
    >>> fit.assignments().bincount().tolist()
    [25, 15]
    >>> bool((fit.assignments()[truth.z == 0] == fit.assignments()[truth.z == 0][0]).all())
    True
    """
    net = as_network(network)
    if not isinstance(model, DPStochasticBlockModel):
        raise TypeError(f"fit_sbm fits a DPStochasticBlockModel, got {type(model).__name__}")
    if model.n_nodes != net.n_nodes:
        raise ValueError(f"the model has {model.n_nodes} nodes, the network {net.n_nodes}")
    if epochs < 1 or lr <= 0 or n_restarts < 1 or not 0 < eta_step <= 1:
        raise ValueError("need epochs >= 1, lr > 0, n_restarts >= 1 and 0 < eta_step <= 1")
    if batch_size is not None and batch_size < 2:
        raise ValueError(f"batch_size must be at least 2, got {batch_size}")
    if init not in ("spectral", "random"):
        raise ValueError(f"init must be 'spectral' or 'random', got {init!r}")
    if net.n_edges == 0:
        raise ValueError("the network has no links")
    final_lr = lr / 10 if final_lr is None else final_lr
    warmup = epochs // 4 if warmup is None else int(warmup)
    if device is not None:
        model.to(device)
    dev = model.log_alpha.device
    graph = _Graph.build(net, dev)
    full = batch_size is None or batch_size >= graph.n_pairs
    if full:
        all_i, all_j, all_x = (t.to(dev) for t in graph.all_pairs())
        steps = 1
    else:
        n_l = max(1, min(graph.n_links, int(round(batch_size / (1 + neg_ratio)))))
        n_n = max(1, batch_size - n_l)
        steps = math.ceil(graph.n_pairs / batch_size)
    settings = {
        "epochs": epochs,
        "batch_size": None if full else batch_size,
        "neg_ratio": neg_ratio,
        "lr": lr,
        "final_lr": final_lr,
        "eta_step": eta_step,
        "eta_samples": eta_samples,
        "num_particles": num_particles,
        "warmup": warmup,
        "n_restarts": n_restarts,
        "init": init,
        "init_clusters": init_clusters,
        "seed": seed,
        "device": str(dev),
        "steps_per_epoch": steps,
    }
    plan = _init_plan(init, n_restarts, model.truncation, seed)
    if init_clusters is not None and init == "spectral":
        plan = [("spectral", init_clusters)] * n_restarts
    alpha0 = float(model.alpha.detach())
    t0 = time.perf_counter()
    best: dict[str, Any] | None = None
    k_auto: int | None = None
    restarts: list[dict[str, Any]] = []
    for r, (kind, k) in enumerate(plan):
        rseed = seed + 1000 * r
        torch.manual_seed(rseed)
        gen = torch.Generator().manual_seed(rseed)
        dgen = gen if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(rseed)
        with torch.no_grad():
            model.log_alpha.fill_(math.log(alpha0))
        post = SBMPosterior(model).to(dev)
        labels, k_used = (None, model.truncation)
        if kind == "spectral":
            if isinstance(k, str) and k != "auto":  # "auto+1" / "auto-1"
                if k_auto is None:
                    k_auto = bethe_hessian_clusters(net.adjacency)
                k = max(1, k_auto + int(k[4:]))
            labels, k_used = spectral_init(net, k, model.truncation, seed=rseed)
        _init_posterior(model, post, labels, graph, gen)
        params = [*post.parameters(), model.log_alpha]
        opt = torch.optim.Adam(params, lr=lr)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, (final_lr / lr) ** (1 / epochs))
        history: dict[str, list[float]] = {"elbo": [], "alpha": [], "effective_clusters": []}
        if val is not None:
            history["val_auc"], history["val_log_lik"] = [], []
        desc = f"SBM restart {r + 1}/{len(plan)}" if len(plan) > 1 else "SBM"
        bar = tqdm(range(epochs), disable=not progress, desc=desc, unit="epoch")
        for epoch in bar:
            total = 0.0
            for _ in range(steps):
                if full:
                    i, j, x = all_i, all_j, all_x
                    w = torch.ones_like(x)
                    nodes = None
                else:
                    i, j, x, w = graph.minibatch(n_l, n_n, gen)
                    nodes = torch.unique(torch.cat([i, j]))
                # 1. closed-form eta step for the nodes of the minibatch (after warm-up)
                if epoch >= warmup:
                    idx = torch.arange(model.n_nodes, device=dev) if nodes is None else nodes
                    target = _eta_targets(model, post, graph, idx, eta_samples, dgen)
                    post.eta[idx] = (1 - eta_step) * post.eta[idx] + eta_step * target
                # 2. gradient step on rho, the Gaussian q and log alpha
                obj = _global_objective(model, post, i, j, x, w, num_particles, dgen)
                if not torch.isfinite(obj):
                    raise FloatingPointError(
                        f"fit_sbm diverged: ELBO {obj.item()} at epoch {epoch}; try a smaller lr"
                    )
                opt.zero_grad()
                (-obj).backward()
                opt.step()
                total += float(obj.detach()) + float(post.entropy_z())
            sched.step()
            history["elbo"].append(total / steps)
            history["alpha"].append(float(model.alpha.detach()))
            eff = SBMFit(model, post).effective_clusters()
            history["effective_clusters"].append(eff)
            postfix = {"elbo": f"{history['elbo'][-1]:.1f}", "K": f"{eff:.1f}"}
            if val is not None:
                from ..diagnostics.metrics import auc

                tmp = SBMFit(model, post)
                history["val_auc"].append(auc(val.labels, tmp.predict(val, num_samples=16)))
                history["val_log_lik"].append(float(tmp.log_likelihood(val, num_samples=16).mean()))
                postfix["val_auc"] = f"{history['val_auc'][-1]:.3f}"
            bar.set_postfix(postfix)
        bar.close()
        final = _full_elbo(model, post, graph, elbo_samples, seed)
        info = {
            "restart": r,
            "init": kind,
            "init_clusters": k_used,
            "elbo": final,
            "effective_clusters": SBMFit(model, post).effective_clusters(),
            "alpha": float(model.alpha.detach()),
        }
        restarts.append(info)
        log.info(
            "restart %d (%s, k=%s): final ELBO %.2f, %.2f clusters, alpha %.3f",
            r,
            kind,
            k_used,
            final,
            info["effective_clusters"],
            info["alpha"],
        )
        if best is None or final > best["elbo"]:
            best = {
                "elbo": final,
                "post": post,
                "log_alpha": model.log_alpha.detach().clone(),
                "history": history,
                "restart": r,
            }
    assert best is not None
    with torch.no_grad():
        model.log_alpha.copy_(best["log_alpha"])
    settings["best_restart"] = best["restart"]
    train_info = {
        "name": net.name,
        "n_nodes": net.n_nodes,
        "n_links": net.n_edges,
        "n_pairs": net.n_pairs,
        "names": np.asarray(net.names).tolist(),
    }
    fit = SBMFit(
        model,
        best["post"],
        best["history"],
        restarts,
        train_info,
        settings,
        time.perf_counter() - t0,
    )
    fit._train_network = net
    return fit
