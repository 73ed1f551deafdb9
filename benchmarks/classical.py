"""Classical MAP baselines on MovieLens-100K: ALS, SGD and a truncated-SVD baseline.

Protocol
--------
* Five 90/10 random splits of the 100,000 ratings (``random_split`` with seeds
  0-4; ``--quick``: split 0 only).
* Hyperparameters are tuned once, on a validation part carved out of the
  *training* data of split 0 (10 % of it, seed 1000), never on a test set:

  - ALS (with biases): ``reg_u = reg_v`` and ``reg_bias`` on a small grid;
  - SGD (with biases): ``reg`` and ``lr`` on a small grid, and the number of
    epochs (the best validation epoch; ``sgd_mf`` records the validation RMSE
    per epoch);
  - truncated SVD: its rank.

* Each model is then refitted on the full training part of every split and
  evaluated on its test part: RMSE and MAE of predictions clamped to [1, 5],
  and the wall-clock fit time.

The truncated-SVD baseline centres the observed ratings on their global mean,
treats unobserved entries as 0 (i.e. mean imputation), takes the rank-k
truncated SVD of that sparse matrix (``scipy.sparse.linalg.svds``) and predicts
``mean + U_k S_k V_k^T``, clamped.

Usage::

    python benchmarks/classical.py                 # full run, writes results/classical.*
    python benchmarks/classical.py --quick         # one split, smaller grids
    python benchmarks/classical.py --data-dir /path/to/data --rank 20 --threads 1
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import default_data_dir, machine_info, summarize, write_results  # noqa: E402

from bayesmf.data import Ratings, load_movielens, random_split  # noqa: E402
from bayesmf.diagnostics.metrics import mae, rmse  # noqa: E402
from bayesmf.inference import MAPFactors, als, sgd_mf  # noqa: E402

DATASET = "ml-100k"
VAL_SEED = 1000

ALS_REGS = [5.0, 10.0, 15.0, 20.0, 30.0]
ALS_BIAS_REGS: list[float | None] = [None, 1.0, 5.0]  # None: same as the factor's reg
SGD_REGS = [0.05, 0.08, 0.1, 0.12, 0.15]
SGD_LRS = [2.0, 3.0]
SVD_RANKS = [1, 2, 3, 5, 10, 20]

QUICK_ALS_REGS = [10.0, 15.0, 20.0]
QUICK_ALS_BIAS_REGS: list[float | None] = [None, 5.0]
QUICK_SGD_REGS = [0.08, 0.1, 0.12]
QUICK_SGD_LRS = [3.0]
QUICK_SVD_RANKS = [2, 5, 10]


# --------------------------------------------------------------------------- models


class SVDPredictor:
    """Global mean plus a rank-k truncated SVD of the mean-centred, zero-filled matrix."""

    def __init__(self, train: Ratings, rank: int, seed: int = 0) -> None:
        from scipy.sparse.linalg import svds

        self.mean = float(train.values.double().mean())
        X = train.with_values(train.values - self.mean).to_scipy().astype(np.float64)
        k = min(rank, min(X.shape) - 1)
        v0 = np.random.default_rng(seed).standard_normal(min(X.shape))
        U, s, Vt = svds(X, k=k, v0=v0)
        self.US = torch.from_numpy(U * s)
        self.V = torch.from_numpy(Vt.T.copy())
        self.scale = train.scale

    def predict(self, ratings: Ratings, clamp: Any = True) -> torch.Tensor:
        r, c = ratings.rows, ratings.cols
        pred = self.mean + (self.US[r] * self.V[c]).sum(-1)
        return pred.clamp(*self.scale) if clamp and self.scale else pred


class MeanPredictor:
    """Predicts the global training mean everywhere."""

    def __init__(self, train: Ratings) -> None:
        self.mean = float(train.values.double().mean())

    def predict(self, ratings: Ratings, clamp: Any = True) -> torch.Tensor:
        return torch.full((len(ratings),), self.mean, dtype=torch.float64)


def _scores(model: Any, test: Ratings) -> dict[str, float]:
    pred = model.predict(test, clamp=True)
    return {"rmse": rmse(test.values, pred), "mae": mae(test.values, pred)}


def _timed(fit: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    model = fit()
    return model, time.perf_counter() - t0


# --------------------------------------------------------------------------- tuning


def tune_als(train: Ratings, val: Ratings, rank: int, iters: int, regs: list[float],
             bias_regs: list[float | None]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Grid search of (reg, reg_bias) for ALS on the validation RMSE."""
    table = []
    for reg in regs:
        for reg_bias in bias_regs:
            fit = als(train, rank=rank, reg_u=reg, reg_v=reg, reg_bias=reg_bias, epochs=iters)
            score = rmse(val.values, fit.predict(val, clamp=True))
            table.append({"reg": reg, "reg_bias": reg_bias, "val_rmse": round(score, 5),
                          "n_iter": fit.n_iter})
            print(f"  ALS reg={reg:<5g} reg_bias={reg_bias!s:<5} val RMSE {score:.4f} "
                  f"({fit.n_iter} sweeps)")
    best = min(table, key=lambda row: row["val_rmse"])
    return {"reg_u": best["reg"], "reg_v": best["reg"], "reg_bias": best["reg_bias"]}, table


