"""Minibatch size of mean-field SVI at scale: time to a good fit, batch 10k against the floor.

``fit_svi`` raises a ``batch_size`` smaller than five ratings per row of the longest array a
step draws (``svi.minibatch_size``, ``RATINGS_PER_ROW``): 10,000 stands on MovieLens-100K,
becomes 50,000 on 10,000 x 10,000 synthetic ratings (1e6), 500,000 on 100,000 x 10,000
(1e7) and 124,915 on Jester dataset 1 (24,983 users). This script fits Bayesian MF with the
mean-field guide (``collapse_rows=False``, the guide every Bayesian NNMF uses) each way, on
the data of ``scaling.py`` with 2% of the ratings held out, each fit in a fresh process on
one thread, and records CPU seconds, held-out RMSE (posterior predictive mean, 50 draws),
the final ELBO per rating and the noise's posterior mean (the synthetic data's true noise
is 0.5). "As asked" runs pass ``min_ratings_per_row=0``, which turns the floor off: the
batch the caller gave. At 1e7 a last run fits the collapsed guide (the users integrated out,
Bayesian MF's default) with its own raised batch, for the time to a fit of the two guides.

Run::

    .venv/bin/python benchmarks/minibatch.py                 # ~35 CPU minutes
    .venv/bin/python benchmarks/minibatch.py --sizes 1e6     # ~3 minutes
    .venv/bin/python benchmarks/minibatch.py --sizes 1e7 --labels collapsed \
        --name minibatch_1e7_collapsed                        # ~11 minutes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, write_results  # noqa: E402

#: (label, batch_size asked, floor on, epochs (None: the default)) per size; the 1e7 run
#: "as asked" gets a quarter of the epochs, about the CPU of the floored run's default; a
#: label starting "collapsed" fits Bayesian MF's default guide (users integrated out)
RUNS: dict[str, list[tuple[str, int, bool, int | None]]] = {
    "1e6": [("batch 10k as asked", 10_000, False, None),
            ("batch 20k as asked", 20_000, False, None),
            ("batch 10k raised (default)", 10_000, True, None),
            ("batch 100k", 100_000, True, None)],
    "1e7": [("batch 10k as asked, 15 epochs", 10_000, False, 15),
            ("batch 10k raised (default)", 10_000, True, None),
            ("collapsed (Bayesian MF's default)", 10_000, True, None)],
    "jester": [("batch 10k as asked", 10_000, False, None),
               ("batch 10k raised (default)", 10_000, True, None)],
}


def worker(size: str, batch: int, floor: bool, epochs: int | None,
           collapse: bool = False) -> dict[str, Any]:
    """Fit once in this (fresh) process (mean-field, or with ``collapse`` the users
    integrated out)."""
    import torch

    torch.set_num_threads(1)
    from scaling import RANK, _data

    from bayesmf import data, inference, models
    from bayesmf.diagnostics.metrics import rmse
    R = _data(size)
    train, test = data.random_split(R, 0.02, seed=0)
    model = models.BayesianMF(*R.shape, rank=RANK)
    c0 = time.process_time()
    fit = inference.fit_svi(model, train, epochs=epochs, batch_size=batch,
                            collapse_rows=collapse, progress=False, seed=0,
                            **({} if floor else {"min_ratings_per_row": 0}))
    cpu = time.process_time() - c0
    return {"n_ratings": len(R), "shape": list(R.shape), "batch": fit.settings["batch_size"],
            "epochs": fit.settings["epochs"],
            "steps": len(fit.elbo_history) * math.ceil(len(train) / fit.settings["batch_size"]),
            "cpu_s": cpu,
            "rmse": float(rmse(test.values, fit.predict(test, num_samples=50))),
            "elbo_per_rating": fit.elbo_history[-1],
            "noise": float(fit.guide.posterior_mean()["noise"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--name", default="minibatch")
    p.add_argument("--labels", nargs="+", default=None,
                   help="run only the runs whose label starts with one of these")
    p.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        size, batch, floor, epochs, collapse = args.worker
        print(json.dumps(worker(size, int(batch), floor == "1",
                                None if epochs == "None" else int(epochs), collapse == "1")))
        return 0
    results: dict[str, dict[str, Any]] = {}
    for size in args.sizes:
        results[size] = {}
        for label, batch, floor, epochs in RUNS[size]:
            if args.labels and not any(label.startswith(x) for x in args.labels):
                continue
            cmd = [sys.executable, str(Path(__file__)), "--worker", size, str(batch),
                   "1" if floor else "0", str(epochs),
                   "1" if label.startswith("collapsed") else "0"]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
            if out.returncode != 0:
                print(f"{size} {label} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results[size][label] = r
            print(f"{size:7s} {label:32s} batch {r['batch']:>7d}  epochs {r['epochs']:>3d}  "
                  f"cpu {r['cpu_s']:6.1f} s  rmse {r['rmse']:.4f}  noise {r['noise']:.3f}  "
                  f"elbo {r['elbo_per_rating']:.4f}", flush=True)
    settings = {
        "model": "BayesianMF(rank=10), fit_svi(..., collapse_rows=False, seed=0) with the "
                 "default epochs (60, raised to 500 optimiser steps) unless stated; "
                 "'collapsed': collapse_rows=True (the users integrated out)",
        "data": "scaling.py's synthetic rank-10 ratings (noise 0.5) and Jester dataset 1; "
                "random_split(R, 0.02, seed=0)",
        "as_asked": "min_ratings_per_row=0: the batch the caller gave",
        "threads": 1,
        "rmse": "held-out, posterior predictive mean of 50 draws",
        "runs": {s: [list(r) for r in RUNS[s]] for s in args.sizes},
    }
    write_results(args.name, results, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
