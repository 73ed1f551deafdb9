"""Fit the DP stochastic block model to the NIPS234 co-authorship network.

Holds out 10% of the pairs, fits :class:`bayesmf.models.DPStochasticBlockModel` by
mean-field VI, prints the held-out AUC, the width of the 90% intervals of the link
probabilities, the effective number of clusters and ``alpha``, and saves the fit (read it
back with ``bayesmf.load``) and the block-structure plot. A network of your own can be
given as an edge-list CSV (``--edges file.csv``, two node columns).

Usage::

    python examples/nips_sbm.py                      # NIPS234 ($BAYESMF_DATA_DIR)
    python examples/nips_sbm.py --truncation 15 --out runs/nips_sbm
    python examples/nips_sbm.py --edges my_network.csv
"""

from __future__ import annotations

import argparse
import logging

import torch

from bayesmf import data, diagnostics, inference, models

log = logging.getLogger("nips_sbm")


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--edges", default=None, help="edge-list CSV instead of NIPS234")
    p.add_argument("--data-dir", default=None, help="folder holding nips234/NIPS.csv")
    p.add_argument("--truncation", type=int, default=7, help="maximum number of clusters T")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--restarts", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/nips_sbm", help="folder for fit.pt and blocks.png")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    if args.edges:
        net = data.load_edge_list(args.edges)
    else:
        net = data.load_nips234(root=args.data_dir)
    train, test = data.holdout_pairs(net, 0.1, seed=args.seed)
    model = models.DPStochasticBlockModel(net.n_nodes, truncation=args.truncation)
    fit = inference.fit_sbm(
        model, train, epochs=args.epochs, n_restarts=args.restarts, seed=args.seed, progress=False
    )
    p_test = fit.predict(test)
    lo, hi = fit.predict_interval(test, 0.9)
    result = {
        "auc": diagnostics.auc(test.labels, p_test),
        "rmse": diagnostics.rmse(test.labels, p_test),
        "interval_width": float((hi - lo).mean()),
        "effective_clusters": fit.effective_clusters(),
        "alpha": fit.alpha,
    }
    log.info("%s: %d held-out pairs (%d links)", net.name, len(test), int(test.labels.sum()))
    log.info("held-out AUC %.4f, RMSE %.4f", result["auc"], result["rmse"])
    log.info("mean width of the 90%% intervals of the link probabilities %.4f",
             result["interval_width"])
    log.info(
        "effective number of clusters %.2f (T = %d), alpha %.3f",
        result["effective_clusters"],
        args.truncation,
        result["alpha"],
    )
    log.info("fit saved to %s", fit.save(f"{args.out}/fit.pt"))
    png = f"{args.out}/blocks.png"
    diagnostics.plot_block_structure(fit, net, path=png)
    log.info("block structure saved to %s", png)
    return result


if __name__ == "__main__":
    main()
