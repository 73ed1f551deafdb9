"""The ``bayesmf`` command line (installed with the package as the console script ``bayesmf``).

``bayesmf demo`` fits a model to built-in synthetic data (no download) and reports how close it
gets to the noise floor. ``bayesmf fit`` fits any model to a real dataset (MovieLens, Jester, a
ratings CSV, a network) along one path — load, split, fit, evaluate, save, report — and
``bayesmf predict`` reads any saved fit and predicts new (user, item) rows.
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
MODELS = ("als", "sgd", "bmf", "gibbs", "nnmf", "sbm", "lfm")
# Per-model defaults of `bayesmf fit`: the values tuned on a validation split of MovieLens-100K
# (benchmarks/classical.py); `--reg`/`--reg-bias` override them.
FIT_DEFAULTS: dict[str, dict[str, float | None]] = {
    "als": {"reg": 15.0, "reg_bias": 5.0},
    "sgd": {"reg": 0.1, "reg_bias": None},
    "bmf": {},
    "gibbs": {},
    "nnmf": {},
    "sbm": {},
    "lfm": {},
}


def _say(msg: str = "") -> None:
    """Write a line of the command's report to stdout."""
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- demo
#: training ratings the demo's PSIS-LOO runs on (a random subset: ArviZ's loop over ratings)
LOO_RATINGS = 5_000


def cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    # a small problem: one thread is faster than several (which contend on a busy machine)
    torch.set_num_threads(1)

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
    fit = inference.fit_svi(  # the model's default schedule (inference.svi_defaults)
        model, train, epochs=args.epochs, seed=args.seed, progress=False if args.quiet else None
    )
    als = inference.als(train, rank=args.rank, reg=1.0, epochs=50, seed=args.seed)
    with torch.no_grad():
        rows = {
            "global mean": torch.full_like(test.values, float(train.values.mean())),
            "ALS (MAP)": als.predict(test),
            "BayesianMF (SVI)": fit.predict(test),
            "true mean (oracle)": truth.expected(test.rows, test.cols),
        }
    _say(f"  BayesianMF by SVI: {fit.settings['epochs']} epochs of minibatches of "
         f"{fit.settings['batch_size']:,} in {fit.fit_seconds:.1f} s")
    _say("")
    _say(f"  {'predictor':<24}{'test RMSE':>10}")
    for name, pred in rows.items():
        _say(f"  {name:<24}{diagnostics.rmse(test.values, pred):>10.4f}")
    _say(f"  {'noise floor (noise std)':<24}{args.noise:>10.4f}")
    _say("")
    cover = diagnostics.interval_coverage(fit, test, levels=(0.5, 0.9), num_samples=200)
    _say(
        "  predictive intervals on the test ratings: "
        + ", ".join(f"{100 * lv:.0f}% interval covers {100 * c:.1f}%" for lv, c in cover.items())
    )

    import warnings

    import arviz as az

    hyper = [s.name for s in model.latent_specs() if s.positive]
    # PSIS-LOO (diagnostics.psis_loo: az.loo's numbers, all ratings at once) on a random
    # subset of the training ratings, whose estimate per rating is unbiased for the whole
    n_loo = min(len(train), LOO_RATINGS)
    loo_set = train.subset(torch.randperm(
        len(train), generator=torch.Generator().manual_seed(args.seed))[:n_loo])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        idata = diagnostics.to_inference_data(fit, train=loo_set, num_samples=200,
                                              include=hyper)
        summary = az.summary(idata, var_names=hyper, kind="stats", round_to=3)
    loo = diagnostics.psis_loo(np.asarray(idata["log_likelihood"]["obs"]))
    _say("")
    _say(f"  ArviZ summary of the hyper-parameters (true noise std {args.noise}):")
    for line in summary.to_string().splitlines():
        _say("    " + line)
    lpd = diagnostics.log_predictive_density(fit, test, num_samples=200).mean
    _say(f"  held-out log predictive density: {lpd:.3f} per test rating")
    khat = loo.pareto_k
    what = "the training ratings" if n_loo == len(train) else (
        f"{n_loo:,} random training ratings")
    _say(f"  PSIS-LOO on {what}: elpd {loo.elpd_loo / n_loo:.3f} per "
         f"rating; {100 * float((khat > 0.7).mean()):.1f}% of Pareto k > 0.7")
    if (khat > 0.7).any() or any("Pareto" in str(w.message) for w in caught):
        _say("    (k > 0.7: draws from the variational q are a poor importance proposal for "
             "leaving those ratings out, so LOO is approximate there; the held-out density "
             "above needs no such correction)")
    gap = diagnostics.rmse(test.values, rows["BayesianMF (SVI)"]) / args.noise - 1.0
    _say("")
    _say(
        f"  SVI test RMSE is {100 * gap:+.1f}% from the noise floor "
        f"({time.perf_counter() - t0:.1f} s in all)"
    )
    return 0


