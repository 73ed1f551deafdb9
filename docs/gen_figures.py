"""Produce the documentation's figures (PNG files in ``docs/img/``) from small, seeded runs.

``make docs`` runs this script before ``mkdocs build``; the PNGs are build outputs and are not
committed. Every figure is made by the library's own functions, so a change in the code shows
in the pages (and a broken plotting function fails the docs build).

* ``elbo.png``        -- :func:`bayesmf.diagnostics.plot_elbo` of a Bayesian MF fitted by SVI;
* ``ppc.png``         -- :func:`bayesmf.diagnostics.plot_ppc` of the same fit on held-out ratings;
* ``calibration.png`` -- nominal against empirical coverage of the central predictive intervals
  (50/80/90/95 %), SVI against Gibbs sampling of the same model;
* ``blocks.png``      -- :func:`bayesmf.diagnostics.plot_block_structure` of the DP block model
  fitted to NIPS234;
* ``cold_start.png``  -- deep MF's cold-start curve: test RMSE of users unseen in training
  against the number of their ratings given to the network (no retraining).

The ratings figures use one 90/10 split of MovieLens-100K and the block figure uses NIPS234
when they are found (``$BAYESMF_DATA_DIR`` or the cache; nothing is downloaded); otherwise the
script says so and uses synthetic data with a known truth, whose name is printed in the figure
titles. Everything runs on one thread in well under a minute. ``docs/img/figures.json`` records
which data each figure used and the numbers shown on the pages' captions.

Run::

    .venv/bin/python docs/gen_figures.py            # writes docs/img/*.png
    .venv/bin/python docs/gen_figures.py --out /tmp/img
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from bayesmf import data, diagnostics, inference, models

log = logging.getLogger("gen_figures")

#: nominal levels of the calibration figure
LEVELS = (0.5, 0.8, 0.9, 0.95)


def _ratings(seed: int) -> tuple[str, data.Ratings]:
    """ML-100K, or a synthetic low-rank matrix when it is absent."""
    try:
        R = data.load_movielens("100k", download=False).to_ratings()
        name = "MovieLens-100K"
    except data.DatasetNotFoundError as err:
        log.warning("MovieLens-100K not found (%s); the ratings figures use synthetic data",
                    str(err).splitlines()[0])
        R, _ = data.synthetic_ratings(n_rows=400, n_cols=300, rank=5, density=0.1, seed=seed,
                                      scale=(1, 5))
        name = "synthetic 400 x 300"
    return name, R


def _network(seed: int) -> tuple[str, data.Network]:
    """NIPS234, or a synthetic four-block network when it is absent."""
    try:
        return "NIPS234", data.load_nips234(download=False)
    except data.DatasetNotFoundError as err:
        log.warning("NIPS234 not found (%s); the block figure uses a synthetic network",
                    str(err).splitlines()[0])
        net, _ = data.synthetic_network(n_nodes=120, n_blocks=4, seed=seed)
        return "synthetic 4-block network", net


def _calibration_figure(curves: dict[str, dict[float, float]], title: str, path: Path) -> None:
    """Empirical against nominal coverage (left) and their difference (right), one line per fit."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.8), layout="constrained")
    ax, ax_diff = fig.subplots(1, 2)
    ax.plot([0.45, 1.0], [0.45, 1.0], color="0.6", linestyle="--", label="calibrated")
    ax_diff.axhline(0.0, color="0.6", linestyle="--")
    for (label, cover), marker in zip(curves.items(), "os^", strict=False):
        levels = sorted(cover)
        ax.plot(levels, [cover[v] for v in levels], marker=marker, label=label)
        ax_diff.plot([100 * v for v in levels], [100 * (cover[v] - v) for v in levels],
                     marker=marker, label=label)
    ax.set_xlabel("nominal level of the central interval")
    ax.set_ylabel("fraction of held-out ratings inside")
    ax.legend(loc="upper left")
    ax_diff.set_xticks([100 * v for v in LEVELS])
    ax_diff.set_xlabel("nominal level (%)")
    ax_diff.set_ylabel("empirical - nominal coverage (points)")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120)


