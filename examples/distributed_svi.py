"""Data-parallel Bayesian MF by SVI on ``torch.distributed``, launched by ``torchrun``.

Every process loads the same data and seed; :func:`bayesmf.inference.fit_svi` then fits on
this process's shard of the training ratings only, averages the gradients over the processes
(gloo on CPU, NCCL on GPU) and takes the same step everywhere, so every process ends with the
same posterior. Rank 0 writes the checkpoints, prints the test RMSE and saves the fit.

Run (2 processes on this machine, one thread each)::

    OMP_NUM_THREADS=1 BAYESMF_DATA_DIR=/path/to/data \\
        torchrun --standalone --nproc_per_node=2 examples/distributed_svi.py --epochs 40

    # without ML-100K: synthetic data of the same size
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 examples/distributed_svi.py \\
        --synthetic

    # one GPU per process (NCCL)
    torchrun --standalone --nproc_per_node=4 examples/distributed_svi.py --device cuda

    # several machines: the same command on each, with --nnodes, --node_rank and
    # --rdzv_endpoint=HOST:PORT (see torchrun --help)

Without ``torchrun`` (``python examples/distributed_svi.py``) it is a plain single-process
fit. ``--time-allreduce N`` also times N SVI steps with and without the gradient all-reduce.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch
import torch.distributed as dist

from bayesmf import data, diagnostics, inference, models
from bayesmf.inference import distributed


def setup(device: str) -> str:
    """Join the process group when launched by torchrun; return this process's device."""
    if "RANK" not in os.environ:
        return device
    if device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return f"cuda:{local}"
    dist.init_process_group("gloo")
    return device


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder holding ml-100k/")
    p.add_argument("--synthetic", action="store_true", help="synthetic ratings, no files")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=10_000, help="over all processes")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/distributed_svi", help="folder for the fit")
    p.add_argument("--time-allreduce", type=int, default=0, metavar="N",
                   help="also time N steps with and without the gradient all-reduce")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    device = setup(args.device)
    lead = distributed.rank() == 0
    logging.basicConfig(level=logging.INFO if lead else logging.WARNING, format="%(message)s")

    if args.synthetic:
        R, _ = data.synthetic_ratings(n_rows=943, n_cols=1682, rank=args.rank, density=0.063,
                                      noise=0.9, biases=True, seed=args.seed, scale=(1, 5))
    else:
        R = data.load_movielens("100k", root=args.data_dir).to_ratings(item_features=False)
    train, test = data.random_split(R, test_fraction=0.1, seed=args.seed)
    out = Path(args.out)
    if lead:
        out.mkdir(parents=True, exist_ok=True)
        print(f"{distributed.world_size()} process(es); train {len(train):,} ratings, "
              f"{len(distributed.shard(train)):,} on rank 0")

    model = models.BayesianMF(*R.shape, rank=args.rank)
    # the mean-field guide in one process too (by default one process integrates the users
    # out, which needs each user's ratings in one place), so that the fits compare
    fit = inference.fit_svi(model, train, epochs=args.epochs, batch_size=args.batch_size,
                            lr=args.lr, seed=args.seed, device=device, collapse_rows=False,
                            checkpoint=out / "checkpoint.bmf", checkpoint_every=10)
    if lead:  # every process holds the same fit; one prints and saves it
        pred = fit.predict(test.to(device), clamp=True)
        print(f"fitted in {fit.fit_seconds:.1f} s; test RMSE "
              f"{diagnostics.rmse(test.values.to(device), pred):.4f}")
        fit.save(out / "fit.bmf")
        print(f"saved {out / 'fit.bmf'} (bayesmf.load reads it)")
    if args.time_allreduce:
        t = distributed.time_steps(fit, train, steps=args.time_allreduce)
        if lead:
            print(f"per step: compute {t['step_ms']:.2f} ms, all-reduce of "
                  f"{t['floats']:.0f} floats {t['allreduce_ms']:.2f} ms "
                  f"({t['allreduce_ms'] / (t['step_ms'] + t['allreduce_ms']):.1%} of the step)")
    if distributed.is_distributed():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