# ---------------------------------------------------------------------------- fit
class UsageError(Exception):
    """A mistake on the command line or in an input file: one line on stderr, exit status 2."""


def _read_table(path: str, args: argparse.Namespace, need: dict[str, str]):
    """A ratings CSV with the columns named by the flags in ``need`` (flag -> column)."""
    import pandas as pd

    if not Path(path).is_file():
        raise UsageError(f"{path}: no such file")
    try:
        df = pd.read_csv(path, sep=args.sep, header=None if args.no_header else "infer")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise UsageError(f"{path}: cannot read as a table ({err}); check --sep") from None
    if args.no_header:
        df.columns = [str(c) for c in df.columns]
    missing = {flag: col for flag, col in need.items() if col not in df.columns}
    if missing:
        cols = ", ".join(map(str, df.columns[:8]))
        def numeric(c: Any) -> bool:
            try:
                float(c)
            except ValueError:
                return False
            return True

        looks_headerless = len(missing) == len(need) or any(numeric(c) for c in df.columns)
        hint = (" (no header row? pass --no-header and name the columns 0, 1, 2, ...)"
                if looks_headerless and not args.no_header else "")
        wrong = "; ".join(f"{flag} {col!r}" for flag, col in missing.items())
        raise UsageError(f"{path}: no column {wrong}; its columns are: {cols}{hint}")
    return df


def _load_ratings(args: argparse.Namespace):
    """``(ratings, split)``: a whole Ratings to split at random, or a canonical split."""
    from bayesmf import data

    if args.ratings is not None:
        need = {"--user-col": args.user_col, "--item-col": args.item_col,
                "--rating-col": args.rating_col}
        df = _read_table(args.ratings, args, need)
        try:
            R = data.from_dataframe(
                df, user=args.user_col, item=args.item_col, rating=args.rating_col,
                duplicates=args.duplicates,
                scale=tuple(args.scale) if args.scale else None, name=Path(args.ratings).stem,
            )
        except ValueError as err:
            raise UsageError(f"{args.ratings}: {err}") from None
        return R, None
    if args.dataset == "jester":
        return data.load_jester(root=args.data_dir, download=not args.offline), None
    variant = args.dataset.removeprefix("movielens-")
    ml = data.load_movielens(variant, root=args.data_dir, download=not args.offline)
    if args.split:
        return None, ml.canonical_split(args.split)
    return ml.to_ratings(), None


def _load_network(args: argparse.Namespace):
    from bayesmf import data

    if args.edges is not None:
        if not Path(args.edges).is_file():
            raise UsageError(f"{args.edges}: no such file (--edges)")
        return data.load_edge_list(args.edges, sep=args.sep)
    if args.adjacency is not None:
        if not Path(args.adjacency).is_file():
            raise UsageError(f"{args.adjacency}: no such file (--adjacency)")
        return data.load_adjacency(args.adjacency)
    return data.load_nips234(root=args.data_dir, download=not args.offline)


# One entry per --model: (kind of data, function(args, train) -> Fit). Every fit answers the
# same interface, so the rest of `bayesmf fit` is one path.
def _als(args: argparse.Namespace, train):
    from bayesmf import inference

    return inference.als(train, rank=args.rank, reg=args.reg, reg_bias=args.reg_bias,
                         epochs=args.epochs or 30, biases=not args.no_biases, seed=args.seed,
                         progress=None if not args.quiet else False)


def _sgd(args: argparse.Namespace, train):
    from bayesmf import inference

    return inference.sgd_mf(train, rank=args.rank, reg=args.reg, reg_bias=args.reg_bias,
                            epochs=args.epochs or 25, biases=not args.no_biases, seed=args.seed,
                            progress=None if not args.quiet else False)


