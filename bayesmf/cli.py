"""The ``bayesmf`` command line.

``bayesmf demo`` fits a model to built-in synthetic data (no download) and reports
how close it gets to the noise floor. ``bayesmf fit`` fits a model to a real dataset
(MovieLens, or a user's ratings CSV) and reports held-out errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]

log = logging.getLogger("bayesmf")

DATASETS = (
    "movielens-100k",
    "movielens-1m",
    "movielens-10m",
    "movielens-20m",
    "movielens-25m",
    "movielens-latest-small",
    "jester",
    "nips234",
)
MODELS = ("als", "sgd", "bmf", "gibbs", "nnmf", "sbm")
# Per-model defaults of `bayesmf fit`: the values tuned on a validation split of MovieLens-100K
# (benchmarks/classical.py); `--reg`/`--reg-bias` override them.
FIT_DEFAULTS: dict[str, dict[str, float | None]] = {
    "als": {"reg": 15.0, "reg_bias": 5.0},
    "sgd": {"reg": 0.1, "reg_bias": None},
    "bmf": {},
    "gibbs": {},
    "nnmf": {},
    "sbm": {},
}


def _say(msg: str = "") -> None:
    """Write a line of the command's report to stdout."""
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from bayesmf import data, diagnostics, inference, models

    t0 = time.perf_counter()
    ratings, truth = data.synthetic_ratings(
        n_rows=args.rows,
        n_cols=args.cols,
        rank=args.rank,
        density=args.density,
        noise=args.noise,
        biases=True,
        seed=args.seed,
    )
    train, test = data.random_split(ratings, test_fraction=0.1, seed=args.seed)
    _say(
        f"bayesmf demo: synthetic {ratings.n_rows}x{ratings.n_cols} matrix of rank {args.rank} "
        f"with biases, {len(ratings):,} observed entries ({100 * ratings.density:.1f}%), "
        f"noise std {args.noise}"
    )
    _say(f"  split 90/10: {len(train):,} train / {len(test):,} test ratings")

    model = models.BayesianMF(train.n_rows, train.n_cols, rank=args.rank, biases=True)
    fit = inference.fit_svi(
        model,
        train,
        epochs=args.epochs,
        batch_size=None,
        lr=0.05,
        final_lr=0.005,
        seed=args.seed,
        progress=not args.quiet,
    )
    als = inference.als(train, rank=args.rank, reg_u=1.0, reg_v=1.0, iters=50, seed=args.seed)
    with torch.no_grad():
        rows = {
            "global mean": torch.full_like(test.values, float(train.values.mean())),
            "ALS (MAP)": als.predict(test),
            "BayesianMF (SVI)": fit.predict(test),
            "true mean (oracle)": truth.expected(test.rows, test.cols),
        }
    _say(f"  BayesianMF by SVI: {args.epochs} full-batch epochs in {fit.fit_seconds:.1f} s")
    _say("")
    _say(f"  {'predictor':<24}{'test RMSE':>10}")
    for name, pred in rows.items():
        _say(f"  {name:<24}{diagnostics.rmse(test.values, pred):>10.4f}")
    _say(f"  {'noise floor (noise std)':<24}{args.noise:>10.4f}")
    _say("")
    cover = diagnostics.interval_coverage(fit, test, levels=(0.5, 0.9))
    _say(
        "  predictive intervals on the test ratings: "
        + ", ".join(f"{100 * lv:.0f}% interval covers {100 * c:.1f}%" for lv, c in cover.items())
    )

    import arviz as az

    hyper = [s.name for s in model.latent_specs() if s.positive]
    idata = diagnostics.to_inference_data(fit, test, num_samples=200, include=hyper)
    _say("")
    _say(f"  ArviZ summary of the hyper-parameters (true noise std {args.noise}):")
    summary = az.summary(idata, var_names=hyper, kind="stats", round_to=3)
    for line in summary.to_string().splitlines():
        _say("    " + line)
    loo = az.loo(idata)
    _say(f"  PSIS-LOO on the test ratings: elpd {float(loo.elpd_loo):.1f} (se {float(loo.se):.1f})")
    gap = diagnostics.rmse(test.values, rows["BayesianMF (SVI)"]) / args.noise - 1.0
    _say("")
    _say(
        f"  SVI test RMSE is {100 * gap:+.1f}% from the noise floor "
        f"({time.perf_counter() - t0:.1f} s in all)"
    )
    return 0


