"""Deep Bayesian NNMF with the library's defaults on MovieLens-100K (issue 12, item 1).

``VI(3)`` is :class:`bayesmf.models.BayesianNNMF` with its defaults (rank 10, 60 bilinear
features of rank 1, three hidden layers of 50 sigmoid units) and ``VI(3)+S`` the same with
the 19 genre flags of each movie; both are fitted by ``inference.fit_svi(model, train)``
with *no* settings: the library's defaults (``inference.svi_defaults``), the ones the README,
the CLI and the examples use. Five random 90/10 splits (``random_split`` seeds 0-4); test
RMSE of the clamped posterior predictive mean, coverage of the central 50/80/90/95%
predictive intervals (``diagnostics.interval_coverage``, 500 draws), CPU seconds of the fit.
With ``--val`` the same on the validation carve of split 0's training part
(``random_split(train, 0.1, seed=1000)``), where the defaults were chosen. Results:
``benchmarks/results/deep_vi.{json,md}`` (``deep_vi_val`` with ``--val``).

Run::

    .venv/bin/python benchmarks/deep_vi.py            # 5 splits, about 2 x 5 x 130 s
    .venv/bin/python benchmarks/deep_vi.py --restarts 1   # one seed per fit (-> _restarts1)
    .venv/bin/python benchmarks/deep_vi.py --val      # the validation carve of split 0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import default_data_dir, mean_std, write_results  # noqa: E402

from bayesmf import data, diagnostics, inference, models  # noqa: E402
from bayesmf.inference.svi import svi_defaults  # noqa: E402

PAPER = {"VI(3)": 0.902, "VI(3)+S": 0.898}
LEVELS = (0.5, 0.8, 0.9, 0.95)


def fit_one(name: str, R: Any, train: Any, test: Any, seed: int,
            restarts: int | None = None, epochs: int | None = None) -> dict[str, float]:
    feats = R.col_features if name.endswith("+S") else None
    model = models.BayesianNNMF(R.n_rows, R.n_cols, item_features=feats)
    t0 = time.process_time()
    fit = inference.fit_svi(model, train, seed=seed, progress=False, restarts=restarts,
                            epochs=epochs)
    cpu = time.process_time() - t0
    pred = fit.predict(test, clamp=True)
    out = {"rmse": float(((pred - test.values) ** 2).mean().sqrt()), "cpu_s": cpu}
    cov = diagnostics.interval_coverage(fit, test, levels=LEVELS, num_samples=500, seed=seed)
    for level in LEVELS:
        out[f"coverage{round(100 * level)}"] = float(cov[level])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--val", action="store_true", help="the validation carve of split 0")
    p.add_argument("--splits", type=int, default=5)
    p.add_argument("--models", default="VI(3),VI(3)+S")
    p.add_argument("--restarts", type=int, default=None,
                   help="fit_svi restarts (a mixture of the seeds' posteriors; default: the "
                   "library's, 3 for these models)")
    p.add_argument("--splits-from", type=int, default=0, help="first split seed")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: one split, 3 epochs, one restart (not the defaults)")
    p.add_argument("--data-dir", default=default_data_dir())
    args = p.parse_args(argv)
    if args.quick:
        args.splits, args.restarts = 1, 1
    torch.set_num_threads(1)
    ds = data.load_movielens("100k", root=args.data_dir, download=False)
    R = ds.to_ratings() if hasattr(ds, "to_ratings") else ds
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    per: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    splits = [0] if args.val else list(range(args.splits_from, args.splits_from + args.splits))
    for s in splits:
        train, test = data.random_split(R, 0.1, seed=s)
        if args.val:
            train, test = data.random_split(train, 0.1, seed=1000)
        for n in names:
            per[n].append(fit_one(n, R, train, test, seed=0, restarts=args.restarts,
                                  epochs=3 if args.quick else None))
            print(n, s, per[n][-1], flush=True)
    table: dict[str, dict[str, Any]] = {}
    for n, rows in per.items():
        row: dict[str, Any] = {}
        for key in rows[0]:
            m, sd = mean_std([r[key] for r in rows])
            row[key], row[f"{key}_std"] = m, sd
        row["n_splits"] = len(rows)
        row["paper_rmse"] = PAPER.get(n)
        row["worst_split_rmse"] = max(r["rmse"] for r in rows)
        table[n] = row
    defaults = {n: svi_defaults(models.BayesianNNMF(
        R.n_rows, R.n_cols, item_features=R.col_features if n.endswith("+S") else None))
        for n in names}
    settings = {
        "protocol": "validation carve of split 0 (random_split(train, 0.1, seed=1000))"
        if args.val else f"random_split(R, 0.1, seed=s), s = 0..{args.splits - 1}",
        "fit": "inference.fit_svi(model, train, seed=0) -- the library's defaults",
        "restarts": args.restarts or {n: d.get("restarts", 1) for n, d in defaults.items()},
        "splits": splits,
        "svi_defaults": defaults, "threads": 1, "per_split": per,
    }
    name = "deep_vi_quick" if args.quick else "deep_vi_val" if args.val else "deep_vi"
    if names != ["VI(3)", "VI(3)+S"]:
        name += "_" + "_".join(n.replace("(", "").replace(")", "").replace("+", "")
                               for n in names)
    if args.restarts is not None and not args.quick:
        name += f"_restarts{args.restarts}"
    if not (args.val or args.quick) and (args.splits_from or args.splits != 5):
        name += f"_splits{splits[0]}-{splits[-1]}"
    write_results(name, {"ml-100k": table}, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
