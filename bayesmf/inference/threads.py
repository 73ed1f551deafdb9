"""How many CPU threads a fit uses: one by default.

Every engine's step is many small tensor operations (a minibatch's rows, a side's Gram
matrices, a few hundred scalars of hyper-parameters), which gain little from torch's
intra-op threads and lose badly when another process holds a core: torch's OpenMP threads
wait for each other at every operation, and one of them is then always descheduled.
Measured on MovieLens-100K on a two-core machine (``benchmarks/results/threads.md``), with
the second core busy, two threads (torch's default there) make an ALS iteration tens of
times slower and a Gibbs sweep or an SVI epoch several times slower, while on an idle
machine they gain at most 1.4x. So each engine runs with one thread and restores the
caller's setting when it returns; several chains, restarts or processes
(``fit_gibbs(num_chains=...)``, ``torchrun``) are how this library uses more cores.

:func:`set_num_threads` changes that (``None``: leave torch's own setting), as does the
environment variable ``BAYESMF_NUM_THREADS`` (a number, or ``torch``) read at import.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

__all__ = ["fit_threads", "get_num_threads", "set_num_threads", "uses_fit_threads"]

F = TypeVar("F", bound=Callable[..., Any])


def _from_env(value: str | None) -> int | None:
    if value is None or value.strip() == "":
        return 1
    if value.strip().lower() == "torch":
        return None
    try:
        n = int(value)
    except ValueError:
        raise ValueError(
            f"BAYESMF_NUM_THREADS must be a positive integer or 'torch', got {value!r}"
        ) from None
    if n < 1:
        raise ValueError(f"BAYESMF_NUM_THREADS must be a positive integer or 'torch', got {n}")
    return n


_setting: int | None = _from_env(os.environ.get("BAYESMF_NUM_THREADS"))


def set_num_threads(n: int | None) -> None:
    """Set the CPU threads every fit uses from now on (default 1); ``None`` leaves torch's
    own setting (:func:`torch.set_num_threads`) as the caller left it.

    Examples
    --------
    >>> from bayesmf import inference
    >>> inference.set_num_threads(2)
    >>> inference.get_num_threads()
    2
    >>> inference.set_num_threads(1)  # the default
    """
    global _setting
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"set_num_threads takes a positive integer or None, got {n!r}")
    _setting = n


def get_num_threads() -> int | None:
    """The CPU threads every fit uses (``None``: torch's own setting)."""
    return _setting


@contextlib.contextmanager
def fit_threads() -> Iterator[int]:
    """Run the body with the fits' thread count (see :func:`set_num_threads`) and restore
    torch's setting afterwards, also on an exception. Yields the count in force.

    Examples
    --------
    >>> import torch
    >>> from bayesmf.inference.threads import fit_threads
    >>> with fit_threads() as n:
    ...     n == torch.get_num_threads() == 1
    True
    """
    before = torch.get_num_threads()
    wanted = _setting
    if wanted is None or wanted == before:
        yield before
        return
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(before)


def uses_fit_threads(fn: F) -> F:
    """Decorate an engine so that it runs inside :func:`fit_threads`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with fit_threads():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
