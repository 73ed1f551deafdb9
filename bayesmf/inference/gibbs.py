"""Blocked Gibbs sampling of :class:`bayesmf.models.BayesianMF` (the BPMF sampler), in chains.

The same model that :func:`~bayesmf.inference.fit_svi` fits by mean-field SVI and
:func:`~bayesmf.inference.als` fits by MAP, sampled from its exact posterior. One sweep:

* each user's ``[u_n, b_n]`` given everything else is Gaussian: all users are drawn at
  once from batched Cholesky factors of their posterior precisions, then all items likewise.
  The Gram matrices ``sum_m f_m f_m^T`` of every user are one sparse-times-dense product
  ``A @ T`` of the (users x items) 0/1 pattern ``A`` of the ratings, stored once as a CSR
  matrix, with the table ``T`` of the items' outer products (upper triangle only); the
  right-hand sides are ``X @ F`` with the CSR matrix ``X`` of the ratings. No per-rating
  temporaries are made, so memory stays at the data plus ``O((N + M) D^2)``;
* with implicit feedback (``BayesianMF(implicit=True)``: ``p_n = u_n + (A Y_row)_n``,
  ``q_m = v_m + (A' Y_col)_m`` with the normalised training incidences ``A``, ``A'``) the
  users' step draws the representations ``p_n`` (prior mean ``mean_U + (A Y_row)_n``)
  against the items' ``q_m``; then ``Y_row`` is drawn given ``P`` with ``U = P - A Y_row``
  moving with it (a change of variables ``(U, Y) -> (P, Y)`` with unit Jacobian, so both
  steps are exact Gibbs steps of the same target). The likelihood depends on ``P`` alone,
  so ``Y_row | P`` is Gaussian and independent over factors, with precision
  ``s_Y^-2 I + s_U^-2 A^T A``: diagonal in the eigenbasis of ``A^T A``, computed once per
  chain (a dense eigen-decomposition of the smaller of ``A A^T`` and ``A^T A``, so at most
  ``IMPLICIT_MAX_DENSE`` users or items), and each draw costs three products with that
  basis, however strongly the items are coupled through their common raters. Items
  likewise with ``Y_col``. Where the data pin ``P`` down, ``Y_row | P`` is nearly its
  marginal posterior, so the implicit arrays mix fast (drawing ``U | Y`` and ``Y | U``
  instead would crawl along ``u_n + (A Y)_n = const``);
* the factor means (``factor_means=True``) are conjugate Gaussian draws;
* each prior scale ``s_a`` and the noise scale ``sigma`` has a LogNormal hyper-prior,
  which is not conjugate; on ``t = log s`` the conditional
  ``-(t - m)^2 / (2 v) - n t - SS e^{-2t} / 2`` (``n`` entries with sum of squares ``SS``)
  is log-concave, so an independence Metropolis-Hastings step whose proposal is a
  Student-t at its mode (found by Newton's method) with the Laplace scale is accepted
  most of the time. The residual sum of squares comes from the items' Gram matrices
  (``sum y^2 - 2 theta^T r + theta^T G theta``), not from a pass over the ratings;
* a **rescaling move** along the ridge of the likelihood: ``U -> c U``, ``V -> V / c``
  (per factor with ARD) leaves every prediction unchanged, so the data say nothing about
  ``c`` and the U/V scale ratio is identified by the hyper-priors alone; one-at-a-time Gibbs
  updates crawl along this ridge (R-hat 2.45 for ``scale_U`` over 4 chains on ML-100K
  without it). The move rescales the factors, their means and their prior scales together
  (``s_U -> c s_U``, ``s_V -> s_V / c``), a group action on the state; following Liu &
  Sabatti (2000, generalised Gibbs) ``log c`` is drawn from the target times the Jacobian
  ``c^{N-M}`` (the Haar measure of the multiplicative group is ``dc / c``). The factor
  priors' normalisers cancel the Jacobian exactly, leaving the 1-d log-concave density
  ``-a c^2 - b c^{-2} - (t_U + log c - m)^2 / (2 v) - (t_V - log c - m)^2 / (2 v)``
  (``a``, ``b``: the factor means' prior terms), sampled by the same Student-t
  independence MH step (valid because the proposal's location moves with the state: a
  move ``T_c`` shifts that density by ``log c``); with implicit feedback ``Y_row`` is scaled
  with U and ``Y_col`` with V (their scales and means too), which keeps the form of that
  density (one more LogNormal term per side);
* with factor means and biases, a **translation move** along a second ridge: the
  users' common offset ``u_n -> u_n + w`` (with ``mean_U -> mean_U + w``) changes each
  prediction by ``w . v_m``, which the items' biases absorb (``c_m -> c_m - w . v_m``);
  ``w`` has a Gaussian conditional and is drawn exactly, and likewise for the items (with
  implicit feedback the biases absorb ``w . q_m`` with the items' whole representation);
* with factor means and biases, a **collapsed draw of the items' bias scale**
  (:func:`_collapsed_bias_side`): with factor means the items' main effects are carried
  by ``mean_U . v_m`` and each bias ``c_m`` is told apart from it only weakly (the spread
  of the biases is the same, 0.136, for items with 50 or more ratings as for items with
  fewer than 10), so ``c | s_c`` and ``s_c | c`` alone crawl along the funnel (R-hat of
  ``scale_col_bias`` 1.21 over four chains of the ARD model on ML-100K at 1,000 + 400/5
  sweeps). ``s_c`` is drawn with every item's ``(v_m, c_m)`` integrated out (a 1-d
  density from the items' Gram matrices, which the items' update computes anyway), just
  before ``(v_m, c_m)`` are drawn given it: ``(s_c, V, c)`` move as one block, for 6% more
  time a sweep. At 1,000 + 400/5 sweeps the worst hyper-parameter's R-hat is then 1.011
  (seed 0, ``scale_row_bias``), 1.021 (seed 1, ``scale_col_bias``) or 1.006 (seed 2), so
  such models are thinned by 10 by default (1,000 + 4,000 sweeps, 400 kept): 1.004,
  1.004 and 1.002. An exact stretch move ``c -> g c``, ``s_c -> g s_c``, used before, gave
  1.08; it adds nothing to the collapsed draw and was removed. Two more valid moves were
  tried and not kept: the same collapsed draw for the users' bias scale, and drawing each
  bias scale jointly with the translation over its orbit (30% more time a sweep, no better
  R-hat over three seeds).

Several chains (``num_chains``) run in parallel processes when there are cores for them,
each seeded from ``(seed, chain)``; the split, rank-normalised R-hat (Vehtari et al. 2021)
of the hyper-parameters is computed after sampling and a warning says when a chain has not
converged.

Salakhutdinov & Mnih (2008) sample BPMF the same way with conjugate Gaussian-Wishart
hyper-priors; myFM's Gibbs sampler of a Bayesian factorization machine is the peer of
``benchmarks/peers.py``. The result is a :class:`SampleFit` with the predictive API of a
variational fit (``predict``, ``predict_interval``, ``log_likelihood``,
``to_inference_data``).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..models.base import BernoulliFactorModel
from ..models.bayesian_mf import BayesianMF
from . import files
from .fits import data_info, deprecated_kwarg
from .loop import show_progress
from .posterior import PosteriorFit
from .processes import run_chains
from .threads import uses_fit_threads

__all__ = ["SampleFit", "fit_gibbs"]

log = logging.getLogger(__name__)

#: R-hat above which a warning is logged after sampling several chains
RHAT_WARN = 1.01
#: training cells whose fitted values' R-hat a multi-chain run reports (settings["rhat_cells"])
CELL_RHAT_CELLS = 200
#: Gram-matrix elements per block of users/items drawn at once (memory bound)
_BLOCK_ELEMENTS = 1 << 18
#: largest min(n_rows, n_cols) for which implicit feedback is sampled (a dense eigh)
IMPLICIT_MAX_DENSE = 6000


@dataclass
class SampleFit(PosteriorFit):
    """Posterior draws of a model from one or more Markov chains.

    Attributes
    ----------
    model : BayesianMF
        The model (offset set to the training mean).
    draws : dict of str to tensor
        The kept draws of every latent site, each ``(num_chains, draws_per_chain, *shape)``,
        in chain order.
    history : dict of lists
        Per sweep (burn-in included), chain after chain: ``noise``, ``train_rmse`` (of that
        sweep's state), ``accept`` (mean acceptance rate of the hyper-parameter steps),
        ``accept_rescale`` (of the rescaling move) and, with factor means and biases,
        ``accept_bias_scale`` (of the collapsed draw of the items' bias scale).
    train_info, settings : dict
        Training-data description (ArviZ coords) and the options used; with several chains
        ``settings["rhat"]`` holds the R-hat of the hyper-parameters and
        ``settings["rhat_cells"]`` that of the fitted values at 200 sampled training cells
        (share above 1.01, median, max; a warning when the median exceeds 1.01).
    fit_seconds : float
        Wall-clock time of the sampling.
    """

    model: BayesianMF
    draws: dict[str, torch.Tensor]
    history: dict[str, list[float]] = field(default_factory=dict)
    train_info: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    fit_seconds: float = 0.0

    kind = "SampleFit"

    @property
    def inference_name(self) -> str:  # type: ignore[override]
        """The sampler that drew the chains: ``"Gibbs"`` (:func:`fit_gibbs`) or ``"NUTS"``
        (:func:`~bayesmf.inference.fit_nuts`)."""
        return str(self.settings.get("engine", "Gibbs"))

    @property
    def num_chains(self) -> int:
        """Number of chains."""
        return int(next(iter(self.draws.values())).shape[0])

    @property
    def draws_per_chain(self) -> int:
        """Kept draws of each chain."""
        return int(next(iter(self.draws.values())).shape[1])

    @property
    def num_draws(self) -> int:
        """Kept draws of all chains together."""
        return self.num_chains * self.draws_per_chain

    @property
    def default_num_samples(self) -> int:  # type: ignore[override]
        """Predictions average over every kept draw by default."""
        return self.num_draws

    def draw_counts(self, num_samples: int) -> list[int]:
        """How many draws of each chain :meth:`_draw` returns for ``num_samples``: all of
        them when ``num_samples >= num_draws``, else as equal a share per chain as possible
        (the first chains take one more when it does not divide)."""
        C, S = self.num_chains, self.draws_per_chain
        if num_samples >= C * S:
            return [S] * C
        return [num_samples // C + int(c < num_samples % C) for c in range(C)]

    def _draw(self, num_samples: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Kept draws in order and without repetition, chains one after the other.

        With ``num_samples >= num_draws`` every kept draw is returned once, so the caller
        gets ``num_draws`` draws, fewer than it asked for; with fewer, each chain is thinned
        evenly (see :meth:`draw_counts`). The generator is not used: the draws are fixed.
        """
        S = self.draws_per_chain
        idx = [c * S + torch.linspace(0, S - 1, n).round().long()
               for c, n in enumerate(self.draw_counts(num_samples)) if n > 0]
        index = torch.cat(idx)
        out = {}
        for k, v in self.draws.items():
            flat = v.reshape(-1, *v.shape[2:])
            out[k] = flat if len(index) == len(flat) else flat[index.to(v.device)]
        return out

    def _available(self, wanted: int) -> int:
        """Distinct draws a call asking for ``wanted`` gets (at most every kept draw)."""
        return min(wanted, self.num_draws)

    def sample(self, num_samples: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
        """Kept draws, chains one after the other (all of them by default); see
        :meth:`_draw`."""
        return self._draw(num_samples or self.num_draws, torch.Generator())

    def _payload(self) -> dict[str, Any]:
        return {
            **self._model_payload(),
            **self._common_payload(),
            "draws": {k: v.detach().cpu() for k, v in self.draws.items()},
            # the training incidence of an implicit-feedback model (predictions need it)
            "implicit_state": {k: v.detach().cpu()
                               for k, v in self.model.implicit_state().items()},
        }

    @classmethod
    def _from_payload(
        cls, payload: dict[str, Any], device: str | torch.device | None = None
    ) -> SampleFit:
        model = cls._model_from(payload)
        if payload.get("implicit_state"):
            model.set_implicit_state(payload["implicit_state"])
        draws = dict(payload["draws"])
        if device is not None:
            model.to(device)
            draws = {k: v.to(device) for k, v in draws.items()}
        return cls(model, draws, **cls._common_from(payload))


# ------------------------------------------------------------------ conditional draws
def _sample_side(
    gram: torch.Tensor,
    rhs: torch.Tensor,
    prior_prec: torch.Tensor,
    noise_prec: torch.Tensor | float,
    generator: torch.Generator,
    prior_mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """One draw of every ``theta_n ~ N(Lambda_n^{-1} b_n, Lambda_n^{-1})`` with
    ``Lambda_n = noise_prec * gram_n + diag(prior_prec)`` and
    ``b_n = noise_prec * rhs_n + prior_prec * prior_mean``.

    With ``Lambda = L L^T``: ``theta = L^{-T} (L^{-1} b + eps)``, two triangular solves.
    Rows without ratings (zero Gram matrix) are drawn from the prior. ``gram`` is not
    modified.
    """
    prec = gram * noise_prec
    prec.diagonal(dim1=-2, dim2=-1).add_(prior_prec)
    chol, _ = torch.linalg.cholesky_ex(prec)
    b = noise_prec * rhs
    if prior_mean is not None:
        b = b + prior_prec * prior_mean
    w = torch.linalg.solve_triangular(chol, b.unsqueeze(-1), upper=False)
    w += torch.randn(w.shape, generator=generator, dtype=w.dtype, device=w.device)
    return torch.linalg.solve_triangular(chol.mT, w, upper=True).squeeze(-1)


def _log_target(
    t: torch.Tensor, n: torch.Tensor, ss: torch.Tensor, m: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Log density of ``t = log s`` given ``n`` N(0, s^2) entries with sum of squares ``ss``
    and a LogNormal(m, sqrt(v)) prior on ``s`` (up to a constant)."""
    return -((t - m) ** 2) / (2 * v) - n * t - ss * torch.exp(-2 * t) / 2


def _t_independence_step(
    x: torch.Tensor,
    log_target: Callable[[torch.Tensor], torch.Tensor],
    derivatives: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    generator: torch.Generator,
    start: torch.Tensor,
    newton_steps: int = 8,
    df: int = 5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Independence Metropolis-Hastings step for a vector of independent log-concave 1-d
    targets: the proposal is a Student-t (``df`` degrees of freedom) at the mode, found by
    damped Newton steps from ``start``, with the scale of the Laplace approximation.

    ``derivatives(x)`` returns the gradient and the negative second derivative (> 0) of
    ``log_target``. ``start`` must not depend on the current value ``x`` (only on what the
    target is conditioned on), so that the proposal is exactly independent of ``x`` whether
    or not Newton's method has fully converged. The t's polynomial tails are heavier than a
    log-concave target's, so the importance weight target/proposal is bounded and the sampler
    cannot get stuck in a tail, as it does with the Gaussian Laplace approximation itself.

    Returns the new values and the acceptance indicators.
    """
    mode = start
    for _ in range(newton_steps):  # concave target: damped Newton converges
        g, h = derivatives(mode)
        mode = mode + (g / h).clamp(-2.0, 2.0)
    sd = derivatives(mode)[1].rsqrt()
    # a Student-t draw: a normal over the root of a chi-square / df (sum of df squared normals)
    eps = torch.randn((df + 1, *x.shape), generator=generator, dtype=x.dtype, device=x.device)
    prop = mode + sd * eps[0] / ((eps[1:] ** 2).sum(0) / df).sqrt()

    def log_q(y: torch.Tensor) -> torch.Tensor:
        return -(df + 1) / 2 * torch.log1p(((y - mode) / sd) ** 2 / df)

    log_alpha = log_target(prop) - log_target(x) - log_q(prop) + log_q(x)
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    accept = torch.log(u) < log_alpha
    return torch.where(accept, prop, x), accept


def _sample_log_scales(
    t: torch.Tensor,
    n: torch.Tensor,
    ss: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    generator: torch.Generator,
    newton_steps: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Independence MH step for a vector of log-scales, each its own 1-d target
    (:func:`_log_target`); see :func:`_t_independence_step`. Newton's method starts at the
    maximum-likelihood value ``log(ss / n) / 2`` (the prior's location without entries).

    Returns the new values and the acceptance indicators.
    """

    iv = 1 / v
    c0 = m * iv - n

    def derivatives(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = ss * torch.exp(-2 * x)
        return c0 - x * iv + e, iv + 2 * e

    tiny = torch.finfo(t.dtype).tiny
    start = torch.where(n > 0, 0.5 * torch.log(ss.clamp_min(tiny) / n.clamp_min(1)), m)
    return _t_independence_step(
        t, lambda x: _log_target(x, n, ss, m, v), derivatives, generator, start, newton_steps
    )


def _rescale_log_target(
    e: torch.Tensor, a: torch.Tensor, b: torch.Tensor, t_u: torch.Tensor, t_v: torch.Tensor,
    m_u: torch.Tensor, v_u: torch.Tensor, m_v: torch.Tensor, v_v: torch.Tensor,
) -> torch.Tensor:
    """Log density of ``e = log c`` for the rescaling move ``U -> cU, V -> V/c`` (with the
    factor means and the prior scales): ``a = |mean_U|^2 / (2 tau^2)``, ``b`` likewise for
    V, ``t_u``/``t_v`` the current log-scales with LogNormal(``m``, ``sqrt(v)``) priors.
    With implicit feedback the arrays scaled with U (``Y_row``) and with V (``Y_col``) add
    their log-scales: ``t_u``, ``m_u``, ``v_u`` (and the V side) may then be ``(G, n)``, one
    column per array, summed over."""

    def quad(t: torch.Tensor, m: torch.Tensor, v: torch.Tensor, sign: int) -> torch.Tensor:
        q = (t + sign * (e if t.dim() == e.dim() else e.unsqueeze(-1)) - m) ** 2 / (2 * v)
        return q if q.dim() == e.dim() else q.sum(-1)

    return (-a * torch.exp(2 * e) - b * torch.exp(-2 * e)
            - quad(t_u, m_u, v_u, 1) - quad(t_v, m_v, v_v, -1))


def _sample_rescale(
    a: torch.Tensor, b: torch.Tensor, t_u: torch.Tensor, t_v: torch.Tensor,
    m_u: torch.Tensor, v_u: torch.Tensor, m_v: torch.Tensor, v_v: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``log c`` of the rescaling move (one per scale group), by an independence MH
    step from the identity ``log c = 0`` (see the module notes: valid because the target
    seen from the moved state is the same density shifted by ``log c``, and so is the
    proposal: Newton's method starts at the maximum of the quadratic terms, which moves
    with the state in the same way).

    Returns ``log c`` (0 where rejected) and the acceptance indicators.
    """

    def total(x: torch.Tensor) -> torch.Tensor:  # over the arrays of one side, if several
        return x if x.dim() == a.dim() else x.sum(-1)

    k0 = total((m_u - t_u) / v_u) + total((t_v - m_v) / v_v)
    k1 = total(1 / v_u) + total(1 / v_v)

    def derivatives(e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pa, pb = a * torch.exp(2 * e), b * torch.exp(-2 * e)
        return 2 * (pb - pa) + k0 - e * k1, 4 * (pa + pb) + k1

    start = k0 / k1  # the maximum of the quadratic terms
    return _t_independence_step(
        torch.zeros_like(a),
        lambda e: _rescale_log_target(e, a, b, t_u, t_v, m_u, v_u, m_v, v_v),
        derivatives, generator, start,
    )


# ------------------------------------------------------------------ sparse structure
@dataclass
class _Side:
    """The training ratings seen from one side: for each block of consecutive targets
    ``[start, start + n)``, its column blocks ``[lo, hi)`` of the other side, each with CSR
    matrices ``(n, hi - lo)`` of the 0/1 pattern and of the ratings (views of one sorted
    copy)."""

    blocks: list[tuple[int, list[tuple[int, int, torch.Tensor, torch.Tensor]]]]
    count: torch.Tensor  # (n_target,) ratings per target
    sum_x: torch.Tensor  # (n_target,) sum of x - offset per target


#: bytes of the other side's outer-product table read by one sparse product: a column
#: block of the table stays in a core's L2 cache (cache blocking; 6x faster at 1e7 ratings)
_TABLE_BLOCK_BYTES = 1 << 20


def _col_block(n_target: int, n_other: int, nnz: int, width: int) -> int | None:
    """Columns of the other side per block for tables of ``width`` float32 entries per
    column, or ``None`` (one block) where the table fits the cache anyway or where
    accumulating the ``(n_target, width)`` partial sums of the blocks would cost more than
    it saves (fewer than ~8 ratings per target and block)."""
    cols = max(256, _TABLE_BLOCK_BYTES // (4 * width))
    n_blocks = -(-n_other // cols)
    if n_blocks <= 1 or n_blocks * n_target * 8 > nnz:
        return None
    return cols


def _side(target: torch.Tensor, other: torch.Tensor, x: torch.Tensor, n_target: int,
          n_other: int, dtype: torch.dtype = torch.float32,
          block_rows: int | None = None, block_cols: int | None = None) -> _Side:
    """The CSR matrices of one side, built once, with values of ``dtype``, in blocks of
    ``block_rows`` targets (default: one block) and, within each, of ``block_cols`` columns
    of the other side (default: one); entries sorted by target block, column block, target,
    other, so that every block is a slice of one sorted copy. ``count`` and ``sum_x`` in
    the precision of ``x``."""
    step = block_rows or max(n_target, 1)
    cstep = block_cols or max(n_other, 1)
    n_cb = -(-max(n_other, 1) // cstep)
    tb, cb = target // step, other // cstep
    # by (target, other), then stably by block: one int64 key would overflow at
    # n_blocks * n_target * n_other > 2^63
    order = torch.argsort(target * n_other + other)
    block = tb * n_cb + cb
    order = order[torch.argsort(block[order], stable=True)]
    itype = torch.int32 if max(len(x), n_other, n_target) < 2**31 - 1 else torch.int64
    t_sorted = target[order]
    col = (other - cb * cstep)[order].to(itype)
    key = block[order]
    xs = x[order].to(dtype)
    del order, tb, cb, block
    ones = torch.ones_like(xs)
    # where each (target block, column block) starts in the sorted arrays
    bounds = torch.zeros(-(-max(n_target, 1) // step) * n_cb + 1, dtype=torch.int64,
                         device=x.device)
    torch.cumsum(torch.bincount(key, minlength=len(bounds) - 1), 0, out=bounds[1:])
    del key
    bounds = bounds.tolist()
    blocks = []
    with warnings.catch_warnings():  # "sparse CSR support is in beta": used as documented
        warnings.simplefilter("ignore", UserWarning)
        for b, start in enumerate(range(0, n_target, step)):
            stop = min(start + step, n_target)
            parts = []
            for c, lo in enumerate(range(0, max(n_other, 1), cstep)):
                i0, i1 = bounds[b * n_cb + c], bounds[b * n_cb + c + 1]
                counts = torch.bincount(t_sorted[i0:i1] - start, minlength=stop - start)
                cr = torch.zeros(stop - start + 1, dtype=itype, device=x.device)
                torch.cumsum(counts, 0, out=cr[1:])
                shape = (stop - start, min(lo + cstep, n_other) - lo)
                parts.append((
                    lo, lo + shape[1],
                    torch.sparse_csr_tensor(cr, col[i0:i1], ones[i0:i1], shape,
                                            check_invariants=False),
                    torch.sparse_csr_tensor(cr, col[i0:i1], xs[i0:i1], shape,
                                            check_invariants=False),
                ))
            blocks.append((start, parts))
    count = torch.bincount(target, minlength=n_target)
    sum_x = torch.zeros(n_target, dtype=x.dtype, device=x.device).index_add_(0, target, x)
    return _Side(blocks, count.to(x.dtype), sum_x)


def _side_stats(
    side: _Side, feats: torch.Tensor, other_bias: torch.Tensor | None,
    table: torch.Tensor | None = None,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """For each block of targets: its start, the Gram matrices ``sum_m f_m f_m^T``
    ``(n, D, D)`` and the right-hand sides ``sum_m (x_nm - c_m) f_m`` ``(n, D)``.

    Two sparse products per column block in the sparse matrices' precision (float32 by
    default) with the table of the other side's outer products (upper triangles, and
    ``c_m f_m`` with a bias), written into ``table`` (``(n_other, D (D + 1) / 2 [+ D])``,
    reused between sweeps) when given; results in the precision of ``feats``.
    """
    n_other, D = feats.shape
    dtype = side.blocks[0][1][0][3].dtype if side.blocks else feats.dtype
    f = feats.to(dtype)
    P = D * (D + 1) // 2
    width = P + (D if other_bias is not None else 0)
    if table is None:
        table = torch.empty(n_other, width, dtype=dtype, device=feats.device)
    pos = torch.empty(D, D, dtype=torch.long, device=feats.device)
    j = 0
    for i in range(D):  # row i of the upper triangle, without (n_other, P) temporaries
        torch.mul(f[:, i : i + 1], f[:, i:], out=table[:, j : j + D - i])
        idx = torch.arange(j, j + D - i, device=feats.device)
        pos[i, i:] = idx
        pos[i:, i] = idx
        j += D - i
    if other_bias is not None:
        torch.mul(other_bias.to(dtype)[:, None], f, out=table[:, P:])
    full = pos.reshape(-1)
    for start, parts in side.blocks:
        sums = rhs32 = None
        for lo, hi, pattern, ratings in parts:
            s_part, r_part = pattern @ table[lo:hi], ratings @ f[lo:hi]
            sums = s_part if sums is None else sums.add_(s_part)
            rhs32 = r_part if rhs32 is None else rhs32.add_(r_part)
        rhs = rhs32.to(feats.dtype)
        if other_bias is not None:
            rhs -= sums[:, P:]
        gram = sums[:, :P].index_select(1, full).view(-1, D, D).to(feats.dtype)
        yield start, gram, rhs


def _seed_of(seed: int, chain: int) -> int:
    """An independent 63-bit seed for chain ``chain`` of a run seeded ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(chain)]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


# ------------------------------------------------------------------ implicit feedback
@dataclass
class _Implicit:
    """The implicit-feedback array of one side (``Y_row`` for the users): the normalised
    incidence ``A`` ``(n_target, n_other)`` (CSR, and its transpose) and the thin
    eigen-decomposition ``A^T A = B diag(sv2) B^T`` (``B``: ``(n_other, r)`` orthonormal),
    computed once per chain."""

    matrix: torch.Tensor
    transpose: torch.Tensor
    basis: torch.Tensor
    sv2: torch.Tensor


def _implicit(model: BayesianMF, side: str, device: torch.device) -> _Implicit:
    """The incidence of ``side`` (``"row"``: users x items) with its spectral basis, in
    float64: one dense eigen-decomposition of the smaller Gram matrix (``A A^T`` or
    ``A^T A``); directions whose eigenvalue is below ``1e-10`` of the largest are treated as
    its null space."""
    A = model.implicit_matrix(side).coalesce().to(torch.float64).cpu()
    n_target, n_other = A.shape
    if min(A.shape) > IMPLICIT_MAX_DENSE:
        raise ValueError(
            f"implicit feedback under Gibbs needs min(n_rows, n_cols) <= {IMPLICIT_MAX_DENSE} "
            f"(a dense eigen-decomposition of the smaller Gram matrix); got {tuple(A.shape)}: "
            "fit this model with fit_svi instead")
    i, w = A.indices().numpy(), A.values().numpy()
    import scipy.sparse as sps

    a = sps.csr_matrix((w, (i[0], i[1])), shape=(n_target, n_other))
    if n_target < n_other:  # through A A^T: B = A^T U diag(lambda)^{-1/2}
        lam, vec = np.linalg.eigh((a @ a.T).toarray())
        keep = lam > 1e-10 * max(float(lam.max()), 1e-300)
        lam = lam[keep]
        basis = np.asarray(a.T @ (vec[:, keep] / np.sqrt(lam)))
    else:
        lam, basis = np.linalg.eigh((a.T @ a).toarray())
        lam = np.clip(lam, 0.0, None)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": used as documented
        warnings.simplefilter("ignore", UserWarning)
        matrix = A.to_sparse_csr().to(device)
        transpose = A.t().coalesce().to_sparse_csr().to(device)
    return _Implicit(matrix, transpose,
                     torch.from_numpy(np.ascontiguousarray(basis)).to(device),
                     torch.from_numpy(lam).to(device))


def _sample_implicit(
    imp: _Implicit, rep: torch.Tensor, rep_mean: torch.Tensor | float, rep_prec: torch.Tensor,
    prior_mean: torch.Tensor | float, prior_prec: torch.Tensor, generator: torch.Generator,
) -> torch.Tensor:
    """One exact draw of the implicit array ``Y`` ``(n_other, K)`` given the side's
    representation ``P = U + A Y`` (held fixed, so ``U = P - A Y`` moves with ``Y``).

    The likelihood depends on ``P`` only, so ``Y | P`` has density
    ``prod_n N(p_n - (A Y)_n | m_U, diag(1 / rep_prec)) prod_j N(y_j | m_Y, diag(1 / prior_prec))``:
    independent over factors ``k`` with precision ``alpha_k I + beta_k A^T A`` and linear term
    ``alpha_k m_Yk 1 + beta_k A^T (P_k - m_Uk)``. In the eigenbasis ``B`` of ``A^T A`` the
    precision is diagonal (``alpha + beta * sv2``; ``alpha`` on the complement of ``B``),
    so the draw costs three products with ``B`` per sweep, however strongly the rows of ``Y``
    are coupled.
    """
    alpha, beta = prior_prec, rep_prec  # (K,) or (1,)
    b = beta * (imp.transpose @ (rep - rep_mean)) + alpha * prior_mean  # (n_other, K)
    eps = torch.randn(b.shape, generator=generator, dtype=b.dtype, device=b.device)
    free = b / alpha + eps / alpha.sqrt()  # the draw without the data directions
    B = imp.basis
    denom = (alpha + beta * imp.sv2.unsqueeze(-1)).expand(len(imp.sv2), b.shape[1])
    eps_r = torch.randn(denom.shape, generator=generator, dtype=b.dtype, device=b.device)
    coef = (B.T @ b) / denom + eps_r / denom.sqrt() - B.T @ free
    return free + B @ coef


# ------------------------------------------------------------------ one chain
def _run_chain(
    model: BayesianMF, train: Any, opts: dict[str, Any], chain: int, progress: bool
) -> tuple[dict[str, torch.Tensor], dict[str, list[float]]]:
    """One chain of the sampler: its kept draws (float32) and its per-sweep history."""
    device = model.global_mean.device
    f64 = torch.float64
    gen = torch.Generator(device=device).manual_seed(_seed_of(opts["seed"], chain))
    K, N, M = model.rank, model.n_rows, model.n_cols
    bias = model.biases
    x = train.values.to(f64) - float(model.global_mean)
    # targets per block: bounds the (block, D, D) Gram, precision and Cholesky buffers
    block = max(256, _BLOCK_ELEMENTS // (K + int(bias)) ** 2)
    width = (K + int(bias)) * (K + int(bias) + 1) // 2 + K + int(bias)  # table columns
    users = _side(train.rows, train.cols, x, N, M, block_rows=block,
                  block_cols=_col_block(N, M, len(x), width))
    items = _side(train.cols, train.rows, x, M, N, block_rows=block,
                  block_cols=_col_block(M, N, len(x), width))
    sum_x2 = float((x**2).sum())
    n_obs = len(x)
    del x
    specs = {s.name: s for s in model.latent_specs()}
    implicit = bool(getattr(model, "implicit", False))
    factors = ["U", "V"] + (["Y_row", "Y_col"] if implicit else [])
    arrays = factors + (["row_bias", "col_bias"] if bias else [])
    scale_of = {a: str(specs[a].prior_scale) for a in arrays}
    mean_of = {a: specs[a].prior_mean for a in factors if isinstance(specs[a].prior_mean, str)}
    # every positive site (the prior scales, then the noise) as one vector of log-scales
    hyper = [scale_of[a] for a in arrays] + [model.noise_site]
    numel = [math.prod(specs[h].shape) for h in hyper]
    offsets = [0, *itertools.accumulate(numel)]
    sl = {h: slice(offsets[i], offsets[i + 1]) for i, h in enumerate(hyper)}

    def per_entry(values: list[float]) -> torch.Tensor:
        return torch.cat([torch.full((k,), val, dtype=f64, device=device)
                          for k, val in zip(numel, values, strict=True)])

    m = per_entry([float(specs[h].prior_loc) for h in hyper])
    v = per_entry([float(specs[h].prior_scale) ** 2 for h in hyper])
    t = per_entry([math.log(specs[h].init_loc) for h in hyper[:-1]] + [0.0])
    # entries per log-scale: an ARD scale covers one column, a scalar scale the whole array
    sizes = per_entry([float(math.prod(specs[a].shape) // math.prod(specs[scale_of[a]].shape))
                       for a in arrays] + [float(n_obs)])

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=f64, device=device)

    z: dict[str, torch.Tensor] = {a: opts["init_std"] * randn(*specs[a].shape)
                                  for a in factors}
    # implicit feedback: the incidences, and each side's implicit sum (A Y_row, A' Y_col)
    imp = ({"U": _implicit(model, "row", device), "V": _implicit(model, "col", device)}
           if implicit else {})
    implicit_of = {"U": "Y_row", "V": "Y_col"}

    def implicit_sum(factor: str) -> torch.Tensor | None:
        return imp[factor].matrix @ z[implicit_of[factor]] if implicit else None

    def represent(factor: str) -> torch.Tensor:
        """A side's representation: ``U + A Y_row`` for the users, ``V + A' Y_col``."""
        extra = implicit_sum(factor)
        return z[factor] if extra is None else z[factor] + extra
    zeros = torch.zeros(K + 1, dtype=f64, device=device)
    for mname in mean_of.values():
        z[mname] = torch.zeros(K, dtype=f64, device=device)
    if bias:
        z["row_bias"] = torch.zeros(N, dtype=f64, device=device)
        z["col_bias"] = torch.zeros(M, dtype=f64, device=device)
    D = K + int(bias)
    ones = {"U": torch.ones(M, 1, dtype=f64, device=device),
            "V": torch.ones(N, 1, dtype=f64, device=device)}
    mean_prior_var = {a: float(specs[mname].prior_scale) ** 2 for a, mname in mean_of.items()}
    width = D * (D + 1) // 2 + (D if bias else 0)  # the outer-product tables, reused
    tables = {"U": torch.empty(M, width, dtype=torch.float32, device=device),
              "V": torch.empty(N, width, dtype=torch.float32, device=device)}
    rescale = opts["rescale"]
    # with factor means the items' biases are weakly told apart from mean_U . v_m: their
    # scale is drawn with (V, c) integrated out, just before (V, c) are drawn given it
    # (the same draw of the users' bias scale gave no reliable gain: not used)
    collapsed = sl[scale_of["col_bias"]] if bias and "U" in mean_of and rescale else None

    def update(factor: str, bias_name: str, side: _Side, other: str, other_bias: str,
               s: torch.Tensor, noise_prec: torch.Tensor, rss: bool = False) -> torch.Tensor:
        """Draw one side's ``[factor, bias]`` given the other side's factors and biases;
        with ``rss``, returns ``sum_n theta_n^T G_n theta_n - 2 theta_n^T r_n`` over its
        targets (the data part of the residual sum of squares, with its Gram matrices
        ``G_n`` and right-hand sides ``r_n``).

        With implicit feedback the draw is of the representation ``p_n = u_n + (A Y)_n``
        (prior mean shifted by ``(A Y)_n``) against the other side's representations, and
        then ``u_n = p_n - (A Y)_n``; the implicit array is drawn next given ``P``.

        The items' update (with :func:`_collapsed_bias_side`) also draws their bias scale
        into ``t``."""
        nonlocal t
        other_rep = represent(other)
        feats = torch.cat([other_rep, ones[factor]], 1) if bias else other_rep
        prec = torch.empty(D, dtype=f64, device=device)
        prec[:K] = s[sl[scale_of[factor]]] ** -2
        mean = zeros.clone()
        if factor in mean_of:
            mean[:K] = z[mean_of[factor]]
        mean = mean[:D]
        shift = implicit_sum(factor)
        if shift is not None:  # one prior mean per target
            mean = mean.expand(len(shift), D).clone()
            mean[:, :K] += shift
        if bias:
            prec[K] = s[sl[scale_of[bias_name]]] ** -2
        theta = torch.empty(len(side.count), D, dtype=f64, device=device)
        part = torch.zeros((), dtype=f64, device=device)
        stats = _side_stats(side, feats, z.get(other_bias) if bias else None, tables[factor])
        if factor == "V" and collapsed is not None:  # s_c with (V, c) integrated out
            blocks, t, accept = _collapsed_bias_side(stats, prec, mean, noise_prec, t,
                                                     collapsed, m, v, gen, keep=rss)
            history.setdefault("accept_bias_scale", []).append(accept)
        else:
            blocks = ((start, gram, rhs, _sample_side(
                gram, rhs, prec, noise_prec, gen,
                mean[start : start + len(gram)] if mean.dim() == 2 else mean))
                for start, gram, rhs in stats)
        for start, gram, rhs, th in blocks:
            theta[start : start + len(th)] = th
            if rss:
                quad = (gram @ th.unsqueeze(-1)).squeeze(-1).sub_(2 * rhs)
                part += (quad * th).sum()
        if bias:
            z[bias_name] = theta[:, K]
        if shift is None:
            z[factor] = theta[:, :K]
            return part
        # Y | P, then U = P - A Y (P, hence every prediction, unchanged)
        rep_ = theta[:, :K]
        y = implicit_of[factor]
        z[y] = _sample_implicit(
            imp[factor], rep_, z[mean_of[factor]] if factor in mean_of else 0.0,
            s[sl[scale_of[factor]]] ** -2, z[mean_of[y]] if y in mean_of else 0.0,
            s[sl[scale_of[y]]] ** -2, gen)
        z[factor] = rep_ - implicit_sum(factor)
        return part

    S, thin, burn_in = opts["num_samples"], opts["thin"], opts["burn_in"]
    kept_names = (*hyper, *mean_of.values(), *arrays)
    kept = {k: torch.empty((S, *specs[k].shape), dtype=torch.float32, device=device)
            for k in kept_names}
    history: dict[str, list[float]] = {"noise": [], "train_rmse": [], "accept": [],
                                       "accept_rescale": []}
    total = burn_in + S * thin
    bar = tqdm(range(total), disable=not progress, unit="sweep",
               desc="Gibbs" if opts["num_chains"] == 1 else f"Gibbs chain {chain}")
    for sweep in bar:
        s = torch.exp(t)
        noise_prec = s[-1] ** -2
        # users [u_n, b_n] | V, c; then items [v_m, c_m] | U, b
        update("U", "row_bias", users, "V", "col_bias", s, noise_prec)
        part = update("V", "col_bias", items, "U", "row_bias", s, noise_prec, rss=True)
        # residual sum of squares from the items' statistics: sum_m |y_m - G_m theta_m|^2
        # with y = x - b (users' biases): sum y^2 + sum_m theta_m^T (G_m theta_m - 2 r_m)
        ss_y = sum_x2
        if bias:
            b = z["row_bias"]
            ss_y = ss_y - 2 * (b @ users.sum_x) + (users.count * b) @ b
        ss_resid = (ss_y + part).clamp_min(0.0)
        # factor means | factors, scales: Normal(0, tau^2) prior, conjugate
        for a, mname in mean_of.items():
            lam = (s[sl[scale_of[a]]] ** -2).expand(K)
            post_prec = 1 / mean_prior_var[a] + len(z[a]) * lam
            post_mean = lam * z[a].sum(0) / post_prec
            z[mname] = post_mean + randn(K) / post_prec.sqrt()
        # scales | arrays (and means), noise | residuals
        ss = []
        for a in arrays:
            dev = z[a] - z[mean_of[a]] if a in mean_of else z[a]
            ss.append((dev**2).sum(0) if specs[scale_of[a]].shape else (dev**2).sum().reshape(1))
        ss.append(ss_resid.reshape(1))
        t, accept = _sample_log_scales(t, sizes, torch.cat(ss), m, v, gen)
        if rescale:
            t, acc_r = _rescale(z, t, sl, scale_of, mean_of, mean_prior_var, m, v, gen)
            history["accept_rescale"].append(float(acc_r.double().mean()))
            if bias and mean_of:  # the factor means against the other side's biases
                s = torch.exp(t)
                _translate(z, "U", mean_of["U"], "V", "col_bias", mean_prior_var["U"],
                           s[sl[scale_of["col_bias"]]] ** 2, gen, represent("V"))
                _translate(z, "V", mean_of["V"], "U", "row_bias", mean_prior_var["V"],
                           s[sl[scale_of["row_bias"]]] ** 2, gen, represent("U"))
        rmse = math.sqrt(float(ss_resid) / n_obs)
        history["noise"].append(math.exp(float(t[-1])))
        history["train_rmse"].append(rmse)
        history["accept"].append(float(accept.double().mean()))
        if progress:
            bar.set_postfix(noise=f"{history['noise'][-1]:.4f}", train_rmse=f"{rmse:.4f}")
        if sweep >= burn_in and (sweep - burn_in) % thin == 0:
            i = (sweep - burn_in) // thin
            s = torch.exp(t)
            for h in hyper:
                kept[h][i] = s[sl[h]].reshape(specs[h].shape)
            for k in (*mean_of.values(), *arrays):
                kept[k][i] = z[k]
    bar.close()
    return kept, history


def _rescale(
    z: dict[str, torch.Tensor], t: torch.Tensor, sl: dict[str, slice], scale_of: dict[str, str],
    mean_of: dict[str, str], mean_prior_var: dict[str, float], m: torch.Tensor,
    v: torch.Tensor, gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rescaling move ``U -> cU, V -> V/c`` (factor means and prior scales with them),
    one ``c`` per scale of U (per factor with ARD); with implicit feedback ``Y_row`` moves
    with U and ``Y_col`` with V (the users' and the items' representations are scaled as
    wholes). Updates ``z`` in place and returns the new log-scales and the acceptance
    indicators. Each array's prior normaliser cancels the Jacobian of its rescaling and the
    two sides have as many factor means, so the target keeps the form of
    :func:`_rescale_log_target`."""
    up = [a for a in ("U", "Y_row") if a in scale_of]
    down = [a for a in ("V", "Y_col") if a in scale_of]
    G = len(t[sl[scale_of["U"]]])

    def side(arrays: list[str]) -> tuple[torch.Tensor, ...]:
        cols = [(t[sl[scale_of[x]]], m[sl[scale_of[x]]], v[sl[scale_of[x]]]) for x in arrays]
        quad = torch.zeros(G, dtype=t.dtype, device=t.device)
        for x in arrays:
            if x in mean_of:
                quad = quad + (z[mean_of[x]] ** 2).reshape(G, -1).sum(-1) / (
                    2 * mean_prior_var[x])
        if len(cols) == 1:
            return (quad, *cols[0])
        return (quad, *(torch.stack(c, -1) for c in zip(*cols, strict=True)))

    a, t_u, m_u, v_u = side(up)
    b, t_v, m_v, v_v = side(down)
    e, accept = _sample_rescale(a, b, t_u, t_v, m_u, v_u, m_v, v_v, gen)
    c = torch.exp(e)  # () scale: one c for all factors; (K,) with ARD
    t = t.clone()
    for arrays, factor in ((up, c), (down, 1 / c)):
        for x in arrays:
            z[x] = z[x] * factor
            if x in mean_of:
                z[mean_of[x]] = z[mean_of[x]] * factor
            t[sl[scale_of[x]]] += torch.log(factor)
    return t, accept


def _collapsed_bias_side(
    stats: Iterable[tuple[int, torch.Tensor, torch.Tensor]], prec: torch.Tensor,
    mean: torch.Tensor, noise_prec: torch.Tensor, t: torch.Tensor, where: slice,
    m: torch.Tensor, v: torch.Tensor, gen: torch.Generator, keep: bool = False,
) -> tuple[list[tuple[int, torch.Tensor | None, torch.Tensor | None, torch.Tensor]],
           torch.Tensor, float]:
    """One side's update (written for the items; the users' is the same with the roles
    swapped) with the bias scale ``s_c`` drawn first, every item's ``(v_m, c_m)``
    integrated out; then each ``(v_m, c_m)`` given the new scale. A partially collapsed
    Gibbs step: ``(s_c, V, c)`` move as one block. Returns, block by block, the start, the
    Gram matrices and right-hand sides (only with ``keep``; otherwise ``None``, and they are
    not held past their block) and the draws ``[v_m, c_m]`` (as :func:`_sample_side` would
    draw them); then the log-scales ``t`` with ``s_c`` (at ``t[where]``, hyper-prior
    ``N(m[where], v[where])`` on ``log s_c``) redrawn, and the step's acceptance (0 or 1).
    Holds ``K x K`` Cholesky factors of the whole side at once.

    Write item ``m``'s posterior precision without the bias's prior term as
    ``[[P, q], [q^T, r]]`` (``P`` the factors' block, with their prior) and its linear term
    as ``[b_v, b_c]``. With ``v_m`` integrated out the ratings say ``c_m`` has precision
    ``k_m = r - q^T P^{-1} q`` and linear term ``l_m = b_c - q^T P^{-1} b_v``; with
    ``c_m ~ N(0, s^2)`` the marginal of the data is
    ``N(l_m / k_m; 0, 1 / k_m + s^2)`` up to factors without ``s``, so on ``t = log s``:
    ``log p(t | rest) = log LogNormal-prior(t) - sum_m [log(1 / k_m + e^{2t}) +
    (l_m / k_m)^2 / (1 / k_m + e^{2t})] / 2`` over the items with ratings, drawn by
    :func:`_t_independence_step`. Then ``c_m ~ N(l_m / (k_m + s^{-2}), 1 / (k_m + s^{-2}))``
    and ``v_m | c_m ~ N(P^{-1} (b_v - q c_m), P^{-1})``: one ``K x K`` Cholesky factor per
    item for the whole step."""
    K = len(prec) - 1
    parts, k_all, lin_all = [], [], []
    for start, gram, rhs in stats:
        prior_mean = mean[start : start + len(gram)] if mean.dim() == 2 else mean
        P = gram[:, :K, :K] * noise_prec
        P.diagonal(dim1=-2, dim2=-1).add_(prec[:K])
        chol, _ = torch.linalg.cholesky_ex(P)
        q = gram[:, :K, K] * noise_prec
        b_v = noise_prec * rhs[:, :K] + prec[:K] * prior_mean[..., :K]
        sol = torch.cholesky_solve(torch.stack([b_v, q], -1), chol)  # P^{-1} [b_v, q]
        k = (gram[:, K, K] * noise_prec - (q * sol[..., 1]).sum(-1)).clamp_min(0.0)
        lin = noise_prec * rhs[:, K] - (q * sol[..., 0]).sum(-1)
        parts.append((start, gram if keep else None, rhs if keep else None, chol, sol, k, lin))
        k_all.append(k)
        lin_all.append(lin)
    k_cat, lin_cat = torch.cat(k_all), torch.cat(lin_all)
    rated = k_cat > 0
    hh = 1 / k_cat[rated]
    b2 = (lin_cat[rated] * hh) ** 2
    t0, m0, v0 = t[where], m[where], v[where]

    def log_target(x: torch.Tensor) -> torch.Tensor:
        w = hh + torch.exp(2 * x)
        return -(torch.log(w) + b2 / w).sum() / 2 - (x - m0) ** 2 / (2 * v0)

    def derivatives(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.exp(2 * x)
        w = hh + y
        grad = (y * (b2 / w - 1) / w).sum() - (x - m0) / v0
        curv = (2 * y * (hh * w - b2 * (hh - y)) / w**3).sum() + 1 / v0
        return grad, curv.clamp_min(1 / v0)

    # Newton starts from the moment estimate of s^2 (mean beta^2 - mean h), which depends
    # only on what the target is conditioned on (no item with a rating: the hyper-prior's
    # mode, the target being the hyper-prior alone)
    start = (0.5 * torch.log((b2.mean() - hh.mean()).clamp_min(1e-4)).reshape(t0.shape)
             if len(hh) else m0)
    new, accept = _t_independence_step(t0, log_target, derivatives, gen, start)
    t = t.clone()
    t[where] = new
    bias_prec = torch.exp(-2 * new)
    draws = []
    for start, gram, rhs, chol, sol, k, lin in parts:
        eps = torch.randn((len(k), K + 1), generator=gen, dtype=k.dtype, device=k.device)
        c_prec = k + bias_prec
        c = lin / c_prec + eps[:, K] / c_prec.sqrt()
        noise = torch.linalg.solve_triangular(chol.mT, eps[:, :K].unsqueeze(-1), upper=True)
        v_m = sol[..., 0] - sol[..., 1] * c[:, None] + noise.squeeze(-1)
        draws.append((start, gram, rhs, torch.cat([v_m, c[:, None]], 1)))
    return draws, t, float(accept.double().mean())


def _translate(
    z: dict[str, torch.Tensor], factor: str, mean: str, other: str, other_bias: str,
    mean_var: float, bias_var: torch.Tensor, gen: torch.Generator,
    features: torch.Tensor | None = None,
) -> None:
    """The translation move along the ridge between the factor means and the other side's
    biases: ``u_n -> u_n + w`` (every row), ``mean_U -> mean_U + w``,
    ``c_m -> c_m - w . v_m`` leaves every prediction and ``u_n - mean_U`` unchanged, so
    ``w`` is drawn exactly from its Gaussian conditional (Liu & Sabatti's generalised Gibbs
    step for a translation group: Jacobian 1), ``N(A^{-1} b, A^{-1})`` with
    ``A = I / tau^2 + V^T V / s_c^2`` and ``b = -mean_U / tau^2 + V^T c / s_c^2``. Updates
    ``z`` in place. ``features`` is the other side's representation when it is not
    ``z[other]`` alone (with implicit feedback: ``V + A' Y_col``)."""
    X, c = (z[other] if features is None else features), z[other_bias]
    K = X.shape[1]
    A = X.T @ X / bias_var
    A.diagonal().add_(1 / mean_var)
    b = X.T @ c / bias_var - z[mean] / mean_var
    chol = torch.linalg.cholesky(A)
    w = torch.linalg.solve_triangular(chol, b.unsqueeze(-1), upper=False)
    w += torch.randn((K, 1), generator=gen, dtype=w.dtype, device=w.device)
    w = torch.linalg.solve_triangular(chol.T, w, upper=True).squeeze(-1)
    z[factor] = z[factor] + w
    z[mean] = z[mean] + w
    z[other_bias] = c - X @ w


def _chain_worker(
    payload: tuple[dict[str, Any], float, Any, dict[str, Any], int, int],
) -> tuple[dict[str, torch.Tensor], dict[str, list[float]]]:
    """Run one chain in a worker process (CPU)."""
    config, global_mean, train, opts, chain, threads = payload
    torch.set_num_threads(threads)
    model = BayesianMF(**config, global_mean=global_mean)
    model.setup(train)  # the implicit-feedback incidence, if any (the offset is given)
    return _run_chain(model, train, opts, chain, progress=False)


# ------------------------------------------------------------------ diagnostics
def _rhat(x: np.ndarray) -> float:
    """Split, rank-normalised R-hat (Vehtari et al. 2021: the larger of the bulk and the
    folded/tail values) of draws ``x`` shaped ``(chains, draws)``."""
    from scipy.special import ndtri
    from scipy.stats import rankdata

    C, S = x.shape
    half = S // 2
    if half < 2:
        return float("nan")
    x = np.concatenate([x[:, :half], x[:, S - half:]], 0)  # split chains

    def rhat(y: np.ndarray) -> float:
        r = rankdata(y, method="average").reshape(y.shape)
        z = ndtri((r - 0.375) / (y.size + 0.25))
        n = z.shape[1]
        w = z.var(1, ddof=1).mean()
        b = n * z.mean(1).var(ddof=1)
        if w == 0:
            return float("nan")
        return float(np.sqrt(((n - 1) / n * w + b / n) / w))

    return max(rhat(x), rhat(np.abs(x - np.median(x))))


def _hyper_rhat(draws: dict[str, torch.Tensor], model: Any) -> dict[str, float]:
    """R-hat of every hyper-parameter of a multi-chain run; an ARD scale vector is sorted
    first (its order statistics), since the factors' order is arbitrary in each chain."""
    out = {}
    for spec in model.latent_specs():
        if not spec.positive:
            continue
        d = draws[spec.name].double().cpu().numpy()
        d = np.sort(d.reshape(*d.shape[:2], -1), axis=-1)
        for j in range(d.shape[-1]):
            name = spec.name if d.shape[-1] == 1 else f"{spec.name}[sorted {j}]"
            out[name] = _rhat(d[..., j])
    return out


def _cell_rhat(model: Any, draws: dict[str, torch.Tensor], train: Any, seed: int,
               cells: int = CELL_RHAT_CELLS) -> dict[str, float]:
    """R-hat of the fitted value ``E[y | z]`` at ``cells`` training cells drawn at random
    (seeded): ``share_above`` (the share above :data:`RHAT_WARN`), ``median``, ``max``, over
    the cells whose draws vary (``cells``). For a Bernoulli model the logit is checked, since
    a link probability can round to exactly 0 in every draw.

    The latent function mixes more slowly than the hyper-parameters: on MovieLens-100K with
    four chains of 200 + 400 sweeps, 27.5% of cells exceed 1.01 (median 1.005) although their
    draws are nearly independent within a chain (``benchmarks/chains.py``)."""
    C, S = next(iter(draws.values())).shape[:2]
    n = min(cells, len(train))
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(train), generator=gen)[:n].to(train.rows.device)
    flat = {k: v.reshape(C * S, *v.shape[2:]) for k, v in draws.items()}
    # a link probability can round to exactly 0 in every draw: its logit cannot
    fitted = model.mean if isinstance(model, BernoulliFactorModel) else model.expected
    with torch.no_grad():
        f = fitted(flat, train.rows[pick], train.cols[pick])
    f = f.reshape(C, S, n).double().cpu().numpy()
    r = np.array([_rhat(f[:, :, j]) for j in range(n)])
    r = r[np.isfinite(r)]  # constant draws (a cell pinned by the prior): no R-hat
    if not r.size:
        return {"cells": 0.0, "share_above": float("nan"), "median": float("nan"),
                "max": float("nan")}
    return {"cells": float(r.size), "share_above": float(np.mean(r > RHAT_WARN)),
            "median": float(np.median(r)), "max": float(np.max(r))}


# ------------------------------------------------------------------ the sampler
def chain_agreement(
    engine: str, model: Any, draws: dict[str, torch.Tensor], train: Any, seed: int
) -> dict[str, Any]:
    """R-hat of several chains' hyper-parameters (``rhat``) and fitted values at sampled
    training cells (``rhat_cells``), with a warning in words where they exceed
    :data:`RHAT_WARN`."""
    C = next(iter(draws.values())).shape[0]
    rhat = _hyper_rhat(draws, model)
    bad = {k: round(r, 3) for k, r in rhat.items() if r > RHAT_WARN}  # NaN: too short
    if bad:
        log.warning(
            "the %d %s chains disagree: R-hat above %.2f for %s; the hyper-parameters (and "
            "predictions) are not yet reliable - sample longer and check again", C, engine,
            RHAT_WARN, bad)
    cells = _cell_rhat(model, draws, train, seed)
    if cells["median"] > RHAT_WARN:
        log.warning(
            "the %d %s chains disagree on the fitted values: R-hat above %.2f at %.0f%% of %d "
            "sampled training cells (median %.3f); predictions average the chains, but sample "
            "longer before reading single cells", C, engine, RHAT_WARN,
            100 * cells["share_above"], cells["cells"], cells["median"])
    return {"rhat": rhat, "rhat_cells": cells}


def _default_thin(model: BayesianMF) -> int:
    """``fit_gibbs``'s default thinning: 10 for factor means with biases (their bias scales
    trade against the factor-borne main effects and mix more slowly), else 5."""
    return 10 if model.factor_means and model.biases else 5


@uses_fit_threads
def fit_gibbs(
    model: BayesianMF,
    train: Any,
    *,
    num_samples: int = 400,
    burn_in: int = 1000,
    num_chains: int = 1,
    thin: int | None = None,
    parallel: bool | None = None,
    rescale: bool = True,
    init_std: float = 0.1,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    **deprecated: Any,
) -> SampleFit:
    """Sample the posterior of a :class:`~bayesmf.models.BayesianMF` by blocked Gibbs.

    Parameters
    ----------
    model : BayesianMF
        The model (its priors and hyper-priors are used as they are).
    train : Ratings
        Training ratings of the model's shape.
    num_samples : int
        Draws kept per chain after the burn-in (``num_samples * thin`` sweeps).
    burn_in : int
        Burn-in sweeps per chain, discarded (``warmup=`` is its deprecated spelling). The
        defaults (1,000 burn-in sweeps, then 2,000 of which every 5th is kept: 400 draws)
        bring four chains of plain Bayesian MF on MovieLens-100K to R-hat <= 1.01 on every
        hyper-parameter and on the latent function at all but 1% of single cells
        (``benchmarks/chains.py``: 2 of 200 test cells above 1.01, max 1.014; at 200 + 400,
        27.5%; at 500 + 1,000, 8.5%), about 20 CPU seconds a chain there. A longer burn-in
        does not remove the last ones (2,000 + 400/5: 2%); twice the kept draws
        (``num_samples=800``) leave 0.5%, max 1.012, at 1.6 times the cost. With factor
        means and biases (ARD) the default thinning is 10 (4,000 sweeps after the burn-in):
        worst hyper-parameter 1.002-1.004 over three seeds, 1 of 200 cells above 1.01 (max
        1.010-1.020), about 60 CPU seconds a chain. For a quick look, ``burn_in=200,
        thin=1`` is five times cheaper and predicts as well (test RMSE equal within 0.001),
        but its chains still disagree at single cells.
    num_chains : int
        Independent chains, chain ``c`` seeded from ``(seed, c)``; with more than one,
        the R-hat of the hyper-parameters is computed and a warning logged above 1.01.
    thin : int, optional
        Keep every ``thin``-th sweep after the burn-in (memory stays at ``num_samples``
        draws however long the chain). Default 5, and 10 for a model with factor means and
        biases (ARD's usual set-up), whose bias scales mix more slowly (see the module
        notes): 1,000 + 4,000 sweeps, of which 400 are kept.
    parallel : bool, optional
        Run the chains in worker processes, as many at once as there are cores (forked
        on Linux, each single-threaded; spawned elsewhere, sharing the threads). Default:
        when there are several chains, several cores and the device is the CPU; ``False``
        runs them one after the other. The draws do not depend on it. With ``progress`` a
        bar counts the finished chains.
    rescale : bool
        Add the rescaling move ``U -> cU, V -> V/c`` to every sweep, and with factor
        means and biases the translation moves and the collapsed draw of the items' bias
        scale (see the module notes); without them the U/V scale ratio (and the item-bias
        scale) mix very slowly.
    init_std : float
        Standard deviation of the random initial factors (biases start at 0, scales at
        the model's initial values, the noise scale at 1).
    seed : int
        Seed of the run.
    device : str or torch.device, optional
        Where to sample (default: the model's device). The chains run in float64; the
        kept draws are stored in float32.
    progress : bool, optional
        Show a tqdm bar with the noise scale and the training RMSE (sequential chains;
        default: only in a terminal).

    Returns
    -------
    SampleFit
        Its ``draws`` are shaped ``(num_chains, num_samples, *shape)``.

    Examples
    --------
    >>> from bayesmf import data, inference, models
    >>> R, _ = data.synthetic_ratings(n_rows=60, n_cols=40, rank=2, density=0.4,
    ...                               noise=0.3, seed=0)
    >>> fit = inference.fit_gibbs(models.BayesianMF(60, 40, rank=2), R, num_samples=50,
    ...                           burn_in=30, progress=False)
    >>> fit.draws["U"].shape
    torch.Size([1, 50, 60, 2])
    >>> 0.2 < float(fit.draws["noise"].mean()) < 0.4
    True
    """
    if "warmup" in deprecated:
        burn_in = deprecated_kwarg(deprecated, "warmup", "burn_in", "fit_gibbs")
    if deprecated:
        raise TypeError(f"fit_gibbs() got unexpected keyword arguments {sorted(deprecated)}")
    if not isinstance(model, BayesianMF):
        raise TypeError(
            f"fit_gibbs samples BayesianMF (conditionally conjugate); use fit_svi for "
            f"{type(model).__name__}"
        )
    if getattr(model, "discrete", False):
        raise ValueError(
            "fit_gibbs samples the Gaussian likelihood only (its conditionals are conjugate); "
            "fit likelihood='discretized' with fit_svi, or use likelihood='gaussian' and "
            "map the predictive to the scale (diagnostics.interval_coverage(..., "
            "discretize=True))"
        )
    if thin is None:
        thin = _default_thin(model)
    if num_samples < 1 or burn_in < 0 or thin < 1 or num_chains < 1 or not init_std > 0:
        raise ValueError(
            "need num_samples >= 1, burn_in >= 0, thin >= 1, num_chains >= 1 and init_std > 0"
        )
    if device is not None:
        model.to(device)
    device = model.global_mean.device
    model.setup(train)
    train = train.to(device)
    opts = {"num_samples": num_samples, "burn_in": burn_in, "thin": thin,
            "num_chains": num_chains, "init_std": init_std, "seed": seed, "rescale": rescale}
    t0 = time.perf_counter()
    results, processes = run_chains(
        num_chains, parallel, device, _chain_worker,
        lambda c, threads: (model.config(), float(model.global_mean), train, opts, c, threads),
        lambda c: _run_chain(model, train, opts, c, show_progress(progress)),
        progress=show_progress(progress), desc="Gibbs chains",
    )
    seconds = time.perf_counter() - t0
    draws = {k: torch.stack([r[0][k] for r in results]) for k in results[0][0]}
    history = {k: [x for r in results for x in r[1][k]] for k in results[0][1]}
    accept_rate = float(np.mean(history["accept"]))
    if accept_rate < 0.5:
        log.warning("hyper-parameter acceptance rate %.2f is low", accept_rate)
    settings: dict[str, Any] = {
        "num_samples": num_samples, "burn_in": burn_in, "num_chains": num_chains,
        "thin": thin, "init_std": init_std, "seed": seed, "rescale": rescale,
        "device": str(device), "parallel": processes, "accept_rate": accept_rate,
    }
    if rescale:
        settings["accept_rate_rescale"] = float(np.mean(history["accept_rescale"]))
    if history.get("accept_bias_scale"):
        settings["accept_rate_bias_scale"] = float(np.mean(history["accept_bias_scale"]))
    if num_chains > 1:
        settings.update(chain_agreement("Gibbs", model, draws, train, seed))
    train_info = data_info(train)
    train_info["fingerprint"] = files.fingerprint(train)
    return SampleFit(model, draws, history, train_info, settings, seconds)
