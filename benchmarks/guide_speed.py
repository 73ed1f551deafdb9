"""Time one SVI step: Pyro's AutoNormal + pyro.infer.SVI vs bayesmf's MeanFieldGuide + fit loop.

Both optimise the same model (BayesianMF or BayesianNNMF on ML-100K, minibatches of 10,000
ratings, TraceMeanField_ELBO, Adam). The two are timed interleaved, in rounds, so that load
from other processes affects both alike. Writes ``benchmarks/results/guide_speed.{json,md}``.

Run::

    .venv/bin/python benchmarks/guide_speed.py --steps 50 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

from bayesmf import data, models  # noqa: E402
from bayesmf.inference.guides import MeanFieldGuide  # noqa: E402


def make_model(kind: str, R: data.Ratings) -> models.GaussianFactorModel:
    if kind == "BayesianMF":
        m = models.BayesianMF(R.n_rows, R.n_cols, rank=10)
    else:
        m = models.BayesianNNMF(R.n_rows, R.n_cols, rank=10, bilinear_dims=60, hidden=(50, 50, 50))
    m.setup(R)
    return m


def time_autonormal(model, R, batches) -> float:
    pyro.clear_param_store()
    guide = AutoNormal(model.model, init_scale=0.05)
    svi = SVI(model.model, guide, pyro.optim.Adam({"lr": 0.01}),
              TraceMeanField_ELBO(max_plate_nesting=1))
    svi.step(R, batches[0])  # lazily creates the parameters
    t0 = time.perf_counter()
    for idx in batches:
        svi.step(R, idx)
    return (time.perf_counter() - t0) / len(batches)


def time_meanfield(model, R, batches) -> float:
    guide = MeanFieldGuide(model)
    opt = torch.optim.Adam(guide.parameters(), lr=0.01)
    elbo = TraceMeanField_ELBO(max_plate_nesting=1)
    t0 = time.perf_counter()
    for idx in batches:
        loss = elbo.differentiable_loss(model.model, guide, R, idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / len(batches)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    R = data.load_movielens("100k", root=args.data_dir).to_ratings()
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randperm(len(R), generator=gen)[:10_000] for _ in range(args.steps)]
    results = {}
    for kind in ("BayesianMF", "BayesianNNMF VI(3)"):
        model = make_model(kind.split()[0], R)
        auto, mine = [], []
        for _ in range(args.rounds):
            auto.append(time_autonormal(model, R, batches))
            mine.append(time_meanfield(model, R, batches))
        a, b = statistics.median(auto), statistics.median(mine)
        results[kind] = {"AutoNormal+SVI ms/step": 1e3 * a, "MeanFieldGuide ms/step": 1e3 * b,
                         "speedup": a / b}
        print(f"{kind:<20} AutoNormal {1e3 * a:7.1f} ms/step   MeanFieldGuide {1e3 * b:7.1f} "
              f"ms/step   ({a / b:.2f}x)")
    write_results("guide_speed", {"ML100K": results},
                  {"steps": args.steps, "rounds": args.rounds, "batch_size": 10_000,
                   "threads": args.threads, "statistic": "median over rounds",
                   "machine_load": "shared with other jobs; interleaved rounds"},
                  out_dir=Path(__file__).resolve().parent / "results")
    pyro.clear_param_store()


if __name__ == "__main__":
    main()
