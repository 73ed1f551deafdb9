"""Meta-learned neural priors (Iwata, 2021): impute a matrix of users and items never seen.

Splits MovieLens-100K users and items into disjoint meta-train / meta-validation /
meta-test groups (70/10/20), meta-trains :class:`bayesmf.models.MetaPriorMF` on random
30x30 sub-matrices of the meta-train users x items (a short budget by default, the
benchmark's budget with ``--full``), saves it, then imputes a brand-new 30x30 matrix of
meta-test users x items from half of its observed ratings and prints the MSE on the other
half next to per-matrix MF (ALS) and the matrix mean, plus the coverage of the 90%
posterior predictive intervals from ``inference.fit_meta_posterior`` (the library's SVI
engine under the meta-learned prior means), with the prior precision and noise calibrated on
meta-validation matrices (``calibrate_posterior``) and, for contrast, with the meta-learned
lambda. Values are z-scored ratings.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python examples/meta_learning.py            # ~3-4 minutes
    OMP_NUM_THREADS=1 .venv/bin/python examples/meta_learning.py --full     # up to ~18 minutes
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bayesmf import data, inference, models
from bayesmf.inference.meta_posterior import calibrate_posterior, fit_meta_posterior


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder holding ml-100k/")
    p.add_argument("--full", action="store_true", help="meta-train with the benchmark budget")
    p.add_argument("--steps", type=int, default=None, help="meta-training steps")
    p.add_argument("--out", default="meta_prior_ml100k.pt", help="where to save the model")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    steps = args.steps or (2000 if args.full else 300)

    R = data.load_movielens("100k", root=args.data_dir).to_ratings()
    Z = data.Standardizer().fit_transform(R)
    train, val, test = data.disjoint_split(Z, (0.7, 0.1, 0.2), seed=args.seed)
    print(f"meta-train {train.shape}, meta-val {val.shape}, meta-test {test.shape} "
          "(users x items, no user or item shared)")

    sampler = data.EpisodeSampler(train, 30, 30, train_ratio=0.5, batch_size=16, seed=args.seed)
    val_sampler = data.EpisodeSampler(val, 30, 30, train_ratio=0.5, batch_size=16)
    model = models.MetaPriorMF(channels=32, layers=3, rank=32, steps=10, step_size=1e-2)
    t0 = time.perf_counter()
    res = inference.meta_train(model, sampler, val_sampler, steps=steps, lr=1e-3,
                               final_lr=1e-3, eval_every=100, patience=5, val_episodes=64)
    print(f"meta-trained {res.steps} steps in {time.perf_counter() - t0:.0f} s; best "
          f"meta-validation MSE {res.best_val:.3f} at step {res.best_step}; "
          f"lambda = {float(model.lam.detach()):.3f}")
    # the posterior's prior precision and noise, chosen once on meta-validation tasks
    cal = calibrate_posterior(model, val_sampler.fixed(32, seed=1))
    print(f"posterior calibrated on 32 meta-validation matrices: precision "
          f"{cal['precision']:g}, noise {cal['noise']:g}")
    path = res.save(Path(args.out))  # the fit: the model, its history and settings
    model = inference.load(path).model.eval()
    print(f"saved to {path} (read back with bayesmf.inference.load)")

    # a brand-new 30x30 matrix of meta-test users and items; half its ratings hidden
    ep = data.EpisodeSampler(test, 30, 30, train_ratio=0.5, batch_size=1).fixed(1, seed=7)[0]
    X, B, hidden = ep.X_train, ep.train_mask.float(), ep.test_mask
    print(f"new matrix: {int(B.sum())} observed, {int(hidden.sum())} hidden ratings")

    def mse(P: torch.Tensor) -> float:
        return float(((P - ep.X)[hidden] ** 2).mean())

    t0 = time.perf_counter()
    with torch.no_grad():
        P_ours = model.predict(X, B)
    t_ours = time.perf_counter() - t0
    r, c = ep.train_mask[0].nonzero(as_tuple=True)
    mf = inference.als(data.Ratings(r, c, X[0][r, c], shape=(30, 30)), rank=2, reg_u=10.0,
                       reg_v=10.0, epochs=30)
    P_mf = (mf.U @ mf.V.T + mf.mean + mf.row_bias[:, None] + mf.col_bias[None])[None]
    P_mean = torch.full_like(X, float(X[B > 0].mean()))
    print(f"{'method':<28}{'MSE (hidden)':>14}")
    print(f"{'MetaPriorMF (adapt)':<28}{mse(P_ours):>14.3f}   ({t_ours * 1e3:.1f} ms)")
    print(f"{'MF (ALS, rank 2, reg 10)':<28}{mse(P_mf):>14.3f}")
    print(f"{'Mean':<28}{mse(P_mean):>14.3f}")

    lam = float(model.lam.detach())
    for prec, noise, what in ((lam, 1.0, "meta-learned lambda, noise 1"),
                              (None, None, "calibrated (default)")):
        post = fit_meta_posterior(model, X, B, steps=300, precision=prec, noise=noise).summary(
            level=0.9, num_samples=500)
        print(f"posterior ({what}): mean MSE {mse(post.mean):.3f}; 90% interval coverage on "
              f"hidden ratings {post.coverage(ep.X, hidden):.3f} (mean width "
              f"{float((post.upper - post.lower)[hidden].mean()):.2f})")

if __name__ == "__main__":
    main()
