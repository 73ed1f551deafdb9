"""Episodic meta-training (Iwata, 2021, Algorithm 2) on the one training loop.

Every step draws a batch of episodes from the meta-training sampler (a random task, an
``N x M`` sub-matrix and a random train/test split of its observed entries with ratio ``R``,
see :class:`bayesmf.data.EpisodeSampler`), lets the model predict the whole matrix from the
train entries only, and takes an Adam step on the mean squared error of the test entries.
For :class:`~bayesmf.models.MetaPriorMF` the prediction is ``U V^T`` of the factors adapted by
the unrolled MAP steps, so the error is back-propagated through all of them into the network
and the prior precision.

The optimisation runs through :func:`bayesmf.inference.loop.train`: learning-rate schedule,
clipping, meta-validation with early stopping and the best weights kept, checkpoints that are
refused for other data or settings, divergence errors and the progress bar. A *round* of
``eval_every`` steps is the loop's epoch.

Any ``nn.Module`` with ``predict(X, B) -> (batch, N, M)`` can be meta-trained (e.g. the EML
baseline :class:`~bayesmf.models.ExchangeableMatrixNet`); :func:`meta_train` returns a
:class:`MetaFit`, which answers the one result interface of :mod:`.fits` (``predict`` at the
query entries of an :class:`~bayesmf.data.Episode`, ``save``, :func:`bayesmf.inference.load`).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.episodes import Episode, EpisodeSampler
from ..models.exchangeable import ExchangeableMatrixNet
from ..models.meta_prior import MetaPriorMF
from . import files
from .fits import Fit, check_statistic, deprecated_kwarg, load
from .loop import train as run_loop
from .threads import uses_fit_threads

__all__ = [
    "load_meta_model",
    "MetaFit",
    "MetaTrainResult",
    "meta_train",
    "episode_loss",
    "evaluate_episodes",
    "episodes_fingerprint",
]

logger = logging.getLogger(__name__)


def _rebuild_network(name: str, config: dict[str, Any]) -> nn.Module:
    """A meta-trainable network of the library from its class name and ``config()``."""
    if name == "MetaPriorMF":
        return MetaPriorMF(**config)
    if name == "ExchangeableMatrixNet":
        return ExchangeableMatrixNet(**config)
    if name == "MAML":
        from .maml import MAML

        net = _rebuild_network(config["net_class"], config["net_config"])
        opts = {k: v for k, v in config.items() if k not in ("net_class", "net_config")}
        return MAML(net, **opts)
    raise ValueError(
        f"cannot rebuild a meta-trained {name!r}: saving supports MetaPriorMF, "
        "ExchangeableMatrixNet and MAML of those"
    )


def network_config(model: nn.Module) -> dict[str, Any]:
    """The class name and constructor arguments of a meta-trainable network (for files)."""
    name = type(model).__name__
    if name == "MAML":
        cfg = {**model.config(), "seed": int(model.seed), "net_class": type(model.net).__name__,
               "net_config": model.net.config()}
        return {"class": name, "config": cfg}
    if name not in ("MetaPriorMF", "ExchangeableMatrixNet"):
        raise TypeError(
            f"a meta-trained {name} cannot be saved: saving supports MetaPriorMF, "
            "ExchangeableMatrixNet and MAML of those"
        )
    return {"class": name, "config": model.config()}


@dataclass(eq=False)
class MetaFit(Fit):
    """A meta-trained network (:class:`~bayesmf.models.MetaPriorMF`, the EML baseline or a
    :class:`~bayesmf.inference.MAML` wrapper) and what :func:`meta_train` did.

    A point estimate of the network's weights: :meth:`predict` imputes the query entries of
    new matrices (no posterior; for one under a meta-learned prior see
    :func:`~bayesmf.inference.fit_meta_posterior`).

    Attributes
    ----------
    model : nn.Module
        The network, holding the best meta-validation weights after a finished run (the
        live weights, to resume from, after an interrupted one).
    history : dict of lists
        Per round of ``eval_every`` steps: ``loss`` (mean training loss), ``lr``, ``step``
        (steps done); per evaluation: ``val`` (meta-validation MSE) and ``val_epoch``.
    best_step : int
        Step of the best meta-validation MSE (whose weights the model holds).
    best_val : float
        The best meta-validation MSE (``nan`` without validation).
    steps : int
        Steps taken in all (over resumed calls).
    seconds : float
        Training wall-clock time in all (over resumed calls, evaluations included).
    stopped_early : bool
        Early stopping triggered.
    finished : bool
        Training is over (step budget spent or stopped early); ``False`` when ``max_seconds``
        or ``stop_after`` interrupted it: call again with the same checkpoint to resume.
    train_info : dict
        The episode sampler's fingerprint (tasks, sizes, seed) and the number of tasks.
    settings : dict
        The options the training ran with.
    """

    model: nn.Module
    history: dict[str, list[float]] = field(default_factory=dict)
    best_step: int = 0
    best_val: float = math.inf
    steps: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    finished: bool = False
    train_info: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    kind = "MetaFit"
    has_posterior = False
    inference_name = "episodic meta-training (point estimate of the network)"

    @property
    def fit_seconds(self) -> float:  # type: ignore[override]
        """Training time (the same as :attr:`seconds`)."""
        return self.seconds

    @property
    def evaluations(self) -> list[dict[str, float]]:
        """One record per evaluation: ``step``, ``train_loss`` (mean over the round before
        it) and ``val_mse`` (the list that ``MetaTrainResult.history`` used to be)."""
        h = self.history
        spr = int(self.settings.get("steps_per_round", 1))
        loss = h.get("loss", [])
        return [
            {"step": (int(e) + 1) * spr, "train_loss": float(loss[int(e)]), "val_mse": float(v)}
            for e, v in zip(h.get("val_epoch", []), h.get("val", []), strict=True)
        ]

    @torch.no_grad()
    def predict_matrix(self, X: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        """Predictions of every entry ``(batch, N, M)`` of matrices ``X`` observed where
        ``B`` (eval mode: no dropout)."""
        was = self.model.training
        self.model.eval()
        try:
            dev = next(self.model.parameters()).device
            X, B = torch.as_tensor(X).to(dev), torch.as_tensor(B).to(dev)
            squeeze = X.dim() == 2
            if squeeze:
                X, B = X[None], B[None]
            Bf = B.to(X.dtype)
            pred = _predict(self.model, X * Bf, Bf)
        finally:
            self.model.train(was)
        return pred[0] if squeeze else pred

    @torch.no_grad()
    def predict(
        self, data: Episode, *, clamp: bool = False, num_samples: int | None = None,
        seed: int = 0, statistic: str = "mean",
    ) -> torch.Tensor:
        """Predictions at the query (test) entries of a batch of episodes.

        Parameters
        ----------
        data : Episode
            New matrices: the model conditions on their train (support) entries.
        clamp : bool
            Not available: episodes carry no rating scale (``ValueError`` if ``True``).
        num_samples, seed, statistic
            Unused (a point estimate: its mean and median are the point), accepted for the
            one interface.

        Returns
        -------
        Tensor, shape (n_query,)
            In the order of ``data.X[data.test_mask]``.
        """
        if not isinstance(data, Episode):
            raise TypeError(
                f"MetaFit.predict takes an Episode (bayesmf.data.episodes), got "
                f"{type(data).__name__}; for a full matrix use predict_matrix(X, B)"
            )
        check_statistic(statistic)
        if clamp:
            raise ValueError("clamp=True needs a rating scale, which an Episode does not have")
        pred = self.predict_matrix(data.X_train, data.train_mask)
        return pred[data.test_mask.to(pred.device)]

    # --------------------------------------------------------------- saving
    def _payload(self) -> dict[str, Any]:
        net = network_config(self.model)
        return {
            **self._common_payload(),
            "model_class": net["class"],
            "model_config": net["config"],
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "result": {"best_step": int(self.best_step), "best_val": float(self.best_val),
                       "steps": int(self.steps), "seconds": float(self.seconds),
                       "stopped_early": bool(self.stopped_early),
                       "finished": bool(self.finished)},
        }

    @classmethod
    def _from_payload(
        cls, payload: dict[str, Any], device: str | torch.device | None = None
    ) -> MetaFit:
        model = _rebuild_network(payload["model_class"], payload["model_config"])
        model.load_state_dict(payload["state_dict"])
        model.eval()
        if device is not None:
            model.to(device)
        common = cls._common_from(payload)
        common.pop("fit_seconds")
        return cls(model, **payload["result"], **common)


#: the name ``meta_train`` results had before they became fits (kept for one release)
MetaTrainResult = MetaFit


def _predict(model: nn.Module, X: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return model.predict(X, B) if hasattr(model, "predict") else model(X, B)


def episode_loss(model: nn.Module, ep: Episode) -> torch.Tensor:
    """Mean squared error on the test entries of a batch of episodes (conditioning on train).

    Examples
    --------
    >>> from bayesmf.data import EpisodeSampler, synthetic_ratings
    >>> from bayesmf.models import ExchangeableMatrixNet
    >>> R, _ = synthetic_ratings(40, 30, density=0.5)
    >>> ep = EpisodeSampler(R, n_rows=10, n_cols=10, batch_size=2).sample()
    >>> episode_loss(ExchangeableMatrixNet(channels=4), ep).dim()
    0
    """
    B = ep.train_mask.to(ep.X.dtype)
    pred = _predict(model, ep.X_train, B)
    test = ep.test_mask.to(pred.dtype)
    return (test * (pred - ep.X) ** 2).sum() / test.sum().clamp_min(1.0)


@torch.no_grad()
def evaluate_episodes(
    model: nn.Module, episodes: Sequence[Episode], device: str | torch.device | None = None
) -> float:
    """Test-entry MSE over a list of episode batches (pooled over all test entries), eval mode."""
    was = model.training
    model.eval()
    sse, n = 0.0, 0.0
    try:
        for ep in episodes:  # loop over batches
            if device is not None:
                ep = ep.to(device)
            pred = _predict(model, ep.X_train, ep.train_mask.to(ep.X.dtype))
            t = ep.test_mask
            sse += float(((pred - ep.X)[t] ** 2).sum())
            n += float(t.sum())
    finally:
        model.train(was)
    return sse / max(n, 1.0)


def episodes_fingerprint(episodes: Sequence[Episode]) -> dict[str, Any]:
    """Number of episodes and a sha256 of a fixed set of episodes (values and masks)."""
    h = hashlib.sha256()
    for ep in episodes:  # loop over batches
        for t in (ep.X, ep.train_mask, ep.test_mask):
            a = t.detach().cpu().contiguous()
            h.update(str(tuple(a.shape)).encode())
            h.update(a.to(torch.float32).numpy().tobytes())
    return {"n": sum(len(e) for e in episodes), "sha256": h.hexdigest()}


@uses_fit_threads
def meta_train(
    model: nn.Module,
    train_sampler: EpisodeSampler,
    val_sampler: EpisodeSampler | Sequence[Episode] | None = None,
    *,
    steps: int = 10_000,
    lr: float = 1e-4,
    final_lr: float | None = None,
    val_episodes: int = 64,
    val_seed: int = 0,
    eval_every: int = 200,
    patience: int | None = 10,
    clip_norm: float | None = 10.0,
    seed: int | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = 1,
    resume: bool = True,
    max_seconds: float | None = None,
    stop_after: int | None = None,
    device: str | torch.device | None = None,
    loss_fn: Callable[[nn.Module, Episode], torch.Tensor] = episode_loss,
    progress: bool | None = None,
    **deprecated: Any,
) -> MetaFit:
    """Episodic meta-training with Adam and early stopping on meta-validation MSE.

    Runs on :func:`bayesmf.inference.loop.train` with ``steps_per_epoch = eval_every`` and
    ``epochs = ceil(steps / eval_every)``: an *epoch* of the loop is here a **round** of
    ``eval_every`` optimiser steps (batches of episodes), followed by one meta-validation
    evaluation. ``steps`` is therefore rounded up to a multiple of ``eval_every`` (when
    ``steps < eval_every``, one round of ``steps`` steps).

    Parameters
    ----------
    model : nn.Module
        A model with ``predict(X, B) -> (batch, N, M)`` (e.g. ``MetaPriorMF``).
    train_sampler : EpisodeSampler
        Meta-training episodes (sub-matrix size ``N x M``, ratio ``R``, batch size).
    val_sampler : EpisodeSampler or list of Episode, optional
        Meta-validation tasks; a sampler gives ``val_sampler.fixed(val_episodes,
        val_seed)``. Without it there is no early stopping and the last weights are kept.
    steps : int
        Optimiser steps (batches of episodes), rounded up as above.
    lr, final_lr : float
        Adam learning rate, decayed exponentially per round to ``final_lr`` (default
        ``lr / 10``; ``final_lr=lr`` for a constant rate).
    val_episodes, val_seed : int
        Size and seed of the fixed meta-validation set.
    eval_every : int
        Steps per round: between meta-validation evaluations (and checkpoints).
    patience : int or None
        Evaluations without improvement before stopping (``None``: never stop early).
    clip_norm : float or None
        Clip the gradient norm to this value (old spelling ``grad_clip=``, deprecated).
    seed : int, optional
        Seeds torch's global generator (dropout, MAML's inner splits) before training;
        ``None`` leaves it as it is. Episodes come from the sampler's own generator.
    checkpoint, checkpoint_every, resume
        Checkpoint file, written every ``checkpoint_every`` rounds and at the end; an
        existing one is resumed from (``resume=True``) when it was written for the same
        episodes (the sampler's :meth:`~bayesmf.data.EpisodeSampler.fingerprint` and the
        validation set) and settings, else :class:`~bayesmf.inference.ResumeMismatch`
        names what differs (e.g. ``steps`` or ``lr``); ``resume=False`` starts afresh.
        Resuming gives the same result as an uninterrupted run.
    max_seconds : float, optional
        Wall-clock budget of *this call*, checked after each round; when spent, the state
        is checkpointed and the result has ``finished=False`` (call again to resume).
    stop_after : int, optional
        Stop (as if killed) after this many rounds of this call.
    device : str or torch.device, optional
        Where to train (default: the model's device).
    loss_fn : callable
        ``loss_fn(model, episode) -> scalar``; default :func:`episode_loss`.
    progress : bool, optional
        Show a tqdm bar (default: only in a terminal).

    Returns
    -------
    MetaFit
        The model holds the best (meta-validation) weights afterwards.

    Raises
    ------
    FloatingPointError
        When a loss or a weight becomes NaN/inf; the message names the step.
    bayesmf.inference.ResumeMismatch
        When ``checkpoint`` was written for other episodes or settings.

    Examples
    --------
    >>> from bayesmf.data import EpisodeSampler, synthetic_ratings
    >>> from bayesmf.models import MetaPriorMF
    >>> R, _ = synthetic_ratings(60, 50, density=0.5, seed=0)
    >>> tr = EpisodeSampler(R, n_rows=10, n_cols=10, batch_size=4, seed=0)
    >>> m = MetaPriorMF(channels=8, layers=2, rank=4, steps=2)
    >>> res = meta_train(m, tr, tr, steps=20, lr=1e-3, val_episodes=8, eval_every=10)
    >>> res.steps, len(res.evaluations), res.finished
    (20, 2, True)
    """
    if "grad_clip" in deprecated:
        clip_norm = deprecated_kwarg(deprecated, "grad_clip", "clip_norm", "meta_train")
    if deprecated:
        raise TypeError(f"meta_train() got unexpected keyword arguments {sorted(deprecated)}")
    if steps < 1 or eval_every < 1 or (patience is not None and patience < 1):
        raise ValueError("steps, eval_every and patience must be >= 1")
    if device is not None:
        model.to(device)
    dev = next(model.parameters()).device
    if isinstance(val_sampler, EpisodeSampler):
        val_set: list[Episode] | None = [
            e.to(dev) for e in val_sampler.fixed(val_episodes, seed=val_seed)
        ]
    elif val_sampler is not None:
        val_set = [e.to(dev) for e in val_sampler]
    else:
        val_set = None
    per_round = min(eval_every, steps)
    rounds = math.ceil(steps / per_round)
    try:
        net: dict[str, Any] = network_config(model)
    except TypeError:
        net = {"class": type(model).__name__, "config": None}
    settings = {
        "engine": "meta-train", "model": net["class"], "model_config": net["config"],
        "steps": steps, "lr": lr, "final_lr": final_lr, "eval_every": eval_every,
        "patience": patience, "clip_norm": clip_norm, "seed": seed,
        "val_episodes": val_episodes, "val_seed": val_seed, "validated": val_set is not None,
        "loss_fn": getattr(loss_fn, "__name__", type(loss_fn).__name__),
        "steps_per_round": per_round, "rounds": rounds,
    }
    try:  # an EpisodeSampler's tasks, sizes and seed; another sampler may not say
        sampler_fp = files.fingerprint(train_sampler) or {}
    except TypeError:
        sampler_fp = {"kind": type(train_sampler).__name__}
    fingerprint = {
        **sampler_fp, "val": None if val_set is None else episodes_fingerprint(val_set),
    }
    gen = getattr(train_sampler, "generator", None)  # the sampler's episode stream, checkpointed
    if seed is not None:
        torch.manual_seed(seed)
    done = [0]

    def step(epoch: int, s: int) -> torch.Tensor:
        done[0] = epoch * per_round + s + 1
        model.train()
        loss = loss_fn(model, train_sampler.sample().to(dev))
        loss.backward()
        return loss.detach()

    def on_epoch(epoch: int) -> dict[str, float]:
        return {"step": float((epoch + 1) * per_round)}

    try:
        res = run_loop(
            step, {"model": model}, epochs=rounds, steps_per_epoch=per_round, lr=lr,
            final_lr=final_lr, clip_norm=clip_norm, on_epoch=on_epoch,
            evaluate=None if val_set is None else (lambda: evaluate_episodes(model, val_set)),
            patience=None if val_set is None else patience,
            generators=[] if gen is None else [gen], checkpoint=checkpoint,
            checkpoint_every=checkpoint_every if checkpoint is not None else None,
            resume=resume, fingerprint=fingerprint, settings=settings, stop_after=stop_after,
            max_seconds=max_seconds, progress=progress, desc="meta-train",
            engine="meta-train",
        )
    except FloatingPointError as err:
        raise FloatingPointError(f"{err} (meta-training step {done[0]} of {steps})") from err
    model.eval()
    steps_done = res.epochs_run * per_round
    if res.best_epoch is None:  # no validation: the last weights
        best_step, best_val = steps_done, math.nan
    else:
        best_step, best_val = (res.best_epoch + 1) * per_round, res.best_score
    info = {"name": type(train_sampler).__name__,
            "n_tasks": getattr(train_sampler, "n_tasks", None), "fingerprint": fingerprint}
    return MetaFit(
        model, res.history, best_step=best_step, best_val=best_val, steps=steps_done,
        seconds=res.seconds, stopped_early=res.stopped_early, finished=res.finished,
        train_info=info, settings=settings,
    )


def load_meta_model(path: str | Path, device: str | torch.device | None = None) -> Any:
    """The :class:`~bayesmf.models.MetaPriorMF` of a saved :class:`MetaFit` (save a bare model
    with ``MetaFit(model, finished=True).save(path)``).

    Files of the earlier format (a plain ``{"config", "state_dict"}`` dict of a MetaPriorMF) are
    still read, with ``weights_only=True``.

    Raises
    ------
    bayesmf.inference.FitFileError
        Naming the file when it is missing, damaged, foreign or holds another network.
    """
    try:
        fit = load(path, device)
    except files.FitFileError as err:
        if "foreign file" not in str(err):
            raise
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not (isinstance(blob, dict) and {"config", "state_dict"} <= set(blob)):
            raise
        logger.info("%s: a MetaPriorMF file of the earlier format; save it again", path)
        model = MetaPriorMF(**blob["config"])
        model.load_state_dict(blob["state_dict"])
        return model.to(device) if device is not None else model
    model = getattr(fit, "model", None)
    if not isinstance(model, MetaPriorMF):
        raise files.FitFileError(
            f"{path}: holds a {fit.kind} of a {type(model).__name__}, not a MetaPriorMF"
        )
    return model
