"""PSIS-LOO on MovieLens-100K's training ratings: ``diagnostics.psis_loo`` against ``az.loo``.

``BayesianMF(943, 1682, rank=10)`` fitted by ``fit_svi`` (its defaults) on the training part
of ``random_split(R, 0.1, seed=0)``; ``to_inference_data(fit, train=train, num_samples=S)``
gives the ``(1, S, 90,000)`` log-likelihood of the training ratings; both functions run on it
alternately (``--repeats`` times each, one thread), and the script records their times (the
ratio from the paired runs) and the largest differences of their pointwise estimates.

Run::

    .venv/bin/python benchmarks/loo_speed.py            # S = 200, 3 repeats
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _common import default_data_dir, write_results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    import arviz as az

    from bayesmf import data, diagnostics, inference, models

    inference.set_num_threads(1)
    R = data.load_movielens("100k", root=default_data_dir()).to_ratings()
    train, _ = data.random_split(R, 0.1, seed=0)
    fit = inference.fit_svi(models.BayesianMF(R.n_rows, R.n_cols, rank=10), train, seed=0,
                            progress=False)
    idata = diagnostics.to_inference_data(fit, train=train, num_samples=args.draws,
                                          include=["noise"])
    ll = np.asarray(idata["log_likelihood"]["obs"])
    times: dict[str, list[float]] = {"az.loo": [], "psis_loo": []}
    ref = ours = None
    for _ in range(args.repeats):  # alternating
        t0 = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = az.loo(idata, pointwise=True)
        times["az.loo"].append(time.process_time() - t0)
        t0 = time.process_time()
        ours = diagnostics.psis_loo(ll)
        times["psis_loo"].append(time.process_time() - t0)
    assert ref is not None and ours is not None
    ratios = [a / b for a, b in zip(times["az.loo"], times["psis_loo"], strict=True)]
    rows = {
        "az.loo": {"cpu_s": float(np.median(times["az.loo"])),
                   "elpd_per_rating": float(ref.elpd_loo) / ll.shape[-1],
                   "share_k_above_0.7": float((np.asarray(ref.pareto_k) > 0.7).mean())},
        "diagnostics.psis_loo": {
            "cpu_s": float(np.median(times["psis_loo"])),
            "elpd_per_rating": ours.elpd_loo / ll.shape[-1],
            "share_k_above_0.7": float((ours.pareto_k > 0.7).mean()),
            "speedup_paired_median": float(np.median(ratios)),
            "max_abs_diff_loo_i": float(np.abs(ours.loo_i - np.asarray(ref.loo_i).ravel()).max()),
            "max_abs_diff_k": float(np.abs(ours.pareto_k - np.asarray(ref.pareto_k).ravel()).max()),
        },
    }
    settings = {"data": "ml-100k, random_split(R, 0.1, seed=0), training ratings",
                "fit": "fit_svi(BayesianMF(943, 1682, rank=10), train, seed=0) -- defaults",
                "draws": args.draws, "repeats": args.repeats, "threads": 1,
                "log_likelihood_shape": list(ll.shape), "arviz": az.__version__,
                "cpu_s_per_repeat": times}
    json_path, md_path = write_results("loo_speed", {"ml-100k": rows}, settings)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
