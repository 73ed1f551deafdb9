"""Small random rating matrices shared by the tests (not a test module)."""

from __future__ import annotations

import numpy as np
import torch

from bayesmf import data, inference, models
from bayesmf.data import Ratings
from bayesmf.inference.objectives import local_elbo_terms


def distinct_ratings(n_rows: int, n_cols: int, n: int, seed: int,
                     empty_rows: int = 0) -> Ratings:
    """About ``n`` distinct random entries with integer values 1-5; every row but the last
    ``empty_rows`` and every column has at least one entry, those rows none."""
    rng = np.random.default_rng(seed)
    filled = n_rows - empty_rows
    flat = rng.choice(filled * n_cols, size=n, replace=False)
    rows, cols = flat // n_cols, flat % n_cols
    rows[:filled] = np.arange(filled)
    cols[filled : filled + n_cols] = np.arange(n_cols)
    pairs = np.unique(np.stack([rows, cols], 1), axis=0)
    vals = rng.integers(1, 6, size=len(pairs)).astype(np.float32)
    return Ratings(pairs[:, 0], pairs[:, 1], vals, shape=(n_rows, n_cols))


def even_ratings(n_rows: int, n_cols: int, n: int, seed: int, parts: int,
                 empty_rows: int = 0) -> Ratings:
    """:func:`distinct_ratings` cut to a multiple of ``parts`` entries."""
    R = distinct_ratings(n_rows, n_cols, n, seed, empty_rows)
    m = len(R) - len(R) % parts
    return Ratings(R.rows[:m], R.cols[:m], R.values[:m], shape=R.shape)


def partition_terms(model, guide, R: Ratings, eps, particles: int, parts: int, seed: int = 1):
    """The full-batch ELBO terms with draws ``eps`` and those of each batch of a random
    partition of ``R`` into ``parts`` equal batches (same draws)."""
    full = local_elbo_terms(model, guide, R, None, particles, eps)
    perm = torch.randperm(len(R), generator=torch.Generator().manual_seed(seed))
    return full, [local_elbo_terms(model, guide, R, idx, particles, eps)
                  for idx in perm.chunk(parts)]


def against_mean_field(tmp_path, epochs: int, **options):
    """A rank-2 ``BayesianMF`` fitted full batch to rank-2 data (40 x 30, noise 0.3) by the
    mean-field guide and with ``options`` (e.g. ``row_covariance=True``), the latter saved
    and loaded back: ``(ratings, mean-field fit, fit, loaded fit)``."""
    R, _ = data.synthetic_ratings(n_rows=40, n_cols=30, rank=2, density=0.5, noise=0.3,
                                  seed=0)
    opts = {"epochs": epochs, "batch_size": None, "lr": 0.05, "final_lr": 0.01, "seed": 0,
            "progress": False}
    mf = inference.fit_svi(models.BayesianMF(40, 30, rank=2), R, collapse_rows=False, **opts)
    fit = inference.fit_svi(models.BayesianMF(40, 30, rank=2), R,
                            **{"collapse_rows": False, **options}, **opts)
    fit.save(tmp_path / "fit.pt")
    return R, mf, fit, inference.load(tmp_path / "fit.pt")