def _gibbs(args: argparse.Namespace, train):
    from bayesmf import inference, models

    if args.likelihood != "gaussian":
        raise UsageError("--model gibbs samples the Gaussian likelihood only: use --model bmf "
                         "for --likelihood discretized")
    model = models.BayesianMF(train.n_rows, train.n_cols, rank=args.rank,
                              biases=not args.no_biases, ard=args.ard, factor_means=args.ard,
                              implicit=args.implicit)
    burn_in = 1000 if args.burn_in is None else args.burn_in
    return inference.fit_gibbs(model, train, num_samples=args.samples, burn_in=burn_in,
                               thin=args.thin, seed=args.seed,
                               progress=None if not args.quiet else False)


def _svi_model(args: argparse.Namespace, train):
    from bayesmf import models

    if args.model == "bmf":
        return models.BayesianMF(train.n_rows, train.n_cols, rank=args.rank,
                                 biases=not args.no_biases, ard=args.ard,
                                 factor_means=args.ard, implicit=args.implicit,
                                 likelihood=args.likelihood)
    if args.model == "sbm":
        return models.DPStochasticBlockModel(train.n_nodes, truncation=args.truncation,
                                             degree_correction=args.degree_correction)
    if args.model == "lfm":
        return models.LatentFeatureNetwork(train.n_nodes, rank=args.rank)
    hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
    feats = train.col_features if args.side_info else None
    if args.side_info and feats is None:
        raise UsageError("--side-info: this dataset has no item features")
    return models.BayesianNNMF(train.n_rows, train.n_cols, rank=args.rank,
                               bilinear_dims=args.bilinear_dims, hidden=hidden,
                               item_features=feats, likelihood=args.likelihood)


def _svi(args: argparse.Namespace, train):
    from bayesmf import inference

    if args.collapse_rows is True and (args.model != "bmf" or args.likelihood != "gaussian"
                               or args.nuts):
        raise UsageError("--collapse-rows integrates the users of Bayesian MF out in SVI: "
                         "use it with --model bmf, the Gaussian likelihood and without --nuts")
    model = _svi_model(args, train)
    if args.nuts:
        if args.model == "sbm":
            raise UsageError("--nuts samples continuous latents; the block model's cluster "
                             "labels are discrete: drop --nuts for --model sbm")
        pairs = train.observed_pairs() if args.model == "lfm" else train
        warmup = 300 if args.burn_in is None else args.burn_in
        return inference.fit_nuts(model, pairs, num_samples=args.samples, warmup=warmup,
                                  seed=args.seed, progress=None if not args.quiet else False)
    # None: the model's defaults (inference.svi_defaults; the block model's own for sbm)
    full_batch = args.model in ("sbm", "lfm")
    options: dict[str, Any] = dict(
        epochs=args.epochs, lr=args.lr, seed=args.seed,
        progress=None if not args.quiet else False,
        batch_size=args.batch_size if args.batch_size or full_batch else 10_000,
        checkpoint=args.checkpoint, checkpoint_every=1 if args.checkpoint else None,
        resume=not args.overwrite,
    )
    if args.model == "sbm":
        options = {k: v for k, v in options.items() if v is not None or k == "batch_size"}
        return inference.fit_sbm(model, train, n_restarts=args.restarts or 3, **options)
    if args.model == "lfm":
        train = train.observed_pairs()
    restarts = args.restarts  # None: the model's (svi_defaults)
    if restarts is not None and restarts > 1 and args.checkpoint:
        raise UsageError("--restarts with --checkpoint: one checkpoint file cannot hold "
                         "several fits; drop one of them")
    return inference.fit_svi(model, train, kl_warmup=args.kl_warmup, restarts=restarts,
                             row_covariance=args.row_covariance,
                             collapse_rows=args.collapse_rows, **options)


ENGINES = {"als": _als, "sgd": _sgd, "gibbs": _gibbs, "bmf": _svi, "nnmf": _svi, "sbm": _svi,
           "lfm": _svi}
NETWORK_MODELS = ("sbm", "lfm")


