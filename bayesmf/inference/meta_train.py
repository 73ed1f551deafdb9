"""Episodic meta-training (Iwata, 2021, Algorithm 2) with early stopping and checkpoints.

Every step draws a batch of episodes from the meta-training sampler (a random
task, an ``N x M`` sub-matrix and a random train/test split of its observed
entries with ratio ``R``, see :class:`bayesmf.data.EpisodeSampler`), lets the
model predict the whole matrix from the train entries only, and takes an Adam
step on the mean squared error of the test entries. For
:class:`~bayesmf.models.MetaPriorMF` the prediction is ``U V^T`` of the factors
adapted by the unrolled MAP steps, so the error is back-propagated through all
of them into the network and the prior precision.

Any ``nn.Module`` with ``predict(X, B) -> (batch, N, M)`` can be meta-trained
(e.g. the EML baseline :class:`~bayesmf.models.ExchangeableMatrixNet`).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.episodes import Episode, EpisodeSampler

__all__ = ["MetaTrainResult", "meta_train", "episode_loss", "evaluate_episodes"]

logger = logging.getLogger(__name__)


@dataclass
class MetaTrainResult:
    """What :func:`meta_train` did.

    Attributes
    ----------
    history : list of dict
        One record per evaluation: ``step``, ``train_loss`` (mean since the last
        evaluation), ``val_mse`` and ``seconds`` (training time so far).
    best_step : int
        Step of the best meta-validation MSE (its weights are loaded into the model).
    best_val : float
        The best meta-validation MSE.
    steps : int
        Steps taken in all (over resumed calls).
    seconds : float
        Training wall-clock time in all (over resumed calls, evaluations included).
    stopped_early : bool
        Early stopping triggered.
    finished : bool
        Training is over (step budget spent or stopped early); ``False`` when
        ``max_seconds`` interrupted it: call again with the same checkpoint to resume.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    best_val: float = math.inf
    steps: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    finished: bool = False


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


def _save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def meta_train(
    model: nn.Module,
    train_sampler: EpisodeSampler,
    val_sampler: EpisodeSampler | Sequence[Episode] | None = None,
    *,
    steps: int = 10_000,
    lr: float = 1e-4,
    val_episodes: int = 64,
    val_seed: int = 0,
    eval_every: int = 200,
    patience: int = 10,
    checkpoint: str | Path | None = None,
    resume: bool = True,
    max_seconds: float | None = None,
    grad_clip: float | None = 10.0,
    device: str | torch.device | None = None,
    loss_fn: Callable[[nn.Module, Episode], torch.Tensor] = episode_loss,
    progress: bool = True,
) -> MetaTrainResult:
    """Episodic meta-training with Adam and early stopping on meta-validation MSE.

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
        Maximum number of meta-training steps (batches).
    lr : float
        Adam learning rate.
    val_episodes, val_seed : int
        Size and seed of the fixed meta-validation set.
    eval_every : int
        Steps between meta-validation evaluations (and checkpoints).
    patience : int
        Evaluations without improvement before stopping.
    checkpoint : path, optional
        File to save the training state to at every evaluation and at the end;
        with ``resume=True`` an existing file there is resumed from.
    resume : bool
        Resume from ``checkpoint`` if it exists.
    max_seconds : float, optional
        Wall-clock budget of *this call*; when spent, the state is checkpointed and
        the result has ``finished=False``.
    grad_clip : float, optional
        Clip the gradient norm to this value.
    device : str or torch.device, optional
        Where to train (default: the model's device).
    loss_fn : callable
        ``loss_fn(model, episode) -> scalar``; default :func:`episode_loss`.
    progress : bool
        Show a progress bar.

    Returns
    -------
    MetaTrainResult
        The model holds the best (meta-validation) weights afterwards.

    Examples
    --------
    >>> from bayesmf.data import EpisodeSampler, synthetic_ratings
    >>> from bayesmf.models import MetaPriorMF
    >>> R, _ = synthetic_ratings(60, 50, density=0.5, seed=0)
    >>> tr = EpisodeSampler(R, n_rows=10, n_cols=10, batch_size=4, seed=0)
    >>> m = MetaPriorMF(channels=8, layers=2, rank=4, steps=2)
    >>> res = meta_train(m, tr, tr, steps=20, lr=1e-3, val_episodes=8, eval_every=10,
    ...                  progress=False)
    >>> res.steps, len(res.history), res.finished
    (20, 2, True)
    """
    if steps < 1 or eval_every < 1 or patience < 1:
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
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    res = MetaTrainResult()
    best_state = copy.deepcopy(model.state_dict())
    bad = 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    gen = getattr(train_sampler, "_gen", None)
    if ckpt is not None and resume and ckpt.exists():
        blob = torch.load(ckpt, map_location=dev, weights_only=True)
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["optimizer"])
        best_state = blob["best_state"]
        bad = blob["bad"]
        res = MetaTrainResult(**blob["result"])
        if gen is not None and blob.get("gen") is not None:
            gen.set_state(blob["gen"])
        logger.info("resumed meta-training from %s at step %d", ckpt, res.steps)

    def save() -> None:
        if ckpt is None:
            return
        _save_atomic(
            {
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "best_state": best_state, "bad": bad, "result": res.__dict__,
                "gen": gen.get_state() if gen is not None else None,
            },
            ckpt,
        )

    if res.finished:
        model.load_state_dict(best_state)
        return res
    t_start = time.perf_counter()
    t_offset = res.seconds
    losses: list[float] = []
    model.train()
    bar = tqdm(total=steps, initial=res.steps, desc="meta-train", disable=not progress)
    interrupted = False
    while res.steps < steps:
        ep = train_sampler.sample().to(dev)
        loss = loss_fn(model, ep)
        opt.zero_grad()
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        res.steps += 1
        bar.update(1)
        done = res.steps >= steps
        if res.steps % eval_every == 0 or done:
            res.seconds = t_offset + time.perf_counter() - t_start
            val = evaluate_episodes(model, val_set) if val_set is not None else float("nan")
            rec = {"step": res.steps, "train_loss": sum(losses) / max(len(losses), 1),
                   "val_mse": val, "seconds": res.seconds}
            res.history.append(rec)
            losses = []
            bar.set_postfix(loss=f"{rec['train_loss']:.4f}", val=f"{val:.4f}")
            if val_set is None or val < res.best_val:
                res.best_val, res.best_step, bad = val, res.steps, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
                if bad >= patience:
                    res.stopped_early = True
                    logger.info("early stopping at step %d (best %d)", res.steps, res.best_step)
            save()
            if res.stopped_early:
                break
        if max_seconds is not None and time.perf_counter() - t_start > max_seconds and not done:
            interrupted = True
            break
    bar.close()
    res.seconds = t_offset + time.perf_counter() - t_start
    res.finished = not interrupted
    save()  # live weights (to resume from) and the best ones
    model.load_state_dict(best_state)
    return res
