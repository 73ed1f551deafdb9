"""Collapsed variational inference: each user's entries integrated out exactly.

Mean-field SVI gives each user's latent vector a factor of ``q`` of its own, independent of
the items', while in the posterior they are coupled; the gap shows in the noise, which
mean-field ``q`` over-estimates (``benchmarks/results/svi_gap.md``). When a model's mean is
affine in a user's entries ``w_n`` (:attr:`~bayesmf.models.base.FactorModel.
collapsible_rows`: ``U`` and ``row_bias`` of :class:`~bayesmf.models.BayesianMF`), their
priors Normal and the likelihood Gaussian, ``w_n`` can be integrated out given the other
sites ``theta`` (the items' arrays, the hyper-parameters, the noise ``sigma``). For user
``n`` with ratings ``y_n``, design ``X_n`` (one row per rating: the mean's derivative by
``w_n``, e.g. ``[v_m, 1]``) and offset ``o_n`` (the mean at ``w_n = 0``),

    y_n | theta ~ N(X_n m + o_n, X_n S X_n^T + sigma^2 I)

with ``m``, ``S = diag(s^2)`` the prior mean and covariance of ``w_n``, and ``w_n``'s
conditional posterior is Normal with precision ``Lambda_n = S^-1 + X_n^T X_n / sigma^2``.
:class:`CollapsedRowsGuide` is the family ``q(theta) p(w | theta, y)`` (``q(theta)``
mean-field); its ELBO

    ELBO_c = E_q(theta)[sum_n log p(y_n | theta)] - KL(q(theta) || p(theta))

is at least the ELBO of the same ``q(theta)`` with any ``q(w)``, the mean-field one
included. :func:`collapsed_elbo_terms` estimates it from a minibatch of whole users (each
with all of its ratings, scaled by ``n_users / batch``: unbiased over a uniform draw of
users); ``theta`` is drawn whole at every step, so a step costs ``O((b + M) D^2 + B D^3)``
for ``b`` ratings of ``B`` users, ``M`` items and ``D`` entries per user (``K + 1``). The
users' regressions run in float64.

Draws (:meth:`CollapsedRowsGuide.sample_latents`) take ``theta ~ q`` and then each user's
``w_n`` from its exact conditional given the training ratings, which the guide keeps (as
buffers, so a saved fit can still predict). The model states the affine form through
``row_design(z)`` (:meth:`bayesmf.models.BayesianMF.row_design`): each item's design row
``x_m`` and offset, and each user's shift, with ``mean(n, m) = x_m . (w_n + shift_n) +
offset_m``; a user's Gram matrix ``sum_m x_m x_m^T`` is then one sparse (users x items)
product with the items' outer products.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import torch

from ..models.base import GaussianFactorModel, LatentSpec, prior_normal_params
from .guides import MeanFieldGuide
from .objectives import ELBOTerms, draw_site

__all__ = ["CollapsedRowsGuide", "collapsed_elbo_terms", "user_batches"]

F64 = torch.float64


@functools.lru_cache(maxsize=16)
def _triangle(D: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The upper triangle of a ``D x D`` matrix: its ``(row, col)`` indices ``(2, T)`` and,
    for each of the ``D^2`` entries in row-major order, the position of its value among
    them (``(j, i)`` reads ``(i, j)``)."""
    upper = torch.triu_indices(D, D, device=device)
    pos = torch.empty(D, D, dtype=torch.long, device=device)
    pos[upper[0], upper[1]] = torch.arange(upper.shape[1], device=device)
    pos[upper[1], upper[0]] = torch.arange(upper.shape[1], device=device)
    return upper, pos.flatten()


