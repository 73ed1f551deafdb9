"""Classical matrix factorization on MovieLens-100K: ALS and SGD on the canonical splits.

Loads ML-100K from ``--data-dir`` / ``$BAYESMF_DATA_DIR`` / the cache (downloading it from
GroupLens when allowed), fits ALS and SGD with biases on each canonical GroupLens split
(u1..u5, 80/20) and prints test RMSE/MAE next to the global-mean baseline, then shows the
movies whose learned bias is highest.

Run::

    .venv/bin/python examples/movielens_classical.py --splits u1 u2
"""

from __future__ import annotations

import argparse
import time

import torch

from bayesmf import data, diagnostics, inference


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder holding ml-100k/")
    p.add_argument("--splits", nargs="+", default=["u1", "u2", "u3", "u4", "u5"])
    p.add_argument("--rank", type=int, default=10)
    args = p.parse_args()

    ml = data.load_movielens("100k", root=args.data_dir)
    print(f"MovieLens-100K: {len(ml.ratings):,} ratings, {ml.item_features.shape[1]} genres")
    print(f"{'split':<6}{'model':<12}{'RMSE':>8}{'MAE':>8}{'fit s':>8}")
    for name in args.splits:
        train, test = ml.canonical_split(name)
        mean = torch.full_like(test.values, float(train.values.mean()))
        print(
            f"{name:<6}{'mean':<12}{diagnostics.rmse(test.values, mean):>8.4f}"
            f"{diagnostics.mae(test.values, mean):>8.4f}{0.0:>8.2f}"
        )
        fits = {
            "ALS": lambda tr: inference.als(
                tr, rank=args.rank, reg_u=15.0, reg_v=15.0, reg_bias=5.0, epochs=50
            ),
            "SGD": lambda tr: inference.sgd_mf(tr, rank=args.rank, epochs=17),
        }
        for model, fit_fn in fits.items():
            t0 = time.perf_counter()
            fit = fit_fn(train)
            seconds = time.perf_counter() - t0
            pred = fit.predict(test, clamp=True)
            print(
                f"{name:<6}{model:<12}{diagnostics.rmse(test.values, pred):>8.4f}"
                f"{diagnostics.mae(test.values, pred):>8.4f}{seconds:>8.2f}"
            )

    # Item biases of the last ALS fit, mapped back to the original movie ids and titles.
    train, _ = ml.canonical_split(args.splits[-1])
    fit = inference.als(train, rank=args.rank, reg_u=15.0, reg_v=15.0, reg_bias=5.0, epochs=50)
    popular = train.col_counts() >= 50
    bias = torch.where(popular, fit.col_bias, torch.tensor(-float("inf")))
    top = torch.topk(bias, 5).indices.numpy()
    print("\nhighest item biases (movies with at least 50 training ratings):")
    titles = ml.items.loc[train.col_ids[top], "title"].tolist()
    for b, title in zip(fit.col_bias[top].tolist(), titles, strict=True):
        print(f"  {b:+.3f}  {title}")

if __name__ == "__main__":
    main()
