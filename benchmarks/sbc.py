"""Simulation-based calibration (Talts et al. 2018) of the Gibbs sampler and of SVI.

Data sets are drawn from the prior of a small ``BayesianMF`` (15 x 12, rank 1, row and column
biases, a fixed pattern of 90 observed cells, offset 0): hyper-parameters, factors, biases,
noise and ratings. Each is fitted by

* ``fit_gibbs`` (one chain, burn-in, kept draws thinned to ``--draws``),
* ``fit_gibbs(rescale=False)`` when the sampler has that option: the sweep without the
  rescaling move ``U -> cU, V -> V/c`` (what issue 12 measured),
* ``fit_svi`` with the library's defaults but the mean-field guide (``collapse_rows=False``;
  ``--draws`` independent draws from q),
* ``fit_svi(collapse_rows=True)``: the users' vectors and biases integrated out (``--methods
  svi_collapsed``; ``--merge`` keeps the other methods' recorded results),

and the rank of each true value among the draws is recorded: the noise, every prior scale,
the first row and column bias, the norms ``|u_0|``, ``|v_0|`` (invariant under the sign flip
of a rank-1 factorisation), the latent function ``f`` and a new observation ``y`` at one
observed and one unobserved cell. A calibrated posterior gives uniform ranks; the table
reports the chi-square and KS p-values, the coverage of the central 90% intervals (exact:
with 39 draws, the truth strictly inside the 2nd smallest and 2nd largest draw), the
fractions of truths below and above every draw (1/40 each when calibrated) and the mean rank
in [0, 1] (0.5 when unbiased; above 0.5: the draws are too low). The rank histograms go to
``benchmarks/results/sbc_<method>.png``: a U shape means over-confident draws (or a chain that
does not mix), a hump means over-dispersed ones, a slope a bias.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sbc.py            # 200 replications
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sbc.py --quick    # smoke run

Writes ``benchmarks/results/sbc.{json,md}`` and the PNGs (``--out`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, write_results  # noqa: E402

from bayesmf import data, inference, models  # noqa: E402
from bayesmf.diagnostics.calibration import (  # noqa: E402
    plot_rank_histograms,
    run_sbc,
    thin,
)

log = logging.getLogger("benchmarks.sbc")

SHAPE = (15, 12)

#: issue 12's measurements (100 data sets, 49 kept Gibbs draws, the sampler before the
#: rescaling move), for comparison
ISSUE_12 = {
    "Gibbs": {
        "scale_U chi2 p": 1e-33, "scale_U truth outside all draws": 0.59,
        "scale_U 90% coverage": 0.32, "scale_U 90% coverage, chains 4x longer": 0.48,
        "noise 90% coverage": "0.80-0.82", "f and predictions chi2 p": "0.46-0.83",
        "y 90% coverage": 0.890,
    },
    "SVI": {
        "noise truth below every draw": 0.80, "f 90% coverage": 0.65,
        "predictive intervals": "look calibrated: the two errors cancel",
    },
}


def draws_of(fit) -> dict[str, torch.Tensor]:
    """Kept Gibbs draws, chains one after the other, whether stored ``(draws, ...)`` or
    ``(chains, draws, ...)``."""
    d = fit.draws
    if getattr(fit, "num_chains", None) is None:
        return dict(d)
    return {k: v.reshape(-1, *v.shape[2:]) for k, v in d.items()}


def gibbs_fitter(num_draws: int, burn_in: int, thin_by: int, rescale: bool | None):
    extra = {} if rescale is None else {"rescale": rescale}

    def fit(model, ratings, seed):
        f = inference.fit_gibbs(model, ratings, num_samples=num_draws * thin_by,
                                burn_in=burn_in, seed=seed, progress=False, **extra)
        return {k: torch.as_tensor(thin(v.numpy(), num_draws)) for k, v in draws_of(f).items()}

    return fit


def svi_fitter(num_draws: int, **options):
    def fit(model, ratings, seed):
        f = inference.fit_svi(model, ratings, seed=seed, progress=False, **options)
        return f.sample(num_draws, seed=seed)

    return fit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replications", type=int, default=200)
    p.add_argument("--draws", type=int, default=39, help="kept draws per fit (L)")
    p.add_argument("--bins", type=int, default=10, help="rank groups of the chi-square test")
    p.add_argument("--burn-in", type=int, default=100)
    p.add_argument("--thin", type=int, default=5)
    p.add_argument("--methods", default="gibbs,gibbs_norescale,svi")
    p.add_argument("--quick", action="store_true", help="smoke run: 12 replications, 19 draws")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--merge", action="store_true",
                   help="keep the other methods of an existing sbc.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    if args.quick:
        args.replications, args.draws, args.bins = 12, 19, 5

    pattern, _ = data.synthetic_ratings(*SHAPE, rank=1, density=0.5, seed=1)
    seen = torch.zeros(SHAPE, dtype=torch.bool)
    seen[pattern.rows, pattern.cols] = True
    r_out, c_out = (~seen).nonzero()[0].tolist()
    cells = (torch.tensor([int(pattern.rows[0]), r_out]),
             torch.tensor([int(pattern.cols[0]), c_out]))

    def make():
        return models.BayesianMF(*SHAPE, rank=1, global_mean=0.0)

    has_rescale = "rescale" in inspect.signature(inference.fit_gibbs).parameters
    fitters = {
        "gibbs": ("Gibbs", gibbs_fitter(args.draws, args.burn_in, args.thin,
                                        True if has_rescale else None)),
        "gibbs_norescale": ("Gibbs, no rescaling move",
                            gibbs_fitter(args.draws, args.burn_in, args.thin, False)),
        "svi": ("SVI (defaults, mean-field)", svi_fitter(args.draws, collapse_rows=False)),
        "svi_collapsed": ("SVI, users integrated out (collapse_rows=True)",
                          svi_fitter(args.draws, collapse_rows=True)),
    }
    wanted = [m for m in args.methods.split(",") if m]
    if "gibbs_norescale" in wanted and not has_rescale:
        wanted.remove("gibbs_norescale")
    out_dir = Path(args.out) if Path(args.out).is_absolute() else REPO / args.out

    results: dict[str, dict[str, dict[str, float]]] = {}
    timing: dict[str, dict[str, float]] = {}
    for key in wanted:
        label, fit = fitters[key]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        res = run_sbc(make, pattern, fit, args.replications, args.draws, cells, seed=args.seed)
        timing[label] = {"cpu_s": time.process_time() - cpu0,
                         "wall_s": time.perf_counter() - wall0}
        summary = res.summary(args.bins)
        results[label] = summary
        png = out_dir / f"sbc_{key}.png"
        out_dir.mkdir(parents=True, exist_ok=True)
        plot_rank_histograms(
            res.ranks, args.draws, args.bins, path=png,
            title=f"SBC rank histograms: {label} ({args.replications} data sets, "
                  f"{args.draws} draws; grey: 99% band of a uniform histogram)")
        log.info("%s: %.0f s CPU; %s", label, timing[label]["cpu_s"], png)
        for name, s in summary.items():
            log.info("  %-16s chi2 p %.3g  KS p %.3g  90%% cover %.3f  below %.3f above %.3f",
                     name, s["chi2_p"], s["ks_p"], s["coverage"], s["below_all"],
                     s["above_all"])

    settings = {
        "model": {"class": "BayesianMF", "shape": SHAPE, "rank": 1, "biases": True,
                  "global_mean": 0.0, "observed_cells": len(pattern)},
        "replications": args.replications, "draws": args.draws, "bins": args.bins,
        "gibbs": {"burn_in": args.burn_in, "thin": args.thin, "num_chains": 1},
        "svi": "fit_svi defaults with the mean-field guide (collapse_rows=False; the users "
               "integrated out, fit_svi's default for this model since 2026-12-02, is "
               "svi_collapsed)",
        "cells": {"observed": [int(cells[0][0]), int(cells[1][0])],
                  "unobserved": [r_out, c_out]},
        "seed": args.seed, "quick": args.quick, "timing": timing,
        "issue_12_before": ISSUE_12,
    }
    old = out_dir / "sbc.json"
    if args.merge and old.exists():  # the methods not run now, as recorded
        import json

        before = json.loads(old.read_text())
        kept = {k: v for k, v in before["results"].items() if k not in results}
        timing_before = before["settings"].get("timing", {})
        settings["timing"] = {**{k: v for k, v in timing_before.items() if k in kept},
                              **timing}
        results = {**kept, **results}
    write_results("sbc", results, settings, out_dir=out_dir)


if __name__ == "__main__":
    main()
