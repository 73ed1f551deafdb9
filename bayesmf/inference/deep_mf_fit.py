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
given their ratings by the known rows (area III), and new rows x new columns (area IV). It is
a :class:`~bayesmf.inference.fits.Fit` (a point estimate: no posterior): ``fit.save(path)``
and :func:`bayesmf.inference.load` round-trip it, with the training ratings its inputs are
built from.

The optimisation runs in the one training loop (:func:`bayesmf.inference.loop.train`):
learning-rate decay, clipping, validation, patience, keeping the best state, checkpoints and
divergence errors are the loop's; DMF-D's ``lambda`` is set at the first step of each epoch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.containers import Ratings
from ..models.deep_mf import DeepMF, DiscreteDeepMF, rating_matrix
from . import files
from .checks import check_int, check_positive
from .fits import Fit, check_statistic, data_info
from .loop import train as run_loop
from .threads import uses_fit_threads

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


_MODEL_CLASSES: dict[str, type[DeepMF]] = {"DeepMF": DeepMF, "DiscreteDeepMF": DiscreteDeepMF}


def _ratings_payload(r: Ratings) -> dict[str, Any]:
    """The training ratings as tensors and plain values (ids of any type via encode_ids)."""
    return {
        "rows": r.rows.detach().cpu(), "cols": r.cols.detach().cpu(),
        "values": r.values.detach().cpu(), "shape": list(r.shape),
        "scale": None if r.scale is None else [float(s) for s in r.scale], "name": r.name,
        "row_ids": files.encode_ids(r.row_ids), "col_ids": files.encode_ids(r.col_ids),
    }


def _ratings_from(p: dict[str, Any], device: torch.device) -> Ratings:
    return Ratings(
        p["rows"].to(device), p["cols"].to(device), p["values"].to(device),
        shape=tuple(p["shape"]), row_ids=files.decode_ids(p["row_ids"]),
        col_ids=files.decode_ids(p["col_ids"]),
        scale=None if p["scale"] is None else tuple(p["scale"]), name=p["name"],
    )


