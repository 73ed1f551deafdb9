"""The one training loop of every iterative engine.

SVI, the block model's mean-field steps, deep MF, SGD, meta-training, MAML and the posterior
under a meta-learned prior all optimise something in rounds of steps; what differs is one
step. :func:`train` owns everything else, once, with one meaning per option:

* ``epochs`` rounds of ``steps_per_epoch`` optimiser steps (for data-driven engines an epoch
  is one pass over the training data; meta-training calls a round of episodes an epoch);
* the learning rate decays exponentially from ``lr`` to ``final_lr`` (default ``lr / 10``)
  over the epochs; gradients are clipped to ``clip_norm``;
* parameters with sparse gradients (``sparse_params``: rows of large local arrays gathered
  by a minibatch) are stepped by :class:`LazyAdam` (Adam at the cost of the rows a step
  touched; the momentum moves a row skipped are applied when it is next touched), the
  others by Adam, both on the same schedule, clipped by one joint norm, both checkpointed;
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
from .optim import Adam, LazyAdam, _coalesced

__all__ = ["LazyAdam", "LoopResult", "train", "show_progress", "diverged_message"]

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


def _clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """:func:`torch.nn.utils.clip_grad_norm_` for dense and sparse gradients.

    A sparse gradient is coalesced first (duplicate rows summed) and replaced by its
    coalesced form, so its norm is that of the dense gradient it stands for; all gradients
    are scaled by ``min(1, max_norm / (norm + 1e-6))``. Returns the total norm (a tensor:
    no synchronisation with an accelerator).
    """
    squares = []
    grads = []
    for p in params:
        g = p.grad
        if g is None:
            continue
        if g.is_sparse:
            g = _coalesced(g)
            p.grad = g
            squares.append(g._values().detach().pow(2).sum())
        else:
            squares.append(g.detach().pow(2).sum())
        grads.append(g)
    if not squares:
        return torch.zeros(())
    total = torch.stack(squares).sum().sqrt()
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        if g.is_sparse:
            g._values().mul_(coef.to(g.dtype))
        else:
            g.mul_(coef.to(g.dtype))
    return total


def train(
    step: Callable[[int, int], torch.Tensor | float],
    modules: dict[str, nn.Module],
    *,
    epochs: int,
    steps_per_epoch: int,
    lr: float,
    final_lr: float | None = None,
    params: list[Any] | None = None,
    sparse_params: list[nn.Parameter] | None = None,
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
        Parameters or parameter groups to optimise with Adam (default: all of ``modules``
        but ``sparse_params``).
    sparse_params : list of nn.Parameter, optional
        Parameters whose gradients are sparse tensors, stepped by :class:`LazyAdam` (Adam
        on the rows with a gradient, the skipped steps of the others caught up when they
        are next touched) with the same learning-rate schedule; ``clip_norm``
        clips the joint norm of all gradients (a sparse one's coalesced values). Not with
        ``data_parallel``.
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
    sparse = list(sparse_params or [])
    opt: Adam | None = None
    sparse_opt: LazyAdam | None = None
    gamma = (final_lr / lr) ** (1 / epochs)
    if optimizer == "adam":
        if params is None:
            ids = {id(p) for p in sparse}
            params = [p for p in all_params if id(p) not in ids]
        if params or not sparse:  # (Adam refuses an empty list: only when nothing else)
            opt = Adam(params, lr=lr)
        if sparse:
            sparse_opt = LazyAdam(sparse, lr=lr)
    elif optimizer != "none":
        raise ValueError(f"optimizer must be 'adam' or 'none', got {optimizer!r}")
    elif sparse:
        raise ValueError("sparse_params need optimizer='adam'")
    optimizers = [o for o in (opt, sparse_opt) if o is not None]
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
    if dp and sparse:
        raise ValueError("sparse_params cannot be averaged over processes (data_parallel)")

    def snapshot() -> dict[str, Any]:
        state = {
            "modules": _state_of(modules),
            "optimizer": None if opt is None else opt.state_dict(),  # (with the lr)
            "sparse_optimizer": None if sparse_opt is None else sparse_opt.state_dict(),
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
        for o, key in ((opt, ""), (sparse_opt, "sparse_")):
            if o is None:
                continue
            if blob.get(f"{key}optimizer") is None:
                what = f"no {key}optimizer state (written by a run with other optimisers)"
                raise files.ResumeMismatch(
                    f"cannot resume from {ckpt}: {what}; resume=False starts afresh", [what]
                )
            o.load_state_dict(blob[f"{key}optimizer"])
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
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            try:
                loss = step(epoch, s)
            except ValueError as err:  # Pyro's argument checks catch NaN parameters first
                if "Expected parameter" not in str(err):
                    raise
                raise FloatingPointError(
                    diverged_message(engine, "NaN/inf parameters", epoch, s, last_good)
                ) from err
            if dp and optimizers:  # average gradients and loss over the processes
                value = distributed.all_reduce_grads(clipped, loss)  # type: ignore[assignment]
            elif dp:
                value = float(distributed.all_reduce_(torch.tensor([float(loss)]), "mean"))
            else:
                value = float(loss)
            if not math.isfinite(value):
                raise FloatingPointError(
                    diverged_message(engine, f"loss {value}", epoch, s, last_good)
                )
            if optimizers:
                if clip_norm is not None and sparse:
                    _clip_grad_norm(clipped, clip_norm)
                elif clip_norm is not None:
                    nn.utils.clip_grad_norm_(clipped, clip_norm)
                for o in optimizers:
                    o.step()
            total += value
        if not _check_finite(all_params):
            raise FloatingPointError(
                diverged_message(engine, "NaN/inf parameters", epoch, steps_per_epoch - 1,
                                 last_good)
            )
        res.history["loss"].append(total / steps_per_epoch)
        res.history["lr"].append(
            optimizers[0].param_groups[0]["lr"] if optimizers else lr
        )
        for o in optimizers:  # the exponential decay, as torch's ExponentialLR steps it
            for g in o.param_groups:
                g["lr"] = g["lr"] * gamma
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