# ---------------------------------------------------------------------------- fit
def _load_ratings(args: argparse.Namespace):
    from bayesmf import data

    if args.ratings is not None:
        import pandas as pd

        df = pd.read_csv(args.ratings, sep=args.sep)
        scale = tuple(args.scale) if args.scale else None
        return data.from_dataframe(
            df,
            user=args.user_col,
            item=args.item_col,
            rating=args.rating_col,
            duplicates=args.duplicates,
            scale=scale,
            name=Path(args.ratings).stem,
        ), None
    if args.dataset == "jester":
        return data.load_jester(root=args.data_dir, download=not args.offline), None
    variant = args.dataset.removeprefix("movielens-")
    ml = data.load_movielens(variant, root=args.data_dir, download=not args.offline)
    if args.split:
        return None, ml.canonical_split(args.split)
    return ml.to_ratings(), None


def _fit_map(args: argparse.Namespace, train):
    from bayesmf import inference

    if args.model == "als":
        return inference.als(
            train,
            rank=args.rank,
            reg_u=args.reg,
            reg_v=args.reg,
            reg_bias=args.reg_bias,
            iters=args.iters,
            biases=not args.no_biases,
            seed=args.seed,
            progress=not args.quiet,
        )
    extra = {} if args.epochs is None else {"epochs": args.epochs}
    return inference.sgd_mf(
        train,
        rank=args.rank,
        reg=args.reg,
        reg_bias=args.reg_bias,
        biases=not args.no_biases,
        seed=args.seed,
        progress=not args.quiet,
        **extra,
    )


def _fit_bayes(args: argparse.Namespace, train):
    from bayesmf import inference, models

    if args.model in ("bmf", "gibbs"):
        model = models.BayesianMF(
            train.n_rows, train.n_cols, rank=args.rank, biases=not args.no_biases,
            ard=args.ard, factor_means=args.ard,
        )
        if args.model == "gibbs":
            return inference.fit_gibbs(
                model, train, num_samples=args.samples, warmup=args.warmup, seed=args.seed,
                progress=not args.quiet,
            )
    else:
        hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
        feats = train.col_features if args.side_info else None
        if args.side_info and feats is None:
            raise SystemExit("--side-info: this dataset has no item features")
        model = models.BayesianNNMF(
            train.n_rows,
            train.n_cols,
            rank=args.rank,
            bilinear_dims=args.bilinear_dims,
            hidden=hidden,
            item_features=feats,
        )
    epochs = args.epochs or 60
    warmup = args.kl_warmup
    if warmup is None:  # BNNs need the KL warm-up (see fit_svi); plain Bayesian MF does not
        warmup = epochs // 3 if args.model == "nnmf" else 0
    return inference.fit_svi(
        model,
        train,
        epochs=epochs,
        kl_warmup=warmup,
        batch_size=10_000 if args.batch_size is None else args.batch_size,
        lr=0.02 if args.lr is None else args.lr,
        final_lr=(0.02 if args.lr is None else args.lr) / 10,
        seed=args.seed,
        progress=not args.quiet,
        checkpoint=args.checkpoint,
        checkpoint_every=1 if args.checkpoint else None,
        resume=args.checkpoint is not None,
    )