@dataclass
class DeepMFFit(Fit):
    """A fitted DMF / DMF-D with the training matrix its inputs are built from.

    A point estimate (MAP): :meth:`predict_interval` and :meth:`to_inference_data` raise
    :class:`~bayesmf.inference.fits.NoPosteriorError`.

    Attributes
    ----------
    model : DeepMF
        The fitted model (best validation epoch when validation data was given).
    train : Ratings
        The training ratings; the inputs of known rows/columns are built from them only.
    history : dict of lists
        Per epoch: ``loss`` (objective), ``lr``, ``lam`` (DMF-D); per evaluation:
        ``val_rmse``/``val_mae``, ``val`` (the monitored one) and ``val_epoch`` (0-based).
    settings : dict
        The options of the fit.
    fit_seconds : float
        Wall-clock time of the optimisation.
    best_epoch : int
        Epoch (1-based) whose parameters were kept.
    train_info : dict
        Shape, name, scale, original ids and fingerprint of the training data.
    """

    model: DeepMF
    train: Ratings
    history: dict[str, list[float]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    fit_seconds: float = 0.0
    best_epoch: int = 0
    train_info: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    kind = "DeepMFFit"
    has_posterior = False
    inference_name = "MAP (deep MF)"

    def __post_init__(self) -> None:
        if not self.train_info:
            fp = files.fingerprint(self.train)
            self.train_info = {**data_info(self.train), "fingerprint": fp}

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
        discrete: str | None, clamp: bool = False,
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
        if clamp:
            scale = getattr(data, "scale", None) or self.train.scale or self.model.scale
            pred = pred.clamp(float(scale[0]), float(scale[1]))
        return pred

    def predict(
        self,
        data: Ratings | tuple[Any, Any],
        *,
        clamp: bool = False,
        num_samples: int | None = None,
        seed: int = 0,
        statistic: str = "mean",
        discrete: str | None = None,
    ) -> torch.Tensor:
        """Predicted ratings (original scale, within the model's) at known rows x known columns.

        Parameters
        ----------
        data : Ratings or (rows, cols)
            Entries to predict (indices into the training matrix).
        clamp : bool
            Also clamp to the scale of ``data`` (or, failing that, of the training data).
            The cosine output always lies within the model's scale already.
        num_samples, seed, statistic
            Ignored (a point estimate: its mean and median are the point); accepted so every
            fit is called alike.
        discrete : {None, "hard", "round"}
            ``None``: the model's output (DMF: cosine; DMF-D: ``G_{lambda,b}`` at the
            final ``lambda``); ``"hard"``: DMF-D's hard quantizer (``lambda -> inf``);
            ``"round"``: round to the nearest integer rating.

        Returns
        -------
        torch.Tensor, shape (n,)
        """
        check_statistic(statistic)
        return self._predict(self.row_factors(), self.col_factors(), data, discrete, clamp)

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
        discrete : {None, "hard", "round"}
            As in :meth:`predict`.
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

    # ----------------------------------------------------------------- saving
    def _payload(self) -> dict[str, Any]:
        return {
            **self._common_payload(),
            "model_class": type(self.model).__name__,
            "model_config": self.model.config(),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "train": _ratings_payload(self.train),
            "best_epoch": int(self.best_epoch),
        }

    @classmethod
    def _from_payload(
        cls, payload: dict[str, Any], device: str | torch.device | None = None
    ) -> DeepMFFit:
        name = payload["model_class"]
        if name not in _MODEL_CLASSES:
            raise ValueError(f"unknown deep MF model class {name!r}")
        with torch.random.fork_rng(devices=[]):  # building the model must not move the RNG
            model = _MODEL_CLASSES[name](**payload["model_config"])
        model.load_state_dict(payload["state_dict"])
        dev = torch.device(device) if device is not None else torch.device("cpu")
        model.to(dev).eval()
        train = _ratings_from(payload["train"], dev)
        return cls(model=model, train=train, best_epoch=payload["best_epoch"],
                   **cls._common_from(payload))


def _lam_schedule(
    lam_schedule: Callable[[int], float] | tuple[float, float] | list[float] | None, epochs: int
) -> tuple[Callable[[int], float], list[float]]:
    """The ``lambda`` of each epoch and a plain record of the schedule (for settings)."""
    if lam_schedule is None:
        lam_schedule = (1.0, 100.0)
    if isinstance(lam_schedule, (tuple, list)):
        if len(lam_schedule) != 2:
            raise ValueError(f"lam_schedule must be (start, end), got {lam_schedule!r}")
        start, end = (float(v) for v in lam_schedule)
        return geometric_schedule(start, end, epochs), [start, end]
    if not callable(lam_schedule):
        raise TypeError(f"lam_schedule must be callable or (start, end), got {lam_schedule!r}")
    values = [float(lam_schedule(e)) for e in range(epochs)]
    return lam_schedule, values


@uses_fit_threads
def fit_deep_mf(
    model: DeepMF,
    train: Ratings,
    *,
    epochs: int = 50,
    batch_size: int | None = 8192,
    lr: float = 1e-3,
    final_lr: float | None = None,
    clip_norm: float | None = None,
    gamma: float | None = None,
    gamma_b: float | None = None,
    lam_schedule: Callable[[int], float] | tuple[float, float] | None = None,
    boundary_lr: float | None = None,
    loss: str = "mse",
    exclude_targets: bool = False,
    val: Ratings | None = None,
    patience: int | None = None,
    eval_every: int = 1,
    monitor: str = "rmse",
    seed: int = 0,
    device: str | torch.device | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    progress: bool | None = None,
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
        Adam learning rate, decayed exponentially per epoch to ``final_lr``. The default
        (``None``) is a constant rate, ``final_lr = lr`` -- unlike the other engines'
        ``lr / 10``: the DMF/DMF-D settings were tuned at a constant rate, and decaying to
        ``lr / 10`` changes their results beyond the run-to-run noise (most for short fits
        and for DMF-D fine-tuning, whose boundaries move at ``boundary_lr``).
    clip_norm : float, optional
        Gradient norm clipping (default: none).
    gamma, gamma_b : float, optional
        Override the model's weight decay ``gamma`` and (DMF-D) boundary penalty ``gamma_2``.
    lam_schedule : callable or (float, float), optional
        DMF-D: ``lambda`` per epoch (``epoch -> lambda``) or ``(start, end)`` for a
        geometric rise over the epochs. Default ``(1, 100)``. It is set at the first step of
        each epoch.
    boundary_lr : float, optional
        DMF-D: Adam learning rate of the quantizer boundaries (default ``lr``; decayed by
        the same factor as ``lr``); the boundaries are few and shared by all entries, so a
        larger rate lets them move within a short fine-tuning.
    loss : {"mse", "l1"}
        Data term: the paper's mean squared error (default), or the mean absolute error
        (a departure from the paper: with a quantized output it targets the conditional
        median level, which is what minimises the MAE of discrete predictions).
    exclude_targets : bool
        Remove each minibatch's entries from that step's inputs (see module docstring).
    val : Ratings, optional
        Validation entries (same shape): RMSE/MAE every ``eval_every`` epochs; the best
        evaluation's parameters are kept. DMF-D is validated on its hard
        (``lambda -> inf``) predictions.
    patience : int, optional
        With ``val``: stop after this many evaluations without improvement.
    eval_every : int
        Evaluate on ``val`` every this many epochs.
    monitor : {"rmse", "mae"}
        Validation metric for selecting the epoch.
    seed : int
        Seed of the minibatch order (the model's initialisation is the caller's).
    device : str or torch.device, optional
        Where to fit (default: the model's device).
    checkpoint, checkpoint_every, resume
        Checkpoint file (written every ``checkpoint_every`` epochs and at the end); an
        existing one is resumed from (``resume=True``) when it was written for the same data
        and settings, else refused with
        :class:`~bayesmf.inference.files.ResumeMismatch` naming what differs;
        ``resume=False`` starts afresh and overwrites it. The result equals an
        uninterrupted run.
    stop_after : int, optional
        Stop (as if killed) after this many epochs of this call.
    progress : bool, optional
        Show a tqdm bar (default: only in a terminal).

    Returns
    -------
    DeepMFFit

    Raises
    ------
    ValueError
        On a shape mismatch, bad options, or ``patience`` without ``val``.
    FloatingPointError
        When the objective or a parameter becomes NaN/inf; the message names the epoch, the
        step and the last good checkpoint.

    Examples
    --------
    >>> import torch
    >>> from bayesmf import data, models
    >>> R, _ = data.synthetic_ratings(40, 30, rank=2, density=0.5, seed=0)
    >>> R = R.replace(scale=(1.0, 5.0), values=R.values.clamp(1, 5))
    >>> _ = torch.manual_seed(0)
    >>> m = models.DeepMF(40, 30, hidden=(16,), rank=4)
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
    epochs = check_int("epochs", epochs)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size)
    lr = check_positive("lr", lr)
    final_lr = lr if final_lr is None else check_positive("final_lr", final_lr)
    if clip_norm is not None:
        clip_norm = check_positive("clip_norm", clip_norm)
    if boundary_lr is not None:
        boundary_lr = check_positive("boundary_lr", boundary_lr)
    eval_every = check_int("eval_every", eval_every)
    if loss not in ("mse", "l1"):
        raise ValueError(f"loss must be 'mse' or 'l1', got {loss!r}")
    if monitor not in ("rmse", "mae"):
        raise ValueError(f"monitor must be 'rmse' or 'mae', got {monitor!r}")
    if val is not None and val.shape != train.shape:
        raise ValueError(f"val has shape {val.shape}, train {train.shape}")
    if patience is not None:
        if val is None:
            raise ValueError("patience (early stopping) needs validation data: pass val=")
        patience = check_int("patience", patience)
    discrete = isinstance(model, DiscreteDeepMF)
    if gamma is not None:
        model.gamma = float(gamma)
    if gamma_b is not None:
        if not discrete:
            raise ValueError("gamma_b applies to DiscreteDeepMF only")
        model.gamma_b = float(gamma_b)
    lam_fn, lam_record = _lam_schedule(lam_schedule, epochs)

    if device is not None:
        model.to(device)
    dev = next(model.parameters()).device
    rows, cols = train.rows.to(dev), train.cols.to(dev)
    target = model.to_unit(train.values.to(dev, torch.float32))
    n = rows.numel()
    bs = n if batch_size is None else min(batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    X_full, Y_full = model.inputs(train, device=dev)
    settings: dict[str, Any] = {
        "engine": "deep_mf", "model": type(model).__name__, "config": model.config(),
        "epochs": epochs, "batch_size": bs, "lr": lr, "final_lr": final_lr,
        "clip_norm": clip_norm, "exclude_targets": exclude_targets,
        "lam_schedule": lam_record if discrete else None,
        "boundary_lr": boundary_lr, "loss": loss, "patience": patience,
        "eval_every": eval_every, "monitor": monitor, "seed": seed,
        "validated": val is not None,
    }
    b_params = [model.quantizer.boundaries] if discrete else []
    b_params = [p for p in b_params if isinstance(p, torch.nn.Parameter)]
    net_params = [p for p in model.parameters() if all(p is not b for b in b_params)]
    groups: list[dict[str, Any]] = [{"params": net_params}]
    if b_params:
        groups.append({"params": b_params, "lr": boundary_lr or lr})
    gen = torch.Generator().manual_seed(int(seed))
    fit = DeepMFFit(model=model, train=train, settings=settings)
    val_t = None if val is None else val.values.to(dev).double()
    perm: list[torch.Tensor] = []
    pending: list[float] = []

    def step(epoch: int, s: int) -> torch.Tensor:
        if s == 0:
            if discrete:
                model.set_lam(lam_fn(epoch))
            perm[:] = list(torch.randperm(n, generator=gen).to(dev).split(bs))
        idx = perm[s]
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
        pred = model.predict_unit(model.embed_rows(X), model.embed_cols(Y), rows[idx], cols[idx])
        obj = model.objective(pred, target[idx], loss=loss)
        obj.backward()
        # weighted by the batch's size, so that the loop's mean over steps is the mean per entry
        return obj.detach() * (idx.numel() * steps_per_epoch / n)

    def on_epoch(epoch: int) -> dict[str, float]:
        out: dict[str, float] = {}
        if discrete:
            out["lam"] = float(model.quantizer.lam)
        if val is not None and (epoch + 1) % eval_every == 0:
            model.eval()
            fit._cache.clear()
            p = fit.predict(val, discrete="hard" if discrete else None).double()
            model.train()
            out["val_rmse"] = float(torch.sqrt((p - val_t).pow(2).mean()))
            out["val_mae"] = float((p - val_t).abs().mean())
            pending[:] = [out["val_rmse"] if monitor == "rmse" else out["val_mae"]]
        return out

    model.train()
    res = run_loop(
        step, {"model": model}, epochs=epochs, steps_per_epoch=steps_per_epoch, lr=lr,
        final_lr=final_lr, params=groups, clip_norm=clip_norm, on_epoch=on_epoch,
        evaluate=None if val is None else (lambda: pending[0]), eval_every=eval_every,
        patience=patience, generators=[gen], checkpoint=checkpoint,
        checkpoint_every=checkpoint_every, resume=resume,
        fingerprint=fit.train_info["fingerprint"], settings=settings, stop_after=stop_after,
        progress=progress, desc=type(model).__name__, engine="DeepMF",
    )
    model.eval()
    fit._cache.clear()
    fit.history = dict(res.history)
    fit.fit_seconds = res.seconds
    fit.best_epoch = (res.best_epoch + 1 if res.finished and res.best_epoch is not None
                      else res.epochs_run)
    fit.settings = {**settings, "device": str(dev), "stopped_early": res.stopped_early,
                    "finished": res.finished, "best_epoch": fit.best_epoch,
                    "epochs_run": res.epochs_run}
    if res.best_epoch is not None:
        logger.info("fit_deep_mf: best validation %s %.5g at epoch %d of %d", monitor,
                    res.best_score, res.best_epoch + 1, res.epochs_run)
    return fit
