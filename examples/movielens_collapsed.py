"""Bayesian MF with implicit feedback on MovieLens-100K: mean-field SVI against collapsed SVI.

Holds out a random 10 % of the ratings and fits the same ``BayesianMF(implicit=True)``
(SVD++-style user and item representations, per-factor prior scales and factor means) twice
by SVI: with the fully factorised guide (``collapse_rows=False``) and with each user's vector
and bias integrated out exactly (``fit_svi``'s default for Bayesian MF,
``inference.CollapsedRowsGuide``).
For each it prints the test RMSE, the coverage of the central 50/80/90/95 % predictive
intervals, the noise posterior, the ELBO per rating and the CPU time; ``--gibbs`` adds the
Gibbs sampler of the same model as the exact reference.

Run::

    .venv/bin/python examples/movielens_collapsed.py            # about 1 min on one core
    .venv/bin/python examples/movielens_collapsed.py --gibbs    # + Gibbs (about 1 min more)
"""

from __future__ import annotations

import argparse
import time

from bayesmf import data, diagnostics, inference, models


def report(name: str, fit, test, cpu: float) -> None:
    pred = fit.predict(test, clamp=True)
    cover = diagnostics.interval_coverage(fit, test, levels=(0.5, 0.8, 0.9, 0.95))
    noise = float(fit.sample(200)["noise"].mean())
    elbo = f"   ELBO {fit.elbo_history[-1]:.4f}/rating" if hasattr(fit, "elbo_history") else ""
    print(f"{name:<22} RMSE {diagnostics.rmse(test.values, pred):.4f}   noise {noise:.3f}   "
          f"coverage {' / '.join(f'{c:.3f}' for c in cover.values())}   "
          f"CPU {cpu:.1f} s{elbo}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder holding ml-100k/")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gibbs", action="store_true", help="also sample the exact posterior")
    args = p.parse_args()
    inference.set_num_threads(1)

    R = data.load_movielens("100k", root=args.data_dir).to_ratings()
    train, test = data.random_split(R, test_fraction=0.1, seed=args.seed)
    print(f"{R}\ntrain {len(train):,} ratings, test {len(test):,}\n")

    def model() -> models.BayesianMF:
        return models.BayesianMF(R.n_rows, R.n_cols, rank=10, ard=True, factor_means=True,
                                 implicit=True)

    print("coverage: central 50/80/90/95 % predictive intervals on the test ratings")
    for name, options in (("SVI mean-field", {"collapse_rows": False}),
                          ("SVI collapsed users", {})):
        t0 = time.process_time()
        fit = inference.fit_svi(model(), train, seed=args.seed, progress=False, **options)
        report(name, fit, test, time.process_time() - t0)
    if args.gibbs:
        t0 = time.process_time()
        fit = inference.fit_gibbs(model(), train, seed=args.seed, num_samples=150, burn_in=50,
                                  thin=1, progress=False)
        report("Gibbs (50 + 150)", fit, test, time.process_time() - t0)


if __name__ == "__main__":
    main()