class CollapsedRowsGuide(MeanFieldGuide):
    """``q(theta)`` mean-field times the exact conditional of each user's entries.

    Parameters
    ----------
    model : GaussianFactorModel
        A model with :attr:`~bayesmf.models.base.FactorModel.collapsible_rows` (e.g.
        :class:`~bayesmf.models.BayesianMF` with the Gaussian likelihood).
    train : Ratings
        The training ratings (kept: the users' conditionals depend on them).
    init_scale : float, optional
        Initial posterior standard deviation of the mean-field real arrays.
    seed : int
        Seed of the random initial means.

    Examples
    --------
    >>> from bayesmf import data, models
    >>> from bayesmf.inference.collapsed import CollapsedRowsGuide
    >>> R, _ = data.synthetic_ratings(n_rows=30, n_cols=20, rank=2, density=0.3, seed=0)
    >>> m = models.BayesianMF(30, 20, rank=2)
    >>> m.setup(R)
    >>> g = CollapsedRowsGuide(m, R)
    >>> sorted(g.locs)[:3], g.sample_latents(4)["U"].shape
    (['V', 'col_bias', 'noise'], torch.Size([4, 30, 2]))
    """

    def __init__(
        self, model: GaussianFactorModel, train: Any, init_scale: float | None = None,
        seed: int = 0, row_covariance: bool = False,
    ) -> None:
        names = tuple(getattr(model, "collapsible_rows", ()))
        if (not names or not isinstance(model, GaussianFactorModel) or model.discrete
                or not hasattr(model, "row_design")):
            raise ValueError(
                f"{type(model).__name__} has no rows to integrate out: collapse_rows needs a "
                "model whose mean is affine in each user's entries and a Gaussian likelihood "
                "(e.g. BayesianMF(likelihood='gaussian'))")
        super().__init__(model, init_scale=init_scale, seed=seed, exclude=names,
                         row_covariance=row_covariance)
        specs = {s.name: s for s in model.latent_specs()}
        self.row_specs: list[LatentSpec] = [specs[n] for n in names]
        for spec in self.row_specs:
            if spec.positive or not spec.dims or spec.dims[0] != "user" or len(spec.shape) > 2:
                raise ValueError(f"collapsible site {spec.name} must be a real (user,) or "
                                 f"(user, k) array, got dims {spec.dims}")
        #: entries of each user's block, per collapsed site
        self.row_sizes = [spec.shape[1] if len(spec.shape) == 2 else 1
                          for spec in self.row_specs]
        self.noise_site = model.noise_site
        object.__setattr__(self, "_model", model)  # not a submodule: not in the state
        order = torch.argsort(train.rows.long(), stable=True)  # by user
        self.register_buffer("train_rows", train.rows.long()[order])
        self.register_buffer("train_cols", train.cols.long()[order])
        self.register_buffer("train_values", train.values[order])
        # each user's number of ratings (derived, so not saved)
        self.register_buffer("train_count", torch.bincount(
            self.train_rows, minlength=self.n_users), persistent=False)
        self.to(model.device)

    @property
    def model(self) -> GaussianFactorModel:
        """The model whose users are integrated out."""
        return self._model  # type: ignore[no-any-return]

    @property
    def n_users(self) -> int:
        return int(self.row_specs[0].shape[0])

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        raise TypeError("a collapsed guide is not a Pyro guide (its users' q depends on the "
                        "data): use sample_latents, or fit_svi without collapse_rows")

    # ------------------------------------------------------------ the users' regression
    def design(self, z: dict[str, torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The model's :meth:`row_design` for one draw (sample dimension dropped): items'
        design rows ``(M, D)``, offsets ``(M,)`` and the users' shifts ``(N, D)`` or None."""
        X, offset, shift = self.model.row_design(z)  # type: ignore[attr-defined]
        return X[0], offset[0], None if shift is None else shift[0]

    def prior(
        self, z: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]],
        users: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior means and standard deviations of the users' blocks, ``(B, D)`` each."""
        means, scales = [], []
        for spec in self.row_specs:
            p_loc, p_scale = prior_normal_params(spec, z, self.train_values.device, shapes)
            size = spec.shape  # drop the sample dimension (of 1) and broadcast
            p_loc, p_scale = (p.reshape(p.shape[max(0, p.dim() - len(size)):]).expand(size)
                              for p in (p_loc, p_scale))
            if users is not None:
                p_loc, p_scale = p_loc.index_select(0, users), p_scale.index_select(0, users)
            if len(size) == 1:
                p_loc, p_scale = p_loc[:, None], p_scale[:, None]
            means.append(p_loc)
            scales.append(p_scale)
        return torch.cat(means, -1), torch.cat(scales, -1)

    def regression(
        self, z: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]],
        rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor,
        users: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The users' Bayesian linear regressions given one draw of the other sites.

        Parameters
        ----------
        z, shapes
            One draw of the other sites (leading sample dimension 1) and their shapes.
        rows, cols, values
            All the ratings of the users in play (``users``; default: every user, with
            ``rows`` their original indices).
        users : LongTensor, optional
            The users in play, sorted; ``rows`` must be among them.

        Returns
        -------
        loglik : Tensor
            ``(B,)`` each user's marginal log-likelihood ``log p(y_n | theta)`` (float64).
        chol : Tensor
            ``(B, D, D)`` lower Cholesky factors ``L_n`` of the posterior precisions.
        white : Tensor
            ``(B, D)`` ``L_n^-1 X_n^T (y_n - X_n m - o_n) / sigma^2``: the posterior mean
            is ``m + L_n^-T white``.
        mean0 : Tensor
            ``(B, D)`` the prior means ``m``.
        """
        X, offset, shift = self.design(z)
        # the prior of the users in play only: every user's (N x D) would cost a step the
        # whole user axis (two N x D arrays, a tenth of a step's time at 100,000 users)
        m, s = self.prior(z, shapes, users)
        if users is None:
            B, local = self.n_users, rows
        else:
            B, local = len(users), torch.searchsorted(users, rows)
            shift = None if shift is None else shift.index_select(0, users)
        center = m if shift is None else m + shift  # the prior mean of w_n + shift_n
        if len(local) > 1 and not bool((local[1:] >= local[:-1]).all()):
            order = torch.argsort(local, stable=True)
            local, cols, values = local[order], cols[order], values[order]
        M, D = X.shape
        X64, off = X.to(F64), offset.to(F64)
        y = values.to(F64)
        # every per-user sum is a sparse (users x items) product with per-item columns:
        # sum_m x_m x_m^T, sum_m x_m o_m, sum_m o_m^2 (ones) and sum_m x_m y, sum_m o_m y
        # (the ratings), so that no per-rating array of the design is formed
        crow = torch.zeros(B + 1, dtype=torch.long, device=X.device)
        torch.cumsum(torch.bincount(local, minlength=B), 0, out=crow[1:])
        with warnings.catch_warnings():  # "sparse CSR support is in beta": used as documented
            warnings.simplefilter("ignore", UserWarning)
            ones = torch.sparse_csr_tensor(crow, cols, torch.ones_like(y), (B, M),
                                           check_invariants=False)
            rated = torch.sparse_csr_tensor(crow, cols, y, (B, M), check_invariants=False)
        # the Gram matrices are symmetric: only their upper triangles are summed (T = D (D +
        # 1) / 2 columns instead of D^2, in the product and in its backward pass)
        upper, full = _triangle(D, X.device)
        T = upper.shape[1]
        per_item = torch.cat([X64[:, upper[0]] * X64[:, upper[1]],
                              X64 * off[:, None], (off * off)[:, None]], 1)
        sums = ones @ per_item
        gram = sums[:, :T].index_select(1, full).reshape(B, D, D)
        xo, oo = sums[:, T : T + D], sums[:, -1]
        with_y = rated @ torch.cat([X64, off[:, None]], 1)
        xy, oy = with_y[:, :D], with_y[:, D]
        yy = torch.zeros(B, dtype=F64, device=X.device).index_add_(0, local, y * y)
        h = xy - xo  # sum_m x_m (y_nm - o_m)
        c = center.to(F64)
        gc = (gram @ c.unsqueeze(-1)).squeeze(-1)
        rhs = h - gc  # sum_m x_m r_nm, r = y - o - x . c
        rr = yy - 2 * oy + oo - 2 * (c * h).sum(-1) + (c * gc).sum(-1)  # sum_m r_nm^2
        count = (crow[1:] - crow[:-1]).to(F64)
        sigma = z[self.noise_site].reshape(()).to(F64)
        prec = s.to(F64).pow(-2)
        chol = torch.linalg.cholesky(gram / sigma**2 + torch.diag_embed(prec))
        white = torch.linalg.solve_triangular(
            chol, (rhs / sigma**2).unsqueeze(-1), upper=False).squeeze(-1)
        logdet = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        loglik = (-count * (0.5 * math.log(2 * math.pi) + torch.log(sigma))
                  - rr / (2 * sigma**2) + 0.5 * (white * white).sum(-1) - logdet
                  + 0.5 * torch.log(prec).sum(-1))
        return loglik, chol, white, m.to(F64)

    def _split(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for spec, size in zip(self.row_specs, self.row_sizes, strict=True):
            part = w[..., start:start + size]
            out[spec.name] = part if len(spec.shape) == 2 else part[..., 0]
            start += size
        return out

    def _theta(self, generator: torch.Generator | None, mean: bool = False
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One draw of the other sites (or their posterior means), sample dim 1."""
        z = super().posterior_mean() if mean else super().sample_latents(1, generator)
        z = {k: (v.unsqueeze(0) if mean else v) for k, v in z.items()}
        shapes = {s.name: tuple(s.shape) for s in self.specs}
        return z, shapes

    def _rows_given(self, z: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]],
                    eps: torch.Tensor | None, users: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every user's block (or those of ``users``, sorted) drawn from its conditional
        (``eps``: standard normals of those users; ``None``: the conditional mean) and the
        draws' log density ``(,)``."""
        if users is None:
            rows, cols, values = self.train_rows, self.train_cols, self.train_values
        else:
            pos = _positions(self.train_count, users)
            rows, cols, values = (t[pos] for t in (self.train_rows, self.train_cols,
                                                   self.train_values))
        _, chol, white, m = self.regression(z, shapes, rows, cols, values, users)
        shift = white if eps is None else white + eps.to(F64)
        w = m + torch.linalg.solve_triangular(
            chol.mT, shift.unsqueeze(-1), upper=True).squeeze(-1)
        log_q = torch.zeros((), dtype=F64, device=chol.device)
        if eps is not None:
            D = w.shape[-1]
            log_q = (torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum()
                     - 0.5 * (eps.to(F64) ** 2).sum() - 0.5 * D * len(w) * math.log(2 * math.pi))
        return w.to(self.train_values.dtype), log_q

    # ------------------------------------------------------------ the guide's answers
    @torch.no_grad()
    def sample_latents(
        self, num_samples: int, generator: torch.Generator | None = None,
        users: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Independent draws of every site: ``theta ~ q``, then each user's entries from
        their exact conditional given ``theta`` and the training ratings.

        ``users`` (sorted, distinct): solve only these users' regressions, for predictions
        about them; their draws are the same as without ``users`` (same generator), the other
        users' entries are NaN."""
        draws: list[dict[str, torch.Tensor]] = []
        D = sum(self.row_sizes)
        for _ in range(num_samples):
            z, shapes = self._theta(generator)
            eps = torch.randn((self.n_users, D), generator=generator,
                              device=self.train_values.device, dtype=self.train_values.dtype)
            if users is None:
                w, _ = self._rows_given(z, shapes, eps)
            else:
                part, _ = self._rows_given(z, shapes, eps[users], users)
                w = torch.full_like(eps, float("nan")).index_copy_(0, users, part)
            draws.append({**{k: v[0] for k, v in z.items()}, **self._split(w)})
        return {k: torch.stack([d[k] for d in draws]) for k in draws[0]}

    @torch.no_grad()
    def posterior_mean(self) -> dict[str, torch.Tensor]:
        """The other sites' posterior means and the users' conditional means at them (a
        plug-in point, as used for validation scores)."""
        z, shapes = self._theta(None, mean=True)
        w, _ = self._rows_given(z, shapes, None)
        return {**{k: v[0] for k, v in z.items()}, **self._split(w)}

    @torch.no_grad()
    def posterior_std(self, num_samples: int = 200, seed: int = 0) -> dict[str, torch.Tensor]:
        """Posterior standard deviations: the mean-field sites' exactly, the users' (a
        mixture of their conditionals over ``theta``) from ``num_samples`` draws."""
        out = super().posterior_std()
        draws = self.sample_latents(num_samples, torch.Generator().manual_seed(seed))
        for spec in self.row_specs:
            out[spec.name] = draws[spec.name].std(0)
        return out

    @torch.no_grad()
    def log_q(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        """``log q(z)`` for draws with a leading sample dimension: the mean-field density of
        the other sites plus the users' conditional densities given them."""
        out = super().log_q({k: z[k] for k in (s.name for s in self.specs)}).to(F64)
        shapes = {s.name: tuple(s.shape) for s in self.specs}
        extra = []
        for i in range(len(out)):
            zi = {s.name: z[s.name][i:i + 1] for s in self.specs}
            _, chol, white, m = self.regression(zi, shapes, self.train_rows,
                                                self.train_cols, self.train_values)
            w = torch.cat([(z[s.name][i] if len(s.shape) == 2 else z[s.name][i][:, None])
                           for s in self.row_specs], -1).to(F64)
            eps = (chol.mT @ (w - m).unsqueeze(-1)).squeeze(-1) - white
            D = w.shape[-1]
            extra.append(torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum()
                         - 0.5 * (eps**2).sum() - 0.5 * D * len(w) * math.log(2 * math.pi))
        return out + torch.stack(extra).to(out.device)


def collapsed_elbo_terms(
    guide: CollapsedRowsGuide, data: Any, users: torch.Tensor | None = None,
    index: torch.Tensor | None = None, n_users: int | None = None,
) -> ELBOTerms:
    """An unbiased estimate of the collapsed ELBO from a minibatch of whole users.

    Parameters
    ----------
    guide : CollapsedRowsGuide
        The family (its model is ``guide.model``).
    data : Ratings
        The training ratings.
    users : LongTensor, optional
        The minibatch's users, sorted (default: every user, the full bound).
    index : LongTensor, optional
        Positions in ``data`` of *all* the ratings of ``users`` (:func:`user_batches`).
    n_users : int, optional
        Users the minibatch is drawn from (default: users with ratings in ``data``); the
        likelihood is scaled by ``n_users / len(users)``.

    Returns
    -------
    ELBOTerms
        ``loglik``: the users' marginal log-likelihoods (scaled); ``kl_global``: the KL of
        every other site; ``kl_local``: zero (the users' conditional has no KL to pay).
    """
    z: dict[str, torch.Tensor] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    kl = torch.zeros((), device=data.values.device)
    for spec in guide.specs:
        loc, scale = guide.loc_scale(spec.name)
        noise = torch.randn((1, *loc.shape), device=loc.device, dtype=loc.dtype)
        off = guide.row_factor(spec.name, None, scale)
        kl = kl + draw_site(spec, loc, scale, off, noise, z, shapes).sum()
    if users is None:
        rows, cols, values = data.rows.long(), data.cols.long(), data.values
        ratio = 1.0
    else:
        if index is None:
            raise ValueError("a minibatch of users needs the positions of their ratings")
        rows, cols, values = (t.index_select(0, index) for t in (data.rows, data.cols,
                                                                  data.values))
        rows, cols = rows.long(), cols.long()
        total = n_users if n_users is not None else int(
            (torch.bincount(data.rows.long(), minlength=guide.n_users) > 0).sum())
        ratio = total / len(users)
    loglik, _, _, _ = guide.regression(z, shapes, rows, cols, values, users)
    return ELBOTerms((loglik.sum() * ratio).to(kl.dtype), kl, torch.zeros_like(kl))


def user_batches(
    rows: torch.Tensor, n_users: int, per_batch: int, generator: torch.Generator | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """An epoch of minibatches of whole users: ``(users, positions of their ratings)``.

    The users with ratings are shuffled and split into groups of ``per_batch`` (the last
    may be smaller); each group's users are sorted, and its positions list every rating of
    those users.

    Examples
    --------
    >>> rows = torch.tensor([0, 2, 0, 1, 2, 2])
    >>> [(u.tolist(), sorted(i.tolist())) for u, i in user_batches(rows, 4, 2)]
    [([0, 1], [0, 2, 3]), ([2], [1, 4, 5])]
    """
    rows = rows.long()
    order = torch.argsort(rows, stable=True)
    count = torch.bincount(rows, minlength=n_users)
    active = torch.nonzero(count > 0).flatten()
    if generator is not None:
        active = active[torch.randperm(len(active), generator=generator).to(active.device)]
    out = []
    start = torch.cumsum(count, 0) - count  # once an epoch, not once a batch
    for group in active.split(max(1, int(per_batch))):
        users = torch.sort(group).values
        out.append((users, order[_positions(count, users, start)]))
    return out


def _positions(count: torch.Tensor, users: torch.Tensor,
               start: torch.Tensor | None = None) -> torch.Tensor:
    """Positions of the ratings of ``users`` (in order) in an array sorted by user, whose
    user ``u`` has ``count[u]`` ratings (``start``: their cumulative sum less ``count``,
    when already computed)."""
    if start is None:
        start = torch.cumsum(count, 0) - count
    lens = count[users]
    first = torch.repeat_interleave(start[users] - (torch.cumsum(lens, 0) - lens), lens)
    return first + torch.arange(int(lens.sum()), device=count.device)
