"""Deep two-branch MF (DMF) and its discrete variant (DMF-D): Tables 1 and 2 of Nguyen et al.

Protocol
--------
* **Tuning** (``--parts tune``): on the 75/5 train/validation parts of split 0 only, a
  small grid of the weight decay ``gamma`` and of ``exclude_targets`` (minibatch entries
  removed from that step's inputs); architecture fixed (one hidden layer of 256 ReLU
  units per branch, ``rank = 64``), Adam lr 1e-3 (constant), batch 4096, up to ``--epochs``
  epochs with the epoch chosen by validation RMSE (patience 4). Test entries are never used.
  The grid and its validation RMSEs are recorded under ``settings.tuning``.
* **DMF-D tuning** (``--parts tune_dmfd``): for the paper-objective DMF-D (MSE on the
  quantized output + ``gamma ||W||^2 + gamma_2 ||b - b~||^2``), a grid (``DMFD_GRID``) of
  the network's fine-tuning lr, the ``lambda`` schedule and ``gamma_2`` on the 5 %
  validation parts of splits ``DMFD_TUNE_SPLITS``; chosen by the mean validation MAE of
  the hard predictions (the Table 2 test entries are never used). Stored under
  ``settings.dmfd_tuning_<data>`` and used by Table 2.
* **Table 2** (``--parts table2``, discrete matrix completion): ``--runs`` random 75/5/20
  splits (seeds 0..), DMF fitted with the tuned options (epoch chosen on the 5 %);
  reported on the 20 %: DMF (continuous), **DMF-round** (DMF rounded to 1..5) and three
  DMF-D fine-tunings warm-started from that DMF, the smooth quantizer's ``lambda`` rising
  geometrically over ``--dmfd-epochs`` and the epoch chosen by validation MAE of the hard
  predictions: **DMF-D** (the paper's MSE objective with the tuned options),
  **DMF-D-joint** (the same objective, network fine-tuned at lr 1e-4, lambda 2 -> 200)
  and **DMF-D-L1** (mean absolute error, network practically frozen: learned thresholds
  on the DMF output; not the paper's objective). DMF-D predictions are the
  ``lambda -> inf`` (hard) quantizer, i.e. exactly one of 1..5.
* **Table 1** (``--parts table1``, extendability): ``holdout_rows_cols`` holds out 10 %
  of the rows and 10 % of the columns (``--ext-seeds`` seeds); area I (known x known) is
  split 85/5/10 into train/validation/test; DMF is fitted on the area-I training part
  only. Area I RMSE is on its 10 % test; the other areas are predicted with **no
  retraining**: area II (new rows x known columns) by 5-fold fold-in -- each new row is
  fed its area-II ratings outside the fold and predicted on the fold; area III likewise
  for new columns; area IV (new x new) from the new rows' full area-II ratings and the
  new columns' full area-III ratings (disjoint from the area-IV targets). The training
  mean is reported per area as a baseline.

ML-1M is run when ``<data-dir>/ml-1m`` exists and recorded as skipped otherwise.

Usage::

    python benchmarks/dmf.py --threads 1                  # all parts, writes results/dmf.*
    python benchmarks/dmf.py --parts table2 --threads 1   # one part; merges into dmf.json
    python benchmarks/dmf.py --parts tune_dmfd,table2 --threads 1  # DMF-D grid, then Table 2
    python benchmarks/dmf.py --quick                      # smoke run (results/dmf_quick.*)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, default_data_dir, summarize, write_results  # noqa: E402

from bayesmf.data import Ratings, holdout_rows_cols, load_movielens, random_split  # noqa: E402
from bayesmf.diagnostics.metrics import mae, rmse  # noqa: E402
from bayesmf.inference import fit_deep_mf  # noqa: E402
from bayesmf.inference.deep_mf_fit import DeepMFFit, reindex  # noqa: E402
from bayesmf.models import DeepMF, DiscreteDeepMF  # noqa: E402

ARCH = {"hidden": (256,), "rank": 64, "activation": "relu"}
# a constant learning rate (final_lr = lr, also fit_deep_mf's default), as tuned
FIT = {"batch_size": 4096, "lr": 1e-3, "final_lr": 1e-3, "patience": 4}
GAMMAS = [3e-4, 1e-3, 3e-3]
EXCLUDE = [False, True]
# DMF-D fine-tuning from the DMF's weights, the lambda of the smooth quantizer rising
# geometrically over the epochs and the epoch chosen by validation MAE of the hard output.
# "DMF-D": the paper's objective (MSE on G_{lambda,b}(output) + gamma ||W||^2 +
# gamma_2 ||b - b~||^2); its network lr, lambda schedule and gamma_2 are chosen by
# ``--parts tune_dmfd`` (DMFD_GRID, validation MAE of splits DMFD_TUNE_SPLITS) and stored in
# settings["dmfd_tuning_<data>"]; the values below are the fallback. "DMF-D-joint": the same
# objective with the network fine-tuned at lr 1e-4 (the earlier setting, kept for
# comparison). "DMF-D-L1": mean absolute error instead of MSE (targets the median level;
# a departure from the paper) with the network practically frozen (lr 1e-6).
DMFD = {
    "DMF-D": {"loss": "mse", "lr": 1e-6, "boundary_lr": 1e-2, "lam_schedule": (2.0, 200.0),
              "gamma_b": 1e-3},
    "DMF-D-joint": {"loss": "mse", "lr": 1e-4, "boundary_lr": 1e-2,
                    "lam_schedule": (2.0, 200.0), "gamma_b": 1e-3},
    "DMF-D-L1": {"loss": "l1", "lr": 1e-6, "boundary_lr": 1e-2, "lam_schedule": (2.0, 200.0),
                 "gamma_b": 1e-3},
}
DMFD_COMMON = {"batch_size": 4096, "monitor": "mae"}
DMFD_GRID = {"lr": [1e-6, 1e-5], "lam_schedule": [(2.0, 200.0), (10.0, 1000.0)],
             "gamma_b": [1e-4, 1e-3, 1e-2]}
DMFD_TUNE_SPLITS = [0, 1]
# Explored by hand before the grid (validation MAE of split 0, DMF + rounding 0.6704), all
# with the MSE objective: DMF-D trained from scratch with lambda 10 -> 1000 over 25 epochs
# 0.6684; network lr 1e-4 with lambda 10 -> 1000 / 20 -> 2000 / 1 -> 1000 (20 epochs,
# boundary lr 3e-2) 0.666 / 0.669 / 0.675 (best at epoch 1-4, then the network drifts);
# network lr 3e-4: 0.671. A practically frozen network (lr 1e-6) was best, hence the grid.
PAPER = {
    "table2_ML1M": {"DMF-D": {"rmse": 0.898, "mae": 0.625}, "RankK": {"rmse": 0.944, "mae": 0.656},
                    "OptSpace": {"rmse": 0.940, "mae": 0.665},
                    "ODMC": {"rmse": 0.937, "mae": 0.658}},
    "table1_ML1M": {"area_I": 0.850, "area_II": 0.883, "area_III": 0.864, "area_IV": 0.904},
}
TARGETS = {"ML100K": "DMF area_I rmse <= 0.93; DMF-D mae < DMF-round mae (same splits)",
           "ML1M": "at least the paper's numbers"}


def _dmf(R: Ratings, gamma: float, seed: int) -> DeepMF:
    torch.manual_seed(seed)
    return DeepMF(R.n_rows, R.n_cols, scale=R.scale, gamma=gamma, **ARCH)


def _fit_dmf(train: Ratings, val: Ratings, cfg: dict[str, Any], epochs: int,
             seed: int) -> DeepMFFit:
    model = _dmf(train, cfg["gamma"], seed)
    return fit_deep_mf(model, train, val=val, epochs=epochs, exclude_targets=cfg["exclude"],
                       seed=seed, **FIT)


def _fit_dmfd(dmf: DeepMFFit, train: Ratings, val: Ratings, cfg: dict[str, Any], epochs: int,
              seed: int, opts: dict[str, Any]) -> DeepMFFit:
    m = dmf.model
    d = DiscreteDeepMF(m.n_rows, m.n_cols, scale=m.scale, gamma=m.gamma,
                       gamma_b=opts["gamma_b"], **ARCH)
    d.load_state_dict(m.state_dict(), strict=False)  # warm start: the DMF's network
    return fit_deep_mf(d, train, val=val, epochs=epochs, exclude_targets=cfg["exclude"],
                       lam_schedule=tuple(opts["lam_schedule"]), loss=opts["loss"],
                       lr=opts["lr"], final_lr=opts["lr"], boundary_lr=opts["boundary_lr"],
                       batch_size=DMFD_COMMON["batch_size"], monitor=DMFD_COMMON["monitor"],
                       patience=FIT["patience"], seed=seed)


def _dmfd_variants(settings: dict[str, Any], label: str) -> dict[str, dict[str, Any]]:
    """DMFD with "DMF-D" replaced by the tuned options when ``tune_dmfd`` has run."""
    out = {k: dict(v) for k, v in DMFD.items()}
    best = settings.get(f"dmfd_tuning_{label}", {}).get("best")
    if best:
        out["DMF-D"].update(best)
    return out


def _scores(y: torch.Tensor, p: torch.Tensor) -> dict[str, float]:
    return {"rmse": rmse(y, p), "mae": mae(y, p)}


# ----------------------------------------------------------------------------- parts


def tune(R: Ratings, epochs: int, gammas: list[float], excl: list[bool]) -> dict[str, Any]:
    train, val, _ = random_split(R, 0.2, val_fraction=0.05, seed=0)
    table = []
    for g in gammas:
        for ex in excl:
            cfg = {"gamma": g, "exclude": ex}
            fit = _fit_dmf(train, val, cfg, epochs, seed=0)
            best = min(fit.history["val_rmse"])
            table.append({**cfg, "val_rmse": round(best, 5), "epoch": fit.best_epoch,
                          "fit_s": round(fit.fit_seconds, 1)})
            print(f"  tune gamma={g:g} exclude_targets={ex}: val RMSE {best:.4f} "
                  f"(epoch {fit.best_epoch}, {fit.fit_seconds:.0f}s)", flush=True)
    best_row = min(table, key=lambda r: r["val_rmse"])
    return {"best": {"gamma": best_row["gamma"], "exclude": best_row["exclude"]},
            "grid": table, "on": "split seed 0: 75% train / 5% validation"}


def tune_dmfd(R: Ratings, cfg: dict[str, Any], splits: list[int], epochs: int,
              dmfd_epochs: int) -> dict[str, Any]:
    """Grid over DMFD_GRID for the paper-objective DMF-D on the 5 % validation parts of
    ``splits`` (test entries unused); chosen by the mean validation MAE (hard output)."""
    combos = [{"lr": lr, "lam_schedule": list(lam), "gamma_b": gb}
              for lr in DMFD_GRID["lr"] for lam in DMFD_GRID["lam_schedule"]
              for gb in DMFD_GRID["gamma_b"]]
    rows: list[dict[str, Any]] = [{**c, "val_mae": []} for c in combos]
    rounding = []
    for s in splits:
        train, val, _ = random_split(R, 0.2, val_fraction=0.05, seed=s)
        fit = _fit_dmf(train, val, cfg, epochs, seed=s)
        rounding.append(mae(val.values, fit.predict(val, discrete="round")))
        for row, c in zip(rows, combos, strict=True):
            opts = {**DMFD["DMF-D"], **c}
            fitd = _fit_dmfd(fit, train, val, cfg, dmfd_epochs, seed=s, opts=opts)
            row["val_mae"].append(min(fitd.history["val_mae"]))
            print(f"  tune DMF-D split {s} {c}: val MAE {row['val_mae'][-1]:.4f} "
                  f"(round {rounding[-1]:.4f}, epoch {fitd.best_epoch})", flush=True)
    for row in rows:
        row["mean_val_mae"] = round(float(np.mean(row["val_mae"])), 5)
        row["val_mae"] = [round(v, 5) for v in row["val_mae"]]
    best = min(rows, key=lambda r: r["mean_val_mae"])
    return {"best": {k: best[k] for k in ("lr", "lam_schedule", "gamma_b")}, "grid": rows,
            "round_val_mae": [round(v, 5) for v in rounding],
            "fixed": {k: DMFD["DMF-D"][k] for k in ("loss", "boundary_lr")},
            "on": f"validation (5 %) of splits {splits}; mean val MAE of the hard output"}


def table2(R: Ratings, cfg: dict[str, Any], run_ids: list[int], epochs: int, dmfd_epochs: int,
           stored: dict[str, Any], variants: dict[str, dict[str, Any]]
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Runs ``run_ids`` (split seeds); ``stored`` (per-run metrics of earlier invocations,
    by seed) is updated and everything in it is summarised."""
    for s in run_ids:
        per: dict[str, list[dict[str, float]]] = {"DMF": [], "DMF-round": [], "mean": [],
                                                  **{v: [] for v in variants}}
        train, val, test = random_split(R, 0.2, val_fraction=0.05, seed=s)
        y = test.values
        fit = _fit_dmf(train, val, cfg, epochs, seed=s)
        dmf_s = _scores(y, fit.predict(test))
        rnd_s = _scores(y, fit.predict(test, discrete="round"))
        per["DMF"].append({**dmf_s, "fit_s": fit.fit_seconds, "epochs": fit.best_epoch})
        per["DMF-round"].append(rnd_s)
        msg = (f"  split {s}: DMF {dmf_s['rmse']:.4f}/{dmf_s['mae']:.4f}  round "
               f"{rnd_s['rmse']:.4f}/{rnd_s['mae']:.4f} ({fit.fit_seconds:.0f}s)")
        for variant, opts in variants.items():
            fitd = _fit_dmfd(fit, train, val, cfg, dmfd_epochs, seed=s, opts=opts)
            pd = fitd.predict(test, discrete="hard")
            d_s = _scores(y, pd)
            assert bool(torch.all(pd == torch.round(pd))), "DMF-D off the rating levels"
            b = fitd.model.to_rating(fitd.model.quantizer.boundaries.detach()).tolist()
            per[variant].append({**d_s, "fit_s": fit.fit_seconds + fitd.fit_seconds,
                                 "finetune_epochs": fitd.best_epoch})
            msg += (f"  {variant} {d_s['rmse']:.4f}/{d_s['mae']:.4f} (b={np.round(b, 2).tolist()},"
                    f" +{fitd.fit_seconds:.0f}s)")
        mu = float(train.values.mean())
        per["mean"].append(_scores(y, torch.full_like(y, mu)))
        print(msg, flush=True)
        stored[str(s)] = {k: v[0] for k, v in per.items()}
    seeds = sorted(stored, key=int)
    per = {k: [stored[s][k] for s in seeds] for k in stored[seeds[0]]}
    res = {k: summarize(v) for k, v in per.items()}
    extra: dict[str, Any] = {}
    for v in variants:
        wins = [d["mae"] < r["mae"] for d, r in zip(per[v], per["DMF-round"], strict=True)]
        extra[f"{v}_mae_below_round_splits"] = f"{sum(wins)}/{len(wins)}"
        extra[f"{v}_mae_below_round_every_split"] = all(wins)
    return res, extra