def cmd_fit(args: argparse.Namespace) -> int:
    """``bayesmf fit``: load, split, fit, evaluate, save, report — one path for every model."""
    from bayesmf import data, diagnostics
    from bayesmf.inference import files

    network = args.model in NETWORK_MODELS
    if network != (args.dataset == "nips234" or args.edges is not None
                   or args.adjacency is not None):
        raise UsageError(
            "networks (--dataset nips234, --edges, --adjacency) go with --model sbm or lfm; "
            "ratings (--dataset movielens-*/jester, --ratings) with the other models"
        )
    if not network and args.ratings is None and args.dataset is None:
        raise UsageError("give --dataset NAME or --ratings FILE.csv (see bayesmf fit --help)")
    t0 = time.perf_counter()
    if network:
        net = _load_network(args)
        _say(f"{net!r}")
        train, test = data.holdout_pairs(net, args.test_fraction, seed=args.seed)
        _say(f"  held out {len(test):,} of {net.n_pairs:,} pairs ({int(test.labels.sum())} "
             f"links), seed {args.seed}")
    else:
        ratings, split = _load_ratings(args)
        if split is not None:
            train, test = split
            _say(f"{train.name}: canonical split {args.split}: {len(train):,} train / "
                 f"{len(test):,} test ratings, shape {train.shape}")
        else:
            train, test = data.random_split(ratings, args.test_fraction, seed=args.seed)
            _say(f"{ratings!r}")
            _say(f"  random split seed {args.seed}: {len(train):,} train / {len(test):,} test "
                 "ratings")
    _say(f"  loaded in {time.perf_counter() - t0:.1f} s")

    fit = ENGINES[args.model](args, train)
    metrics = _evaluate(fit, test, network)
    metrics.update(fit_s=fit.fit_seconds, n_train=train.n_pairs if network else len(train),
                   n_test=len(test))
    _say(f"  {args.model.upper()} ({fit.inference_name}), rank {args.rank}: fit in "
         f"{fit.fit_seconds:.1f} s")
    names = {"auc": "test AUC", "rmse": "test RMSE", "mae": "test MAE",
             "coverage90": "90% interval coverage"}
    shown = {k: f"{names[k]} {v:.4f}" for k, v in metrics.items() if k in names}
    if "auc_median" in metrics:
        shown["auc"] += f" ({metrics['auc_median']:.4f} ranked by posterior medians)"
    _say("  " + "   ".join(shown.values()))
    if network and hasattr(fit, "effective_clusters"):
        _say(f"  effective number of clusters {fit.effective_clusters():.2f}   "
             f"alpha {fit.alpha:.3f}")
    if args.out:
        out = Path(args.out)
        fit.save(out / "fit.pt")
        written = [out / "fit.pt"]
        if args.model == "sbm":
            diagnostics.plot_block_structure(fit, net, path=out / "blocks.png")
            written.append(out / "blocks.png")
        settings = {k: v for k, v in vars(args).items() if k != "func"}
        files.atomic_write_text(out / "metrics.json", json.dumps(
            {"metrics": metrics, "settings": settings}, indent=2, default=str))
        written.append(out / "metrics.json")
        _say("  wrote " + ", ".join(map(str, written)) +
             f" (read the fit back with bayesmf.load or `bayesmf predict --fit {out / 'fit.pt'}`)")
    return 0


def _evaluate(fit: Any, test: Any, network: bool) -> dict[str, float]:
    from bayesmf import diagnostics

    pred = fit.predict(test, clamp=True)
    if network:
        out = {"auc": diagnostics.auc(test.labels, pred),
               "rmse": diagnostics.rmse(test.values, pred)}
        if fit.has_posterior:  # ranked by each pair's posterior median link probability
            out["auc_median"] = diagnostics.auc(test.labels, fit.predict(test, statistic="median"))
    else:
        out = {"rmse": diagnostics.rmse(test.values, pred),
               "mae": diagnostics.mae(test.values, pred)}
    if fit.has_posterior and not network:
        lo, hi = fit.predict_interval(test, 0.9)
        out["coverage90"] = diagnostics.coverage(test.values, lo, hi)
    return out


