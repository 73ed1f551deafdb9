"""The one training loop of every iterative engine.

SVI, the block model's mean-field steps, deep MF, SGD, meta-training, MAML and the posterior
under a meta-learned prior all optimise something in rounds of steps; what differs is one
step. :func:`train` owns everything else, once, with one meaning per option:

* ``epochs`` rounds of ``steps_per_epoch`` optimiser steps (for data-driven engines an epoch
  is one pass over the training data; meta-training calls a round of episodes an epoch);
* the learning rate decays exponentially from ``lr`` to ``final_lr`` (default ``lr / 10``)
  over the epochs; gradients are clipped to ``clip_norm``;
* validation every ``eval_every`` epochs; ``patience`` counts *evaluations* without
  improvement; the best state is kept (only after ``select_after`` epochs, so that e.g. a
  state of an annealed objective is never kept);
* a tqdm bar only when standard error is a terminal (``progress=None``), so logs stay short;
* checkpoints (:mod:`~bayesmf.inference.files`: atomic, fingerprinted, checksummed) that a
  killed run resumes from exactly, refused when the data or settings differ;
* a non-finite loss or parameter raises :class:`FloatingPointError` naming the epoch, the step
  and the last good checkpoint;
* with ``data_parallel=True`` (under ``torch.distributed``, see
  :mod:`~bayesmf.inference.distributed`) the gradients and the loss are averaged over the
  processes before clipping and stepping, and only rank 0 writes checkpoints.

An engine supplies ``step(epoch, step) -> loss`` (it computes the loss and its gradients; the
loop clips and steps the optimiser), optionally ``evaluate() -> float`` (lower is better) and
the modules whose parameters make its state.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed, files

__all__ = ["LoopResult", "train", "show_progress", "diverged_message"]

log = logging.getLogger(__name__)


def show_progress(progress: bool | None) -> bool:
    """Resolve ``progress=None`` (the default everywhere): a bar only in a terminal."""
    if progress is None:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    return bool(progress)


def diverged_message(engine: str, what: str, epoch: int, step: int, last_good: str) -> str:
    """The one wording of a divergence error."""
    return (
        f"{engine} diverged: {what} at epoch {epoch}, step {step}; last good checkpoint: "
        f"{last_good}. Try a smaller lr, gradient clipping or standardised data."
    )


@dataclass
class LoopResult:
    """What a run of :func:`train` did.

    Attributes
    ----------
    history : dict of lists
        Per epoch: ``loss`` (mean step loss), ``lr``; per evaluation: ``val`` and
        ``val_epoch``; plus whatever the engine's ``on_epoch`` returned.
    best_epoch : int or None
        Epoch (0-based) of the best validation score whose state was kept.
    best_score : float
        That score (``inf`` without validation).
    stopped_early : bool
        Stopped by ``patience``.
    finished : bool
        Ran to the end (``False`` when stopped by ``stop_after`` or ``max_seconds``).
    epochs_run : int
        Epochs completed, in all calls (resumed runs included).
    seconds : float
        Time spent in the loop, in all calls.
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int | None = None
    best_score: float = math.inf
    stopped_early: bool = False
    finished: bool = False
    epochs_run: int = 0
    seconds: float = 0.0


def _state_of(modules: dict[str, nn.Module]) -> dict[str, Any]:
    return {k: copy.deepcopy(m.state_dict()) for k, m in modules.items()}


