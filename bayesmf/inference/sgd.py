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
vectorised update per minibatch), followed by heavy-ball momentum, applied lazily: the
moves of rows a step does not touch are caught up in closed form when they are next
touched, so a step costs its batch and an epoch grows linearly with the ratings (the
result equals the dense update's up to rounding).
"""

from __future__ import annotations

import logging
import math
import numbers

import torch

from ..data.containers import Ratings
from . import files
from .als import MAPFactors
from .checks import check_int, check_positive, check_rank
from .fits import data_info
from .loop import train as run_loop
from .threads import uses_fit_threads

__all__ = ["sgd_mf"]

logger = logging.getLogger(__name__)


@uses_fit_threads
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
    progress: bool | None = None,
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
        Heavy-ball momentum in ``[0, 1)`` (applied lazily, see the module docstring).
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
    >>> fit.predict(R, clamp=True).shape
    torch.Size([5])
    """
    if not isinstance(ratings, Ratings):
        raise ValueError(f"ratings must be a bayesmf.data.Ratings, got {type(ratings).__name__}")
    rank = check_rank(rank)
    reg = check_positive("reg", reg)
    reg_b = reg if reg_bias is None else check_positive("reg_bias", reg_bias)
    lr = check_positive("lr", lr)
    epochs = check_int("epochs", epochs)
    batch_size = check_int("batch_size", batch_size)
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
        patience = check_int("patience", patience)

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
    # Each side is stepped as one array [factors | bias] with its momentum. The momentum is
    # lazy: a row untouched by a step still moves by its decaying momentum, and those moves
    # are applied in closed form when the row is next touched (and at the end of every
    # epoch), so that a step costs its batch, not the whole arrays.
    width = rank + int(biases)
    sides = [torch.zeros(size, width, dtype=dt, device=dev) for size in (n_rows, n_cols)]
    moms = [torch.zeros_like(w) for w in sides]
    done = [torch.zeros(size, dtype=torch.long, device=dev) for size in (n_rows, n_cols)]
    reg_vec = torch.full((width,), reg, dtype=dt, device=dev)
    if biases:
        reg_vec[rank] = reg_b

    state = torch.nn.Module()
    for name, t in zip(("U", "V", "row_bias", "col_bias"), params, strict=False):
        state.register_buffer(name, t)
    fit = MAPFactors(U=U, V=V, row_bias=b if biases else None, col_bias=c if biases else None,
                     mean=mu, scale=ratings.scale)
    clamp = (val.scale or ratings.scale) if val is not None else None
    n_steps = math.ceil(n / batch_size)
    epoch_data: list[torch.Tensor] = []
    t_done = [0]  # steps taken in this epoch
    step_size = [lr]

    def catch_up(a: int, index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Side ``a``'s rows ``index`` (all: ``None``) and their momentum, brought up to
        the steps taken: ``d`` skipped steps move a row by ``-lr * m (mu + ... + mu^d)``
        and decay its momentum ``m`` by ``mu^d`` (the step size is constant in an epoch)."""
        w, m, last = sides[a], moms[a], done[a]
        if index is not None:
            w, m, last = (t.index_select(0, index) for t in (w, m, last))
        decay = (momentum ** (t_done[0] - last).to(dt))[:, None]
        moved = (momentum / (1 - momentum)) * (1 - decay) * step_size[0]
        return w - moved * m, m * decay

    def load() -> None:  # the arrays (initial, or resumed from a checkpoint) into the sides
        for a, (f, bias) in enumerate(((U, b), (V, c))):
            sides[a][:, :rank] = f
            if biases:
                sides[a][:, rank] = bias
            done[a].zero_()
        t_done[0] = 0

    def flush() -> None:  # every row caught up (load() restarts the count), to the arrays
        for a, (f, bias) in enumerate(((U, b), (V, c))):
            w, m = catch_up(a, None)
            sides[a].copy_(w)
            moms[a].copy_(m)
            f.copy_(w[:, :rank])
            if biases:
                bias.copy_(w[:, rank])

    def step(epoch: int, s: int) -> float:
        if s == 0:
            perm = torch.randperm(n, generator=gen).to(dev)
            epoch_data[:] = [t.index_select(0, perm) for t in (rows, cols, x)]
            step_size[0] = lr * lr_decay**epoch
            load()
        lo = s * batch_size
        r, k, xb = (t[lo : lo + batch_size] for t in epoch_data)
        (wu, mom_u), (wv, mom_v) = catch_up(0, r), catch_up(1, k)
        u, v = wu[:, :rank], wv[:, :rank]
        pred = (u * v).sum(-1) + mu
        pen = reg * (u.pow(2).sum(-1) + v.pow(2).sum(-1))
        if biases:
            pred = pred + wu[:, rank] + wv[:, rank]
            pen = pen + reg_b * (wu[:, rank].pow(2) + wv[:, rank].pow(2))
        err = pred - xb
        # gradients of the batch-mean loss: d/d[u, b] = 2/B (err [v, 1] + [reg u, reg_b b])
        g = 2.0 / len(xb)
        other_u, other_v = wv.clone(), wu.clone()
        if biases:
            other_u[:, rank] = 1.0
            other_v[:, rank] = 1.0
        grad_u = torch.addcmul(reg_vec * wu, err[:, None], other_u).mul_(g)
        grad_v = torch.addcmul(reg_vec * wv, err[:, None], other_v).mul_(g)
        t_done[0] += 1
        for a, index, w, m, grad in ((0, r, wu, mom_u, grad_u), (1, k, wv, mom_v, grad_v)):
            # momentum m <- mu m + (summed) gradient; duplicates of a row write the same
            moms[a].index_copy_(0, index, m.mul_(momentum))
            moms[a].index_add_(0, index, grad)
            sides[a].index_copy_(0, index, w.sub_(step_size[0] * moms[a].index_select(0, index)))
            done[a].index_fill_(0, index, t_done[0])
        if s == n_steps - 1:
            flush()
        # the epoch-average loss per rating (the loop averages over steps)
        return float((err.pow(2) + pen).sum()) * n_steps / n

    def evaluate() -> float:
        pred = fit.predict(val.rows.to(dev), val.cols.to(dev), clamp=clamp or False)
        return float(torch.sqrt((pred.double() - val.values.to(dev).double()).pow(2).mean()))

    res = run_loop(
        step, {"factors": state}, epochs=epochs, steps_per_epoch=n_steps, lr=lr,
        final_lr=lr * lr_decay**epochs if lr_decay < 1 else lr, optimizer="none",
        evaluate=None if val is None else evaluate, patience=patience, generators=[gen],
        progress=progress, desc="SGD", engine="SGD",
    )
    fit.history = res.history["loss"]
    fit.val_history = res.history["val"]
    fit.converged = res.stopped_early
    fit.n_iter = res.epochs_run
    fit.fit_seconds = res.seconds
    fit.settings = {
        "engine": "sgd", "rank": rank, "reg": reg, "reg_bias": reg_b, "lr": lr,
        "epochs": epochs, "batch_size": batch_size, "biases": biases, "momentum": momentum,
        "lr_decay": lr_decay, "init_scale": init_scale, "patience": patience, "seed": seed,
    }
    fit.train_info = {**data_info(ratings), "fingerprint": files.fingerprint(ratings)}
    if res.best_epoch is not None:
        logger.info("sgd_mf: best validation RMSE %.5g at epoch %d of %d",
                    res.best_score, res.best_epoch + 1, res.epochs_run)
    return fit