def tune_sgd(train: Ratings, val: Ratings, rank: int, max_epochs: int, regs: list[float],
             lrs: list[float]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Grid search of (reg, lr) for SGD; the epoch count is the best validation epoch."""
    table = []
    for reg in regs:
        for lr in lrs:
            fit = sgd_mf(train, rank=rank, reg=reg, lr=lr, epochs=max_epochs, val=val)
            best = min(fit.val_history)
            epochs = fit.val_history.index(best) + 1
            table.append({"reg": reg, "lr": lr, "val_rmse": round(best, 5), "epochs": epochs})
            print(f"  SGD reg={reg:<5g} lr={lr:<4g} val RMSE {best:.4f} (epoch {epochs})")
    best_row = min(table, key=lambda row: row["val_rmse"])
    return {"reg": best_row["reg"], "lr": best_row["lr"], "epochs": best_row["epochs"]}, table


def tune_svd(train: Ratings, val: Ratings, ranks: list[int]
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Choose the truncated-SVD rank on the validation RMSE."""
    table = []
    for k in ranks:
        score = rmse(val.values, SVDPredictor(train, k).predict(val))
        table.append({"rank": k, "val_rmse": round(score, 5)})
        print(f"  SVD rank={k:<3d} val RMSE {score:.4f}")
    best = min(table, key=lambda row: row["val_rmse"])
    return {"rank": best["rank"]}, table


# --------------------------------------------------------------------------- main


def _default(func: Callable[..., Any], arg: str) -> Any:
    return inspect.signature(func).parameters[arg].default


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one split and smaller grids")
    parser.add_argument("--data-dir", default=default_data_dir(),
                        help="folder holding ml-100k/ "
                        "(default $BAYESMF_DATA_DIR or ../shared/data)")
    parser.add_argument("--rank", type=int, default=10, help="latent dimension of ALS and SGD")
    parser.add_argument("--splits", type=int, default=5, help="number of 90/10 splits (seeds 0..)")
    parser.add_argument("--als-iters", type=int, default=50, help="maximum ALS sweeps")
    parser.add_argument("--als-tol", type=float, default=1e-5, help="ALS relative tolerance")
    parser.add_argument("--sgd-max-epochs", type=int, default=40,
                        help="maximum SGD epochs while tuning")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="torch device for ALS/SGD")
    parser.add_argument("--out-dir", default="benchmarks/results")
    parser.add_argument("--name", default=None,
                        help="results file stem (default classical, classical_quick with --quick)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n_splits = 1 if args.quick else args.splits
    name = args.name or ("classical_quick" if args.quick else "classical")
    grids = {
        "als_reg": QUICK_ALS_REGS if args.quick else ALS_REGS,
        "als_reg_bias": QUICK_ALS_BIAS_REGS if args.quick else ALS_BIAS_REGS,
        "sgd_reg": QUICK_SGD_REGS if args.quick else SGD_REGS,
        "sgd_lr": QUICK_SGD_LRS if args.quick else SGD_LRS,
        "svd_rank": QUICK_SVD_RANKS if args.quick else SVD_RANKS,
    }

    ratings = load_movielens("100k", root=args.data_dir).to_ratings()
    print(f"{DATASET}: {ratings}")
    dev = torch.device(args.device)

    # ---- tuning on a validation part of split 0's training data
    t0 = time.perf_counter()
    train0, _ = random_split(ratings, 0.1, seed=0)
    tune_train, val = random_split(train0, 0.1, seed=VAL_SEED)
    print(f"tuning on {len(tune_train)} ratings, validating on {len(val)} (split 0, seed "
          f"{VAL_SEED})")
    als_params, als_table = tune_als(tune_train.to(dev), val, args.rank, args.als_iters,
                                     grids["als_reg"], grids["als_reg_bias"])
    sgd_params, sgd_table = tune_sgd(tune_train.to(dev), val.to(dev), args.rank,
                                     args.sgd_max_epochs, grids["sgd_reg"], grids["sgd_lr"])
    svd_params, svd_table = tune_svd(tune_train, val, grids["svd_rank"])
    tuning_time = time.perf_counter() - t0
    print(f"chosen: ALS {als_params}, SGD {sgd_params}, SVD {svd_params} "
          f"(tuning {tuning_time:.1f} s)")

    # ---- evaluation on the test parts
    fitters: dict[str, Callable[[Ratings], Any]] = {
        "GlobalMean": MeanPredictor,
        f"TruncatedSVD (rank {svd_params['rank']})": lambda tr: SVDPredictor(
            tr, svd_params["rank"]),
        "ALS": lambda tr: als(tr.to(dev), rank=args.rank, epochs=args.als_iters,
                              tol=args.als_tol, **als_params),
        "SGD": lambda tr: sgd_mf(tr.to(dev), rank=args.rank, **sgd_params),
    }
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in fitters}
    for seed in range(n_splits):
        train, test = random_split(ratings, 0.1, seed=seed)
        for model_name, fit in fitters.items():
            model, seconds = _timed(lambda fit=fit, train=train: fit(train))
            if isinstance(model, MAPFactors):
                model = model.to("cpu")
            scores = _scores(model, test)
            scores["fit_time_s"] = seconds
            runs[model_name].append(scores)
            print(f"split {seed}: {model_name:<22} RMSE {scores['rmse']:.4f} "
                  f"MAE {scores['mae']:.4f} fit {seconds:.2f} s")

    results = {DATASET: {m: summarize(r) for m, r in runs.items()}}
    settings = {
        "protocol": (f"{n_splits} random 90/10 splits (random_split seeds 0..{n_splits - 1}); "
                     "hyperparameters tuned on 10% of split 0's training data "
                     f"(random_split seed {VAL_SEED}); predictions clamped to [1, 5]"),
        "rank": args.rank,
        "als": {**als_params, "biases": True, "iters": args.als_iters, "tol": args.als_tol},
        "sgd": {**sgd_params, "biases": True,
                **{k: _default(sgd_mf, k) for k in ("batch_size", "momentum", "lr_decay")}},
        "svd": {**svd_params, "centring": "global mean (mean imputation)"},
        "grids": grids,
        "tuning_tables": {"als": als_table, "sgd": sgd_table, "svd": svd_table},
        "tuning_time_s": tuning_time,
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "quick": args.quick,
    }
    json_path, md_path = write_results(name, results, settings, out_dir=args.out_dir,
                                       machine=machine_info())
    print(f"wrote {json_path} and {md_path}")
    for model_name, vals in results[DATASET].items():
        print(f"{model_name:<24} RMSE {vals['rmse']:.4f} ± {vals['rmse_std']:.4f}  "
              f"MAE {vals['mae']:.4f} ± {vals['mae_std']:.4f}  fit {vals['fit_time_s']:.2f} s")
    return results


if __name__ == "__main__":
    main()
