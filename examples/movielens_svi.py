"""Bayesian neural-network MF with side information (VI(3)+S) on MovieLens-100K, by SVI.

Loads ML-100K from ``--data-dir`` / ``$BAYESMF_DATA_DIR`` / the cache (downloading it from
GroupLens when allowed), holds out a random 10 % of the ratings, fits
:class:`bayesmf.models.BayesianNNMF` with three hidden layers of 50 units and the 19
genre flags of each movie appended to its embedding (the "VI(3)+S" model of Kampman &
Heaukulani 2019) by mean-field SVI with a KL warm-up, then prints

* the test RMSE of the posterior predictive mean (next to the global-mean baseline),
* the empirical coverage of the central 50/80/90/95 % predictive intervals,
* ``az.summary`` of the hyper-parameters (noise and prior scale of every array),
* the held-out log predictive density ``log mean_s p(x_i | z_s)`` per test rating, and
  ``az.loo`` on (a tenth of) the TRAINING ratings (PSIS-LOO is meaningful only for data the
  fit was conditioned on; with draws from the variational ``q`` it estimates leave-one-out
  under ``q``, not the posterior's),

and saves an ELBO-trace PNG and a posterior-predictive-check PNG into ``--out``.

Run::

    .venv/bin/python examples/movielens_svi.py                 # about 1-2 min on 2 cores
    .venv/bin/python examples/movielens_svi.py --epochs 20     # a quicker, rougher fit
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import arviz as az
import torch

from bayesmf import data, diagnostics, inference, models


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder holding ml-100k/")
    p.add_argument("--epochs", type=int, default=None, help="default: the library's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/movielens_svi", help="folder for the PNGs")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)

    R = data.load_movielens("100k", root=args.data_dir).to_ratings()
    train, test = data.random_split(R, test_fraction=0.1, seed=args.seed)
    print(f"{R}\ntrain {len(train):,} ratings, test {len(test):,}")
    genres = train.col_features  # (n_items, 19) one-hot genre flags
    print(f"side information: {genres.shape[1]} genre flags per movie")

    # VI(3)+S with the library's defaults: the same settings as the README, the CLI
    # (`bayesmf fit --model nnmf --side-info`) and benchmarks/table1_ml100k.py
    model = models.BayesianNNMF(R.n_rows, R.n_cols, rank=10, bilinear_dims=60,
                                hidden=(50, 50, 50), item_features=genres)
    fit = inference.fit_svi(model, train, epochs=args.epochs, seed=args.seed)
    print(f"fitted in {fit.fit_seconds:.1f} s ({fit.settings['epochs']} epochs, KL warm-up "
          f"{fit.settings['kl_warmup']})")

    pred = fit.predict(test, clamp=True)
    baseline = torch.full_like(test.values, float(train.values.mean()))
    print(f"\ntest RMSE  VI(3)+S {diagnostics.rmse(test.values, pred):.4f}   "
          f"global mean {diagnostics.rmse(test.values, baseline):.4f}")
    cover = diagnostics.interval_coverage(fit, test, levels=(0.5, 0.8, 0.9, 0.95))
    print("predictive intervals: " + ", ".join(
        f"{100 * lv:.0f}% interval covers {100 * c:.1f}% of the test ratings"
        for lv, c in cover.items()))

    hyper = [s.name for s in model.latent_specs() if s.positive]
    # log_likelihood on a tenth of the training ratings (for az.loo), predictive on the test
    sub = train.subset(torch.arange(0, len(train), 10))
    idata = diagnostics.to_inference_data(fit, test, num_samples=200, include=hyper, train=sub)
    print("\nArviZ summary of the hyper-parameters (posterior of each array's prior scale):")
    print(az.summary(idata, var_names=hyper, kind="stats", round_to=3).to_string())
    lpd = diagnostics.log_predictive_density(fit, test, num_samples=200)
    print(f"\nheld-out log predictive density: {lpd.mean:.4f} per test rating "
          f"({lpd.kind}; total {lpd.total:.1f} over {len(test):,} ratings)")
    loo = az.loo(idata)
    print(f"PSIS-LOO on {len(sub):,} training ratings: elpd {float(loo.elpd_loo):.1f} "
          f"(se {float(loo.se):.1f}), {float(loo.elpd_loo) / len(sub):.4f} per rating "
          "(draws from q: leave-one-out under q, not the posterior)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    diagnostics.plot_elbo(fit, path=out / "elbo.png")
    diagnostics.plot_ppc(fit, test, path=out / "ppc.png")
    print(f"\nsaved {out / 'elbo.png'} and {out / 'ppc.png'}")


if __name__ == "__main__":
    main()
