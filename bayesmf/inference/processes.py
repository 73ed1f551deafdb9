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
    progress: bool = False,
    desc: str = "chains",
) -> tuple[list[Any], bool]:
    """Run chains ``0..num_chains-1``: ``worker(job(c, threads))`` in worker processes when
    :func:`use_processes` says so, else ``here(c)`` one after the other in this process.

    ``worker`` must be a module-level function and ``job``'s value picklable (they cross to
    the worker); ``threads`` is the thread count a worker should set. With ``progress``
    the workers' runs are counted on a tqdm bar as they finish (labelled ``desc``; its
    clock ticks every second; ``here`` shows its own). Returns the chains' results in order
    and whether processes were used. A forked child runs single-threaded, since an OpenMP
    pool does not survive a fork.
    """
    if not use_processes(parallel, num_chains, device):
        return [here(c) for c in range(num_chains)], False
    workers = min(num_chains, os.cpu_count() or 1)
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    threads = 1 if method == "fork" else max(1, torch.get_num_threads() // workers)
    ctx = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        futures = [pool.submit(worker, job(c, threads)) for c in range(num_chains)]
        if progress:
            _count_finished(futures, f"{desc} ({workers} processes)")
        return [f.result() for f in futures], True


def _count_finished(futures: list[concurrent.futures.Future[Any]], desc: str) -> None:
    """A tqdm bar of the finished ``futures``, refreshed every second until all are done
    (or one failed: its error is raised when its result is read)."""
    from tqdm.auto import tqdm

    with tqdm(total=len(futures), desc=desc, unit="run") as bar:
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(
                pending, timeout=1.0, return_when=concurrent.futures.FIRST_EXCEPTION)
            bar.update(len(done))
            if any(f.exception() is not None for f in done):
                return
            bar.refresh()
