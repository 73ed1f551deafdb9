"""Cold start with deep two-branch MF (DMF): new users predicted without retraining.

DMF embeds a user by feeding the user's row of ratings through the row network, so a user
who arrives after training is embedded from whatever ratings they have given -- no
retraining. This example trains DMF on MovieLens-100K without 10 % of the users, then, for
those new users, gives the network 1, 5, 10 or 20 of their ratings (chosen at random) and
measures the RMSE on the rest of their ratings (the same target entries for every count:
each new user's ratings after the first 20 in a random order).

Run::

    BAYESMF_DATA_DIR=/path/to/data python examples/cold_start_dmf.py [--epochs 20]
"""

from __future__ import annotations

import argparse
import logging

import torch

from bayesmf.data import load_movielens, random_split
from bayesmf.diagnostics.metrics import rmse
from bayesmf.inference import fit_deep_mf
from bayesmf.inference.deep_mf_fit import reindex
from bayesmf.models import DeepMF


def main(argv: list[str] | None = None) -> dict[int, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    R = load_movielens("100k").to_ratings(item_features=False)
    g = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(R.n_rows, generator=g)
    n_new = R.n_rows // 10
    new_users, known_users = perm[:n_new].sort().values, perm[n_new:].sort().values
    items = torch.arange(R.n_cols)
    known = reindex(R, known_users, items, name="known users")
    new = reindex(R, new_users, items, name="new users")

    train, val = random_split(known, 0.05, seed=args.seed)
    torch.manual_seed(args.seed)
    model = DeepMF(*known.shape, hidden=(256,), rank=64, gamma=1e-3, scale=R.scale)
    fit = fit_deep_mf(model, train, epochs=args.epochs, batch_size=4096, lr=1e-3,
                      final_lr=1e-3, val=val, patience=4, exclude_targets=True)
    print(f"trained on {known.n_rows} users ({len(train)} ratings) in {fit.fit_seconds:.0f}s, "
          f"validation RMSE {min(fit.history['val_rmse']):.4f}")

    # a random order of each new user's ratings: position of every rating within its row
    key = torch.rand(len(new), generator=g)
    order = torch.argsort(new.rows.double() * 2 + key.double())   # by user, then at random
    counts = torch.bincount(new.rows, minlength=new.n_rows)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.empty(len(new), dtype=torch.long)
    position[order] = torch.arange(len(new)) - starts[new.rows[order]]
    target = new.subset(position >= 20)
    mean = float(train.values.mean())
    print(f"{new.n_rows} new users, {len(target)} target ratings; "
          f"global-mean RMSE {rmse(target.values, torch.full_like(target.values, mean)):.4f}")
    results = {}
    for n_given in (1, 5, 10, 20):
        given = new.subset(position < n_given)
        pred = fit.predict_new_rows(given, target)        # no retraining
        results[n_given] = rmse(target.values, pred)
        print(f"  {n_given:2d} given ratings per new user: RMSE {results[n_given]:.4f}")
    return results


if __name__ == "__main__":
    main()