def _check_finite(params: Iterable[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in params)


def train(
    step: Callable[[int, int], torch.Tensor | float],
    modules: dict[str, nn.Module],
    *,
    epochs: int,
    steps_per_epoch: int,
    lr: float,
    final_lr: float | None = None,
    params: list[Any] | None = None,
    optimizer: str = "adam",
    clip_norm: float | None = None,
    evaluate: Callable[[], float] | None = None,
    eval_every: int = 1,
    patience: int | None = None,
    select_after: int = 0,
    on_epoch: Callable[[int], dict[str, float] | None] | None = None,
    generators: Iterable[torch.Generator] = (),
    extra_state: tuple[Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None]]
    | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    fingerprint: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    stop_after: int | None = None,
    max_seconds: float | None = None,
    progress: bool | None = None,
    desc: str = "fit",
    engine: str = "fit",
    data_parallel: bool = False,
) -> LoopResult:
    """Run ``epochs`` rounds of ``steps_per_epoch`` optimiser steps; see the module docstring.

    Parameters
    ----------
    step : callable
        ``step(epoch, step)`` computes a loss, calls ``backward()`` on it and returns it (a
        tensor or float); the loop zeroes gradients before and clips/steps after. A step that
        runs its own update (no optimiser) returns the loss with ``params=[]``.
    modules : dict of str to nn.Module
        The modules whose ``state_dict`` is the fitted state (checkpointed, and restored to
        the best evaluation's at the end).
    epochs, steps_per_epoch : int
        Rounds and optimiser steps per round.
    lr, final_lr : float
        Learning rate, decayed exponentially per epoch to ``final_lr`` (default ``lr / 10``;
        equal to ``lr`` for a constant rate).
    params : list, optional
        Parameters or parameter groups to optimise (default: all of ``modules``).
    optimizer : {"adam", "none"}
        ``"none"``: ``step`` updates the state itself (closed-form or hand-written steps).
    clip_norm : float, optional
        Gradient norm clipping.
    evaluate : callable, optional
        Validation score of the current state, lower is better.
    eval_every, patience, select_after : int
        Evaluate every ``eval_every`` epochs; stop after ``patience`` evaluations without
        improvement; only evaluations after epoch ``select_after`` may become the best state.
    on_epoch : callable, optional
        Called after each epoch with its index; a returned dict is appended to the history.
    generators : iterable of torch.Generator
        Random generators whose states are checkpointed (minibatch order, ...).
    extra_state : (getter, setter), optional
        Further state to checkpoint (tensors and plain values).
    checkpoint, checkpoint_every, resume : optional
        Checkpoint file, written every ``checkpoint_every`` epochs and at the end; with
        ``resume`` an existing file is continued from when its ``fingerprint`` and
        ``settings`` equal these (else :class:`~bayesmf.inference.files.ResumeMismatch`);
        ``resume=False`` starts afresh and overwrites it.
    fingerprint, settings : dict, optional
        Of the training data and of every option, recorded in checkpoints.
    stop_after : int, optional
        Stop (as if killed) after this many epochs of this call.
    max_seconds : float, optional
        Wall-clock budget of this call (checked after each epoch).
    progress : bool, optional
        Show a tqdm bar (default: only in a terminal).
    desc, engine : str
        Bar label and the engine's name in error messages.
    data_parallel : bool
        The processes of the initialised ``torch.distributed`` group each computed ``step``
        on their shard of the data with the same parameters: the gradients and the loss are
        averaged over them in one ``all_reduce`` before clipping and stepping (so all take
        the same step, and the history and divergence checks see the average loss); rank 0
        alone writes checkpoints (with every process's generator states) and its checkpoint
        is broadcast to all on resume; a ``max_seconds`` stop is decided jointly. Ignored
        when no process group is initialised.

    Returns
    -------
    LoopResult
    """
    if epochs < 1 or steps_per_epoch < 1 or eval_every < 1:
        raise ValueError("epochs, steps_per_epoch and eval_every must be >= 1")
    if not lr > 0 or (final_lr is not None and not final_lr > 0):
        raise ValueError(f"lr and final_lr must be positive, got {lr}, {final_lr}")
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    if checkpoint is None and checkpoint_every:
        raise ValueError("checkpoint_every needs a checkpoint path")
    final_lr = lr / 10 if final_lr is None else final_lr
    all_params = [p for m in modules.values() for p in m.parameters()]
    opt = sched = None
    if optimizer == "adam":
        opt = torch.optim.Adam(all_params if params is None else params, lr=lr)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=(final_lr / lr) ** (1 / epochs))
    elif optimizer != "none":
        raise ValueError(f"optimizer must be 'adam' or 'none', got {optimizer!r}")
    clipped = [p for p in all_params if p.requires_grad]
    gens = list(generators)
    res = LoopResult(history={"loss": [], "lr": [], "val": [], "val_epoch": []})
    best_state: dict[str, Any] | None = None
    bad = 0
    ckpt = None if checkpoint is None else Path(checkpoint)
    settings = dict(settings or {})
    # ---- data parallel (a no-op unless asked for and torch.distributed is initialised)
    dp = data_parallel and distributed.is_distributed()
    writer = not dp or distributed.rank() == 0

    def snapshot() -> dict[str, Any]:
        state = {
            "modules": _state_of(modules),
            "optimizer": None if opt is None else opt.state_dict(),
            "scheduler": None if sched is None else sched.state_dict(),
            "generators": [g.get_state() for g in gens],
            "torch_rng": torch.get_rng_state(),
            "result": {**res.__dict__, "history": res.history},
            "best_state": best_state,
            "bad": bad,
            "extra": None if extra_state is None else extra_state[0](),
        }
        if dp:  # each process has its own minibatch order
            state["generators_by_rank"] = distributed.gather_objects(state["generators"])
        return state

    def save() -> None:
        assert ckpt is not None
        state = snapshot()  # a collective under data parallelism: every process calls it
        if writer:
            files.save_file(ckpt, f"checkpoint/{engine}", state, fingerprint=fingerprint,
                            settings=settings)

    blob = None
    if ckpt is not None and resume and writer and ckpt.exists():
        saved = files.load_file(ckpt, f"checkpoint/{engine}")
        files.check_compatible(saved, fingerprint, settings)
        blob = saved.payload
    if dp and ckpt is not None and resume:
        blob = distributed.broadcast_object(blob)
    if blob is not None:
        for k, m in modules.items():
            m.load_state_dict(blob["modules"][k])
        if opt is not None:
            opt.load_state_dict(blob["optimizer"])
            sched.load_state_dict(blob["scheduler"])  # type: ignore[union-attr]
        by_rank = blob.get("generators_by_rank")
        gen_states = by_rank[distributed.rank()] if dp and by_rank else blob["generators"]
        for g, s in zip(gens, gen_states, strict=True):
            g.set_state(s)
        torch.set_rng_state(blob["torch_rng"])
        res = LoopResult(**blob["result"])
        best_state, bad = blob["best_state"], blob["bad"]
        if extra_state is not None:
            extra_state[1](blob["extra"])
        log.info("resumed from %s at epoch %d", ckpt, res.epochs_run)
    last_good = str(ckpt) if ckpt is not None and ckpt.exists() else "none"

    from tqdm.auto import tqdm

    t0, offset = time.perf_counter(), res.seconds
    bar = tqdm(total=epochs, initial=res.epochs_run, desc=desc, unit="epoch",
               disable=not (writer and show_progress(progress)), leave=False)
    run_here = 0
    interrupted = False
    while res.epochs_run < epochs and not res.stopped_early:
        epoch = res.epochs_run
        total = 0.0
        for s in range(steps_per_epoch):
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            try:
                loss = step(epoch, s)
            except ValueError as err:  # Pyro's argument checks catch NaN parameters first
                if "Expected parameter" not in str(err):
                    raise
                raise FloatingPointError(
                    diverged_message(engine, "NaN/inf parameters", epoch, s, last_good)
                ) from err
            if dp and opt is not None:  # average gradients and loss over the processes
                value = distributed.all_reduce_grads(clipped, loss)  # type: ignore[assignment]
            elif dp:
                value = float(distributed.all_reduce_(torch.tensor([float(loss)]), "mean"))
            else:
                value = float(loss)
            if not math.isfinite(value):
                raise FloatingPointError(
                    diverged_message(engine, f"loss {value}", epoch, s, last_good)
                )
            if opt is not None:
                if clip_norm is not None:
                    nn.utils.clip_grad_norm_(clipped, clip_norm)
                opt.step()
            total += value
        if not _check_finite(all_params):
            raise FloatingPointError(
                diverged_message(engine, "NaN/inf parameters", epoch, steps_per_epoch - 1,
                                 last_good)
            )
        res.history["loss"].append(total / steps_per_epoch)
        res.history["lr"].append(lr if opt is None else opt.param_groups[0]["lr"])
        if sched is not None:
            sched.step()
        extra = on_epoch(epoch) if on_epoch is not None else None
        for k, v in (extra or {}).items():
            res.history.setdefault(k, []).append(float(v))
        postfix = {"loss": f"{res.history['loss'][-1]:.4g}"}
        if evaluate is not None and (epoch + 1) % eval_every == 0:
            score = float(evaluate())
            res.history["val"].append(score)
            res.history["val_epoch"].append(epoch)
            postfix["val"] = f"{score:.4f}"
            if epoch >= select_after:
                if score < res.best_score:
                    res.best_score, res.best_epoch, bad = score, epoch, 0
                    best_state = _state_of(modules)
                else:
                    bad += 1
                    if patience is not None and bad >= patience:
                        res.stopped_early = True
                        log.info("early stop at epoch %d (best %.4f at epoch %d)",
                                 epoch, res.best_score, res.best_epoch)
        bar.update(1)
        bar.set_postfix(postfix)
        log.debug("%s epoch %d: %s", engine, epoch + 1, postfix)
        res.epochs_run += 1
        run_here += 1
        res.seconds = offset + time.perf_counter() - t0
        if ckpt is not None and checkpoint_every and res.epochs_run % checkpoint_every == 0:
            save()
            last_good = str(ckpt)
        out_of_time = max_seconds is not None and time.perf_counter() - t0 > max_seconds
        if dp and max_seconds is not None:  # clocks differ: stop together or not at all
            out_of_time = distributed.any_true(out_of_time)
        if res.epochs_run < epochs and not res.stopped_early and (
            (stop_after is not None and run_here >= stop_after) or out_of_time
        ):
            interrupted = True
            log.info("stopping after %d epochs of this call, as asked", run_here)
            break
    bar.close()
    res.finished = not interrupted
    res.seconds = offset + time.perf_counter() - t0
    if ckpt is not None:
        save()
    if not interrupted and best_state is not None:
        for k, m in modules.items():
            m.load_state_dict(best_state[k])
    return res