def _folds(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g) % k


def table1(R: Ratings, cfg: dict[str, Any], seeds: int, epochs: int, n_folds: int = 5
           ) -> dict[str, Any]:
    per: dict[str, list[dict[str, float]]] = {"DMF": [], "mean": []}
    for s in range(seeds):
        ext = holdout_rows_cols(R, 0.1, 0.1, seed=s)
        kr, nr, kc, nc = ext.known_rows, ext.new_rows, ext.known_cols, ext.new_cols
        A1 = reindex(ext.area_I, kr, kc, name="area I")
        train, val, test = random_split(A1, 0.1, val_fraction=0.05, seed=s)
        fit = _fit_dmf(train, val, cfg, epochs, seed=s)
        res = {"area_I_rmse": rmse(test.values, fit.predict(test))}
        mu = float(train.values.mean())
        base = {"area_I_rmse": rmse(test.values, torch.full_like(test.values, mu))}
        A2 = reindex(ext.area_II, nr, kc, name="area II")          # new rows x known cols
        A3 = reindex(ext.area_III, kr, nc, name="area III")        # known rows x new cols
        A4 = reindex(ext.area_IV, nr, nc, name="area IV")
        for key, A, predict in (("area_II", A2, fit.predict_new_rows),
                                ("area_III", A3, fit.predict_new_cols)):
            fold = _folds(len(A), n_folds, seed=100 + s)
            pred = torch.empty(len(A))
            for f in range(n_folds):  # a few folds, not rows
                given, target = A.subset(fold != f), A.subset(fold == f)
                pred[fold == f] = predict(given, target).float()
            res[f"{key}_rmse"] = rmse(A.values, pred)
            base[f"{key}_rmse"] = rmse(A.values, torch.full_like(A.values, mu))
        res["area_IV_rmse"] = rmse(A4.values, fit.predict_new(A2, A3, A4))
        base["area_IV_rmse"] = rmse(A4.values, torch.full_like(A4.values, mu))
        res["fit_s"] = fit.fit_seconds
        per["DMF"].append(res)
        per["mean"].append(base)
        print(f"  ext seed {s}: " + ", ".join(f"{k} {v:.4f}" for k, v in res.items())
              + f" | sizes I/II/III/IV test {len(test)}/{len(A2)}/{len(A3)}/{len(A4)}",
              flush=True)
    return {k: summarize(v) for k, v in per.items()}


