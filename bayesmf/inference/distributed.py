"""Data-parallel fits on ``torch.distributed`` (gloo on CPU, NCCL on GPU).

When a fit is launched by ``torchrun`` (or any launcher that initialises the default
process group with :func:`torch.distributed.init_process_group`), :func:`~bayesmf.inference.
fit_svi` and :func:`~bayesmf.inference.als` run data-parallel: every process holds a copy of
the parameters and reads only its :func:`shard` of the ratings.

* SVI: process ``p`` with shard size ``n_p`` scales its likelihood by ``W * n_p / B_p``
  (``W`` processes, ``B_p`` ratings in its minibatch) and counts the KL once, so the average
  over processes of their losses is an unbiased estimate of the full negative ELBO; the
  gradients are averaged (:func:`all_reduce_grads`) before clipping and the optimiser step,
  so every process takes the same step. All processes use the same seed, so their draws of
  the latent sites agree.
* ALS: the per-row and per-column Gram matrices and right-hand sides are sums over ratings;
  they are summed over the processes (:func:`all_reduce_`) and every process solves the same
  systems.

Rank 0 writes checkpoints (and, by convention, saves the result); every process returns the
same fit. Without an initialised process group every helper is a cheap no-op: one process
of a world of size one.

Examples
--------
``torchrun --nproc_per_node=2 examples/distributed_svi.py`` (see that file).

>>> from bayesmf.inference import distributed
>>> distributed.is_distributed(), distributed.rank(), distributed.world_size()
(False, 0, 1)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from pyro.poutine.messenger import Messenger

__all__ = [
    "is_distributed",
    "rank",
    "world_size",
    "shard",
    "shard_index",
    "all_reduce_",
    "all_reduce_grads",
    "broadcast_object",
    "gather_objects",
    "any_true",
    "barrier",
    "scale_likelihood",
    "time_steps",
]

T = TypeVar("T")


def is_distributed() -> bool:
    """Whether the default ``torch.distributed`` process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def _device_for_collectives() -> torch.device:
    """CPU for gloo, this process's CUDA device for NCCL."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard_index(
    n: int, *, part: int | None = None, parts: int | None = None, strided: bool = True
) -> torch.Tensor:
    """Positions ``0..n-1`` that belong to one of ``parts`` processes.

    Parameters
    ----------
    n : int
        Number of items (ratings).
    part, parts : int, optional
        This process's rank and the number of processes (default: :func:`rank` and
        :func:`world_size`).
    strided : bool
        ``True``: positions ``part, part + parts, ...`` (balanced, and mixed even when the data
        are ordered by user); ``False``: one contiguous block. Either way the shards partition
        ``0..n-1`` and their sizes differ by at most one.

    Returns
    -------
    LongTensor
        Sorted positions.

    Examples
    --------
    >>> shard_index(7, part=1, parts=3).tolist(), shard_index(7, part=1, parts=3,
    ...                                                       strided=False).tolist()
    ([1, 4], [3, 4])
    """
    part = rank() if part is None else int(part)
    parts = world_size() if parts is None else int(parts)
    if parts < 1 or not 0 <= part < parts:
        raise ValueError(f"need 0 <= part < parts, got part={part}, parts={parts}")
    if strided:
        return torch.arange(part, n, parts)
    base, extra = divmod(n, parts)
    start = part * base + min(part, extra)
    return torch.arange(start, start + base + (part < extra))


def shard(data: T, *, part: int | None = None, parts: int | None = None,
          strided: bool = True) -> T:
    """This process's part of a :class:`~bayesmf.data.Ratings` (or ``Pairs``).

    Parameters
    ----------
    data : Ratings or Pairs
        The whole data (anything with ``len`` and ``subset(index)``).
    part, parts, strided
        As in :func:`shard_index`.

    Returns
    -------
    Ratings or Pairs
        The entries at this process's positions, with the same shape, ids and features; the
        data itself when there is one process.

    Raises
    ------
    ValueError
        When a process would get no entry (more processes than ratings).

    Examples
    --------
    >>> from bayesmf.data import Ratings
    >>> R = Ratings([0, 1, 1], [2, 0, 1], [4.0, 3.0, 5.0], shape=(2, 3))
    >>> shard(R, part=0, parts=2).values.tolist(), shard(R, part=1, parts=2).shape
    ([4.0, 5.0], (2, 3))
    """
    parts = world_size() if parts is None else int(parts)
    if parts == 1:
        return data
    n = len(data)  # type: ignore[arg-type]
    if n < parts:
        raise ValueError(f"{n} entries cannot be shared among {parts} processes")
    return data.subset(shard_index(n, part=part, parts=parts, strided=strided))  # type: ignore[attr-defined]


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Sum (``op="sum"``), average (``"mean"``) or maximum (``"max"``) of ``tensor`` over the
    processes, in place; a no-op without a process group.

    Parameters
    ----------
    tensor : torch.Tensor
        Contiguous; on the CPU for gloo, on this process's GPU for NCCL (moved there and
        back otherwise).
    op : {"sum", "mean", "max"}

    Returns
    -------
    torch.Tensor
        ``tensor`` itself.
    """
    if op not in ("sum", "mean", "max"):
        raise ValueError(f"op must be 'sum', 'mean' or 'max', got {op!r}")
    if not is_distributed():
        return tensor
    dev = _device_for_collectives()
    buf = tensor if tensor.device == dev and tensor.is_contiguous() else tensor.to(dev).contiguous()
    dist.all_reduce(buf, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    if op == "mean":
        buf /= dist.get_world_size()
    if buf is not tensor:
        tensor.copy_(buf)
    return tensor


def all_reduce_grads(
    params: Iterable[torch.Tensor], loss: float | torch.Tensor | None = None
) -> float | None:
    """Average the gradients of ``params`` (and a loss) over the processes, in one message.

    Every gradient is flattened into one buffer (together with ``loss``), summed with a
    single ``all_reduce`` and divided by the number of processes, so that each process then
    takes the same optimiser step. A parameter without a gradient counts as a zero gradient
    (and gets one), so that every process sends a buffer of the same layout.

    Parameters
    ----------
    params : iterable of torch.Tensor
        Parameters (those with ``requires_grad``).
    loss : float or scalar tensor, optional
        This process's loss, averaged in the same message.

    Returns
    -------
    float or None
        The average loss (``None`` when no loss was given); ``float(loss)`` without a
        process group, where the gradients are left untouched.
    """
    if not is_distributed():
        return None if loss is None else float(loss)
    params = [p for p in params if p.requires_grad]
    dev = _device_for_collectives()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    dtype = torch.float64 if any(p.grad.dtype == torch.float64 for p in params) else (
        torch.float32)
    pieces = [p.grad.reshape(-1).to(device=dev, dtype=dtype) for p in params]
    extra = torch.tensor([0.0 if loss is None else float(loss)], device=dev, dtype=dtype)
    buf = torch.cat([*pieces, extra])
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    buf /= dist.get_world_size()
    offset = 0
    for p in params:
        k = p.grad.numel()
        p.grad.copy_(buf[offset : offset + k].view_as(p.grad))
        offset += k
    return None if loss is None else float(buf[-1])


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process (``obj`` itself without a process group).

    Used for state that only one process reads from disk (a checkpoint to resume from), so
    that all processes continue from the same state even without a shared file system. The
    object travels pickled between this job's own processes.
    """
    if not is_distributed():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=_device_for_collectives())
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` without a process group)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def any_true(flag: bool) -> bool:
    """Whether ``flag`` is true on any process (a collective decision, e.g. to stop)."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_device_for_collectives())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    """Wait for every process (no-op without a process group)."""
    if is_distributed():
        dist.barrier()



def time_steps(fit: Any, train: Any, steps: int = 50, seed: int = 0) -> dict[str, float]:
    """Median milliseconds of a data-parallel SVI step, computation and all-reduce apart.

    Runs ``steps`` (after two not counted) of the steps :func:`~bayesmf.inference.fit_svi`
    takes on this process's :func:`shard` of ``train`` with the fit's guide and batch size:
    the ``O(batch)`` loss and its backward pass, then :func:`all_reduce_grads`, with a
    :func:`barrier` before each part so that each is timed alone. The guide's gradients are
    left set and its parameters unchanged (no optimiser step). Call it on every process; in
    one process the all-reduce is a no-op.

    Parameters
    ----------
    fit : VariationalFit
        A mean-field fit (``fit_svi(..., collapse_rows=False)``, the guide of a
        data-parallel fit).
    train : Ratings or Pairs
        The fit's training data, whole (each process takes its shard).
    steps : int
        Steps timed.
    seed : int
        Seed of the minibatches and draws.

    Returns
    -------
    dict
        ``step_ms`` (loss and backward), ``allreduce_ms``, and ``floats``, the number of
        gradient entries each all-reduce sends.

    Examples
    --------
    >>> from bayesmf import data, inference, models
    >>> R, _ = data.synthetic_ratings(n_rows=30, n_cols=20, rank=2, density=0.3, seed=0)
    >>> fit = inference.fit_svi(models.BayesianMF(30, 20, rank=2), R, epochs=2,
    ...                         collapse_rows=False, progress=False)
    >>> t = time_steps(fit, R, steps=3)
    >>> t["allreduce_ms"] < t["step_ms"], int(t["floats"]) == 2 * (30 + 20) * 3 + 10
    (True, True)
    """
    from .objectives import local_elbo_loss

    if "users_per_batch" in fit.settings:
        raise ValueError("time_steps times the mean-field guide of a data-parallel fit; this "
                         "fit integrated the users out (fit_svi(..., collapse_rows=False))")
    batch = int(fit.settings["batch_size"])
    local = shard(train.to(fit.model.device))
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(local), generator=gen).to(local.values.device).tensor_split(
        max(1, -(-len(train) // batch)))
    torch.manual_seed(seed)
    params = [p for p in fit.guide.parameters() if p.requires_grad]
    compute: list[float] = []
    reduce: list[float] = []
    for s in range(steps + 2):  # two warm-up steps
        for p in params:
            p.grad = None
        barrier()
        t0 = time.perf_counter()
        local_elbo_loss(fit.model, fit.guide, local, index[s % len(index)], whole_rows=batch,
                        likelihood_scale=float(world_size())).backward()
        t1 = time.perf_counter()
        barrier()
        t2 = time.perf_counter()
        all_reduce_grads(params)
        t3 = time.perf_counter()
        if s >= 2:
            compute.append(t1 - t0)
            reduce.append(t3 - t2)
    return {"step_ms": 1e3 * statistics.median(compute),
            "allreduce_ms": 1e3 * statistics.median(reduce),
            "floats": float(sum(p.numel() for p in params))}


class _ScaleObserved(Messenger):
    """Multiplies the scale (log-probability weight) of observed sample sites only."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def _process_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "sample" and msg["is_observed"]:
            msg["scale"] = msg["scale"] * self.factor


def scale_likelihood(fn: Callable[..., Any], factor: float) -> Callable[..., Any]:
    """``fn`` (a Pyro model) with the log-likelihood of its observed sites times ``factor``.

    Unlike ``pyro.poutine.scale`` it leaves the latent sites (and so the KL terms) alone:
    data-parallel SVI multiplies each process's likelihood by the number of processes and
    counts the KL once per process, so the processes' average loss estimates the full
    negative ELBO.

    Parameters
    ----------
    fn : callable
        The model.
    factor : float
        Positive weight.

    Returns
    -------
    callable
        ``fn`` itself when ``factor == 1``.
    """
    if not factor > 0:
        raise ValueError(f"factor must be positive, got {factor}")
    if factor == 1:
        return fn

    def scaled(*args: Any, **kwargs: Any) -> Any:
        with _ScaleObserved(factor):
            return fn(*args, **kwargs)

    return scaled
