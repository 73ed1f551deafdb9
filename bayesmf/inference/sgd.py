"""MAP matrix factorisation by minibatch stochastic gradient descent (Funk-style SVD).

:func:`sgd_mf` minimises, over shuffled minibatches :math:`B` of ratings, the
loss

.. math::

    L_B = \\frac{1}{|B|} \\sum_{(n,m) \\in B} \\Big[(x_{nm} - \\hat x_{nm})^2
          + \\lambda (\\lVert u_n \\rVert^2 + \\lVert v_m \\rVert^2)
          + \\lambda_b (b_n^2 + c_m^2)\\Big],
    \\qquad \\hat x_{nm} = \\mu + b_n + c_m + u_n^\\top v_m,

with the global mean :math:`\\mu` fixed at the training mean. The penalty is
applied *per rating* (as in Funk's SVD and most SGD recommenders): a row with
many ratings is penalised more often, so over an epoch this is the objective
``sum (x - x_hat)^2 + lambda * sum_n |Omega_n| ||u_n||^2 + ...``, i.e. the
count-weighted (ALS-WR-like) regulariser, not the plain Gaussian-prior MAP that
:func:`~bayesmf.inference.als` solves exactly.

Gradients are written by hand and accumulated with ``index_add_`` (one
vectorised update per minibatch), followed by heavy-ball momentum.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.containers import Ratings
from .als import MAPFactors, _check_positive, _check_rank

__all__ = ["sgd_mf"]

logger = logging.getLogger(__name__)


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def sgd_mf(
    ratings: Ratings,
    rank: int = 10,
    *,
    reg: float = 0.1,
    reg_bias: float | None = None,
    lr: float = 3.0,
    epochs: int = 25,
    batch_size: int = 1024,
    biases: bool = True,
    momentum: float = 0.9,
    lr_decay: float = 0.9,
    init_scale: float = 0.1,
    val: Ratings | None = None,
    patience: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> MAPFactors:
    """Fit a (biased) matrix factorisation by minibatch SGD with momentum.

    Parameters
    ----------
    ratings : Ratings
        Training entries.
    rank : int
        Number of latent dimensions ``K`` (>= 1).
    reg : float
        Per-rating L2 penalty ``lambda`` on the factors (> 0); see the module
        docstring for the exact loss.
    reg_bias : float, optional
        Per-rating L2 penalty on the biases; default ``reg``.
    lr : float
        Learning rate for the *batch-mean* loss. The update of a factor seen
        once in a batch is ``lr / batch_size`` times its per-rating gradient,
        so ``lr`` scales with ``batch_size`` (the defaults, ``lr=3`` with
        ``batch_size=1024``, correspond to a per-rating step of about 0.006
        before momentum).
    epochs : int
        Maximum number of passes over the data.
    batch_size : int
        Ratings per minibatch.
    biases : bool
        Fit row/column biases around the fixed training mean. When ``False``
        the model is ``x = u^T v`` (mean 0).
    momentum : float
        Heavy-ball momentum in ``[0, 1)``.
    lr_decay : float
        The learning rate is multiplied by this after every epoch (in ``(0, 1]``).
    init_scale : float
        Standard deviation of the random initial factors (biases start at 0).
    val : Ratings, optional
        Validation entries. The validation RMSE (of predictions clamped to the
        rating scale, when known) is recorded after every epoch in
        ``val_history`` and the parameters of the best epoch are returned.
    patience : int, optional
        With ``val``: stop after this many epochs without improvement of the
        validation RMSE (``converged`` is then ``True``).
    seed : int
        Seed of the local generator (initialisation and shuffling).
    device : str or torch.device, optional
        Where to compute; default the device of ``ratings``.
    progress : bool
        Show a tqdm progress bar over epochs.

    Returns
    -------
    MAPFactors
        ``history`` holds the epoch-average training loss, ``val_history`` the
        validation RMSE per epoch (with ``val``), ``n_iter`` the number of epochs
        run and ``converged`` whether early stopping triggered.

    Raises
    ------
    ValueError
        On a non-positive ``rank``, ``reg``, ``lr``, ``epochs`` or
        ``batch_size``, momentum outside ``[0, 1)``, ``patience`` without
        ``val``, or ``val`` of a different shape.

    Examples
    --------
    >>> from bayesmf.data import Ratings
    >>> R = Ratings([0, 0, 1, 1, 2], [0, 1, 1, 2, 0], [5.0, 3.0, 4.0, 1.0, 4.0],
    ...             shape=(3, 3), scale=(1, 5))
    >>> fit = sgd_mf(R, rank=2, lr=0.05, batch_size=2, epochs=20)
    >>> fit.n_iter, len(fit.history)
    (20, 20)
    >>> fit.predict(R, clamp_to=True).shape
    torch.Size([5])
    """
    if not isinstance(ratings, Ratings):
        raise ValueError(f"ratings must be a bayesmf.data.Ratings, got {type(ratings).__name__}")
    rank = _check_rank(rank)
    reg = _check_positive("reg", reg)
    reg_b = reg if reg_bias is None else _check_positive("reg_bias", reg_bias)
    lr = _check_positive("lr", lr)
    epochs = _check_int("epochs", epochs)
    batch_size = _check_int("batch_size", batch_size)
    if not (isinstance(momentum, numbers.Real) and 0.0 <= momentum < 1.0):
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if not (isinstance(lr_decay, numbers.Real) and 0.0 < lr_decay <= 1.0):
        raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay!r}")
    if not (isinstance(init_scale, numbers.Real) and init_scale >= 0):
        raise ValueError(f"init_scale must be >= 0, got {init_scale!r}")
    if val is not None:
        if not isinstance(val, Ratings):
            raise ValueError(f"val must be a Ratings, got {type(val).__name__}")
        if val.shape != ratings.shape:
            raise ValueError(f"val has shape {val.shape}, training data {ratings.shape}")
    if patience is not None:
        if val is None:
            raise ValueError("patience (early stopping) needs validation data: pass val=")
        patience = _check_int("patience", patience)

    dev = torch.device(device) if device is not None else ratings.device
    dt = ratings.values.dtype
    n_rows, n_cols = ratings.shape
    rows = ratings.rows.to(dev)
    cols = ratings.cols.to(dev)
    x = ratings.values.to(device=dev, dtype=dt)
    n = rows.shape[0]

    gen = torch.Generator().manual_seed(int(seed))
    U = (init_scale * torch.randn(n_rows, rank, generator=gen, dtype=dt)).to(dev)
    V = (init_scale * torch.randn(n_cols, rank, generator=gen, dtype=dt)).to(dev)
    b = torch.zeros(n_rows, dtype=dt, device=dev)
    c = torch.zeros(n_cols, dtype=dt, device=dev)
    mu = float(x.double().mean()) if biases else 0.0
    params = [U, V, b, c] if biases else [U, V]
    bufs = [torch.zeros_like(p) for p in params]
    grads = [torch.zeros_like(p) for p in params]

    fit = MAPFactors(U=U, V=V, row_bias=b if biases else None, col_bias=c if biases else None,
                     mean=mu, scale=ratings.scale)
    clamp = (val.scale or ratings.scale) if val is not None else None
    best_rmse = math.inf
    best_state: list[torch.Tensor] | None = None
    best_epoch = 0
    history: list[float] = []
    val_history: list[float] = []
    converged = False
    step = lr
    n_epochs = 0

    bar = tqdm(range(epochs), desc="SGD", disable=not progress, leave=False)
    for epoch in bar:
        perm = torch.randperm(n, generator=gen).to(dev)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            r, k, xb = rows[idx], cols[idx], x[idx]
            inv = 1.0 / idx.shape[0]
            u, v = U[r], V[k]
            pred = (u * v).sum(-1) + mu
            if biases:
                br, ck = b[r], c[k]
                pred = pred + br + ck
            err = pred - xb
            pen = reg * (u.pow(2).sum(-1) + v.pow(2).sum(-1))
            if biases:
                pen = pen + reg_b * (br.pow(2) + ck.pow(2))
            total += float((err.pow(2) + pen).sum())
            # gradients of the batch-mean loss, accumulated per row/column
            g = 2.0 * inv
            for t in grads:
                t.zero_()
            grads[0].index_add_(0, r, g * (err[:, None] * v + reg * u))
            grads[1].index_add_(0, k, g * (err[:, None] * u + reg * v))
            if biases:
                grads[2].index_add_(0, r, g * (err + reg_b * br))
                grads[3].index_add_(0, k, g * (err + reg_b * ck))
            for p, buf, gr in zip(params, bufs, grads, strict=True):
                buf.mul_(momentum).add_(gr)
                p.sub_(step * buf)
        loss = total / n
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"sgd_mf diverged at epoch {epoch + 1} (loss {loss}); lower lr"
            )
        history.append(loss)
        step *= lr_decay
        n_epochs = epoch + 1
        msg = f"sgd epoch {n_epochs}: train loss {loss:.6g}"
        if val is not None:
            vr = val.rows.to(dev)
            vc = val.cols.to(dev)
            pred = fit.predict(vr, vc, clamp_to=clamp if clamp else None)
            vrmse = float(torch.sqrt((pred.double() - val.values.to(dev).double()).pow(2).mean()))
            val_history.append(vrmse)
            msg += f", val RMSE {vrmse:.6g}"
            if vrmse < best_rmse:
                best_rmse, best_epoch = vrmse, n_epochs
                best_state = [p.clone() for p in params]
            elif patience is not None and n_epochs - best_epoch >= patience:
                converged = True
                logger.debug(msg)
                break
        logger.debug(msg)
        if progress:
            bar.set_postfix(loss=f"{loss:.4g}", **({"val": f"{val_history[-1]:.4g}"}
                                                    if val_history else {}))
    bar.close()
    if best_state is not None:
        for p, s in zip(params, best_state, strict=True):
            p.copy_(s)
        logger.info("sgd_mf: best validation RMSE %.5g at epoch %d of %d",
                    best_rmse, best_epoch, n_epochs)
    fit.history = history
    fit.val_history = val_history
    fit.converged = converged
    fit.n_iter = n_epochs
    return fit