def cmd_fit_network(args: argparse.Namespace) -> int:
    """``bayesmf fit --model sbm``: a DP stochastic block model on a network."""
    from bayesmf import data, diagnostics, inference, models

    if args.edges is not None:
        net = data.load_edge_list(args.edges, sep=args.sep)
    elif args.dataset == "nips234":
        net = data.load_nips234(root=args.data_dir, download=not args.offline)
    else:
        raise SystemExit("bayesmf fit --model sbm: give --dataset nips234 or --edges FILE.csv")
    _say(f"{net!r}")
    train, test = data.holdout_pairs(net, args.test_fraction, seed=args.seed)
    _say(f"  held out {len(test):,} of {net.n_pairs:,} pairs ({int(test.labels.sum())} links), "
         f"seed {args.seed}")
    model = models.DPStochasticBlockModel(
        net.n_nodes, truncation=args.truncation, degree_correction=args.degree_correction
    )
    fit = inference.fit_sbm(
        model,
        train,
        epochs=args.epochs or 300,
        batch_size=args.batch_size,
        lr=0.05 if args.lr is None else args.lr,
        n_restarts=args.restarts,
        seed=args.seed,
        progress=not args.quiet,
    )
    pred = fit.predict(test)
    metrics = {
        "auc": diagnostics.auc(test.labels, pred),
        "rmse": diagnostics.rmse(test.labels, pred),
        "effective_clusters": fit.effective_clusters(),
        "alpha": fit.alpha,
        "fit_s": fit.fit_seconds,
        "n_test": len(test),
    }
    _say(f"  SBM (T={args.truncation}, {args.restarts} restarts): fit in {fit.fit_seconds:.1f} s")
    _say(f"  test AUC {metrics['auc']:.4f}   test RMSE {metrics['rmse']:.4f}")
    _say(f"  effective number of clusters {metrics['effective_clusters']:.2f}   "
         f"alpha {metrics['alpha']:.3f}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        fit.save(out / "fit.pt")
        diagnostics.plot_block_structure(fit, net, path=out / "blocks.png")
        settings: dict[str, Any] = {k: v for k, v in vars(args).items() if k != "func"}
        (out / "metrics.json").write_text(
            json.dumps({"metrics": metrics, "settings": settings}, indent=2, default=str)
        )
        _say(f"  wrote {out / 'fit.pt'}, {out / 'blocks.png'} and {out / 'metrics.json'}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    import torch

    from bayesmf import data, diagnostics

    if args.model == "sbm" or args.dataset == "nips234" or args.edges is not None:
        if args.model != "sbm":
            raise SystemExit("bayesmf fit: networks (--dataset nips234, --edges) need --model sbm")
        return cmd_fit_network(args)
    if args.ratings is None and args.dataset is None:
        raise SystemExit("bayesmf fit: give --dataset NAME or --ratings FILE.csv")
    t0 = time.perf_counter()
    ratings, split = _load_ratings(args)
    if split is not None:
        train, test = split
        _say(
            f"{train.name}: canonical split {args.split}: {len(train):,} train / "
            f"{len(test):,} test ratings, shape {train.shape}"
        )
    else:
        train, test = data.random_split(ratings, test_fraction=args.test_fraction, seed=args.seed)
        _say(f"{ratings!r}")
        _say(f"  random split seed {args.seed}: {len(train):,} train / {len(test):,} test ratings")
    _say(f"  loaded in {time.perf_counter() - t0:.1f} s")

    t1 = time.perf_counter()
    extra: dict[str, float] = {}
    if args.model in ("als", "sgd"):
        fit = _fit_map(args, train)
        with torch.no_grad():
            pred = fit.predict(test, clamp_to=test.scale)
    else:
        fit = _fit_bayes(args, train)
        pred = fit.predict(test, clamp=True)
        lo, hi = fit.predict_interval(test, 0.9)
        extra["coverage90"] = diagnostics.coverage(test.values, lo, hi)
    fit_s = time.perf_counter() - t1
    metrics = {
        "rmse": diagnostics.rmse(test.values, pred),
        "mae": diagnostics.mae(test.values, pred),
        **extra,
        "fit_s": fit_s,
        "n_train": len(train),
        "n_test": len(test),
    }
    _say(f"  {args.model.upper()} rank {args.rank}: fit in {fit_s:.1f} s")
    line = f"  test RMSE {metrics['rmse']:.4f}   test MAE {metrics['mae']:.4f}"
    if "coverage90" in extra:
        line += f"   90% interval coverage {extra['coverage90']:.3f}"
    _say(line)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if args.model in ("bmf", "gibbs", "nnmf"):
            fit.save(out / "fit.pt")
            saved = out / "fit.pt"
        else:
            saved = out / "factors.pt"
            torch.save(
                {
                    "U": fit.U,
                    "V": fit.V,
                    "row_bias": fit.row_bias,
                    "col_bias": fit.col_bias,
                    "mean": fit.mean,
                    "row_ids": train.row_ids.tolist(),
                    "col_ids": train.col_ids.tolist(),
                },
                out / "factors.pt",
            )
        settings: dict[str, Any] = {k: v for k, v in vars(args).items() if k != "func"}
        (out / "metrics.json").write_text(
            json.dumps({"metrics": metrics, "settings": settings}, indent=2, default=str)
        )
        _say(f"  wrote {saved} and {out / 'metrics.json'}")
    return 0


# ------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bayesmf`` command."""
    p = argparse.ArgumentParser(
        prog="bayesmf",
        description="Probabilistic matrix factorization on Pyro: fit models to ratings "
        "matrices and networks, report held-out accuracy.",
    )
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)"
    )
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser(
        "demo",
        help="fit a model to built-in synthetic data (no download)",
        description="Make a synthetic low-rank ratings matrix with known noise, "
        "fit it and compare the test RMSE with the noise floor.",
    )
    d.add_argument("--rows", type=int, default=1000, help="number of rows (users)")
    d.add_argument("--cols", type=int, default=800, help="number of columns (items)")
    d.add_argument("--rank", type=int, default=5, help="true and fitted rank")
    d.add_argument("--density", type=float, default=0.1, help="fraction observed")
    d.add_argument("--noise", type=float, default=0.5, help="noise standard deviation")
    d.add_argument("--epochs", type=int, default=100, help="SVI epochs (full batch)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    d.add_argument("--seed", type=int, default=0, help="random seed")
    d.set_defaults(func=cmd_demo)

    f = sub.add_parser(
        "fit",
        help="fit a model to a dataset and report test error",
        description="Fit a model to MovieLens/Jester or a ratings CSV and report "
        "RMSE/MAE on a held-out random split (or a canonical split).",
    )
    src = f.add_argument_group("data")
    src.add_argument("--dataset", choices=DATASETS, help="a public dataset")
    src.add_argument("--ratings", metavar="CSV", help="a ratings table instead of --dataset")
    src.add_argument(
        "--edges", metavar="CSV", help="a network as an edge-list CSV (two node columns)"
    )
    src.add_argument("--user-col", default="user", help="user column of --ratings")
    src.add_argument("--item-col", default="item", help="item column of --ratings")
    src.add_argument("--rating-col", default="rating", help="rating column of --ratings")
    src.add_argument("--sep", default=",", help="field separator of --ratings")
    src.add_argument(
        "--scale",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="rating scale of --ratings (predictions are clamped to it)",
    )
    src.add_argument(
        "--duplicates",
        choices=("error", "mean"),
        default="error",
        help="what to do with repeated (user, item) pairs in --ratings",
    )
    src.add_argument(
        "--data-dir",
        default=None,
        help="where datasets are looked for first (else $BAYESMF_DATA_DIR, cache)",
    )
    src.add_argument("--offline", action="store_true", help="never download")
    src.add_argument(
        "--split",
        default=None,
        help="canonical MovieLens-100K split (u1..u5, ua, ub) instead of random",
    )
    src.add_argument("--test-fraction", type=float, default=0.1, help="random test fraction")
    m = f.add_argument_group("model")
    m.add_argument("--model", choices=MODELS, default="als", help="which model/engine")
    m.add_argument("--rank", type=int, default=10, help="number of latent factors")
    m.add_argument(
        "--reg",
        type=float,
        default=None,
        help="regularisation of the factors (default: 15 for ALS, 0.1 for SGD)",
    )
    m.add_argument(
        "--reg-bias",
        type=float,
        default=None,
        help="regularisation of the biases (default: 5 for ALS, --reg for SGD)",
    )
    m.add_argument("--no-biases", action="store_true", help="no mean/row/column biases")
    m.add_argument("--iters", type=int, default=30, help="ALS iterations")
    m.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="SGD/SVI epochs (default: SGD's own default; 60 for SVI)",
    )
    svi = f.add_argument_group("Bayesian models: bmf, nnmf by SVI; gibbs (BayesianMF) by Gibbs")
    svi.add_argument(
        "--ard",
        action="store_true",
        help="bmf/gibbs: one prior scale per factor and latent factor means (the prior of a "
        "Bayesian FM; best on MovieLens with --model gibbs)",
    )
    svi.add_argument("--samples", type=int, default=150, help="gibbs: draws kept")
    svi.add_argument("--warmup", type=int, default=50, help="gibbs: burn-in sweeps")
    svi.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="ratings (sbm: pairs) per minibatch (default 10000; sbm: all pairs)",
    )
    svi.add_argument(
        "--lr",
        type=float,
        default=None,
        help="initial Adam learning rate, decays to a tenth (default 0.02; sbm: 0.05)",
    )
    svi.add_argument(
        "--kl-warmup",
        type=int,
        default=None,
        help="epochs of KL warm-up (default: a third of the epochs for nnmf, 0 for bmf)",
    )
    svi.add_argument(
        "--hidden",
        default="50,50,50",
        help="nnmf hidden widths, comma-separated; '' for the linear VI(0)",
    )
    svi.add_argument("--bilinear-dims", type=int, default=60, help="nnmf D")
    svi.add_argument(
        "--side-info",
        action="store_true",
        help="nnmf: concatenate item features (MovieLens genres) to V",
    )
    svi.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint file, written every epoch; an existing one is resumed",
    )
    sbm = f.add_argument_group("stochastic block model (sbm) on a network")
    sbm.add_argument("--truncation", type=int, default=7, help="sbm: maximum number of clusters")
    sbm.add_argument("--restarts", type=int, default=3, help="sbm: restarts (best ELBO kept)")
    sbm.add_argument(
        "--degree-correction", action="store_true", help="sbm: per-node degree effects"
    )
    f.add_argument("--seed", type=int, default=0, help="random seed (split and init)")
    f.add_argument("--out", default=None, help="folder for factors.pt and metrics.json")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    f.set_defaults(func=cmd_fit)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bayesmf`` console script."""
    args = build_parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "fit":
        for key, value in FIT_DEFAULTS[args.model].items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
