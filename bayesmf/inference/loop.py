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


class LazyAdam(torch.optim.Optimizer):
    """Adam for parameters with sparse (row) gradients, at the cost of the touched rows.

    For each row present in a (coalesced) sparse gradient, the update is
    :class:`torch.optim.Adam`'s (same moments, bias corrections and ``eps``), computed on the
    gathered rows (``index_select`` / ``index_copy_`` / ``index_add_``), so a step costs the
    rows it touched, not the whole array. A row absent from a step (zero gradient) would
    still move under dense Adam, by its decaying momentum; with ``catch_up`` (default) those
    skipped moves are applied in closed form when the row is next touched -- the geometric
    sum ``r (1 - r^k) / (1 - r)``, ``r = beta1 / sqrt(beta2)``, of ``k`` skipped steps, and
    the moments decayed by ``beta^k`` -- which reproduces dense Adam up to ``eps`` and to
    the learning rate and bias corrections of the skipped steps (taken as the current
    ones); without it, rows keep their parameters and moments while untouched, as in
    :class:`torch.optim.SparseAdam` ("lazy" Adam), which converges more slowly for rows
    seen in a fraction of the steps. The step count (bias corrections) is the parameter's.
    A dense gradient updates every row (plain Adam, after catching up); so does a sparse one
    touching more than ``dense_fraction`` of the rows, made dense (the same update with
    the catch-up, and cheaper: whole-array arithmetic beats gathering at such fractions).

    Parameters
    ----------
    params : iterable
        Parameters (or parameter groups).
    lr : float
        Learning rate (scheduled like any optimiser's ``param_groups[i]["lr"]``).
    betas : (float, float)
        Decay rates of the first and second moments.
    eps : float
        Added to the root of the second moment.
    catch_up : bool
        Apply the skipped momentum steps of a row when it is next touched.
    dense_fraction : float
        Share of the rows above which a sparse gradient is stepped as a dense one (the cost
        of a step stays that of the touched rows, at most ``1 / dense_fraction`` times it).
        Measured on one core (100,000 x 10 rows): the sparse update costs 0.9 ms for 6% of
        the rows and 3.8 ms for 30% against 5-8 ms for the dense one with its catch-up.

    Examples
    --------
    >>> from bayesmf.inference.guides import gather_rows
    >>> p = torch.nn.Parameter(torch.zeros(4, 2))
    >>> opt = LazyAdam([p], lr=0.1)
    >>> gather_rows(p, torch.tensor([1])).sum().backward()
    >>> opt.step()
    >>> [round(x, 4) for x in p.detach()[:, 0].tolist()]  # only row 1 moved, by lr
    [0.0, -0.1, 0.0, 0.0]
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        catch_up: bool = True,
        dense_fraction: float = 0.5,
    ) -> None:
        if not lr > 0 or not eps >= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"bad LazyAdam settings: lr={lr}, betas={betas}, eps={eps}")
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "catch_up": bool(catch_up),
                    "dense_fraction": float(dense_fraction)}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter with a gradient (``closure``: re-evaluates the
        loss, as for any torch optimiser; its value is returned)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
            # the step at which each row was last updated (for the catch-up)
            state["last_step"] = torch.zeros(p.shape[:1], dtype=torch.long, device=p.device)
        state["step"] += 1
        t = state["step"]
        if state["last_step"].dtype != torch.long:  # load_state_dict casts to p's dtype
            state["last_step"] = state["last_step"].round().long()
        m_all, v_all, last = state["exp_avg"], state["exp_avg_sq"], state["last_step"]
        step_size, bc2_sqrt = lr / (1 - b1**t), math.sqrt(1 - b2**t)
        grad = p.grad
        if grad.is_sparse and grad._nnz() > group["dense_fraction"] * max(len(p), 1):
            grad = grad.to_dense()  # (rows repeated in an uncoalesced gradient: summed)
        if grad.is_sparse:  # the touched rows only (gathered, updated, written back)
            grad = _coalesced(grad)
            idx, g = grad.indices()[0], grad.values()
            m, v = m_all.index_select(0, idx), v_all.index_select(0, idx)
            skipped = t - 1 - last.index_select(0, idx)
        else:  # every row
            idx, g, m, v = None, grad, m_all, v_all
            skipped = t - 1 - last
        delta = None
        if group["catch_up"] and p.dim() and bool((skipped > 0).any()):
            k = skipped.to(p.dtype).view(-1, *([1] * (p.dim() - 1)))
            r = b1 / math.sqrt(b2)
            moves = r * (1 - torch.pow(r, k)) / (1 - r)
            delta = moves * m / (v.sqrt() + eps) * (-step_size * bc2_sqrt)
            m.mul_(torch.pow(b1, k))
            v.mul_(torch.pow(b2, k))
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        if idx is None:
            if delta is not None:
                p.add_(delta)
            p.addcdiv_(m, v.sqrt().div_(bc2_sqrt).add_(eps), value=-step_size)
            last.fill_(t)
            return
        m_all.index_copy_(0, idx, m)
        v_all.index_copy_(0, idx, v)
        last.index_fill_(0, idx, t)
        update = m.div_(v.sqrt_().div_(bc2_sqrt).add_(eps)).mul_(-step_size)
        if delta is not None:
            update.add_(delta)
        # rows unique (coalesced): gather, add, write back -- about twice as fast as
        # index_add_ (a scatter-add) on rows of a few floats
        p.index_copy_(0, idx, p.index_select(0, idx).add_(update))


def _fusable(params: list[Any]) -> bool | None:
    """Whether Adam's fused kernel (one pass per step instead of several, 2.5x faster on
    rows of 10 floats) takes these parameters: floating point, on the CPU or CUDA."""
    flat = [p for group in params for p in (group["params"] if isinstance(group, dict)
                                            else [group])]
    ok = bool(flat) and all(torch.is_floating_point(p) and p.device.type in ("cpu", "cuda")
                            for p in flat)
    return True if ok else None


def _coalesced(grad: torch.Tensor) -> torch.Tensor:
    """A sparse gradient in coalesced form (unique, sorted rows), without the sort when its
    row indices already increase (as a gather by :func:`torch.unique`'s rows gives)."""
    if grad.is_coalesced():
        return grad
    idx = grad._indices()
    if idx.shape[0] == 1 and idx.shape[1] > 1 and bool((idx[0, 1:] > idx[0, :-1]).all()):
        return torch.sparse_coo_tensor(idx, grad._values(), grad.shape, is_coalesced=True,
                                       check_invariants=False)
    return grad.coalesce()


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
    opt = sched = None
    sparse_opt = sparse_sched = None
    gamma = (final_lr / lr) ** (1 / epochs)
    if optimizer == "adam":
        if params is None:
            ids = {id(p) for p in sparse}
            params = [p for p in all_params if id(p) not in ids]
        if params or not sparse:  # (Adam refuses an empty list: only when nothing else)
            opt = torch.optim.Adam(params, lr=lr, fused=_fusable(params))
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma)
        if sparse:
            sparse_opt = LazyAdam(sparse, lr=lr)
            sparse_sched = torch.optim.lr_scheduler.ExponentialLR(sparse_opt, gamma=gamma)
    elif optimizer != "none":
        raise ValueError(f"optimizer must be 'adam' or 'none', got {optimizer!r}")
    elif sparse:
        raise ValueError("sparse_params need optimizer='adam'")
    optimizers = [o for o in (opt, sparse_opt) if o is not None]
    schedulers = [sc for sc in (sched, sparse_sched) if sc is not None]
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
            "optimizer": None if opt is None else opt.state_dict(),
            "scheduler": None if sched is None else sched.state_dict(),
            "sparse_optimizer": None if sparse_opt is None else sparse_opt.state_dict(),
            "sparse_scheduler": None if sparse_sched is None else sparse_sched.state_dict(),
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
        for o, sc, key in ((opt, sched, ""), (sparse_opt, sparse_sched, "sparse_")):
            if o is None:
                continue
            if blob.get(f"{key}optimizer") is None:
                what = f"no {key}optimizer state (written by a run with other optimisers)"
                raise files.ResumeMismatch(
                    f"cannot resume from {ckpt}: {what}; resume=False starts afresh", [what]
                )
            o.load_state_dict(blob[f"{key}optimizer"])
            sc.load_state_dict(blob[f"{key}scheduler"])  # type: ignore[union-attr]
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
        for sc in schedulers:
            sc.step()
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
