"""Independent runs of one fit (Gibbs or NUTS chains, SVI restarts) in worker processes.

Each engine runs single-threaded (:mod:`.threads`), so the cores of a machine are used by
running independent chains or restarts side by side: :func:`run_chains` hands them to a
pool of as many processes as there are cores (forked on Linux: cheap, and no importable
``__main__`` needed; spawned elsewhere). The results do not depend on it: each run is
seeded by its index, and a forked child runs with one thread, as a fit does by default.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["run_chains", "use_processes"]


def use_processes(parallel: bool | None, runs: int, device: torch.device) -> bool:
    """Whether ``runs`` independent runs go to worker processes: never for one run, on an
    accelerator or with ``parallel=False``; by default (``None``) when the machine has
    more than one core."""
    if runs == 1 or device.type != "cpu" or parallel is False:
        return False
    if parallel is None:
        return (os.cpu_count() or 1) > 1
    return True


def run_chains(
    num_chains: int,
    parallel: bool | None,
    device: torch.device,
    worker: Callable[[Any], Any],
    job: Callable[[int, int], Any],
    here: Callable[[int], Any],
) -> tuple[list[Any], bool]:
    """Run chains ``0..num_chains-1``: ``worker(job(c, threads))`` in worker processes when
    :func:`use_processes` says so, else ``here(c)`` one after the other in this process.

    ``worker`` must be a module-level function and ``job``'s value picklable (they cross to
    the worker); ``threads`` is the thread count a worker should set. Returns the chains'
    results in order and whether processes were used. A forked child runs
    single-threaded, since an OpenMP pool does not survive a fork.
    """
    if not use_processes(parallel, num_chains, device):
        return [here(c) for c in range(num_chains)], False
    workers = min(num_chains, os.cpu_count() or 1)
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    threads = 1 if method == "fork" else max(1, torch.get_num_threads() // workers)
    ctx = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        return list(pool.map(worker, [job(c, threads) for c in range(num_chains)])), True