# ------------------------------------------------------------------------ predict
def cmd_predict(args: argparse.Namespace) -> int:
    """``bayesmf predict``: predictions (and intervals) of a saved fit for new (user, item) rows."""
    import numpy as np
    import pandas as pd

    import bayesmf
    from bayesmf.inference import files

    if not Path(args.fit).is_file():
        raise UsageError(f"{args.fit}: no such file (--fit)")
    fit = bayesmf.load(args.fit)
    info = fit.train_info
    if "row_ids" not in info:
        raise UsageError(f"{args.fit}: this fit ({fit.kind}) does not predict (user, item) rows")
    df = _read_table(args.ratings, args, {"--user-col": args.user_col,
                                          "--item-col": args.item_col})
    rows = _index_of(np.asarray(info["row_ids"]), df[args.user_col].to_numpy(), "user",
                     args.ratings)
    cols = _index_of(np.asarray(info["col_ids"]), df[args.item_col].to_numpy(), "item",
                     args.ratings)
    from bayesmf.data import Ratings

    query = Ratings(rows, cols, np.zeros(len(df), dtype=np.float32),
                    shape=tuple(info["shape"]), scale=info.get("scale"))
    out = pd.DataFrame({args.user_col: df[args.user_col], args.item_col: df[args.item_col]})
    out["prediction"] = fit.predict(query, clamp=True).cpu().numpy()
    if fit.has_posterior:
        lo, hi = fit.predict_interval(query, args.level)
        out[f"lower{int(round(100 * args.level))}"] = lo.cpu().numpy()
        out[f"upper{int(round(100 * args.level))}"] = hi.cpu().numpy()
    text = out.to_csv(index=False)
    if args.out:
        files.atomic_write_text(args.out, text)
        _say(f"wrote {len(out):,} predictions to {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def _index_of(ids: Any, query: Any, what: str, path: str) -> Any:
    """Positions of original ids in the training ids (ids read from CSV may be str vs int)."""
    import numpy as np
    import pandas as pd

    pos = pd.Index(np.asarray(ids).astype(str)).get_indexer(np.asarray(query).astype(str))
    unknown = np.asarray(query)[pos < 0].tolist()
    if unknown:
        raise UsageError(f"{path}: {len(unknown)} {what} id(s) not seen in training, e.g. "
                         f"{unknown[:3]} (a cold-start {what} needs a model that extends: DMF)")
    return pos.astype(np.int64)


# ------------------------------------------------------------------------- parser
class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every default in --help."""


def _data_options(f: argparse.ArgumentParser) -> None:
    src = f.add_argument_group("data")
    src.add_argument("--dataset", choices=DATASETS, help="a public dataset")
    src.add_argument("--ratings", metavar="CSV", help="a ratings table instead of --dataset")
    src.add_argument("--edges", metavar="CSV", help="a network as an edge list (two node columns)")
    src.add_argument("--adjacency", metavar="FILE",
                     help="a network as a dense 0/1 adjacency matrix (CSV/TSV/.npy/.npz)")
    src.add_argument("--user-col", default="user", help="user column of --ratings")
    src.add_argument("--item-col", default="item", help="item column of --ratings")
    src.add_argument("--rating-col", default="rating", help="rating column of --ratings")
    src.add_argument("--sep", default=",", help="field separator of --ratings/--edges")
    src.add_argument("--no-header", action="store_true",
                     help="--ratings has no header row: name the columns 0, 1, 2, ...")
    src.add_argument("--scale", type=float, nargs=2, metavar=("LOW", "HIGH"),
                     help="rating scale of --ratings (predictions are clamped to it)")
    src.add_argument("--duplicates", choices=("error", "mean"), default="error",
                     help="what to do with repeated (user, item) pairs in --ratings")
    src.add_argument("--data-dir", default=None,
                     help="where datasets are looked for (default: $BAYESMF_DATA_DIR, then the "
                     "cache)")
    src.add_argument("--offline", action="store_true", help="never download")
    src.add_argument("--split", default=None,
                     help="canonical MovieLens-100K split (u1..u5, ua, ub) instead of random")
    src.add_argument("--test-fraction", type=float, default=0.1,
                     help="random test fraction (ratings, or node pairs of a network)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bayesmf`` command."""
    from bayesmf import __version__

    p = argparse.ArgumentParser(
        prog="bayesmf", formatter_class=_Help,
        description="Probabilistic matrix factorization on Pyro: fit models to ratings "
        "matrices and networks, report held-out accuracy, predict with a saved fit.",
    )
    p.add_argument("--version", action="version", version=f"bayesmf {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more logging (-v info, -vv debug)")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", formatter_class=_Help,
                       help="fit a model to built-in synthetic data (no download)",
                       description="Make a synthetic low-rank ratings matrix with known noise, "
                       "fit it and compare the test RMSE with the noise floor.")
    d.add_argument("--rows", type=int, default=1000, help="number of rows (users)")
    d.add_argument("--cols", type=int, default=800, help="number of columns (items)")
    d.add_argument("--rank", type=int, default=5, help="true and fitted rank")
    d.add_argument("--density", type=float, default=0.1, help="fraction observed")
    d.add_argument("--noise", type=float, default=0.5, help="noise standard deviation")
    d.add_argument("--epochs", type=int, default=None,
                   help="SVI epochs (default: the model's, 60 for BayesianMF)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    d.add_argument("--seed", type=int, default=0, help="random seed")
    d.set_defaults(func=cmd_demo)

    f = sub.add_parser(
        "fit", formatter_class=_Help, help="fit a model to a dataset and report test error",
        description="Fit a model to MovieLens/Jester, a ratings CSV or a network and report "
        "held-out RMSE/MAE (ratings) or AUC (networks). With --out DIR it writes DIR/fit.pt "
        "(any model; read it with bayesmf.load or `bayesmf predict`) and DIR/metrics.json.",
    )
    _data_options(f)
    m = f.add_argument_group("model")
    m.add_argument("--model", choices=MODELS, default="als",
                   help="als/sgd: MAP; bmf/nnmf: Bayesian (NN)MF by SVI; gibbs: Bayesian MF by "
                   "Gibbs; sbm: DP block model; lfm: latent-feature network model (SVI)")
    m.add_argument("--rank", type=int, default=10, help="number of latent factors")
    m.add_argument("--reg", type=float, default=None,
                   help="als/sgd regularisation of the factors (default: 15 for ALS, 0.1 for SGD)")
    m.add_argument("--reg-bias", type=float, default=None,
                   help="als/sgd regularisation of the biases (default: 5 for ALS, --reg for SGD)")
    m.add_argument("--no-biases", action="store_true", help="no mean/row/column biases")
    m.add_argument("--epochs", "--iters", type=int, default=None, dest="epochs",
                   help="passes over the data (default: ALS 30, SGD 25, SVI the model's)")
    b = f.add_argument_group("Bayesian models")
    b.add_argument("--ard", action="store_true",
                   help="bmf/gibbs: one prior scale per factor and latent factor means (the prior "
                   "of a Bayesian FM; best on MovieLens with --model gibbs)")
    b.add_argument("--implicit", action="store_true",
                   help="bmf/gibbs: implicit feedback (SVD++-style: each user also described by "
                   "the items they rated, each item by its users)")
    b.add_argument("--row-covariance", action="store_true",
                   help="bmf/nnmf/lfm: a full covariance for each user's and item's latent "
                   "vector in q (SVI), instead of the fully factorised guide")
    b.add_argument("--collapse-rows", action=argparse.BooleanOptionalAction, default=None,
                   help="bmf: integrate each user's vector and bias out exactly (SVI; the "
                   "default for Gaussian bmf): a higher ELBO, a noise posterior nearer the "
                   "exact one and epochs that grow linearly with the data; "
                   "--no-collapse-rows fits the mean-field guide")
    b.add_argument("--likelihood", choices=("gaussian", "discretized"), default="gaussian",
                   help="bmf/nnmf: observation model; 'discretized' bins the Normal to the "
                   "integer rating levels (predictions and intervals stay on the scale)")
    b.add_argument("--nuts", action="store_true",
                   help="bmf/nnmf/lfm: sample the exact posterior by NUTS instead of SVI "
                   "(small data: hundreds of rows or nodes; --samples draws after --burn-in "
                   "warm-up iterations)")
    b.add_argument("--samples", type=int, default=400,
                   help="gibbs/--nuts: draws kept per chain")
    b.add_argument("--burn-in", "--warmup", type=int, default=None, dest="burn_in",
                   help="gibbs: burn-in sweeps (default 1000); --nuts: warm-up iterations "
                   "(default 300); discarded")
    b.add_argument("--thin", type=int, default=None,
                   help="gibbs: keep every THIN-th sweep after the burn-in (default 5; 10 "
                   "with --ard, whose bias scales mix more slowly)")
    b.add_argument("--batch-size", type=int, default=None,
                   help="observations per minibatch (default 10000, raised to 5 per row of "
                   "the longest array a step draws; sbm: all pairs)")
    b.add_argument("--lr", type=float, default=None,
                   help="initial Adam learning rate, decays to a tenth (default: the model's, "
                   "inference.svi_defaults)")
    b.add_argument("--kl-warmup", type=int, default=None,
                   help="epochs of KL warm-up (default: the model's share of the epochs)")
    b.add_argument("--hidden", default="50,50,50",
                   help="nnmf hidden widths, comma-separated; '' for the linear VI(0)")
    b.add_argument("--bilinear-dims", type=int, default=60, help="nnmf D")
    b.add_argument("--side-info", action="store_true",
                   help="nnmf: concatenate item features (MovieLens genres) to V")
    b.add_argument("--checkpoint", default=None,
                   help="checkpoint file, written every epoch; an existing one is resumed when "
                   "it was written for the same data and settings")
    b.add_argument("--overwrite", action="store_true",
                   help="start afresh even if --checkpoint exists (overwrite it)")
    n = f.add_argument_group("networks")
    n.add_argument("--truncation", type=int, default=7, help="sbm: maximum number of clusters")
    n.add_argument("--restarts", type=int, default=None,
                   help="sbm: restarts, the best kept (default 3); bmf/nnmf/lfm: SVI fits "
                   "from this many seeds, their posteriors averaged (a mixture; default 1; 3 "
                   "lowers VI(3)+S from 0.904 to 0.895 on ML-100K at 3x the time)")
    n.add_argument("--degree-correction", action="store_true", help="sbm: per-node degree effects")
    f.add_argument("--seed", type=int, default=0, help="random seed (split and init)")
    f.add_argument("--out", default=None, help="folder for fit.pt and metrics.json")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    f.set_defaults(func=cmd_fit)

    pr = sub.add_parser(
        "predict", formatter_class=_Help, help="predict new (user, item) pairs with a saved fit",
        description="Read a fit saved by `bayesmf fit --out DIR` (DIR/fit.pt) or by fit.save(), "
        "and write predictions (and, for Bayesian fits, central predictive intervals) for the "
        "(user, item) rows of a CSV, by their original ids.",
    )
    pr.add_argument("--fit", required=True, help="a saved fit (fit.pt)")
    pr.add_argument("--ratings", required=True, metavar="CSV", help="rows to predict")
    pr.add_argument("--user-col", default="user", help="user column of --ratings")
    pr.add_argument("--item-col", default="item", help="item column of --ratings")
    pr.add_argument("--sep", default=",", help="field separator of --ratings")
    pr.add_argument("--no-header", action="store_true", help="--ratings has no header row")
    pr.add_argument("--level", type=float, default=0.9, help="interval level")
    pr.add_argument("--out", default=None, help="output CSV (default: standard output)")
    pr.set_defaults(func=cmd_predict)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bayesmf`` console script.

    Everyday mistakes (a missing file or column, a dataset not found offline, a damaged fit
    file) end in one line on standard error and exit status 2, not a traceback.
    """
    args = build_parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "fit":
        for key, value in FIT_DEFAULTS[args.model].items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    try:
        return int(args.func(args) or 0)
    except UsageError as err:
        return _fail(str(err))
    except FileNotFoundError as err:  # a dataset or file that is not there
        msg = str(err).replace("call with download=True", "drop --offline to download it")
        return _fail(msg.replace("download=True", "no --offline") + _where_hint(args))
    except ValueError as err:
        from bayesmf.inference.files import FitFileError, ResumeMismatch

        if isinstance(err, ResumeMismatch):
            return _fail(f"{err} (pass --overwrite to start afresh)")
        if isinstance(err, FitFileError):
            return _fail(str(err))
        raise


def _where_hint(args: argparse.Namespace) -> str:
    return "" if getattr(args, "data_dir", None) else " (or point --data-dir at the folder)"


def _fail(msg: str) -> int:
    sys.stderr.write(f"bayesmf: error: {msg.splitlines()[0] if msg else 'failed'}\n")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
