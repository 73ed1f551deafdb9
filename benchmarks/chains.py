"""How long must the Gibbs chains run on MovieLens-100K before they agree? (issue 12, item 4)

Four chains of :func:`bayesmf.inference.fit_gibbs` (rank 10, biases; plain and ARD with factor
means) on ``random_split`` seed 0, at several burn-in + kept lengths. For each run: the split,
rank-normalised R-hat (Vehtari et al. 2021) of every hyper-parameter (the sampler's own
``settings["rhat"]``) and of the posterior mean of the latent function at 200 random test
cells (fixed seed), the share of those cells with R-hat above 1.01, their bulk ESS and lag-1
autocorrelation, and the share above 1.01 that *stationary* AR(1) chains of that
autocorrelation and length show by chance (simulated), the test RMSE of the
pooled predictive mean, and the CPU time of the four chains (run one after the other on one
thread). Results: ``benchmarks/results/chains.{json,md}``.

Run::

    .venv/bin/python benchmarks/chains.py                     # 50+150 ... 1000+2000
    .venv/bin/python benchmarks/chains.py --lengths 50+150    # one length
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import default_data_dir, write_results  # noqa: E402

from bayesmf import data, inference, models  # noqa: E402
from bayesmf.inference.gibbs import _rhat  # noqa: E402

CHAINS = 4
CELLS = 200


def run(train: Any, test: Any, ard: bool, burn_in: int, kept: int) -> dict[str, Any]:
    model = models.BayesianMF(train.n_rows, train.n_cols, rank=10, ard=ard, factor_means=ard)
    t0 = time.process_time()
    fit = inference.fit_gibbs(model, train, num_samples=kept, burn_in=burn_in,
                              num_chains=CHAINS, seed=0, progress=False, parallel=False)
    cpu = time.process_time() - t0
    cells = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:CELLS]
    with torch.no_grad():
        f = fit.model.expected(fit.sample(), test.rows[cells], test.cols[cells])
    f = f.reshape(CHAINS, kept, -1).double().numpy()
    r = np.array([_rhat(f[:, :, j]) for j in range(f.shape[-1])])
    ess = np.array([float(az.ess(f[:, :, j], method="bulk")) for j in range(f.shape[-1])])
    c = f - f.mean(1, keepdims=True)
    rho = float(np.median((c[:, 1:] * c[:, :-1]).sum((0, 1)) / (c**2).sum((0, 1))))
    hyper = fit.settings.get("rhat", {})
    worst = max(hyper, key=hyper.get)
    pred = fit.predict(test, clamp=True)
    return {
        "rmse": float(((pred - test.values) ** 2).mean().sqrt()),
        "cpu_s": cpu,
        "cells_rhat_above_1.01": float((r > 1.01).mean()),
        "cells_rhat_median": float(np.median(r)),
        "cells_rhat_max": float(r.max()),
        "hyper_rhat_max": float(hyper[worst]),
        "hyper_worst": worst,
        "hyper_above_1.01": sorted(k for k, v in hyper.items() if v > 1.01),
        "cells_ess_bulk_median": float(np.median(ess)),
        "cells_lag1_autocorr_median": float(rho),
        "stationary_ar1_rhat_above_1.01": _stationary_share(rho, kept),
    }


def _stationary_share(rho: float, kept: int, cells: int = CELLS, seed: int = 0) -> float:
    """Share of R-hat > 1.01 among ``cells`` simulated *stationary* AR(1) chains (lag-1
    autocorrelation ``rho``, started in equilibrium; ``CHAINS`` x ``kept`` draws): what
    converged chains with the cells' autocorrelation show by chance alone."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((cells, CHAINS, kept))
    x = np.empty_like(e)
    x[..., 0] = e[..., 0]
    for i in range(1, kept):
        x[..., i] = rho * x[..., i - 1] + np.sqrt(1 - rho**2) * e[..., i]
    return float(np.mean([_rhat(x[j]) > 1.01 for j in range(cells)]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", nargs="+", default=["50+150", "200+400", "500+1000", "1000+2000"],
                   help="burn-in+kept sweeps per chain")
    p.add_argument("--quick", action="store_true", help="smoke run: 10+20 sweeps only")
    p.add_argument("--data-dir", default=default_data_dir())
    args = p.parse_args(argv)
    if args.quick:
        args.lengths = ["10+20"]
    torch.set_num_threads(1)
    ds = data.load_movielens("100k", root=args.data_dir, download=False)
    R = ds.to_ratings() if hasattr(ds, "to_ratings") else ds
    train, test = data.random_split(R, 0.1, seed=0)
    results: dict[str, dict[str, Any]] = {}
    for ard in (False, True):
        for length in args.lengths:
            burn, kept = (int(x) for x in length.split("+"))
            name = f"{'ARD ' if ard else ''}Gibbs {burn}+{kept} x{CHAINS}"
            results[name] = run(train, test, ard, burn, kept)
            print(name, results[name], flush=True)
    settings = {
        "data": "MovieLens-100K, random_split(test_fraction=0.1, seed=0)",
        "model": "BayesianMF(rank=10, biases=True); ARD rows: ard=True, factor_means=True",
        "chains": CHAINS, "cells": f"{CELLS} random test cells (seed 0)",
        "rhat": "split rank-normalised R-hat, max of bulk and folded (Vehtari et al. 2021)",
        "threads": 1,
        "reading": ("fit_gibbs's default length is 200 + 400 sweeps (it was 50 + 200): "
                    "what R-hat <= 1.01 for every hyper-parameter of plain Bayesian MF "
                    "needs; the ARD model's item-bias scale stays unmixed: its chains "
                    "settle at different spreads of the item biases (0.117 to 0.149 at "
                    "200 + 400), and drawing the translation move (U, mean_U, biases) "
                    "jointly with that scale did not change it, so the slow direction is "
                    "the split of the items' main effects between the biases and single "
                    "factor columns; the latent function at single cells has a slow "
                    "component: at 200 + 400, 27.5% of 200 test cells have R-hat > 1.01 "
                    "although their draws are nearly independent (lag-1 autocorrelation "
                    "0.22, bulk ESS 671 of 1,600), against 0.5% for stationary chains of "
                    "that autocorrelation, so the chains do disagree there; the "
                    "disagreement is small (R-hat 1.005 at the median: chain means about "
                    "0.1 posterior sd apart; test RMSE equal to 0.001 across lengths) and"
                    " shrinks with length (8.5% at 500 + 1,000)"),
    }
    write_results("chains_quick" if args.quick else "chains", {"ml-100k split 0": results},
                  settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
