"""One CPU thread per fit, or torch's default? Timed on an idle and on a busy machine.

On MovieLens-100K (``random_split`` seed 0, rank 10): a Gibbs sweep of the ARD model, an SVI
epoch of ``BayesianMF`` (batches of 10,000) and an ALS iteration, each timed with the
library's default (``inference.set_num_threads(1)``: one thread inside every fit) and with
torch's default left in place (``set_num_threads(None)``; torch uses as many threads as
cores), alternating, ``--repeats`` times, in two conditions: the machine otherwise idle, and
every core but one busy with a spinning process (what a laptop running anything else
looks like to torch's thread pool). Reported: wall seconds per unit (median of the
repeats) and the ratio torch-default / one-thread. Results:
``benchmarks/results/threads.{json,md}``.

Run::

    .venv/bin/python benchmarks/threads.py
    .venv/bin/python benchmarks/threads.py --quick     # one repeat, fewer units
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import default_data_dir, write_results  # noqa: E402

from bayesmf import data, inference, models  # noqa: E402

#: units of work per timing (Gibbs sweeps, SVI epochs, ALS iterations)
UNITS = {"Gibbs sweep": 30, "SVI epoch": 3, "ALS iteration": 5}


def unit_seconds(engine: str, train: Any, units: int) -> float:
    """Wall seconds per unit of ``engine`` on ``train``."""
    t0 = time.perf_counter()
    if engine == "Gibbs sweep":
        inference.fit_gibbs(models.BayesianMF(*train.shape, rank=10, ard=True,
                                              factor_means=True),
                            train, num_samples=units, burn_in=0, thin=1, progress=False)
    elif engine == "SVI epoch":
        inference.fit_svi(models.BayesianMF(*train.shape, rank=10), train, epochs=units,
                          progress=False)
    else:
        inference.als(train, rank=10, epochs=units)
    return (time.perf_counter() - t0) / units


def spinners(n: int) -> list[subprocess.Popen]:
    """``n`` processes that keep one core each busy until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="one repeat, a third of the units")
    p.add_argument("--data-dir", default=default_data_dir())
    args = p.parse_args(argv)
    units = dict(UNITS)
    if args.quick:
        args.repeats = 1
        units = {k: max(1, v // 3) for k, v in units.items()}
    cores = os.cpu_count() or 1
    torch_default = torch.get_num_threads()
    ds = data.load_movielens("100k", root=args.data_dir, download=False)
    R = ds.to_ratings() if hasattr(ds, "to_ratings") else ds
    train, _ = data.random_split(R, 0.1, seed=0)
    settings_of = {"one thread (default)": 1, f"torch's default ({torch_default})": None}
    for engine in units:  # warm-up: first-call costs (imports, allocator) are not the unit's
        unit_seconds(engine, train, 1)
    results: dict[str, dict[str, Any]] = {}
    raw: dict[str, dict[str, list[float]]] = {}
    for condition in ("idle", f"busy ({cores - 1} of {cores} cores spinning)"):
        busy = spinners(cores - 1) if condition != "idle" else []
        try:
            times: dict[str, dict[str, list[float]]] = {
                e: {s: [] for s in settings_of} for e in units}
            for _ in range(args.repeats):
                for engine, n in units.items():
                    for label, threads in settings_of.items():  # alternating
                        inference.set_num_threads(threads)
                        times[engine][label].append(unit_seconds(engine, train, n))
        finally:
            inference.set_num_threads(1)
            for proc in busy:
                proc.kill()
                proc.wait()
        for engine, by in times.items():
            one, many = (statistics.median(v) for v in by.values())
            results[f"{engine}, {condition}"] = {
                **{f"s_per_unit {label}": statistics.median(v) for label, v in by.items()},
                "ratio torch_default / one_thread": many / one,
            }
            raw[f"{engine}, {condition}"] = by
        print(condition, {k: v for k, v in results.items() if condition in k}, flush=True)
    settings = {
        "data": "MovieLens-100K, random_split(test_fraction=0.1, seed=0), 90,000 ratings",
        "engines": {"Gibbs sweep": "fit_gibbs(BayesianMF(rank=10, ard=True, "
                                   "factor_means=True), burn_in=0, thin=1)",
                    "SVI epoch": "fit_svi(BayesianMF(rank=10)) -- batches of 10,000",
                    "ALS iteration": "als(rank=10)"},
        "units": units, "repeats": args.repeats, "cores": cores,
        "torch_default_threads": torch_default,
        "busy": "cores - 1 child processes running `while True: pass`",
        "statistic": "median over repeats of wall seconds per unit (fit set-up included; "
                     "each engine run once before the timings)",
        "raw": raw,
    }
    write_results("threads_quick" if args.quick else "threads", {"ml-100k": results},
                  settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
