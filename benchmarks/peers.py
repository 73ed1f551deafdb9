"""bayesmf's Gibbs sampler against its peer, myFM, on the same MovieLens-100K splits.

* Models: ``BayesianMF(943, 1682, rank=10, ard=True, factor_means=True)`` sampled by
  :func:`bayesmf.inference.fit_gibbs` (one chain) against myFM's Bayesian factorization
  machine (``myfm.MyFMRegressor(rank=10)``) on one-hot user/item features, with the
  users and the items in separate hyper-prior groups (``group_shapes=[943, 1682]``, so that
  both models have per-factor means and precisions per side). Both: 50 burn-in + 150 kept
  sweeps (myFM: ``n_iter=200, n_kept_samples=150``), seeded with the split seed.
* Implicit feedback (issue 12): ``BayesianMF(..., implicit=True)`` (SVD++ representations
  ``u_n + |N(n)|^-1/2 sum y_j``, ``v_m + |N(m)|^-1/2 sum w_i`` from the training split)
  against myFM on the features of its MovieLens example (user one-hot, normalised items the
  user rated, item one-hot, normalised users who rated the item) with four hyper-prior
  groups (``group_shapes=[N, M, M, N]``), same sweeps and seeds. The rows
  ``bayesmf Gibbs implicit - myFM implicit (paired)`` pair them per split.
* ``bayesmf SVI collapsed implicit``: the same implicit model by SVI with the users
  integrated out (``fit_svi(..., collapse_rows=True)``, Table 1's settings), paired per split
  with myFM implicit and with the implicit Gibbs row.
* Splits: five random 90/10 splits (``random_split(R, test_fraction=0.1, seed=s)``,
  ``s = 0..4``) and the GroupLens splits u1..u5 (``canonical_split``). Test RMSE of the
  posterior predictive mean clamped to [1, 5]; the difference bayesmf - myFM is paired per
  split (mean ± std over the splits).
* Time: on split 0, the two fits alternate (``--repeats``, >= 3), single-threaded
  (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``, myFM's predictions with one
  worker); wall and CPU seconds of the fit, the ratio bayesmf / myFM per repeat, and the
  per-sweep cost.
* Memory: peak resident memory of one fit on 5 M synthetic ratings (100,000 x 20,000, rank
  10, a few sweeps), each engine in its own subprocess: above the imports, and above the
  input arrays (which both share).

myFM is optional: without it (``pip install myfm``; it needs ``setuptools<81`` for
``pkg_resources``) only bayesmf's rows are written, with a message. Run
``python benchmarks/peers.py`` (``--quick``: one random split and u1, 20 + 30 sweeps, 2
timing repeats, 200,000 ratings for memory; ``--engines`` a subset of the four engines,
``--splits`` fewer splits, ``--merge`` keeps the other engines' runs of the existing file).
myFM with the implicit features costs about 2.3 CPU seconds per sweep on ML-100K (30 M
non-zero features), some 8 CPU minutes per split. Writes
``benchmarks/results/peers.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # myFM always shows a progress bar

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, default_data_dir, machine_info, mean_std, write_results  # noqa: E402

from bayesmf import inference, models  # noqa: E402
from bayesmf.data import DatasetNotFoundError, Ratings, load_movielens, random_split  # noqa: E402
from bayesmf.diagnostics.metrics import rmse  # noqa: E402

log = logging.getLogger("benchmarks.peers")

RANK = 10
BURN_IN, KEPT = 50, 150
QUICK_BURN_IN, QUICK_KEPT = 20, 30
MEMORY_SHAPE = (100_000, 20_000)
MEMORY_SWEEPS = (1, 2)  # burn-in, kept: working memory, not the kept draws


def _myfm() -> Any | None:
    try:
        import myfm
    except ImportError as err:  # optional peer
        log.warning("myFM is not importable (%s): only bayesmf is run. Install it with "
                    "`pip install myfm 'setuptools<81'` to compare.", err)
        return None
    return myfm


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _onehot(d: Ratings) -> Any:
    """One-hot user and item columns, ``(len(d), N + M)`` CSR (myFM's input)."""
    import scipy.sparse as sps

    n = len(d)
    N, M = d.shape
    idx = np.empty(2 * n, dtype=np.int32)
    idx[0::2] = d.rows.numpy()
    idx[1::2] = N + d.cols.numpy()
    return sps.csr_matrix((np.ones(2 * n), idx, np.arange(0, 2 * n + 1, 2)), shape=(n, N + M))


def _implicit_onehot(train: Ratings) -> Any:
    """myFM's MovieLens implicit-feedback features, built from ``train``: a function mapping
    data to ``(len(d), N + M + M + N)`` CSR rows ``[user one-hot | |N(u)|^-1/2 on the items
    u rated | item one-hot | |N(i)|^-1/2 on the users who rated i]`` (the four groups of
    ``group_shapes=[N, M, M, N]``)."""
    import scipy.sparse as sps

    N, M = train.shape
    r, c = train.rows.numpy(), train.cols.numpy()

    def normalised(a: np.ndarray, b: np.ndarray, n: int, m: int) -> Any:
        inc = sps.csr_matrix((np.ones(len(a)), (a, b)), shape=(n, m))
        inc.data[:] = 1.0  # a repeated pair counts once
        deg = np.asarray(inc.sum(1)).ravel()
        return sps.diags(1 / np.sqrt(np.maximum(deg, 1))) @ inc

    user_implicit, item_implicit = normalised(r, c, N, M), normalised(c, r, M, N)

    def features(d: Ratings) -> Any:
        rows, cols = d.rows.numpy(), d.cols.numpy()
        n = len(d)
        user = sps.csr_matrix((np.ones(n), (np.arange(n), rows)), shape=(n, N))
        item = sps.csr_matrix((np.ones(n), (np.arange(n), cols)), shape=(n, M))
        return sps.hstack([user, user_implicit[rows], item, item_implicit[cols]]).tocsr()

    return features


def fit_myfm_implicit(myfm: Any, train: Ratings, test: Ratings | None, seed: int,
                      burn_in: int, kept: int) -> dict[str, float]:
    """myFM with the implicit-feedback groups of its MovieLens example (features from the
    training data, four hyper-prior groups): test RMSE (clamped), wall and CPU seconds of
    the fit (feature building included)."""
    c0, t0 = time.process_time(), time.perf_counter()
    features = _implicit_onehot(train)
    N, M = train.shape
    fm = myfm.MyFMRegressor(rank=RANK, random_seed=seed)
    fm.fit(features(train), train.values.double().numpy(), n_iter=burn_in + kept,
           n_kept_samples=kept, group_shapes=[N, M, M, N])
    out = {"fit_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    if test is not None:
        pred = torch.from_numpy(fm.predict(features(test), n_workers=1)).float()
        out["rmse"] = rmse(test.values, test.clamp(pred))
    return out


def fit_bayesmf(train: Ratings, test: Ratings | None, seed: int, burn_in: int,
                kept: int, implicit: bool = False) -> dict[str, float]:
    """One bayesmf Gibbs fit: test RMSE (clamped), wall and CPU seconds of the fit."""
    model = models.BayesianMF(*train.shape, rank=RANK, ard=True, factor_means=True,
                              implicit=implicit)
    c0, t0 = time.process_time(), time.perf_counter()
    fit = inference.fit_gibbs(model, train, num_samples=kept, burn_in=burn_in, seed=seed,
                              thin=1, progress=False)  # every sweep kept, as myFM's samples
    out = {"fit_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    if test is not None:
        out["rmse"] = rmse(test.values, fit.predict(test, clamp=True))
    return out


def fit_bayesmf_svi(train: Ratings, test: Ratings | None, seed: int) -> dict[str, float]:
    """The implicit ARD model by SVI with the users integrated out (``collapse_rows=True``):
    test RMSE (clamped), wall and CPU seconds of the fit."""
    model = models.BayesianMF(*train.shape, rank=RANK, ard=True, factor_means=True,
                              implicit=True)
    c0, t0 = time.process_time(), time.perf_counter()
    fit = inference.fit_svi(model, train, seed=seed, progress=False, **SVI_COLLAPSED)
    out = {"fit_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    if test is not None:
        out["rmse"] = rmse(test.values, fit.predict(test, clamp=True))
    return out


def fit_myfm(myfm: Any, train: Ratings, test: Ratings | None, seed: int, burn_in: int,
             kept: int) -> dict[str, float]:
    """One myFM fit on the same data: test RMSE (clamped), wall and CPU seconds of the fit
    (the one-hot encoding included)."""
    c0, t0 = time.process_time(), time.perf_counter()
    fm = myfm.MyFMRegressor(rank=RANK, random_seed=seed)
    fm.fit(_onehot(train), train.values.double().numpy(), n_iter=burn_in + kept,
           n_kept_samples=kept, group_shapes=list(train.shape))
    out = {"fit_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    if test is not None:
        pred = torch.from_numpy(fm.predict(_onehot(test), n_workers=1)).float()
        out["rmse"] = rmse(test.values, test.clamp(pred))
    return out


#: the engines, in table order
ENGINES = ("bayesmf Gibbs", "myFM", "bayesmf Gibbs implicit", "myFM implicit",
           "bayesmf SVI collapsed implicit")
#: paired comparisons (first - second, per split); the first two are also timed as ratios
PAIRS = (("bayesmf Gibbs", "myFM"), ("bayesmf Gibbs implicit", "myFM implicit"),
         ("bayesmf Gibbs implicit", "bayesmf Gibbs"),
         ("bayesmf SVI collapsed implicit", "myFM implicit"),
         ("bayesmf SVI collapsed implicit", "bayesmf Gibbs implicit"))
#: fit_svi settings of the collapsed SVI row (Table 1's BayesianMF rows, not tuned)
SVI_COLLAPSED = {"epochs": 100, "lr": 0.1, "final_lr": 0.002, "batch_size": 10_000,
                 "collapse_rows": True}


def run_engine(engine: str, myfm: Any | None, train: Ratings, test: Ratings | None, seed: int,
               burn_in: int, kept: int) -> dict[str, float]:
    """One fit of ``engine`` (a name of :data:`ENGINES`)."""
    if engine == "bayesmf SVI collapsed implicit":
        return fit_bayesmf_svi(train, test, seed)
    if engine.startswith("bayesmf"):
        return fit_bayesmf(train, test, seed, burn_in, kept, implicit=engine.endswith("implicit"))
    if engine == "myFM":
        return fit_myfm(myfm, train, test, seed, burn_in, kept)
    return fit_myfm_implicit(myfm, train, test, seed, burn_in, kept)


def _splits(data_dir: str | None, n: int) -> dict[str, list[tuple[str, Ratings, Ratings]]]:
    ds = load_movielens("100k", root=data_dir)
    R = ds.to_ratings()
    return {
        "ml-100k random 90/10": [(f"seed {s}", *random_split(R, test_fraction=0.1, seed=s))
                                 for s in range(n)],
        "ml-100k u1-u5": [(f"u{i}", *ds.canonical_split(f"u{i}")) for i in range(1, n + 1)],
    }


def summarise(rows: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """The table of one protocol from every engine's per-split runs (same split order):
    mean ± std of RMSE and fit time per engine, and the paired differences of
    :data:`PAIRS` over the splits both engines ran."""
    out: dict[str, Any] = {}
    for model in ENGINES:
        rs = rows.get(model) or []
        if rs:
            m, s = mean_std([r["rmse"] for r in rs])
            out[model] = {"rmse": m, "rmse_std": s, "n_splits": len(rs),
                          "fit_s": float(np.mean([r["fit_s"] for r in rs])),
                          "cpu_s": float(np.mean([r["cpu_s"] for r in rs]))}
    for a, b in PAIRS:
        n = min(len(rows.get(a) or []), len(rows.get(b) or []))
        if n == 0:
            continue
        diff = [x["rmse"] - y["rmse"] for x, y in zip(rows[a][:n], rows[b][:n], strict=True)]
        m, s = mean_std(diff)
        out[f"{a} - {b} (paired)"] = {"rmse_diff": m, "rmse_diff_std": s, "n_splits": n,
                                      "first_better_splits": sum(d < 0 for d in diff)}
    return out


def accuracy(splits: dict[str, list[tuple[str, Ratings, Ratings]]], myfm: Any | None,
             engines: list[str], burn_in: int, kept: int,
             done: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every engine's per-split runs (RMSE, wall and CPU seconds), protocol by protocol;
    the runs already in ``done`` (``{protocol: {engine: [runs of the first splits]}}``, from
    ``--resume``) are kept and not refitted."""
    per_split: dict[str, Any] = {}
    for dataset, runs in splits.items():
        old = (done or {}).get(dataset, {})
        rows: dict[str, list[dict[str, float]]] = {e: list(old.get(e) or [])[:len(runs)]
                                                   for e in engines}
        for i, (name, train, test) in enumerate(runs):
            for engine in engines:
                if i < len(rows[engine]):
                    continue
                r = run_engine(engine, myfm, train, test, i, burn_in, kept)
                rows[engine].append({k: round(v, 5) for k, v in r.items()})
                log.info("%s %s: %s %.4f", dataset, name, engine, r["rmse"])
        per_split[dataset] = {**rows, "splits": [name for name, _, _ in runs]}
    return per_split


def timing(train: Ratings, myfm: Any | None, engines: list[str], repeats: int, burn_in: int,
           kept: int) -> dict[str, list[dict[str, float]]]:
    """Alternating fits of the engines on one split: every run's wall and CPU seconds."""
    runs: dict[str, list[dict[str, float]]] = {e: [] for e in engines}
    for r in range(repeats):
        for engine in engines:
            x = run_engine(engine, myfm, train, None, r, burn_in, kept)
            runs[engine].append({m: round(v, 4) for m, v in x.items()})
    return runs


def summarise_timing(runs: dict[str, list[dict[str, float]]], sweeps: int) -> dict[str, Any]:
    """Per engine: best and median seconds, CPU milliseconds per sweep; per pair of
    :data:`PAIRS`: the time ratios of the alternating runs."""
    out: dict[str, Any] = {}
    for model in ENGINES:
        rs = runs.get(model) or []
        if rs:
            out[model] = {
                "fit_s_min": min(x["fit_s"] for x in rs),
                "fit_s_median": float(np.median([x["fit_s"] for x in rs])),
                "cpu_s_min": min(x["cpu_s"] for x in rs),
                "repeats": len(rs),
            }
            if "SVI" not in model:  # samplers: the cost of a sweep
                out[model]["ms_per_sweep_cpu"] = 1e3 * min(x["cpu_s"] for x in rs) / sweeps
    for a, b in PAIRS[:2]:
        n = min(len(runs.get(a) or []), len(runs.get(b) or []))
        if n == 0:
            continue
        wall = [x["fit_s"] / y["fit_s"] for x, y in zip(runs[a][:n], runs[b][:n], strict=True)]
        cpu = [x["cpu_s"] / y["cpu_s"] for x, y in zip(runs[a][:n], runs[b][:n], strict=True)]
        out[f"{a} / {b}"] = {"time_ratio_wall_median": float(np.median(wall)),
                             "time_ratio_cpu_median": float(np.median(cpu)),
                             "time_ratio_cpu_max": max(cpu)}
    return out


# ----------------------------------------------------------------------------- memory
def _status_mb(field: str) -> float:
    """A memory figure of this process from ``/proc/self/status`` (Linux), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> float:
    """Reset the peak resident memory (``VmHWM``) to the current one; returns it (MiB)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def _memory_child(engine: str, n: int) -> None:
    """Run in a subprocess: one fit on ``n`` synthetic ratings; prints JSON."""
    torch.set_num_threads(1)
    myfm = _myfm() if engine == "myFM" else None
    import scipy.sparse  # noqa: F401  (imported before the baseline, as for both)

    # a tiny fit first, so that the libraries' lazily loaded code (MKL, LAPACK kernels) is
    # resident before the baseline: what is measured is the memory the data make the
    # engine use
    rng = np.random.default_rng(1)
    cells = rng.choice(50 * 40, size=500, replace=False)
    tiny = Ratings(cells // 40, cells % 40, rng.integers(1, 6, size=500).astype(np.float32),
                   shape=(50, 40))
    if engine == "myFM":
        fit_myfm(myfm, tiny, None, 0, *MEMORY_SWEEPS)
    else:
        fit_bayesmf(tiny, None, 0, *MEMORY_SWEEPS)
    after_import = _reset_peak()
    N, M = MEMORY_SHAPE
    rng = np.random.default_rng(0)
    cells = rng.choice(N * M, size=n, replace=False)
    rows, cols = cells // M, cells % M
    del cells
    values = rng.integers(1, 6, size=n).astype(np.float32)
    after_data = _status_mb("VmRSS")
    t0 = time.perf_counter()
    train = Ratings(rows, cols, values, shape=(N, M))
    del rows, cols, values
    burn_in, kept = MEMORY_SWEEPS
    if engine == "myFM":
        fit_myfm(myfm, train, None, 0, burn_in, kept)
    else:
        fit_bayesmf(train, None, 0, burn_in, kept)
    peak = _status_mb("VmHWM")
    print(json.dumps({"peak_above_import_mb": peak - after_import,
                      "peak_above_data_mb": peak - after_data,
                      "data_mb": after_data - after_import,
                      "seconds": time.perf_counter() - t0, "ratings": n}))


def memory(engines: list[str], n: int) -> dict[str, Any]:
    """Peak memory of each engine, each in a fresh subprocess."""
    out: dict[str, Any] = {}
    for engine in engines:
        cmd = [sys.executable, __file__, "--memory-child", engine, "--memory-ratings", str(n)]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if res.returncode != 0:
            log.warning("memory run of %s failed: %s", engine, res.stderr[-2000:])
            continue
        out[engine] = json.loads(res.stdout.strip().splitlines()[-1])
        log.info("memory %s: %s", engine, out[engine])
    if len(out) == 2:
        a, b = out["bayesmf Gibbs"], out["myFM"]
        out["bayesmf / myFM"] = {
            "peak_above_import_ratio": a["peak_above_import_mb"] / b["peak_above_import_mb"],
            "peak_above_data_ratio": a["peak_above_data_mb"] / b["peak_above_data_mb"],
        }
    return out


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Per-split (or timing) runs: the new engines' runs replace the old ones' of the same
    engine, the others are kept (the split lists must agree)."""
    out = {k: dict(v) for k, v in old.items()}
    for dataset, rows in new.items():
        if dataset in out and "splits" in rows and "splits" in out[dataset]:
            n = len(rows["splits"])
            if out[dataset]["splits"][:n] != rows["splits"]:
                raise ValueError(f"cannot merge {dataset}: other splits")
        out.setdefault(dataset, {}).update(rows)
    return out


def settings_text(burn_in: int, kept: int) -> dict[str, Any]:
    """How each engine was run (recorded with the results)."""
    return {
        "protocol": "random 90/10 splits seeds 0..4 (random_split) and GroupLens u1..u5; "
                    "RMSE of the posterior predictive mean clamped to [1, 5]; paired "
                    "differences per split; timing alternates the engines on split seed 0",
        "bayesmf": {"model": f"BayesianMF(rank={RANK}, ard=True, factor_means=True)",
                    "fit": "inference.fit_gibbs(num_chains=1, seed=split index)",
                    "num_samples": kept, "burn_in": burn_in, "version": _version("bayesmf")},
        "bayesmf implicit": {
            "model": f"BayesianMF(rank={RANK}, ard=True, factor_means=True, implicit=True): "
                     "p_u = u_u + |N(u)|^-1/2 sum_{j in N(u)} y_j, q_i = v_i + |N(i)|^-1/2 "
                     "sum_{v in N(i)} w_v (N from the training split), Y_row/Y_col with their "
                     "own ARD scales and factor means",
            "fit": "inference.fit_gibbs(num_chains=1, seed=split index)",
            "num_samples": kept, "burn_in": burn_in},
        "myFM": {"model": f"MyFMRegressor(rank={RANK}, random_seed=split index) on one-hot "
                          "user/item features, defaults otherwise (init_stdev 0.1, alpha_0 = "
                          "beta_0 = gamma_0 = 1, mu_0 0, reg_0 1, fit_w0, fit_linear)",
                 "fit": f"fit(X, y, n_iter={burn_in + kept}, n_kept_samples={kept}, "
                        "group_shapes=[n_users, n_items])",
                 "predict": "predict(X_test, n_workers=1)",
                 "version": _version("myfm")},
        "myFM implicit": {
            "model": f"MyFMRegressor(rank={RANK}, random_seed=split index), defaults otherwise "
                     "(init_stdev 0.1, alpha_0 = beta_0 = gamma_0 = 1, mu_0 0, reg_0 1, fit_w0, "
                     "fit_linear), on the features of myFM's MovieLens example: [user one-hot "
                     "| |N(u)|^-1/2 on the items u rated | item one-hot | |N(i)|^-1/2 on the "
                     "users who rated i], N from the training split",
            "fit": f"fit(X, y, n_iter={burn_in + kept}, n_kept_samples={kept}, "
                   "group_shapes=[n_users, n_items, n_items, n_users])",
            "predict": "predict(X_test, n_workers=1)",
            "note": "a factorization machine: besides p_u . q_i it has all within-group and "
                    "user-implicit/item-implicit pairwise interactions and linear weights on "
                    "the implicit features",
            "runs": "each split fitted once (about 7 CPU minutes a split; splits added with "
                    "--merge --resume); the timing row is the accuracy run on split seed 0 (one "
                    "fit with feature building, not repeated), paired with the first bayesmf "
                    "implicit timing run"},
        "bayesmf SVI collapsed implicit": {
            "model": "bayesmf implicit's model",
            "fit": f"inference.fit_svi({SVI_COLLAPSED}, seed=split index): each user's vector "
                   "and bias integrated out, q of the rest mean-field",
            "timing": "its own runs on split seed 0, not alternated with myFM implicit (whose "
                      "one fit there took an hour of wall time): CPU seconds per fit only"},
        "threads": "OMP_NUM_THREADS=1, torch.set_num_threads(1)",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one random split and u1, short chains, small memory run")
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help=f"comma-separated subset of {', '.join(ENGINES)}")
    parser.add_argument("--splits", type=int, default=None,
                        help="splits per protocol (default 5; quick 1)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other engines' runs of the existing result file")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory runs")
    parser.add_argument("--resume", action="store_true",
                        help="with --merge: fit only the splits an engine has no run for yet, "
                             "and skip the timing runs of engines that have them")
    parser.add_argument("--data-dir", default=default_data_dir(), help="folder holding ml-100k/")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timing repeats")
    parser.add_argument("--memory-ratings", type=int, default=None,
                        help="ratings of the memory run (default 5,000,000; quick 200,000)")
    parser.add_argument("--out", default="benchmarks/results", help="output folder")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n_mem = args.memory_ratings or (200_000 if args.quick else 5_000_000)
    if args.memory_child:
        _memory_child(args.memory_child, n_mem)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if unknown := set(engines) - set(ENGINES):
        sys.exit(f"unknown engines {sorted(unknown)}; choose from {ENGINES}")
    myfm = _myfm() if any(e.startswith("myFM") for e in engines) else None
    if myfm is None:
        engines = [e for e in engines if not e.startswith("myFM")]
    burn_in, kept = (QUICK_BURN_IN, QUICK_KEPT) if args.quick else (BURN_IN, KEPT)
    try:
        splits = _splits(args.data_dir, args.splits or (1 if args.quick else 5))
    except DatasetNotFoundError as err:
        sys.exit(f"MovieLens-100K not found: {err}")
    name = "peers_quick" if args.quick else "peers"
    old: dict[str, Any] = {}
    out_dir = Path(args.out) if Path(args.out).is_absolute() else REPO / args.out
    if args.merge and (out_dir / f"{name}.json").exists():
        old = json.loads((out_dir / f"{name}.json").read_text())
    old_settings = old.get("settings", {})
    done = old_settings.get("per_split", {}) if args.resume else None
    per_split = _merge(old_settings.get("per_split", {}),
                       accuracy(splits, myfm, engines, burn_in, kept, done))
    train0 = splits["ml-100k random 90/10"][0][1]
    repeats = 2 if args.quick else max(3, args.repeats)
    old_timing = old_settings.get("timing_runs", {})
    timed = [e for e in engines if not (args.resume and old_timing.get(e))]
    timing_raw = _merge({"runs": old_timing},
                        {"runs": timing(train0, myfm, timed, repeats, burn_in, kept)
                         if timed else {}})["runs"]
    results: dict[str, Any] = {dataset: summarise({k: v for k, v in rows.items()
                                                   if k != "splits"})
                               for dataset, rows in per_split.items()}
    results["ml-100k timing (split seed 0)"] = summarise_timing(timing_raw, burn_in + kept)
    mem_key = f"synthetic {n_mem:,} ratings (memory)"
    plain = [e for e in ("bayesmf Gibbs", "myFM") if e in engines]
    if not args.no_memory and plain:
        results[mem_key] = memory(plain, n_mem)
    elif mem_key in old.get("results", {}):
        results[mem_key] = old["results"][mem_key]
    settings = {
        **settings_text(burn_in, kept),
        "myFM available": myfm is not None or bool(old_settings.get("myFM available")),
        "timing_repeats": repeats,
        "timing_runs": timing_raw,
        "memory": {"ratings": n_mem, "shape": list(MEMORY_SHAPE),
                   "sweeps": {"burn_in": MEMORY_SWEEPS[0], "kept": MEMORY_SWEEPS[1]},
                   "how": "peak resident memory (VmHWM, reset after the imports and a tiny warm-up "
                          "fit that loads the libraries' code) of a fresh subprocess per "
                          "engine, minus the resident memory at the reset (and after building "
                          "the shared input arrays); plain engines only"},
        "per_split": per_split,
        "quick": args.quick,
    }
    json_path, md_path = write_results(name, results, settings, args.out, machine_info())
    log.info("wrote %s and %s", json_path, md_path)


if __name__ == "__main__":
    main()