# ------------------------------------------------------------------------------ main


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"area_I_rmse": x, "area_I_rmse_std": s}`` -> ``{"area_I": {"rmse": x, ...}}``."""
    out: dict[str, Any] = {}
    for k, v in flat.items():
        if k.startswith("area_"):
            area, rest = k.split("_rmse")
            out.setdefault(area, {})["rmse" + rest] = v
        else:
            out[k] = v
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 split, few epochs")
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--parts", default="tune,table2,table1",
                        help="comma-separated subset of tune,tune_dmfd,table2,table1")
    parser.add_argument("--runs", type=int, default=5, help="Table 2 splits")
    parser.add_argument("--first-run", type=int, default=0,
                        help="seed of the first Table 2 split (runs of earlier invocations "
                        "stored in dmf.json are kept and summarised together)")
    parser.add_argument("--ext-seeds", type=int, default=1, help="Table 1 row/column holdouts")
    parser.add_argument("--epochs", type=int, default=25, help="max DMF epochs")
    parser.add_argument("--dmfd-epochs", type=int, default=12, help="DMF-D fine-tuning epochs")
    parser.add_argument("--out-dir", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = "dmf_quick" if args.quick else "dmf"
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    runs, seeds = (1, 1) if args.quick else (args.runs, args.ext_seeds)
    epochs, dmfd_epochs = (3, 3) if args.quick else (args.epochs, args.dmfd_epochs)

    out = Path(args.out_dir)
    out = out if out.is_absolute() else REPO / out
    prev_path = out / f"{name}.json"
    prev = json.loads(prev_path.read_text()) if prev_path.exists() else {}
    results: dict[str, Any] = prev.get("results", {})
    settings: dict[str, Any] = prev.get("settings", {})
    settings.update({
        "architecture": ARCH, "fit": FIT, "max_epochs": epochs,
        "dmfd_common": DMFD_COMMON, "dmfd_grid": DMFD_GRID,
        "dmfd_epochs": dmfd_epochs, "table2_runs": runs, "table1_seeds": seeds,
        "table2_split": "random_split(test 0.2, val 0.05), seeds 0..runs-1",
        "table1_split": "holdout_rows_cols(0.1, 0.1, seed); area I split 85/5/10 "
                        "(random_split seed); areas II/III: 5-fold fold-in",
        "paper": PAPER, "targets": TARGETS, "threads": torch.get_num_threads(),
    })
    datasets = {"ML100K": "100k", "ML1M": "1m"}
    for label, variant in datasets.items():
        folder = Path(args.data_dir or "") / f"ml-{variant}"
        if not folder.is_dir():
            results[label] = {"skipped": {"reason": f"no {folder} in the data dir"}}
            print(f"{label}: skipped ({folder} not found)")
            continue
        R = load_movielens(variant, root=args.data_dir).to_ratings(item_features=False)
        print(f"{label}: {R}", flush=True)
        res = results.get(label, {}) if "skipped" not in results.get(label, {}) else {}
        tkey = f"tuning_{label}"
        if "tune" in parts:
            g, ex = (GAMMAS[1:2], [True]) if args.quick else (GAMMAS, EXCLUDE)
            settings[tkey] = tune(R, epochs, g, ex)
        cfg = settings.get(tkey, {}).get("best", {"gamma": 1e-3, "exclude": True})
        if "tune_dmfd" in parts:
            t0 = time.perf_counter()
            splits = DMFD_TUNE_SPLITS[:1] if args.quick else DMFD_TUNE_SPLITS
            settings[f"dmfd_tuning_{label}"] = tune_dmfd(R, cfg, splits, epochs, dmfd_epochs)
            settings[f"dmfd_tuning_{label}"]["wall_s"] = time.perf_counter() - t0
        variants = _dmfd_variants(settings, label)
        settings["dmfd"] = variants
        if "table2" in parts:
            t0 = time.perf_counter()
            stored = settings.setdefault(f"table2_per_run_{label}", {})
            ids = list(range(args.first_run, args.first_run + runs))
            t2, extra = table2(R, cfg, ids, epochs, dmfd_epochs, stored, variants)
            for k in ("DMF-round", "mean", *variants):
                res[k] = t2[k]
            res["DMF_table2"] = t2["DMF"]
            settings[f"table2_{label}"] = {**extra, "config": cfg, "n_runs": len(stored),
                                           "last_wall_s": time.perf_counter() - t0}
        if "table1" in parts:
            t0 = time.perf_counter()
            t1 = table1(R, cfg, seeds, epochs)
            res["DMF"] = _nest(t1["DMF"])
            res["mean_ext"] = _nest(t1["mean"])
            settings[f"table1_{label}"] = {"wall_s": time.perf_counter() - t0, "config": cfg}
        results[label] = res
    # the markdown tables want flat metric dicts
    write_results(name, results, settings, out_dir=out)
    md = out / f"{name}.md"
    tail = md.read_text().split("## Settings", 1)[-1]
    md.write_text(_markdown(results, settings, name) + "\n## Settings" + tail)
    return results


def _fmt(d: dict[str, Any], key: str) -> str:
    if key not in d:
        return ""
    s = d.get(f"{key}_std")
    return f"{d[key]:.4f}" + (f" ± {s:.4f}" if s is not None else "")


def _markdown(results: dict[str, Any], settings: dict[str, Any], name: str) -> str:
    lines = [f"# {name}", ""]
    for label, res in results.items():
        lines += [f"## {label}", ""]
        if "skipped" in res:
            lines += [f"Skipped: {res['skipped']['reason']}", ""]
            continue
        if "DMF-D" in res:
            n = int(res["DMF-D"].get("n_runs", 0))
            lines += [f"### Table 2: discrete MC, 75/5/20 random splits ({n} runs, test 20 %)",
                      "", "| model | RMSE | MAE | fit s |", "|---|---|---|---|"]
            for k, lab in (("DMF-D", "DMF-D (paper MSE objective, tuned; hard quantizer)"),
                           ("DMF-D-joint", "DMF-D-joint (paper MSE objective, network lr "
                            "1e-4; hard quantizer)"),
                           ("DMF-D-L1", "DMF-D-L1 (L1 loss, not the paper's; learned "
                            "thresholds; hard quantizer)"),
                           ("DMF-round", "DMF + rounding"),
                           ("DMF_table2", "DMF (continuous)"), ("mean", "global mean")):
                if k in res:
                    lines.append(f"| {lab} | {_fmt(res[k], 'rmse')} | {_fmt(res[k], 'mae')} | "
                                 f"{_fmt(res[k], 'fit_s')} |")
            lines += ["| paper ML-1M DMF-D | 0.898 | 0.625 | |",
                      "| paper ML-1M RankK / OptSpace / ODMC | 0.944 / 0.940 / 0.937 | "
                      "0.656 / 0.665 / 0.658 | |", ""]
            t2 = settings.get(f"table2_{label}", {})
            wins = [f"{k[:-len('_mae_below_round_splits')]} {v}" for k, v in t2.items()
                    if k.endswith("_mae_below_round_splits")]
            if wins:
                lines += ["Splits on which the MAE is below DMF + rounding's (same split): "
                          + ", ".join(wins), ""]
        if "DMF" in res:
            n = int(res["DMF"].get("n_runs", 0))
            lines += [f"### Table 1: extendability, 10 % new rows and columns ({n} seed(s)), RMSE",
                      "", "| model | area I | area II | area III | area IV |",
                      "|---|---|---|---|---|"]
            for k, lab in (("DMF", "DMF"), ("mean_ext", "training mean")):
                if k in res:
                    cells = [_fmt(res[k].get(a, {}), "rmse") for a in
                             ("area_I", "area_II", "area_III", "area_IV")]
                    lines.append(f"| {lab} | " + " | ".join(cells) + " |")
            lines += ["| paper ML-1M DMF | 0.850 | 0.883 | 0.864 | 0.904 |", ""]
            if "fit_s" in res["DMF"]:
                lines += [f"DMF fit time (area I): {_fmt(res['DMF'], 'fit_s')} s", ""]
    for key, t in settings.items():
        if key.startswith("dmfd_tuning_"):
            lines += [f"### {key} ({t['on']}); chosen: {t['best']}; DMF + rounding val MAE "
                      f"{t['round_val_mae']}", "",
                      "| network lr | lambda schedule | gamma_2 | val MAE per split | mean |",
                      "|---|---|---|---|---|"]
            lines += [f"| {r['lr']:g} | {r['lam_schedule']} | {r['gamma_b']:g} | {r['val_mae']} | "
                      f"{r['mean_val_mae']:.4f} |" for r in t["grid"]]
            lines.append("")
        if key.startswith("tuning_"):
            lines += [f"### {key} ({t['on']}); chosen: {t['best']}", "",
                      "| gamma | exclude_targets | val RMSE | epoch | fit s |",
                      "|---|---|---|---|---|"]
            lines += [f"| {r['gamma']:g} | {r['exclude']} | {r['val_rmse']:.4f} | {r['epoch']} | "
                      f"{r['fit_s']} |" for r in t["grid"]]
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