def ratings_figures(out: Path, seed: int) -> dict[str, Any]:
    """ELBO trace, posterior predictive check and calibration curve of Bayesian MF."""
    name, R = _ratings(seed)
    train, test = data.random_split(R, test_fraction=0.1, seed=seed)
    model = models.BayesianMF(*train.shape, rank=10)
    fit = inference.fit_svi(model, train, epochs=40, batch_size=None, lr=0.1, val=test,
                            seed=seed, progress=False)
    diagnostics.plot_elbo(fit, path=out / "elbo.png")
    diagnostics.plot_ppc(fit, test, num_samples=100, seed=seed, path=out / "ppc.png")
    svi_cover = diagnostics.interval_coverage(fit, test, levels=LEVELS, num_samples=200,
                                              seed=seed)
    gibbs = inference.fit_gibbs(models.BayesianMF(*train.shape, rank=10), train,
                                num_samples=40, burn_in=20, seed=seed, progress=False)
    gibbs_cover = diagnostics.interval_coverage(gibbs, test, levels=LEVELS, num_samples=200,
                                                seed=seed)
    _calibration_figure({"SVI (mean-field)": svi_cover, "Gibbs": gibbs_cover},
                        f"Bayesian MF, rank 10, {name} test ratings", out / "calibration.png")
    return {
        "data": name,
        "svi": {"epochs": 40, "test_rmse": diagnostics.rmse(test.values, fit.predict(test)),
                "coverage": svi_cover},
        "gibbs": {"num_samples": 40, "burn_in": 20,
                  "test_rmse": diagnostics.rmse(test.values, gibbs.predict(test)),
                  "coverage": gibbs_cover},
    }


def cold_start_figure(out: Path, seed: int) -> dict[str, Any]:
    """Deep MF trained without 10% of the users; those users scored from k of their ratings."""
    from matplotlib.figure import Figure

    from bayesmf.inference.deep_mf_fit import reindex

    name, R = _ratings(seed)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(R.n_rows, generator=g)
    n_new = R.n_rows // 10
    items = torch.arange(R.n_cols)
    known = reindex(R, perm[n_new:].sort().values, items, name="known users")
    new = reindex(R, perm[:n_new].sort().values, items, name="new users")
    train, val = data.random_split(known, test_fraction=0.05, seed=seed)
    model = models.DeepMF(*known.shape, hidden=(256,), rank=64, gamma=1e-3, scale=R.scale)
    fit = inference.fit_deep_mf(model, train, epochs=3, batch_size=4096, lr=1e-3, val=val,
                                exclude_targets=True, progress=False)
    # each new user's ratings in a random order; targets: those after the first 20
    order = torch.argsort(new.rows.double() * 2 + torch.rand(len(new), generator=g).double())
    counts = torch.bincount(new.rows, minlength=new.n_rows)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.empty(len(new), dtype=torch.long)
    position[order] = torch.arange(len(new)) - starts[new.rows[order]]
    target = new.subset(position >= 20)
    given = (1, 2, 5, 10, 20)
    curve = {k: diagnostics.rmse(target.values,
                                 fit.predict_new_rows(new.subset(position < k), target))
             for k in given}
    mean_rmse = diagnostics.rmse(target.values,
                                 torch.full_like(target.values, float(train.values.mean())))
    fig = Figure(figsize=(5.2, 3.8), layout="constrained")
    ax = fig.subplots()
    ax.plot(list(curve), list(curve.values()), marker="o", label="deep MF, no retraining")
    ax.axhline(mean_rmse, color="0.5", linestyle="--", label="global mean")
    ax.set_xscale("log")
    ax.set_xticks(list(given), [str(k) for k in given])
    ax.set_xlabel("ratings given per new user")
    ax.set_ylabel("RMSE on the new users' other ratings")
    ax.set_title(f"Cold start, {n_new} users unseen in training ({name})", fontsize=10)
    ax.legend()
    fig.savefig(out / "cold_start.png", dpi=120)
    return {"data": name, "epochs": 3, "rmse_by_given": curve, "global_mean_rmse": mean_rmse}


def block_figure(out: Path, seed: int) -> dict[str, Any]:
    """Block structure of the DP block model (T = 7, one restart, short run)."""
    name, net = _network(seed)
    fit = inference.fit_sbm(models.DPStochasticBlockModel(net.n_nodes, truncation=7), net,
                            epochs=100, n_restarts=1, seed=seed, progress=False)
    diagnostics.plot_block_structure(fit, net, path=out / "blocks.png")
    return {"data": name, "effective_clusters": float(fit.effective_clusters())}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "img"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    report: dict[str, Any] = {}
    for key, make in (("ratings", ratings_figures), ("blocks", block_figure),
                      ("cold_start", cold_start_figure)):
        t0, c0 = time.perf_counter(), time.process_time()
        report[key] = make(out, args.seed)
        report[key]["wall_s"] = round(time.perf_counter() - t0, 2)
        report[key]["cpu_s"] = round(time.process_time() - c0, 2)
        log.info("%s figures (%s): %.1f s", key, report[key]["data"], report[key]["wall_s"])
    (out / "figures.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    return report


if __name__ == "__main__":
    main()
