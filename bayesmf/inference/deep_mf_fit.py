"""MAP fitting of the deep two-branch MF models (DMF, DMF-D) and extension to new rows/columns.

:func:`fit_deep_mf` minimises the paper's objective -- the mean squared error on the
observed training entries (on the ``[-1, 1]`` scale) plus the model's penalty
``gamma ||W||^2`` (``+ gamma_2 ||b - b~||^2`` for DMF-D) -- with Adam over shuffled
minibatches of training entries. This is the MAP estimate of the model's Pyro model
(:meth:`bayesmf.models.DeepMF.model`).

Inputs are built from the **training entries only**: the row vectors ``X_i`` and column
vectors ``Y_j`` are rows and columns of the sparse training matrix. Each step embeds all
rows and columns at once (the first layer is a sparse-dense product, so its cost is
proportional to the number of training ratings) and evaluates the loss on a minibatch of
entries. With ``exclude_targets=True`` the minibatch's own entries are removed from the
inputs of that step, so the network learns to predict entries that are *not* in its
inputs -- the situation of every prediction at test time (an improvement over the paper,
which feeds the targets in; off by default).

:class:`DeepMFFit` predicts for known rows x known columns (area I) and, with no
retraining, for new rows given their ratings on the known columns (area II), new columns
given their ratings by the known rows (area III), and new rows x new columns (area IV).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.containers import Ratings
from ..models.deep_mf import DeepMF, DiscreteDeepMF, rating_matrix

__all__ = ["fit_deep_mf", "DeepMFFit", "reindex", "geometric_schedule"]

logger = logging.getLogger(__name__)


def geometric_schedule(start: float, end: float, epochs: int) -> Callable[[int], float]:
    """``lambda`` rising geometrically from ``start`` (epoch 0) to ``end`` (last epoch).

    Examples
    --------
    >>> s = geometric_schedule(1.0, 100.0, 3)
    >>> [round(s(e), 6) for e in range(3)]
    [1.0, 10.0, 100.0]
    """
    if not (start > 0 and end > 0):
        raise ValueError(f"start and end must be positive, got {start}, {end}")
    ratio = (end / start) ** (1.0 / max(epochs - 1, 1))
    return lambda epoch: float(start * ratio ** min(epoch, max(epochs - 1, 0)))


def reindex(
    ratings: Ratings, rows: torch.Tensor | np.ndarray, cols: torch.Tensor | np.ndarray,
    name: str | None = None,
) -> Ratings:
    """The entries of ``ratings`` in ``rows x cols``, re-indexed onto that sub-matrix.

    Row ``k`` of the result is row ``rows[k]`` of ``ratings`` (likewise for columns);
    id maps, features and scale follow. Entries outside the sub-matrix are dropped.

    Examples
    --------
    >>> R = Ratings([0, 1, 2], [0, 2, 1], [1.0, 2.0, 3.0], shape=(3, 3))
    >>> S = reindex(R, [2, 1], [1, 2])
    >>> S.shape, S.rows.tolist(), S.cols.tolist(), S.values.tolist()
    ((2, 2), [1, 0], [1, 0], [2.0, 3.0])
    """
    dev = ratings.rows.device
    rows = torch.as_tensor(rows, dtype=torch.long, device=dev)
    cols = torch.as_tensor(cols, dtype=torch.long, device=dev)
    new_row = torch.full((ratings.n_rows,), -1, dtype=torch.long, device=dev)
    new_row[rows] = torch.arange(rows.numel(), device=dev)
    new_col = torch.full((ratings.n_cols,), -1, dtype=torch.long, device=dev)
    new_col[cols] = torch.arange(cols.numel(), device=dev)
    r, c = new_row[ratings.rows], new_col[ratings.cols]
    keep = (r >= 0) & (c >= 0)
    rf, cf = ratings.row_features, ratings.col_features
    r_np, c_np = rows.cpu().numpy(), cols.cpu().numpy()
    return Ratings(
        r[keep], c[keep], ratings.values[keep], shape=(rows.numel(), cols.numel()),
        row_ids=ratings.row_ids[r_np], col_ids=ratings.col_ids[c_np],
        row_features=None if rf is None else rf[rows.to(rf.device)],
        col_features=None if cf is None else cf[cols.to(cf.device)],
        row_feature_names=ratings.row_feature_names,
        col_feature_names=ratings.col_feature_names,
        scale=ratings.scale, name=name or ratings.name, _validate=len(r[keep]) > 0,
    )


def _rows_cols(data: Ratings | tuple[Any, Any], device: torch.device) -> tuple[Any, Any]:
    if isinstance(data, Ratings):
        return data.rows.to(device), data.cols.to(device)
    r, c = data
    return (torch.as_tensor(r, dtype=torch.long, device=device),
            torch.as_tensor(c, dtype=torch.long, device=device))


@dataclass
class DeepMFFit:
    """A fitted DMF / DMF-D with the training matrix its inputs are built from.

    Attributes
    ----------
    model : DeepMF
        The fitted model (best validation epoch when validation data was given).
    train : Ratings
        The training ratings; the inputs of known rows/columns are built from them only.
    history : dict of lists
        Per epoch: ``loss`` (objective), ``lam`` (DMF-D), ``val_rmse``/``val_mae``.
    settings : dict
        The options of the fit.
    fit_seconds : float
        Wall-clock time of the optimisation.
    best_epoch : int
        Epoch (1-based) whose parameters were kept.
    """

    model: DeepMF
    train: Ratings
    history: dict[str, list[float]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    fit_seconds: float = 0.0
    best_epoch: int = 0
    _cache: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------- embeddings
    @torch.no_grad()
    def row_factors(self, observed: Ratings | None = None) -> torch.Tensor:
        """``h_X`` of row vectors built from ``observed`` (shape ``(k, n_cols)``);
        default: the training matrix (cached)."""
        if observed is None:
            if "U" not in self._cache:
                X = rating_matrix(self.train, self.model.to_unit, device=self.device)
                self._cache["U"] = self.model.embed_rows(X)
            return self._cache["U"]
        if observed.n_cols != self.model.n_cols:
            raise ValueError(f"new rows must have {self.model.n_cols} columns (the known "
                             f"columns), got shape {observed.shape}")
        X = rating_matrix(observed, self.model.to_unit, device=self.device)
        return self.model.embed_rows(X)

    @torch.no_grad()
    def col_factors(self, observed: Ratings | None = None) -> torch.Tensor:
        """``h_Y`` of column vectors built from ``observed`` (shape ``(n_rows, k)``: the
        ratings of ``k`` columns by the known rows); default: the training matrix."""
        if observed is None:
            if "V" not in self._cache:
                Y = rating_matrix(self.train.transpose(), self.model.to_unit, device=self.device)
                self._cache["V"] = self.model.embed_cols(Y)
            return self._cache["V"]
        if observed.n_rows != self.model.n_rows:
            raise ValueError(f"new columns must have {self.model.n_rows} rows (the known "
                             f"rows), got shape {observed.shape}")
        Y = rating_matrix(observed.transpose(), self.model.to_unit, device=self.device)
        return self.model.embed_cols(Y)

    # -------------------------------------------------------------- predicting
    @torch.no_grad()
    def _predict(
        self, U: torch.Tensor, V: torch.Tensor, data: Ratings | tuple[Any, Any],
        discrete: str | None,
    ) -> torch.Tensor:
        rows, cols = _rows_cols(data, U.device)
        cos = self.model.cosine(U[rows], V[cols])
        if discrete is None:
            out = self.model.output(cos)
        elif discrete == "hard":
            if not isinstance(self.model, DiscreteDeepMF):
                raise ValueError("discrete='hard' needs a DiscreteDeepMF; use 'round' for DMF")
            out = self.model.hard_output(cos)
        elif discrete == "round":
            out = self.model.output(cos)
        else:
            raise ValueError(f"discrete must be None, 'hard' or 'round', got {discrete!r}")
        pred = self.model.to_rating(out).clamp(*self.model.scale)
        if discrete == "round":
            pred = torch.round(pred)
        return pred

    def predict(
        self, data: Ratings | tuple[Any, Any], discrete: str | None = None
    ) -> torch.Tensor:
        """Predicted ratings (original scale, within it) at known rows x known columns.

        Parameters
        ----------
        data : Ratings or (rows, cols)
            Entries to predict (indices into the training matrix).
        discrete : {None, "hard", "round"}
            ``None``: the model's output (DMF: cosine; DMF-D: ``G_{lambda,b}`` at the
            final ``lambda``); ``"hard"``: DMF-D's hard quantizer (``lambda -> inf``);
            ``"round"``: round to the nearest integer rating.
        """
        return self._predict(self.row_factors(), self.col_factors(), data, discrete)

    def predict_new_rows(
        self, observed: Ratings, data: Ratings | tuple[Any, Any], discrete: str | None = None
    ) -> torch.Tensor:
        """Predictions for new rows (area II), no retraining.

        Parameters
        ----------
        observed : Ratings, shape (k, n_cols)
            The new rows' observed ratings on the known columns (their input vectors).
        data : Ratings or (rows, cols)
            Entries to predict: rows index the ``k`` new rows, columns the known ones.
        """
        return self._predict(self.row_factors(observed), self.col_factors(), data, discrete)

    def predict_new_cols(
        self, observed: Ratings, data: Ratings | tuple[Any, Any], discrete: str | None = None
    ) -> torch.Tensor:
        """Predictions for new columns (area III): ``observed`` has shape ``(n_rows, k)``
        (the new columns' ratings by the known rows); ``data`` indexes known rows x the
        ``k`` new columns."""
        return self._predict(self.row_factors(), self.col_factors(observed), data, discrete)

    def predict_new(
        self, row_observed: Ratings, col_observed: Ratings, data: Ratings | tuple[Any, Any],
        discrete: str | None = None,
    ) -> torch.Tensor:
        """Predictions for new rows x new columns (area IV) from the new rows' ratings on
        known columns (``(k_r, n_cols)``) and the new columns' ratings by known rows
        (``(n_rows, k_c)``)."""
        U = self.row_factors(row_observed)
        V = self.col_factors(col_observed)
        return self._predict(U, V, data, discrete)


def _check_pos_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def fit_deep_mf(
    model: DeepMF,
    train: Ratings,
    *,
    epochs: int = 50,
    batch_size: int | None = 8192,
    lr: float = 1e-3,
    final_lr: float | None = None,
    gamma: float | None = None,
    gamma_b: float | None = None,
    lam_schedule: Callable[[int], float] | tuple[float, float] | None = None,
    boundary_lr: float | None = None,
    loss: str = "mse",
    exclude_targets: bool = False,
    val: Ratings | None = None,
    patience: int | None = None,
    monitor: str = "rmse",
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> DeepMFFit:
    """Fit DMF / DMF-D by Adam on minibatches of the observed training entries.

    Parameters
    ----------
    model : DeepMF or DiscreteDeepMF
        The model, built for ``train.shape``; training starts from its current
        parameters (so a fitted DMF's weights can warm-start a DMF-D).
    train : Ratings
        Training ratings; the only source of the input vectors.
    epochs : int
        Passes over the training entries.
    batch_size : int or None
        Entries per step (``None``: all, full-batch gradient).
    lr, final_lr : float
        Adam learning rate, decayed exponentially to ``final_lr`` (default: constant).
    gamma, gamma_b : float, optional
        Override the model's weight decay ``gamma`` and (DMF-D) boundary penalty ``gamma_2``.
    lam_schedule : callable or (float, float), optional
        DMF-D: ``lambda`` per epoch (``epoch -> lambda``) or ``(start, end)`` for a
        geometric rise over the epochs. Default ``(1, 100)``.
    boundary_lr : float, optional
        DMF-D: Adam learning rate of the quantizer boundaries (default ``lr``); the
        boundaries are few and shared by all entries, so a larger rate lets them move
        within a short fine-tuning.
    loss : {"mse", "l1"}
        Data term: the paper's mean squared error (default), or the mean absolute error
        (a departure from the paper: with a quantized output it targets the conditional
        median level, which is what minimises the MAE of discrete predictions).
    exclude_targets : bool
        Remove each minibatch's entries from that step's inputs (see module docstring).
    val : Ratings, optional
        Validation entries (same shape): RMSE/MAE per epoch; the best epoch's parameters
        are kept. DMF-D is validated on its hard (``lambda -> inf``) predictions.
    patience : int, optional
        With ``val``: stop after this many epochs without improvement.
    monitor : {"rmse", "mae"}
        Validation metric for selecting the epoch.
    seed : int
        Seed of the minibatch order (the model's initialisation is the caller's).
    device : str or torch.device, optional
        Where to fit (default: the model's device).
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    DeepMFFit

    Raises
    ------
    ValueError
        On a shape mismatch, bad options, or ``patience`` without ``val``.
    FloatingPointError
        When the objective becomes NaN/inf.

    Examples
    --------
    >>> import torch
    >>> from bayesmf import data, models
    >>> R, _ = data.synthetic_ratings(40, 30, rank=2, density=0.5, seed=0)
    >>> R = R.replace(scale=(1.0, 5.0), values=R.values.clamp(1, 5))
    >>> _ = torch.manual_seed(0)
    >>> m = models.DeepMF(40, 30, hidden=(16,), latent_dim=4)
    >>> fit = fit_deep_mf(m, R, epochs=5, batch_size=None, lr=1e-2)
    >>> len(fit.history["loss"]), fit.predict(R).shape
    (5, torch.Size([600]))
    """
    if not isinstance(model, DeepMF):
        raise TypeError(f"fit_deep_mf fits DeepMF/DiscreteDeepMF, got {type(model).__name__}")
    if not isinstance(train, Ratings):
        raise TypeError(f"train must be a Ratings, got {type(train).__name__}")
    if train.shape != (model.n_rows, model.n_cols):
        raise ValueError(f"train has shape {train.shape}, the model takes "
                         f"({model.n_rows}, {model.n_cols})")
    epochs = _check_pos_int("epochs", epochs)
    if batch_size is not None:
        batch_size = _check_pos_int("batch_size", batch_size)
    if not lr > 0 or (final_lr is not None and not final_lr > 0):
        raise ValueError(f"lr and final_lr must be positive, got {lr}, {final_lr}")
    if loss not in ("mse", "l1"):
        raise ValueError(f"loss must be 'mse' or 'l1', got {loss!r}")
    if monitor not in ("rmse", "mae"):
        raise ValueError(f"monitor must be 'rmse' or 'mae', got {monitor!r}")
    if val is not None and val.shape != train.shape:
        raise ValueError(f"val has shape {val.shape}, train {train.shape}")
    if patience is not None:
        if val is None:
            raise ValueError("patience (early stopping) needs validation data: pass val=")
        patience = _check_pos_int("patience", patience)
    discrete = isinstance(model, DiscreteDeepMF)
    if gamma is not None:
        model.gamma = float(gamma)
    if gamma_b is not None:
        if not discrete:
            raise ValueError("gamma_b applies to DiscreteDeepMF only")
        model.gamma_b = float(gamma_b)
    if lam_schedule is None:
        lam_schedule = (1.0, 100.0)
    if isinstance(lam_schedule, tuple):
        lam_fn = geometric_schedule(*lam_schedule, epochs)
    else:
        lam_fn = lam_schedule

    if device is not None:
        model.to(device)
    dev = next(model.parameters()).device
    rows, cols = train.rows.to(dev), train.cols.to(dev)
    target = model.to_unit(train.values.to(dev, torch.float32))
    n = rows.numel()
    bs = n if batch_size is None else min(batch_size, n)
    X_full, Y_full = model.inputs(train, device=dev)
    settings = {
        "model": type(model).__name__, "config": model.config(), "epochs": epochs,
        "batch_size": bs, "lr": lr, "final_lr": final_lr, "exclude_targets": exclude_targets,
        "lam_schedule": [lam_fn(0), lam_fn(epochs - 1)] if discrete else None,
        "boundary_lr": boundary_lr, "loss": loss,
        "patience": patience, "monitor": monitor, "seed": seed, "device": str(dev),
    }
    b_params = [model.quantizer.boundaries] if discrete else []
    b_params = [p for p in b_params if isinstance(p, torch.nn.Parameter)]
    net_params = [p for p in model.parameters() if all(p is not b for b in b_params)]
    groups: list[dict[str, Any]] = [{"params": net_params}]
    if b_params:
        groups.append({"params": b_params, "lr": boundary_lr or lr})
    opt = torch.optim.Adam(groups, lr=lr)
    sched = None
    if final_lr is not None:
        gamma_lr = (final_lr / lr) ** (1.0 / max(epochs - 1, 1))
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma_lr)
    gen = torch.Generator().manual_seed(int(seed))
    history: dict[str, list[float]] = {"loss": []}
    if discrete:
        history["lam"] = []
    if val is not None:
        history["val_rmse"], history["val_mae"] = [], []
    fit = DeepMFFit(model=model, train=train, history=history, settings=settings)
    best = {"score": math.inf, "epoch": 0, "state": None}
    val_t = None if val is None else val.values.to(dev).double()
    t0 = time.perf_counter()
    bar = tqdm(range(epochs), desc=type(model).__name__, disable=not progress, leave=False)
    model.train()
    for epoch in bar:
        if discrete:
            model.set_lam(lam_fn(epoch))
            history["lam"].append(float(model.quantizer.lam))
        perm = torch.randperm(n, generator=gen).to(dev)
        total = 0.0
        for start in range(0, n, bs):
            idx = perm[start:start + bs]
            if exclude_targets and bs < n:
                keep = torch.ones(n, dtype=torch.bool, device=dev)
                keep[idx] = False
                X = torch.sparse_coo_tensor(
                    torch.stack([rows[keep], cols[keep]]), target[keep], train.shape,
                    check_invariants=False,
                ).coalesce()
                Y = X.t().coalesce()
            else:
                X, Y = X_full, Y_full
            U = model.embed_rows(X)
            V = model.embed_cols(Y)
            pred = model.predict_unit(U, V, rows[idx], cols[idx])
            obj = model.objective(pred, target[idx], loss=loss)
            opt.zero_grad(set_to_none=True)
            obj.backward()
            opt.step()
            total += float(obj.detach()) * idx.numel()
        loss_epoch = total / n
        if not math.isfinite(loss_epoch):
            raise FloatingPointError(f"fit_deep_mf diverged at epoch {epoch + 1}; lower lr")
        history["loss"].append(loss_epoch)
        if sched is not None:
            sched.step()
        msg = {"loss": f"{loss_epoch:.4g}"}
        if val is not None:
            model.eval()
            fit._cache.clear()
            p = fit.predict(val, discrete="hard" if discrete else None).double()
            v_rmse = float(torch.sqrt((p - val_t).pow(2).mean()))
            v_mae = float((p - val_t).abs().mean())
            model.train()
            history["val_rmse"].append(v_rmse)
            history["val_mae"].append(v_mae)
            msg["val_rmse"] = f"{v_rmse:.4f}"
            score = v_rmse if monitor == "rmse" else v_mae
            if score < best["score"]:
                best = {"score": score, "epoch": epoch + 1,
                        "state": copy.deepcopy(model.state_dict())}
            elif patience is not None and epoch + 1 - best["epoch"] >= patience:
                logger.debug("early stop at epoch %d", epoch + 1)
                break
        logger.debug("epoch %d: %s", epoch + 1, msg)
        if progress:
            bar.set_postfix(**msg)
    bar.close()
    if best["state"] is not None:
        model.load_state_dict(best["state"])
        fit.best_epoch = int(best["epoch"])
    else:
        fit.best_epoch = len(history["loss"])
    model.eval()
    fit._cache.clear()
    fit.fit_seconds = time.perf_counter() - t0
    return fit
